// hash (Roller et al. 2021): no learned router (L = 0, no probabilities).
// expert = splitmix64(token id) mod E with weight = score = 1 (core/rng.hpp:
// golden-ratio increment, then the finalizer), so consecutive ids land on
// unrelated experts. Backward: nothing to do.
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

template <typename T>
class HashRouter final : public Router<T> {
 public:
  explicit HashRouter(const MoeConfig& c) : num_experts_(c.num_experts) {}

  std::string name() const override { return "hash"; }
  int num_logits() const override { return 0; }
  bool learned() const override { return false; }

  void route(const T*, const int32_t* token_ids, int64_t num_tokens, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(num_tokens >= 0, "router hash: num_tokens must be >= 0, got " << num_tokens);
    SY_REQUIRE(token_ids != nullptr, "router hash routes by token id: token_ids must not be null");
    detail::size_output(out, num_tokens, 0, false, num_tokens);
    for (int64_t t = 0; t < num_tokens; ++t) {
      // Through uint32 first, so a negative id maps like its 32-bit pattern.
      const uint64_t id = static_cast<uint32_t>(token_ids[t]);
      out.expert[t] = static_cast<int32_t>(splitmix64(id) % static_cast<uint64_t>(num_experts_));
      out.weight[t] = T(1);
      out.score[t] = T(1);
      out.token_begin[t + 1] = t + 1;
    }
  }

  void weight_backward(const RouterOutput<T>&, const T*, T*) const override {}
  void probs_backward(const RouterOutput<T>&, const T*, T*) const override {}

 private:
  int num_experts_;
};

}  // namespace

template <typename T>
std::unique_ptr<Router<T>> make_hash(const MoeConfig& c, uint64_t) {
  SY_CHECK_AS(ConfigError, c.top_k == 1,
              "moe.top_k = " << c.top_k << ": router hash sends each token to one expert, set moe.top_k = 1");
  return std::make_unique<HashRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_hash)

}  // namespace sy::moe
