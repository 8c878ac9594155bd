// Row softmax, and the fused log-softmax + cross-entropy loss of the LM head.
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
// Reductions are summed in a fixed order, so results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace sy::ops {

// Target value that marks a row (padding, masked position) as excluded from the loss.
inline constexpr int32_t kIgnoreIndex = -1;

template <typename T>
void softmax_forward(T* probs,         // (N, V)
                     const T* logits,  // (N, V)
                     int64_t N, int64_t V);

// dlogits may alias dprobs (each row is read before it is written).
template <typename T>
void softmax_backward(T* dlogits,       // (N, V), overwritten
                      const T* probs,   // (N, V), the forward output
                      const T* dprobs,  // (N, V)
                      int64_t N, int64_t V);

// Returns the mean loss over rows whose target is not kIgnoreIndex (accumulated in
// double). losses, when given, receives each row's loss (0 on ignored rows).
// Targets must be kIgnoreIndex or in [0, V); anything else throws InvalidArgument.
template <typename T>
T cross_entropy_forward(T* losses,                // (N) or nullptr
                        const T* logits,          // (N, V)
                        const int32_t* targets,   // (N)
                        int64_t N, int64_t V);

// Gradient of dloss * (mean loss) with respect to the logits; recomputes the
// softmax from the logits, so nothing but the inputs needs to be kept.
template <typename T>
void cross_entropy_backward(T* dlogits,              // (N, V), overwritten
                            const T* logits,         // (N, V)
                            const int32_t* targets,  // (N)
                            T dloss,                 // scalar: d(total loss) / d(mean loss)
                            int64_t N, int64_t V);

}  // namespace sy::ops
