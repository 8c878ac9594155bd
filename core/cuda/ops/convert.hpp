// Element-wise conversions between fp32 and a storage type, for mixed precision
// (fp32 master weights -> bf16/fp16 working copies, fp32 gradient buffers) and
// for communication buffers. There is no CPU op: the CPU computes in fp32 and
// converts at the edges with core/dtype.hpp; the rounding here is the same,
// round to nearest even (storage.hpp from_float), and widening is exact.
//
// T is float, __nv_bfloat16 or __half (for float both are plain copies).
// out and in must not overlap unless they are the same buffer with T = float.
// n >= 0 (nothing is launched for n == 0); device pointers; asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

// out[i] = in[i] rounded to T.
template <typename T>
void convert_from_f32(T* out,           // (n)
                      const float* in,  // (n)
                      int64_t n, cudaStream_t stream);

// out[i] = in[i] widened to fp32 (exact).
template <typename T>
void convert_to_f32(float* out,   // (n)
                    const T* in,  // (n)
                    int64_t n, cudaStream_t stream);

}  // namespace sy::cuda::ops
