// topk (GShard, Mixtral): p = softmax over the E experts; each token takes the
// k most probable (slots in decreasing p, ties to the lower expert id).
// weight = p, or p / S with S the sum of the k chosen p (moe.normalize_weights);
// score = p.
// Backward: raw: dp_j += dw_j; renormalized: dp_j += (dw_j - sum_i dw_i w_i) / S;
// then the softmax backward (dlogits overwritten).
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class TopKRouter final : public Router<T> {
 public:
  explicit TopKRouter(const MoeConfig& c)
      : num_experts_(c.num_experts),
        k_(c.top_k),
        normalize_(c.normalize_weights),
        idx_(c.num_experts),
        chosen_(c.top_k) {}

  std::string name() const override { return "topk"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t num_tokens, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(num_tokens >= 0, "router topk: num_tokens must be >= 0, got " << num_tokens);
    SY_REQUIRE(logits != nullptr || num_tokens == 0, "router topk needs logits");
    const int E = num_experts_;
    detail::size_output(out, num_tokens, E, true, num_tokens * k_);
    detail::softmax_rows(logits, num_tokens, E, out.probs.data());
    for (int64_t t = 0; t < num_tokens; ++t) {
      const T* p = out.probs.data() + t * E;
      detail::top_k(p, E, k_, idx_.data(), chosen_.data());
      T sum = 0;
      for (int j = 0; j < k_; ++j) sum += p[chosen_[j]];
      const int64_t s0 = t * k_;
      for (int j = 0; j < k_; ++j) {
        const int e = chosen_[j];
        out.expert[s0 + j] = e;
        out.weight[s0 + j] = normalize_ ? p[e] / sum : p[e];
        out.score[s0 + j] = p[e];
      }
      out.token_begin[t + 1] = s0 + k_;
    }
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    detail::weight_backward_rows(out, dweight, num_experts_, normalize_, dprobs);
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_experts_, dlogits);
  }

 private:
  int num_experts_, k_;
  bool normalize_;
  std::vector<int> idx_;     // (E) top-k scratch
  std::vector<int> chosen_;  // (k)
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_topk(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.top_k >= 1 && c.top_k <= c.num_experts,
              "moe.top_k = " << c.top_k << ": router topk needs 1 <= moe.top_k <= moe.num_experts (" << c.num_experts
                             << ")");
  return std::make_unique<TopKRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_topk)

}  // namespace sy::moe
