// sigmoid_bias (DeepSeek-V3, aux-loss-free balancing): s = sigmoid(logits)
// elementwise (T, E); each token takes the k experts with the largest s + bias
// (slots in decreasing s + bias, ties to the lower id). The bias changes only
// the selection: weight = s_j / (sum of the chosen s) (moe.normalize_weights)
// else s_j; score = s_j.
// The bias starts at 0; once per optimizer step update_bias(counts) moves it
// toward balance: bias_i += bias_update_rate * sign(mean(counts) - counts_i).
// Backward: raw: ds_j += dw_j; renormalized: ds_j += (dw_j - sum_i dw_i w_i) / S;
// then dlogits = ds * s * (1 - s) (overwritten).
#include <cmath>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class SigmoidBiasRouter final : public Router<T> {
 public:
  explicit SigmoidBiasRouter(const MoeConfig& c)
      : num_experts_(c.num_experts),
        k_(c.top_k),
        normalize_(c.normalize_weights),
        rate_(c.bias_update_rate),
        bias_(c.num_experts, 0.0),
        key_(c.num_experts),
        idx_(c.num_experts),
        chosen_(c.top_k) {}

  std::string name() const override { return "sigmoid_bias"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t num_tokens, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(num_tokens >= 0, "router sigmoid_bias: num_tokens must be >= 0, got " << num_tokens);
    SY_REQUIRE(logits != nullptr || num_tokens == 0, "router sigmoid_bias needs logits");
    const int E = num_experts_;
    detail::size_output(out, num_tokens, E, true, num_tokens * k_);
    for (int64_t i = 0; i < num_tokens * E; ++i) out.probs[i] = T(1) / (T(1) + std::exp(-logits[i]));
    for (int64_t t = 0; t < num_tokens; ++t) {
      const T* s = out.probs.data() + t * E;
      for (int e = 0; e < E; ++e) key_[e] = double(s[e]) + bias_[e];
      detail::top_k(key_.data(), E, k_, idx_.data(), chosen_.data());
      T sum = 0;
      for (int j = 0; j < k_; ++j) sum += s[chosen_[j]];
      const int64_t s0 = t * k_;
      for (int j = 0; j < k_; ++j) {
        const int e = chosen_[j];
        out.expert[s0 + j] = e;
        out.weight[s0 + j] = normalize_ ? s[e] / sum : s[e];
        out.score[s0 + j] = s[e];
      }
      out.token_begin[t + 1] = s0 + k_;
    }
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    detail::weight_backward_rows(out, dweight, num_experts_, normalize_, dprobs);
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    for (int64_t i = 0; i < out.num_tokens * num_experts_; ++i) {
      const T s = out.probs[i];
      dlogits[i] = dprobs[i] * s * (T(1) - s);
    }
  }

  void update_bias(const double* counts_per_expert) override {
    SY_REQUIRE(counts_per_expert != nullptr, "router sigmoid_bias: update_bias needs the counts per expert");
    double mean = 0;
    for (int e = 0; e < num_experts_; ++e) mean += counts_per_expert[e];
    mean /= num_experts_;
    for (int e = 0; e < num_experts_; ++e) {
      const double gap = mean - counts_per_expert[e];
      bias_[e] += rate_ * double((gap > 0) - (gap < 0));
    }
  }

  std::vector<double> bias() const override { return bias_; }
  void set_bias(const std::vector<double>& bias) override {
    SY_REQUIRE(bias.size() == bias_.size(), "router sigmoid_bias: set_bias got " << bias.size() << " values for "
                                                                                 << bias_.size() << " experts");
    bias_ = bias;
  }

 private:
  int num_experts_, k_;
  bool normalize_;
  double rate_;
  std::vector<double> bias_;  // (E) selection bias
  std::vector<double> key_;   // (E) s + bias of one token
  std::vector<int> idx_;      // (E) top-k scratch
  std::vector<int> chosen_;   // (k)
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_sigmoid_bias(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.top_k >= 1 && c.top_k <= c.num_experts,
              "moe.top_k = " << c.top_k << ": router sigmoid_bias needs 1 <= moe.top_k <= moe.num_experts ("
                             << c.num_experts << ")");
  SY_CHECK_AS(ConfigError, c.bias_update_rate >= 0,
              "moe.bias_update_rate = " << c.bias_update_rate << ": expected a value >= 0");
  return std::make_unique<SigmoidBiasRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_sigmoid_bias)

}  // namespace sy::moe
