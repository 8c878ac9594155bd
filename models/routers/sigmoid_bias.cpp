// sigmoid_bias (DeepSeek-V3, aux-loss-free balancing): scores s = sigmoid(logits);
// the k experts with the largest s + bias are chosen; weights are s over the
// chosen (renormalized with moe.normalize_weights). The bias only changes
// which experts are chosen; once per optimizer step it moves toward balance:
// bias_i += rate * sign(mean load - load_i).
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class SigmoidBiasRouter : public Router<T> {
 public:
  explicit SigmoidBiasRouter(const MoeConfig& c)
      : num_experts_(c.num_experts),
        k_(c.top_k),
        normalize_(c.normalize_weights),
        rate_(c.bias_update_rate),
        bias_(c.num_experts, 0.0),
        key_(c.num_experts),
        idx_(c.num_experts),
        chosen_(c.top_k) {
    SY_CHECK_AS(ConfigError, k_ >= 1 && k_ <= num_experts_,
                "moe.top_k = " << k_ << ": router sigmoid_bias needs 1 <= top_k <= moe.num_experts");
  }
  std::string name() const override { return "sigmoid_bias"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t n, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(logits != nullptr, "router sigmoid_bias needs logits");
    const int E = num_experts_;
    detail::begin_output(out, n, E, true);
    for (int64_t i = 0; i < n * E; ++i) out.probs[i] = T(1) / (T(1) + std::exp(-logits[i]));
    for (int64_t t = 0; t < n; ++t) {
      const T* s = out.probs.data() + t * E;
      for (int e = 0; e < E; ++e) key_[e] = double(s[e]) + bias_[e];
      detail::top_k(key_.data(), E, k_, idx_.data(), chosen_.data());
      T sum = 0;
      for (int j = 0; j < k_; ++j) sum += s[chosen_[j]];
      for (int j = 0; j < k_; ++j) {
        const int e = chosen_[j];
        out.expert.push_back(e);
        out.weight.push_back(normalize_ ? s[e] / sum : s[e]);
        out.score.push_back(s[e]);
      }
      out.token_begin[t + 1] = static_cast<int64_t>(out.expert.size());
    }
  }

  void weight_backward(const RouterOutput<T>& out, const T* dweight, T* dprobs) const override {
    const int E = num_experts_;
    for (int64_t t = 0; t < out.num_tokens; ++t) {
      const int64_t b = out.token_begin[t], e_end = out.token_begin[t + 1];
      T* dp = dprobs + t * E;
      if (!normalize_) {
        for (int64_t s = b; s < e_end; ++s) dp[out.expert[s]] += dweight[s];
        continue;
      }
      const T* p = out.probs.data() + t * E;
      T sum = 0, dot = 0;
      for (int64_t s = b; s < e_end; ++s) sum += p[out.expert[s]];
      for (int64_t s = b; s < e_end; ++s) dot += dweight[s] * out.weight[s];
      for (int64_t s = b; s < e_end; ++s) dp[out.expert[s]] += (dweight[s] - dot) / sum;
    }
  }

  void probs_backward(const RouterOutput<T>& out, const T* dprobs, T* dlogits) const override {
    for (int64_t i = 0; i < out.num_tokens * num_experts_; ++i) {
      const T s = out.probs[i];
      dlogits[i] = dprobs[i] * s * (T(1) - s);
    }
  }

  void update_bias(const double* counts) override {
    double mean = 0;
    for (int e = 0; e < num_experts_; ++e) mean += counts[e];
    mean /= num_experts_;
    for (int e = 0; e < num_experts_; ++e) {
      const double gap = mean - counts[e];
      bias_[e] += rate_ * double((gap > 0) - (gap < 0));
    }
  }
  std::vector<double> bias() const override { return bias_; }

 private:
  int num_experts_, k_;
  bool normalize_;
  double rate_;
  std::vector<double> bias_, key_;
  std::vector<int> idx_, chosen_;
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_sigmoid_bias(const MoeConfig& c, uint64_t) {
  return std::make_unique<SigmoidBiasRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_sigmoid_bias)

}  // namespace sy::moe
