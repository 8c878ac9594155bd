// LayerNorm and RMSNorm over the last dimension C of (N, C) rows.
//
// LayerNorm: mu = mean(x), rstd = 1 / sqrt(mean((x - mu)^2) + eps)  (biased variance)
//   xhat = (x - mu) rstd,  y = xhat * weight + bias
//   dxhat = dy * weight
//   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat * xhat))   (overwritten)
//   dweight += sum_n dy * xhat,  dbias += sum_n dy                (accumulated)
// RMSNorm: rstd = 1 / sqrt(mean(x^2) + eps),  xhat = x rstd,  y = xhat * weight
//   dx = rstd (dxhat - xhat mean(dxhat * xhat))                   (overwritten)
//   dweight += sum_n dy * xhat                                    (accumulated)
// The forward saves mean/rstd per row so the backward does not recompute the
// statistics. Parameter gradients are summed over rows by one thread per column
// in row order, so they do not depend on the thread count.
#pragma once

#include <cstdint>

namespace sy::ops {

template <typename T>
void layernorm_forward(T* out,           // (N, C)
                       T* mean,          // (N), saved for backward
                       T* rstd,          // (N), saved for backward
                       const T* x,       // (N, C)
                       const T* weight,  // (C)
                       const T* bias,    // (C)
                       int64_t N, int64_t C, T eps);

template <typename T>
void layernorm_backward(T* dx,            // (N, C), overwritten
                        T* dweight,       // (C), +=
                        T* dbias,         // (C), +=
                        const T* dout,    // (N, C)
                        const T* x,       // (N, C)
                        const T* weight,  // (C)
                        const T* mean,    // (N), from layernorm_forward
                        const T* rstd,    // (N), from layernorm_forward
                        int64_t N, int64_t C);

template <typename T>
void rmsnorm_forward(T* out,           // (N, C)
                     T* rstd,          // (N), saved for backward
                     const T* x,       // (N, C)
                     const T* weight,  // (C)
                     int64_t N, int64_t C, T eps);

template <typename T>
void rmsnorm_backward(T* dx,            // (N, C), overwritten
                      T* dweight,       // (C), +=
                      const T* dout,    // (N, C)
                      const T* x,       // (N, C)
                      const T* weight,  // (C)
                      const T* rstd,    // (N), from rmsnorm_forward
                      int64_t N, int64_t C);

}  // namespace sy::ops
