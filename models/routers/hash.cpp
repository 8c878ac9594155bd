// hash (Roller et al. 2021): expert = mix(token id) mod E, no learned router,
// weight 1. The mix is the splitmix64 finalizer, so neighbouring ids spread.
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/routers/common.hpp"
#include "models/routers/registry.hpp"

namespace sy::moe {

namespace {

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
class HashRouter : public Router<T> {
 public:
  explicit HashRouter(const MoeConfig& c) : num_experts_(c.num_experts) {}
  std::string name() const override { return "hash"; }
  int num_logits() const override { return 0; }

  void route(const T*, const int32_t* token_ids, int64_t n, int64_t, RouterOutput<T>& out) override {
    SY_REQUIRE(token_ids != nullptr, "router hash needs the token ids");
    detail::begin_output(out, n, 0, false);
    for (int64_t t = 0; t < n; ++t) {
      out.expert.push_back(static_cast<int32_t>(mix(static_cast<uint64_t>(token_ids[t])) % uint64_t(num_experts_)));
      out.weight.push_back(T(1));
      out.score.push_back(T(1));
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
  SY_CHECK_AS(ConfigError, c.top_k == 1, "moe.top_k = " << c.top_k << ": router hash sends each token to 1 expert");
  return std::make_unique<HashRouter<T>>(c);
}

SY_INSTANTIATE_ROUTER_FACTORY(make_hash)

}  // namespace sy::moe
