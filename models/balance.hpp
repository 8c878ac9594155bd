// Balancing losses of one MoE layer (DESIGN.md section 6).
//
// With L logits seen by the router (E, or E + m null experts; 0 for hash),
// token-slot counts c_i (selections before capacity drops; null slots count for
// their null expert) and probabilities P:
//   f_i = c_i / sum_j c_j            (= c_i / (T * k) for fixed-k routers; 0 when no slot)
//   P_i = mean over tokens of probs[t, i]
//   balance = balance_coeff * L * sum_i f_i * P_i
// Kinds (moe.balance):
//   micro     counts and P from this micro-batch;
//   global    this micro-batch's counts are summed over ranks holding different
//             tokens (the count hook; identity on one rank) and added into a
//             per-layer buffer over the micro-batches since the last reset();
//             f comes from the buffer (normalized by its sum), P stays local;
//   sequence  f and P per sequence of seq_len tokens (T must be a multiple),
//             the per-sequence losses averaged;
//   none      no balance loss (counts are still accumulated, see below).
// null_experts router: before the loss, the f of the m null experts (ids
// E..E+m-1) is replaced by their mean, so the loss does not push load around
// among null experts (AdaMoE).
//   z_loss = z_loss_coeff * mean_t lse_t^2,  lse_t = logsumexp(logits[t, :])
// The z-loss is independent of the balance kind (its own coefficient).
//
// Gradients (loss weight 1; f is a constant, counts have no gradient):
//   dprobs[t, i]  += balance_coeff * L * f_i / T    (f of t's sequence for sequence;
//                                                   T is still the micro-batch's tokens)
//   dlogits[t, i] += z_loss_coeff * 2 * lse_t * softmax(logits[t, :])_i / T
// Both are accumulated (+=): the router's own losses share the same buffers.
//
// Step counts (for the sigmoid_bias aux-loss-free update): every call adds its
// counts into accumulated_counts(), whatever the kind. For global the added
// counts are already reduced over ranks (the hook runs once per micro-batch);
// for every other kind they are this rank's own, and reduced_step_counts()
// applies the hook once, at the optimizer step, before reset().
//
// All sums are taken in double in a fixed order (deterministic). Every buffer
// is sized at construction: forward_backward allocates nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "models/router.hpp"

namespace sy::moe {

struct BalanceParts {
  double balance = 0.0;  // coefficient applied
  double z = 0.0;        // coefficient applied
};

// Sums counts (n values) in place over every rank that holds different tokens
// (data- and expert-parallel ranks, not tensor-parallel peers). It is a
// collective: every such rank must reach it the same number of times.
using CountReduceHook = std::function<void(double* counts, int n)>;

template <typename T>
class Balancer {
 public:
  // E = config.num_experts; L = num_logits() follows config.router (E + m for
  // null_experts, 0 for hash, E otherwise). seq_len: tokens per sequence, must
  // be positive when config.balance is sequence. Throws InvalidArgument.
  Balancer(const MoeConfig& config, int64_t seq_len);

  // An empty hook (the default) is the identity: one rank.
  void set_count_reduce_hook(CountReduceHook hook) { reduce_ = std::move(hook); }

  // Loss values for this micro-batch; adds their gradients (loss weight 1):
  //   dprobs  (T, L) += d(balance)/d(probs)   (may be null when kind is none or balance_coeff is 0)
  //   dlogits (T, L) += d(z)/d(logits)        (may be null when logits is null or z_loss_coeff is 0)
  // logits (T, L) may be null for routers without learned logits (then z = 0).
  // routing.num_logits must equal num_logits(). For hash (L = 0) every loss is 0
  // and nothing is read or written. For global the count hook is called exactly
  // once per call (also when T = 0), so ranks stay in step.
  BalanceParts forward_backward(const RouterOutput<T>& routing, const T* logits, T* dprobs, T* dlogits);

  // Token-slot counts per logit (L) added by every call since the last reset():
  // reduced over ranks for global, this rank's own for the other kinds.
  const std::vector<double>& accumulated_counts() const { return accumulated_; }
  // The step's counts (L) summed over micro-batches and ranks, for the
  // sigmoid_bias bias update. global: accumulated_counts() as is (no hook call);
  // other kinds: a copy of accumulated_counts() passed through the hook once.
  // Call it once per optimizer step on every rank (the hook is a collective),
  // before reset(). The reference stays valid until the next call.
  const std::vector<double>& reduced_step_counts();
  // Called by the optimizer step: clears the buffer, starts a new global batch.
  void reset();

  // f (L) of the last call, after null-expert averaging: the buffer's for
  // global, the micro-batch's for micro, none and sequence (for sequence the
  // loss used per-sequence f; this is the micro-batch-wide one, for metrics).
  const std::vector<double>& last_fraction() const { return fraction_; }
  int num_logits() const { return num_logits_; }
  BalanceKind kind() const { return kind_; }

 private:
  // Fills fraction_ from counts (L) and averages the null experts' share.
  void fraction_from(const std::vector<double>& counts, std::vector<double>& fraction) const;
  // coeff * L * sum_i f_i * mean_{t in [t0, t1)} probs[t, i]; adds the gradient
  // with denominator grad_tokens when dprobs is non-null.
  double balance_rows(const T* probs, int64_t t0, int64_t t1, const std::vector<double>& fraction,
                      int64_t grad_tokens, T* dprobs);
  double z_loss(const T* logits, int64_t num_tokens, T* dlogits) const;

  BalanceKind kind_;
  double balance_coeff_, z_coeff_;
  int num_experts_;  // E
  int num_null_;     // m (0 unless router = null_experts)
  int num_logits_;   // L
  int64_t seq_len_;

  std::vector<double> accumulated_;  // (L) counts since reset()
  std::vector<double> counts_;       // (L) this micro-batch's counts
  std::vector<double> reduced_;      // (L) this micro-batch's counts after the hook (global)
  std::vector<double> step_counts_;  // (L) reduced_step_counts() for non-global kinds
  std::vector<double> fraction_;     // (L) f of the last call
  std::vector<double> seq_counts_;   // (L) one sequence's counts (sequence)
  std::vector<double> seq_fraction_; // (L) one sequence's f (sequence)
  std::vector<double> prob_mean_;    // (L) P scratch
  CountReduceHook reduce_;
};

}  // namespace sy::moe
