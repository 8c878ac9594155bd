// topk (GShard, Mixtral): softmax over E experts, the k most probable chosen;
// combine weights p, or p renormalized over the k chosen (moe.normalize_weights).
// switch (Switch Transformer) is topk with k = 1 and raw weights.
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class TopKRouter : public Router<T> {
 public:
  TopKRouter(const MoeConfig& c, std::string name, int k, bool normalize)
      : name_(std::move(name)), num_experts_(c.num_experts), k_(k), normalize_(normalize), idx_(c.num_experts),
        chosen_(k) {
    SY_CHECK_AS(ConfigError, k_ >= 1 && k_ <= num_experts_,
                "moe.top_k = " << k_ << ": router " << name_ << " needs 1 <= top_k <= moe.num_experts ("
                               << num_experts_ << ")");
  }
  std::string name() const override { return name_; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t n, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(logits != nullptr, "router " << name_ << " needs logits");
    const int E = num_experts_;
    detail::begin_output(out, n, E, true);
    detail::softmax_rows(logits, n, E, out.probs.data());
    for (int64_t t = 0; t < n; ++t) {
      const T* p = out.probs.data() + t * E;
      detail::top_k(p, E, k_, idx_.data(), chosen_.data());
      T sum = 0;
      for (int j = 0; j < k_; ++j) sum += p[chosen_[j]];
      for (int j = 0; j < k_; ++j) {
        const int e = chosen_[j];
        out.expert.push_back(e);
        out.weight.push_back(normalize_ ? p[e] / sum : p[e]);
        out.score.push_back(p[e]);
      }
      out.token_begin[t + 1] = static_cast<int64_t>(out.expert.size());
    }
  }

  // Normalized: w_j = p_j / S, S = sum of the chosen p, so
  // dp_j = (dw_j - sum_i dw_i w_i) / S for the chosen j.
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
    detail::softmax_rows_backward(out.probs.data(), dprobs, out.num_tokens, num_experts_, dlogits);
  }

 private:
  std::string name_;
  int num_experts_, k_;
  bool normalize_;
  std::vector<int> idx_, chosen_;
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_topk(const MoeConfig& c, uint64_t) {
  return std::make_unique<TopKRouter<T>>(c, "topk", c.top_k, c.normalize_weights);
}

// Switch keeps the raw probability: renormalizing one weight would make it 1
// and cut the router off from the loss.
template <typename T>
std::unique_ptr<Router<T>> make_switch(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.top_k == 1, "moe.top_k = " << c.top_k << ": router switch routes each token to 1 expert");
  return std::make_unique<TopKRouter<T>>(c, "switch", 1, false);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_topk)
SY_INSTANTIATE_ROUTER_FACTORY(make_switch)

}  // namespace sy::moe
