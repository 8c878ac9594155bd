// topp ("Harder Tasks Need More Experts"): per token, the most probable
// experts until their probabilities sum to at least moe.top_p (the crossing
// expert included), combined with the raw probabilities. An entropy loss
// (moe.entropy_coeff) keeps the distribution sharp, so easy tokens use few experts.
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class TopPRouter : public Router<T> {
 public:
  explicit TopPRouter(const MoeConfig& c)
      : num_experts_(c.num_experts), top_p_(c.top_p), entropy_coeff_(c.entropy_coeff), idx_(c.num_experts) {
    SY_CHECK_AS(ConfigError, top_p_ > 0 && top_p_ <= 1, "moe.top_p = " << top_p_ << ": expected a value in (0, 1]");
  }
  std::string name() const override { return "topp"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t n, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(logits != nullptr, "router topp needs logits");
    const int E = num_experts_;
    detail::begin_output(out, n, E, true);
    detail::softmax_rows(logits, n, E, out.probs.data());
    for (int64_t t = 0; t < n; ++t) {
      const T* p = out.probs.data() + t * E;
      std::iota(idx_.begin(), idx_.end(), 0);
      std::stable_sort(idx_.begin(), idx_.end(), [&](int a, int b) { return p[a] > p[b]; });
      // Slots in order of decreasing probability; the one crossing top_p is kept.
      T cum = 0;
      for (int j = 0; j < E; ++j) {
        const int e = idx_[j];
        out.expert.push_back(e);
        out.weight.push_back(p[e]);
        out.score.push_back(p[e]);
        cum += p[e];
        if (cum >= T(top_p_)) break;
      }
      out.token_begin[t + 1] = static_cast<int64_t>(out.expert.size());
    }
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    for (int64_t t = 0; t < out.num_tokens; ++t)
      for (int64_t s = out.token_begin[t]; s < out.token_begin[t + 1]; ++s)
        dprobs[t * num_experts_ + out.expert[s]] += dweight[s];
  }

  // entropy_coeff * mean_t H(p_t), H = -sum p log p; dH/dp_i = -(log p_i + 1).
  double aux_loss(const RouterOutput<T>& out, T* dprobs) const override {
    if (entropy_coeff_ == 0.0 || out.num_tokens == 0) return 0.0;
    const int E = num_experts_;
    const T scale = T(entropy_coeff_ / double(out.num_tokens));
    double total = 0;
    for (int64_t t = 0; t < out.num_tokens; ++t)
      for (int i = 0; i < E; ++i) {
        const T p = out.probs[t * E + i];
        if (p <= T(0)) continue;
        const T lp = std::log(p);
        total -= double(p * lp);
        dprobs[t * E + i] += -scale * (lp + T(1));
      }
    return entropy_coeff_ * total / double(out.num_tokens);
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_experts_, dlogits);
  }

 private:
  int num_experts_;
  double top_p_, entropy_coeff_;
  std::vector<int> idx_;
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_topp(const MoeConfig& c, uint64_t) {
  return std::make_unique<TopPRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_topp)

}  // namespace sy::moe
