// null_experts (AdaMoE): m extra experts that output zero and cost nothing.
// Softmax and top-k run over E + m; null slots are kept in the output (the
// balancing loss counts them) with weight 0, and the weights of the real
// experts chosen are renormalized over the real ones, so a token uses 0..k
// real experts.
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class NullExpertsRouter : public Router<T> {
 public:
  explicit NullExpertsRouter(const MoeConfig& c)
      : num_experts_(c.num_experts),
        num_logits_(c.num_experts + c.num_null_experts),
        k_(c.top_k),
        normalize_(c.normalize_weights),
        idx_(num_logits_),
        chosen_(c.top_k) {
    SY_CHECK_AS(ConfigError, c.num_null_experts >= 1,
                "moe.num_null_experts = " << c.num_null_experts << ": router null_experts needs at least 1");
    SY_CHECK_AS(ConfigError, k_ >= 1 && k_ <= num_logits_,
                "moe.top_k = " << k_ << ": router null_experts needs 1 <= top_k <= num_experts + num_null_experts");
  }
  std::string name() const override { return "null_experts"; }
  int num_logits() const override { return num_logits_; }

  void route(const T* logits, const int32_t*, int64_t n, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(logits != nullptr, "router null_experts needs logits");
    const int L = num_logits_;
    detail::begin_output(out, n, L, true);
    detail::softmax_rows(logits, n, L, out.probs.data());
    for (int64_t t = 0; t < n; ++t) {
      const T* p = out.probs.data() + t * L;
      detail::top_k(p, L, k_, idx_.data(), chosen_.data());
      T real_sum = 0;
      for (int j = 0; j < k_; ++j)
        if (chosen_[j] < num_experts_) real_sum += p[chosen_[j]];
      for (int j = 0; j < k_; ++j) {
        const int e = chosen_[j];
        const bool real = e < num_experts_;
        out.expert.push_back(e);
        out.weight.push_back(!real ? T(0) : normalize_ ? p[e] / real_sum : p[e]);
        out.score.push_back(p[e]);
      }
      out.token_begin[t + 1] = static_cast<int64_t>(out.expert.size());
    }
  }

  // Over the real slots R of a token: w_j = p_j / S_R (normalized), so
  // dp_j = (dw_j - sum_{i in R} dw_i w_i) / S_R; null slots carry no gradient.
  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    const int L = num_logits_;
    for (int64_t t = 0; t < out.num_tokens; ++t) {
      const int64_t b = out.token_begin[t], e_end = out.token_begin[t + 1];
      T* dp = dprobs + t * L;
      const T* p = out.probs.data() + t * L;
      T sum = 0, dot = 0;
      for (int64_t s = b; s < e_end; ++s)
        if (out.expert[s] < num_experts_) {
          sum += p[out.expert[s]];
          dot += dweight[s] * out.weight[s];
        }
      for (int64_t s = b; s < e_end; ++s) {
        if (out.expert[s] >= num_experts_) continue;
        dp[out.expert[s]] += normalize_ ? (dweight[s] - dot) / sum : dweight[s];
      }
    }
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_logits_, dlogits);
  }

 private:
  int num_experts_, num_logits_, k_;
  bool normalize_;
  std::vector<int> idx_, chosen_;
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_null_experts(const MoeConfig& c, uint64_t) {
  return std::make_unique<NullExpertsRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_null_experts)

}  // namespace sy::moe
