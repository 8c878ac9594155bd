// topp ("Harder Tasks Need More Experts", Huang et al. 2024): p = softmax over
// the E experts; per token, the experts in decreasing p (ties to the lower id)
// up to and including the one whose cumulative sum first reaches moe.top_p, so
// a peaked token uses few experts and a flat one many. weight = score = p (raw).
// Aux loss: entropy_coeff * mean_t H(p_t), H = -sum_i p_i log p_i (p = 0 adds
// nothing), which keeps the router sharp; dH/dp_i = -(log p_i + 1).
// Backward: dp[t, e] += dw and the entropy term, then the softmax backward.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class TopPRouter final : public Router<T> {
 public:
  explicit TopPRouter(const MoeConfig& c)
      : num_experts_(c.num_experts), top_p_(c.top_p), entropy_coeff_(c.entropy_coeff), idx_(c.num_experts) {}

  std::string name() const override { return "topp"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t num_tokens, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(num_tokens >= 0, "router topp: num_tokens must be >= 0, got " << num_tokens);
    SY_REQUIRE(logits != nullptr || num_tokens == 0, "router topp needs logits");
    const int E = num_experts_;
    // At most E slots per token; shrunk to the real count at the end (within capacity).
    detail::size_output(out, num_tokens, E, true, num_tokens * E);
    detail::softmax_rows(logits, num_tokens, E, out.probs.data());
    int64_t s = 0;
    for (int64_t t = 0; t < num_tokens; ++t) {
      const T* p = out.probs.data() + t * E;
      std::iota(idx_.begin(), idx_.end(), 0);
      std::sort(idx_.begin(), idx_.end(), [p](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
      double cumulative = 0;  // in double so float and double routers cut at the same place
      for (int j = 0; j < E; ++j, ++s) {
        const int e = idx_[j];
        out.expert[s] = e;
        out.weight[s] = p[e];
        out.score[s] = p[e];
        cumulative += double(p[e]);
        if (cumulative >= top_p_) {
          ++s;
          break;
        }
      }
      out.token_begin[t + 1] = s;
    }
    out.expert.resize(size_t(s));
    out.weight.resize(size_t(s));
    out.score.resize(size_t(s));
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    detail::weight_backward_rows(out, dweight, num_experts_, false, dprobs);
  }

  double aux_loss(const RouterOutput<T>& out, T* dprobs) const override {
    if (entropy_coeff_ == 0.0 || out.num_tokens == 0) return 0.0;
    const int E = num_experts_;
    const double scale = entropy_coeff_ / double(out.num_tokens);
    double entropy = 0;
    for (int64_t i = 0; i < out.num_tokens * E; ++i) {
      const T p = out.probs[i];
      if (!(p > T(0))) continue;  // lim p log p = 0; its gradient is left out with it
      const T log_p = std::log(p);
      entropy -= double(p) * double(log_p);
      dprobs[i] -= T(scale) * (log_p + T(1));
    }
    return scale * entropy;
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_experts_, dlogits);
  }

 private:
  int num_experts_;
  double top_p_, entropy_coeff_;
  std::vector<int> idx_;  // (E) experts of one token in decreasing p
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_topp(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.top_p > 0 && c.top_p <= 1,
              "moe.top_p = " << c.top_p << ": router topp needs a probability mass in (0, 1]");
  SY_CHECK_AS(ConfigError, c.entropy_coeff >= 0,
              "moe.entropy_coeff = " << c.entropy_coeff << ": expected a value >= 0");
  return std::make_unique<TopPRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_topp)

}  // namespace sy::moe
