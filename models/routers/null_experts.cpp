// null_experts (AdaMoE, Zeng et al. 2024): m extra experts (ids E .. E+m-1)
// that output zero and cost nothing. p = softmax over the L = E + m logits;
// each token takes its top k of L (slots in decreasing p, ties to the lower id).
// Null slots stay in the output, so the balancing loss counts them, with weight
// 0 (the layer skips them); score = p for every slot. A real slot's weight is
// p_j / S_R with S_R the sum of p over the token's chosen real experts
// (moe.normalize_weights), else p_j. A token thus uses 0..k real experts.
// Backward (over the real slots R only; null weights are constant):
//   raw: dp_j += dw_j;  renormalized: dp_j += (dw_j - sum_R dw_i w_i) / S_R;
// then the softmax backward over L (dlogits overwritten).
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class NullExpertsRouter final : public Router<T> {
 public:
  explicit NullExpertsRouter(const MoeConfig& c)
      : num_experts_(c.num_experts),
        num_logits_(c.num_experts + c.num_null_experts),
        k_(c.top_k),
        normalize_(c.normalize_weights),
        idx_(num_logits_),
        chosen_(c.top_k) {}

  std::string name() const override { return "null_experts"; }
  int num_logits() const override { return num_logits_; }

  void route(const T* logits, const int32_t*, int64_t num_tokens, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(num_tokens >= 0, "router null_experts: num_tokens must be >= 0, got " << num_tokens);
    SY_REQUIRE(logits != nullptr || num_tokens == 0, "router null_experts needs logits");
    const int L = num_logits_;
    detail::size_output(out, num_tokens, L, true, num_tokens * k_);
    detail::softmax_rows(logits, num_tokens, L, out.probs.data());
    for (int64_t t = 0; t < num_tokens; ++t) {
      const T* p = out.probs.data() + t * L;
      detail::top_k(p, L, k_, idx_.data(), chosen_.data());
      T real_sum = 0;
      for (int j = 0; j < k_; ++j)
        if (chosen_[j] < num_experts_) real_sum += p[chosen_[j]];
      const int64_t s0 = t * k_;
      for (int j = 0; j < k_; ++j) {
        const int e = chosen_[j];
        out.expert[s0 + j] = e;
        out.weight[s0 + j] = e >= num_experts_ ? T(0) : normalize_ ? p[e] / real_sum : p[e];
        out.score[s0 + j] = p[e];
      }
      out.token_begin[t + 1] = s0 + k_;
    }
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    detail::weight_backward_rows(out, dweight, num_experts_, normalize_, dprobs);
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_logits_, dlogits);
  }

 private:
  int num_experts_, num_logits_, k_;
  bool normalize_;
  std::vector<int> idx_;     // (L) top-k scratch
  std::vector<int> chosen_;  // (k)
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_null_experts(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.num_null_experts >= 1,
              "moe.num_null_experts = " << c.num_null_experts << ": router null_experts needs at least 1 null expert");
  SY_CHECK_AS(ConfigError, c.top_k >= 1 && c.top_k <= c.num_experts + c.num_null_experts,
              "moe.top_k = " << c.top_k
                             << ": router null_experts needs 1 <= moe.top_k <= moe.num_experts + moe.num_null_experts ("
                             << c.num_experts + c.num_null_experts << ")");
  return std::make_unique<NullExpertsRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_null_experts)

}  // namespace sy::moe
