// switch (Switch Transformer): p = softmax over the E experts; each token goes
// to its most probable expert (ties to the lower id) with weight = score = p.
// The weight stays raw whatever moe.normalize_weights says: renormalizing a
// single weight would make it exactly 1 and cut the router off from the loss.
// (The optional jitter noise multiplies the router input; the MoE layer
// applies it before the logits are computed.)
// Backward: dp_j += dw_j, then the softmax backward (dlogits overwritten).
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class SwitchRouter final : public Router<T> {
 public:
  explicit SwitchRouter(const MoeConfig& c) : num_experts_(c.num_experts) {}

  std::string name() const override { return "switch"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t num_tokens, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(num_tokens >= 0, "router switch: num_tokens must be >= 0, got " << num_tokens);
    SY_REQUIRE(logits != nullptr || num_tokens == 0, "router switch needs logits");
    const int E = num_experts_;
    detail::size_output(out, num_tokens, E, true, num_tokens);
    detail::softmax_rows(logits, num_tokens, E, out.probs.data());
    for (int64_t t = 0; t < num_tokens; ++t) {
      const T* p = out.probs.data() + t * E;
      int best = 0;
      for (int e = 1; e < E; ++e)
        if (p[e] > p[best]) best = e;  // strict: a tie keeps the lower id
      out.expert[t] = best;
      out.weight[t] = p[best];
      out.score[t] = p[best];
      out.token_begin[t + 1] = t + 1;
    }
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    detail::weight_backward_rows(out, dweight, num_experts_, false, dprobs);
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_experts_, dlogits);
  }

 private:
  int num_experts_;
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_switch(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.top_k == 1,
              "moe.top_k = " << c.top_k << ": router switch sends each token to one expert, set moe.top_k = 1");
  return std::make_unique<SwitchRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_switch)

}  // namespace sy::moe
