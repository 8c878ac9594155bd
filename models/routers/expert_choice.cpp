// expert_choice (Zhou et al. 2022): p = softmax over the E experts per token
// (T, E); each expert takes the expert_capacity tokens with the largest
// p[:, e] (ties to the lower token index; every token when there are fewer),
// so a token gets 0..E experts. A token's slots are in expert order;
// weight = score = p[t, e], not renormalized.
// Backward: dp[t, e] += dw, then the softmax backward (dlogits overwritten).
#include <algorithm>
#include <numeric>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class ExpertChoiceRouter final : public Router<T> {
 public:
  explicit ExpertChoiceRouter(const MoeConfig& c) : num_experts_(c.num_experts) {}

  std::string name() const override { return "expert_choice"; }
  int num_logits() const override { return num_experts_; }

  void route(const T* logits, const int32_t*, int64_t num_tokens, int64_t expert_capacity,
             RouterOutput<T>& out) override {
    SY_REQUIRE(num_tokens >= 0, "router expert_choice: num_tokens must be >= 0, got " << num_tokens);
    SY_REQUIRE(logits != nullptr || num_tokens == 0, "router expert_choice needs logits");
    SY_REQUIRE(expert_capacity >= 0, "router expert_choice: expert_capacity must be >= 0, got " << expert_capacity);
    const int E = num_experts_;
    const int64_t take = std::min(expert_capacity, num_tokens);
    detail::size_output(out, num_tokens, E, true, E * take);
    detail::softmax_rows(logits, num_tokens, E, out.probs.data());
    const T* p = out.probs.data();

    // picked_[e * take + j]: the j-th token expert e takes.
    order_.resize(size_t(num_tokens));
    picked_.resize(size_t(E * take));
    std::fill(out.token_begin.begin(), out.token_begin.end(), int64_t(0));
    for (int e = 0; e < E; ++e) {
      std::iota(order_.begin(), order_.end(), int64_t(0));
      std::partial_sort(order_.begin(), order_.begin() + take, order_.end(), [p, E, e](int64_t a, int64_t b) {
        return p[a * E + e] > p[b * E + e] || (p[a * E + e] == p[b * E + e] && a < b);
      });
      for (int64_t j = 0; j < take; ++j) {
        picked_[e * take + j] = order_[j];
        ++out.token_begin[order_[j] + 1];
      }
    }
    for (int64_t t = 0; t < num_tokens; ++t) out.token_begin[t + 1] += out.token_begin[t];
    // Fill each token's slots expert by expert, so they come out in expert order;
    // order_ now holds each token's next free slot.
    std::copy(out.token_begin.begin(), out.token_begin.end() - 1, order_.begin());
    for (int e = 0; e < E; ++e)
      for (int64_t j = 0; j < take; ++j) {
        const int64_t t = picked_[e * take + j];
        const int64_t s = order_[t]++;
        out.expert[s] = e;
        out.weight[s] = p[t * E + e];
        out.score[s] = p[t * E + e];
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
  std::vector<int64_t> order_;   // (T) token order for one expert, then next free slot per token
  std::vector<int64_t> picked_;  // (E, min(C, T)) tokens each expert takes
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_expert_choice(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.capacity_factor > 0,
              "moe.capacity_factor = " << c.capacity_factor
                                       << ": router expert_choice needs a fixed capacity, set moe.capacity_factor > 0");
  return std::make_unique<ExpertChoiceRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_expert_choice)

}  // namespace sy::moe
