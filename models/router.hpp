// Routers: which experts each token goes to, and with what combine weight.
//
// A router maps logits (T, L) to a RouterOutput: probabilities (T, L) that the
// balancing losses read, and for every token its chosen slots (expert, weight,
// score) in CSR form. L = num_logits(): E for most routers, E + m with m null
// experts, 0 for hash (no learned router). Experts with id >= E are null
// experts: they output zero and cost nothing.
//
// Backward is split in two so every loss shares one path to the logits:
//   weight_backward: dweight (S) -> dprobs (T, L)  (+=)
//   aux_loss:        router-specific loss (entropy of topp) -> dprobs (+=)
//   probs_backward:  dprobs (T, L) -> dlogits (T, L)  (overwritten)
// Everything is templated on the scalar (float for training, double for the
// finite-difference tests) and deterministic: same logits, same decisions.
//
// Adding a router: one file in models/routers/ plus one line in
// models/routers/registry.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace sy {
struct MoeConfig;
}

namespace sy::moe {

template <typename T>
struct RouterOutput {
  int64_t num_tokens = 0;             // T
  int num_logits = 0;                 // L
  std::vector<T> probs;               // (T, L) softmax or sigmoid of the logits; empty for hash
  std::vector<int64_t> token_begin;   // (T + 1) slots of token t: [token_begin[t], token_begin[t + 1])
  std::vector<int32_t> expert;        // (S) chosen expert in [0, L) (or [0, E) for hash); >= E: a null expert
  std::vector<T> weight;              // (S) combine weight of the slot
  std::vector<T> score;               // (S) priority when capacity drops by score (higher is kept)

  int64_t num_slots() const { return token_begin.empty() ? 0 : token_begin[num_tokens]; }
};

template <typename T>
class Router {
 public:
  virtual ~Router() = default;
  virtual std::string name() const = 0;
  // Logits per token the router reads (the router weight has this many rows).
  virtual int num_logits() const = 0;
  // True when the logits come from a learned weight (false for hash).
  virtual bool learned() const { return num_logits() > 0; }

  // logits: (T, L); token_ids: (T) (used by hash, may be null otherwise);
  // expert_capacity: tokens per expert (used by expert_choice).
  // Fills out; reuses its vectors' capacity (no allocation once warmed up).
  virtual void route(const T* logits, const int32_t* token_ids, int64_t num_tokens, int64_t expert_capacity,
                     RouterOutput<T>& out) = 0;

  // dprobs (T, L) += d(loss)/d(probs) through the combine weights, given dweight (S).
  virtual void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const = 0;

  // Router-specific auxiliary loss (value returned, already multiplied by its
  // coefficient); its gradient is added to dprobs (T, L). Default: none.
  virtual double aux_loss(const RouterOutput<T>& out, T* dprobs) const {
    (void)out;
    (void)dprobs;
    return 0.0;
  }

  // dlogits (T, L) = d(loss)/d(logits) given dprobs (T, L) (overwritten).
  virtual void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const = 0;

  // Aux-loss-free balancing (sigmoid_bias): called once per optimizer step with
  // the token-slot counts per expert (E), summed over micro-batches and ranks.
  virtual void update_bias(const double* counts_per_expert) { (void)counts_per_expert; }
  // The selection bias (E), empty for routers without one.
  virtual std::vector<double> bias() const { return {}; }
  // Restores the bias (a checkpoint); the size must match bias().
  virtual void set_bias(const std::vector<double>& bias) {
    SY_REQUIRE(bias.empty(), "router " << name() << " has no selection bias to set");
  }
};

// Builds the router named by config.router for num_experts real experts.
// Throws ConfigError naming the unknown router and listing the known ones.
template <typename T>
std::unique_ptr<Router<T>> make_router(const MoeConfig& config, uint64_t seed);

// Every registered router name, in registry order.
std::vector<std::string> router_names();

}  // namespace sy::moe
