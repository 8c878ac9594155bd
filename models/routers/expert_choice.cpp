// expert_choice (Zhou et al. 2022): every expert takes the `capacity` tokens
// that prefer it most (probs[:, e] of the per-token softmax); a token may get
// 0..E experts. Weights are the raw probabilities.
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class ExpertChoiceRouter : public Router<T> {
 public:
  explicit ExpertChoiceRouter(const MoeConfig& c) : num_experts_(c.num_experts) {}
  std::string name() const override { return "expert_choice"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t n, int64_t capacity, RouterOutput<T>& out) override {
    SY_REQUIRE(logits != nullptr, "router expert_choice needs logits");
    SY_REQUIRE(capacity >= 0, "expert_choice capacity must be non-negative, got " << capacity);
    const int E = num_experts_;
    detail::begin_output(out, n, E, true);
    detail::softmax_rows(logits, n, E, out.probs.data());
    const int64_t take = std::min<int64_t>(capacity, n);
    // chosen_[t * E + e]: expert e took token t.
    chosen_.assign(n * E, 0);
    order_.resize(n);
    for (int e = 0; e < E; ++e) {
      std::iota(order_.begin(), order_.end(), int64_t(0));
      const T* p = out.probs.data();
      std::partial_sort(order_.begin(), order_.begin() + take, order_.end(), [&](int64_t a, int64_t b) {
        return p[a * E + e] > p[b * E + e] || (p[a * E + e] == p[b * E + e] && a < b);
      });
      for (int64_t j = 0; j < take; ++j) chosen_[order_[j] * E + e] = 1;
    }
    for (int64_t t = 0; t < n; ++t) {
      for (int e = 0; e < E; ++e)
        if (chosen_[t * E + e]) {
          const T p = out.probs[t * E + e];
          out.expert.push_back(e);
          out.weight.push_back(p);
          out.score.push_back(p);
        }
      out.token_begin[t + 1] = static_cast<int64_t>(out.expert.size());
    }
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    for (int64_t t = 0; t < out.num_tokens; ++t)
      for (int64_t s = out.token_begin[t]; s < out.token_begin[t + 1]; ++s)
        dprobs[t * num_experts_ + out.expert[s]] += dweight[s];
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_experts_, dlogits);
  }

 private:
  int num_experts_;
  std::vector<char> chosen_;
  std::vector<int64_t> order_;
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_expert_choice(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.capacity_factor > 0,
              "moe.capacity_factor = " << c.capacity_factor << ": router expert_choice needs a capacity factor > 0");
  return std::make_unique<ExpertChoiceRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_expert_choice)

}  // namespace sy::moe
