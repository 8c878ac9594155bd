// Fully connected layer on the GPU: y = x W^T + b. The CPU op (core/ops/linear.hpp)
// is the specification; same names and arguments plus a cuBLAS handle and a stream.
//
// Forward:   y(N, out) = x(N, in) W(out, in)^T + b(out)
// Backward:  dx = dy W          (overwritten)
//            dW += dy^T x       (accumulated)
//            db += sum_n dy[n]  (accumulated)
// Parameter gradients accumulate with +=, activation gradients are overwritten,
// so gradient accumulation over micro-batches needs no extra buffers.
//
// Products go through cuda::ops::gemm (fp32 accumulation, one rounding of each
// output to T). The bias is broadcast into y first and the GEMM adds onto it
// (beta = 1), so y is rounded once. db is a column sum in a fixed order (each
// column summed by one block, threads over rows in a fixed pattern, then a fixed
// reduction tree): deterministic, no atomics. Sets `handle`'s stream to `stream`;
// no synchronization, no allocation.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

// bias may be nullptr (no bias). All pointers are device pointers.
template <typename T>
void linear_forward(T* out,           // (N, out_features)
                    const T* x,       // (N, in_features)
                    const T* weight,  // (out_features, in_features)
                    const T* bias,    // (out_features) or nullptr
                    int64_t N, int64_t in_features, int64_t out_features, cublasHandle_t handle,
                    cudaStream_t stream);

// dx == nullptr skips the input gradient (first layer); dbias == nullptr skips
// the bias gradient (layer without bias). dweight is required.
template <typename T>
void linear_backward(T* dx,            // (N, in_features), overwritten, or nullptr
                     T* dweight,       // (out_features, in_features), +=
                     T* dbias,         // (out_features), +=, or nullptr
                     const T* dout,    // (N, out_features)
                     const T* x,       // (N, in_features)
                     const T* weight,  // (out_features, in_features)
                     int64_t N, int64_t in_features, int64_t out_features, cublasHandle_t handle,
                     cudaStream_t stream);

}  // namespace sy::cuda::ops
