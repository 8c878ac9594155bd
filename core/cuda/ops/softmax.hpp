// CUDA row softmax and the fused log-softmax + cross-entropy loss of the LM
// head; the CPU ops of core/ops/softmax.hpp are the specification (same names
// and arguments plus a stream; the differences are listed at each function).
//
// Softmax over the last dimension, numerically stable (row max subtracted):
//   p[n, v] = exp(x[n, v] - m_n) / sum_u exp(x[n, u] - m_n),  m_n = max_u x[n, u]
//   dx[n, v] = p[n, v] (dp[n, v] - sum_u p[n, u] dp[n, u])
// Cross-entropy with targets t_n (t_n == kIgnoreIndex rows are skipped):
//   loss_n = logsumexp(x[n, :]) - x[n, t_n]
//   loss   = (1 / K) sum_{n not ignored} loss_n,  K = number of rows not ignored
//   dx[n, v] = dloss / K * (p[n, v] - [v == t_n]),  0 on ignored rows
// With no row left (K = 0) the loss and its gradient are 0.
// Activation gradients (dlogits) are overwritten; there are no parameters.
//
// Storage T is float, __nv_bfloat16 or __half; compute is fp32, the loss sum
// fp64. One block per row (core/cuda/launch.hpp launch_rows), its threads
// striding over the V columns, so rows of any width work; row reductions are
// a fixed shuffle tree and the loss mean is summed by one block in a fixed
// order: results are bitwise reproducible run to run (for a given N, V).
//
// Targets live on the device, so they are not validated here the way the CPU
// op validates them (it throws): a target outside [0, V) that is not
// kIgnoreIndex is never used as an index; it makes that row's loss (and so the
// mean loss) and that row's gradient NaN, which the trainer's non-finite loss
// check reports. Validate targets on the host when the exception is wanted.
//
// Sizes N >= 0 (V > 0 for the cross-entropy); all pointers are device pointers;
// the ops are asynchronous on `stream` and never synchronize.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"
#include "core/ops/softmax.hpp"

namespace sy::cuda::ops {

// Target value that marks a row as excluded from the loss (the CPU op's).
inline constexpr int32_t kIgnoreIndex = sy::ops::kIgnoreIndex;

template <typename T>
void softmax_forward(T* probs,         // (N, V)
                     const T* logits,  // (N, V)
                     int64_t N, int64_t V, cudaStream_t stream);

// dlogits may alias dprobs (each element is read before it is written, by one thread).
template <typename T>
void softmax_backward(T* dlogits,       // (N, V), overwritten
                      const T* probs,   // (N, V), the forward output
                      const T* dprobs,  // (N, V)
                      int64_t N, int64_t V, cudaStream_t stream);

// The CPU op returns the mean loss; this one writes it, in fp32, to the device
// scalar `loss` (0 when N == 0 or every row is ignored). losses, when given,
// receives each row's loss rounded to T (0 on ignored rows). row_scratch holds the
// fp32 per-row losses between the row kernel and the fixed-order sum (the op
// allocates nothing).
template <typename T>
void cross_entropy_forward(float* loss,             // (1), device scalar, overwritten
                           T* losses,               // (N) or nullptr
                           const T* logits,         // (N, V)
                           const int32_t* targets,  // (N)
                           int64_t N, int64_t V,
                           float* row_scratch,      // (N) fp32 device scratch
                           cudaStream_t stream);

// Gradient of dloss * (mean loss) with respect to the logits; recomputes the
// softmax from the logits. dloss is a host float (the CPU op's T dloss). K is
// counted on the device into scale_scratch (it then holds dloss / K).
template <typename T>
void cross_entropy_backward(T* dlogits,              // (N, V), overwritten
                            const T* logits,         // (N, V)
                            const int32_t* targets,  // (N)
                            float dloss,             // scalar: d(total loss) / d(mean loss)
                            int64_t N, int64_t V,
                            float* scale_scratch,    // (1) fp32 device scratch
                            cudaStream_t stream);

}  // namespace sy::cuda::ops
