// CUDA LayerNorm and RMSNorm over the last dimension C of (N, C) rows; the CPU
// ops of core/ops/norm.hpp are the specification (same names and arguments plus
// a stream; the saved statistics are fp32 and eps is a float).
//
// LayerNorm: mu = mean(x), rstd = 1 / sqrt(mean((x - mu)^2) + eps)  (biased variance)
//   xhat = (x - mu) rstd,  y = xhat * weight + bias
//   dxhat = dy * weight
//   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat * xhat))   (overwritten)
//   dweight += sum_n dy * xhat,  dbias += sum_n dy                (accumulated)
// RMSNorm: rstd = 1 / sqrt(mean(x^2) + eps),  xhat = x rstd,  y = xhat * weight
//   dx = rstd (dxhat - xhat mean(dxhat * xhat))                   (overwritten)
//   dweight += sum_n dy * xhat                                    (accumulated)
// The forward saves mean/rstd per row (fp32, whatever the storage type) so the
// backward does not recompute the statistics.
//
// Storage T is float, __nv_bfloat16 or __half; compute is fp32. Row statistics
// and dx: one block per row (launch_rows), so any C works, reduced by a fixed
// shuffle tree. dweight/dbias: one thread per column adds the rows n = 0..N-1
// in order to an fp32 accumulator that starts from the existing value, then
// rounds once to T: no atomics, bitwise reproducible, and for fp32 the same
// order of additions as the CPU op.
//
// Sizes N, C >= 0 (nothing is launched when N C == 0); all pointers are device
// pointers; the ops are asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

template <typename T>
void layernorm_forward(T* out,           // (N, C)
                       float* mean,      // (N), saved for backward
                       float* rstd,      // (N), saved for backward
                       const T* x,       // (N, C)
                       const T* weight,  // (C)
                       const T* bias,    // (C)
                       int64_t N, int64_t C, float eps, cudaStream_t stream);

template <typename T>
void layernorm_backward(T* dx,              // (N, C), overwritten
                        T* dweight,         // (C), +=
                        T* dbias,           // (C), +=
                        const T* dout,      // (N, C)
                        const T* x,         // (N, C)
                        const T* weight,    // (C)
                        const float* mean,  // (N), from layernorm_forward
                        const float* rstd,  // (N), from layernorm_forward
                        int64_t N, int64_t C, cudaStream_t stream);

template <typename T>
void rmsnorm_forward(T* out,           // (N, C)
                     float* rstd,      // (N), saved for backward
                     const T* x,       // (N, C)
                     const T* weight,  // (C)
                     int64_t N, int64_t C, float eps, cudaStream_t stream);

template <typename T>
void rmsnorm_backward(T* dx,              // (N, C), overwritten
                      T* dweight,         // (C), +=
                      const T* dout,      // (N, C)
                      const T* x,         // (N, C)
                      const T* weight,    // (C)
                      const float* rstd,  // (N), from rmsnorm_forward
                      int64_t N, int64_t C, cudaStream_t stream);

}  // namespace sy::cuda::ops
