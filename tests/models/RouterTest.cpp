// Tests for the routers behind models/router.hpp (models/routers/): the
// registry, every router's decisions on hand-made logits, finite-difference
// checks of every backward path, and float against double.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/router.hpp"
#include "models/routers/registry.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::moe {
namespace {

using test::random_vector;

constexpr RouterKind kAllKinds[] = {RouterKind::TopK,        RouterKind::Switch,      RouterKind::ExpertChoice,
                                    RouterKind::TopP,        RouterKind::NullExperts, RouterKind::SigmoidBias,
                                    RouterKind::Hash};

// A valid config for `kind` with E = 4 experts.
MoeConfig config_for(RouterKind kind) {
  MoeConfig c;
  c.router = kind;
  c.num_experts = 4;
  c.top_k = (kind == RouterKind::Switch || kind == RouterKind::Hash) ? 1 : 2;
  c.num_null_experts = kind == RouterKind::NullExperts ? 2 : 0;
  return c;
}

// Logits whose softmax is p (each row of p sums to 1).
std::vector<double> log_of(std::vector<double> p) {
  for (double& x : p) x = std::log(x);
  return p;
}

std::vector<int> experts_of(const RouterOutput<double>& out, int64_t t) {
  return std::vector<int>(out.expert.begin() + out.token_begin[t], out.expert.begin() + out.token_begin[t + 1]);
}

std::vector<double> weights_of(const RouterOutput<double>& out, int64_t t) {
  return std::vector<double>(out.weight.begin() + out.token_begin[t], out.weight.begin() + out.token_begin[t + 1]);
}

std::vector<double> scores_of(const RouterOutput<double>& out, int64_t t) {
  return std::vector<double>(out.score.begin() + out.token_begin[t], out.score.begin() + out.token_begin[t + 1]);
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

template <typename Fn>
void expect_config_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected a ConfigError mentioning '" << needle << "'";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// --- registry ---------------------------------------------------------------

TEST(RouterRegistry, ListsTheSevenRoutersInOrderAsTheConfigSpellsThem) {
  const std::vector<std::string> want = {"topk", "switch", "expert_choice", "topp", "null_experts", "sigmoid_bias",
                                         "hash"};
  EXPECT_EQ(router_names(), want);
  std::vector<std::string> kinds;
  for (RouterKind k : kAllKinds) kinds.emplace_back(to_string(k));
  EXPECT_EQ(router_names(), kinds);
}

TEST(RouterRegistry, RejectsAnUnknownNameListingTheKnownRouters) {
  expect_config_error([] { make_router_by_name<double>("top2", MoeConfig{}, 1); },
                      "unknown router 'top2'; known routers: topk, switch, expert_choice, topp, null_experts, "
                      "sigmoid_bias, hash");
}

TEST(RouterRegistry, MakeRouterBuildsEachKind) {
  for (RouterKind kind : kAllKinds) {
    const MoeConfig c = config_for(kind);
    const auto f = make_router<float>(c, 7);
    const auto d = make_router<double>(c, 7);
    const auto by_name = make_router_by_name<double>(to_string(kind), c, 7);
    EXPECT_EQ(f->name(), to_string(kind));
    EXPECT_EQ(d->name(), to_string(kind));
    EXPECT_EQ(by_name->name(), to_string(kind));
    const int want_logits = kind == RouterKind::Hash ? 0 : kind == RouterKind::NullExperts ? 6 : 4;
    EXPECT_EQ(d->num_logits(), want_logits) << to_string(kind);
    EXPECT_EQ(d->learned(), kind != RouterKind::Hash) << to_string(kind);
    EXPECT_EQ(d->bias().size(), kind == RouterKind::SigmoidBias ? 4u : 0u) << to_string(kind);
  }
}

TEST(RouterRegistry, RejectsBadConfigNamingTheKey) {
  auto build = [](RouterKind kind, const std::function<void(MoeConfig&)>& edit) {
    return [=] {
      MoeConfig c = config_for(kind);
      edit(c);
      make_router<double>(c, 1);
    };
  };
  expect_config_error(build(RouterKind::TopK, [](MoeConfig& c) { c.top_k = 0; }), "moe.top_k = 0");
  expect_config_error(build(RouterKind::TopK, [](MoeConfig& c) { c.top_k = 5; }), "moe.top_k = 5");
  expect_config_error(build(RouterKind::SigmoidBias, [](MoeConfig& c) { c.top_k = 5; }), "moe.top_k = 5");
  expect_config_error(build(RouterKind::Switch, [](MoeConfig& c) { c.top_k = 2; }), "moe.top_k = 2");
  expect_config_error(build(RouterKind::Hash, [](MoeConfig& c) { c.top_k = 2; }), "moe.top_k = 2");
  expect_config_error(build(RouterKind::TopP, [](MoeConfig& c) { c.top_p = 0; }), "moe.top_p = 0");
  expect_config_error(build(RouterKind::TopP, [](MoeConfig& c) { c.top_p = 1.5; }), "moe.top_p = 1.5");
  expect_config_error(build(RouterKind::NullExperts, [](MoeConfig& c) { c.num_null_experts = 0; }),
                      "moe.num_null_experts = 0");
  expect_config_error(build(RouterKind::NullExperts, [](MoeConfig& c) { c.top_k = 7; }), "moe.top_k = 7");
  expect_config_error(build(RouterKind::ExpertChoice, [](MoeConfig& c) { c.capacity_factor = 0; }),
                      "moe.capacity_factor = 0");
  expect_config_error(build(RouterKind::TopK, [](MoeConfig& c) { c.num_experts = 0; }), "moe.num_experts = 0");
  // top_p = 1 is allowed (every expert up to the full mass).
  EXPECT_NO_THROW(build(RouterKind::TopP, [](MoeConfig& c) { c.top_p = 1; })());
}

// --- decisions on hand-made logits ------------------------------------------

TEST(RouterTopK, ChoosesTheMostProbableWithAndWithoutRenormalization) {
  MoeConfig c = config_for(RouterKind::TopK);
  // Row 1 is flat: ties go to the lower expert ids.
  const auto logits = log_of({0.1, 0.4, 0.2, 0.3, 0.25, 0.25, 0.25, 0.25});
  for (bool normalize : {true, false}) {
    c.normalize_weights = normalize;
    auto router = make_router<double>(c, 1);
    RouterOutput<double> out;
    router->route(logits.data(), nullptr, 2, 0, out);
    ASSERT_EQ(out.num_tokens, 2);
    EXPECT_EQ(out.num_logits, 4);
    expect_near(out.probs, {0.1, 0.4, 0.2, 0.3, 0.25, 0.25, 0.25, 0.25});
    EXPECT_EQ(experts_of(out, 0), (std::vector<int>{1, 3}));
    EXPECT_EQ(experts_of(out, 1), (std::vector<int>{0, 1}));
    expect_near(weights_of(out, 0),
                normalize ? std::vector<double>{0.4 / 0.7, 0.3 / 0.7} : std::vector<double>{0.4, 0.3});
    expect_near(weights_of(out, 1), normalize ? std::vector<double>{0.5, 0.5} : std::vector<double>{0.25, 0.25});
    expect_near(scores_of(out, 0), {0.4, 0.3});
    EXPECT_EQ(router->aux_loss(out, nullptr), 0.0);
  }
}

TEST(RouterSwitch, KeepsTheRawProbabilityEvenWhenNormalizing) {
  MoeConfig c = config_for(RouterKind::Switch);
  c.normalize_weights = true;
  auto router = make_router<double>(c, 1);
  const auto logits = log_of({0.1, 0.5, 0.15, 0.25, 0.3, 0.2, 0.3, 0.2});
  RouterOutput<double> out;
  router->route(logits.data(), nullptr, 2, 0, out);
  EXPECT_EQ(out.num_slots(), 2);
  EXPECT_EQ(experts_of(out, 0), std::vector<int>{1});
  EXPECT_EQ(experts_of(out, 1), std::vector<int>{0});  // tie between 0 and 2
  expect_near(weights_of(out, 0), {0.5});
  expect_near(weights_of(out, 1), {0.3});
  expect_near(scores_of(out, 0), {0.5});
}

TEST(RouterExpertChoice, EachExpertTakesItsTopTokensUpToCapacity) {
  auto router = make_router<double>(config_for(RouterKind::ExpertChoice), 1);
  // E = 4, capacity 2. Column by column:
  //   expert 0 takes t1 (.50), t3 (.45); expert 1 takes t1 (.38), t2 (.28);
  //   expert 2 takes t2 (.58), t3 (.38); expert 3 takes t0 and t2 (.04 each).
  const std::vector<double> p = {
      0.40, 0.25, 0.31, 0.04,  // t0: third in columns 0..2
      0.50, 0.38, 0.10, 0.02,  // t1
      0.10, 0.28, 0.58, 0.04,  // t2
      0.45, 0.16, 0.38, 0.01,  // t3
  };
  const auto logits = log_of(p);
  RouterOutput<double> out;
  router->route(logits.data(), nullptr, 4, 2, out);
  ASSERT_EQ(out.num_slots(), 8);
  EXPECT_EQ(experts_of(out, 0), std::vector<int>{3});
  EXPECT_EQ(experts_of(out, 1), (std::vector<int>{0, 1}));
  EXPECT_EQ(experts_of(out, 2), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(experts_of(out, 3), (std::vector<int>{0, 2}));
  expect_near(weights_of(out, 2), {0.28, 0.58, 0.04});
  expect_near(scores_of(out, 1), {0.50, 0.38});

  // t0 moves .03 from expert 3 to expert 0: still third there, and now last
  // for expert 3 too, so it gets no expert at all; t2 gets three.
  std::vector<double> q = p;
  q[3] = 0.01, q[0] = 0.43;
  const auto logits_q = log_of(q);
  router->route(logits_q.data(), nullptr, 4, 2, out);
  EXPECT_TRUE(experts_of(out, 0).empty());
  EXPECT_EQ(experts_of(out, 2), (std::vector<int>{1, 2, 3}));

  // Capacity above T: every expert takes every token, slots in expert order.
  router->route(logits.data(), nullptr, 4, 10, out);
  ASSERT_EQ(out.num_slots(), 16);
  for (int64_t t = 0; t < 4; ++t) {
    EXPECT_EQ(experts_of(out, t), (std::vector<int>{0, 1, 2, 3}));
    expect_near(weights_of(out, t), {p[t * 4], p[t * 4 + 1], p[t * 4 + 2], p[t * 4 + 3]});
  }
  router->route(logits.data(), nullptr, 4, 0, out);
  EXPECT_EQ(out.num_slots(), 0);
}

TEST(RouterTopP, VariesExpertsPerTokenAndIncludesTheCrossingExpert) {
  MoeConfig c = config_for(RouterKind::TopP);
  c.num_experts = 6;
  c.top_p = 0.6;
  auto router = make_router<double>(c, 1);
  const std::vector<double> p = {
      0.80, 0.04, 0.04, 0.04, 0.04, 0.04,  // peaked: 1 expert
      0.35, 0.30, 0.15, 0.10, 0.05, 0.05,  // .35 < .6 <= .65: the crossing expert 1 is in
      0.05, 0.10, 0.50, 0.05, 0.25, 0.05,  // sorted: 2 (.50), 4 (.75)
      1. / 6, 1. / 6, 1. / 6, 1. / 6, 1. / 6, 1. / 6,  // flat: 4 experts, ties by id
  };
  const auto logits = log_of(p);
  RouterOutput<double> out;
  router->route(logits.data(), nullptr, 4, 0, out);
  EXPECT_EQ(experts_of(out, 0), std::vector<int>{0});
  EXPECT_EQ(experts_of(out, 1), (std::vector<int>{0, 1}));
  EXPECT_EQ(experts_of(out, 2), (std::vector<int>{2, 4}));
  EXPECT_EQ(experts_of(out, 3), (std::vector<int>{0, 1, 2, 3}));
  expect_near(weights_of(out, 1), {0.35, 0.30});  // raw probabilities
  expect_near(weights_of(out, 2), {0.50, 0.25});
  expect_near(scores_of(out, 2), {0.50, 0.25});
  EXPECT_EQ(out.num_slots(), 9);
  EXPECT_EQ(out.expert.size(), 9u);

  // top_p = 1: every expert.
  c.top_p = 1.0;
  make_router<double>(c, 1)->route(logits.data(), nullptr, 4, 0, out);
  for (int64_t t = 0; t < 4; ++t) EXPECT_EQ(experts_of(out, t).size(), 6u);
}

TEST(RouterTopP, EntropyLossIsItsCoefficientTimesTheMeanEntropy) {
  MoeConfig c = config_for(RouterKind::TopP);
  c.entropy_coeff = 0.5;
  auto router = make_router<double>(c, 1);
  const std::vector<double> p = {0.25, 0.25, 0.25, 0.25, 0.7, 0.1, 0.1, 0.1};
  const auto logits = log_of(p);
  RouterOutput<double> out;
  router->route(logits.data(), nullptr, 2, 0, out);
  std::vector<double> dprobs(8, 1.0);
  const double h1 = std::log(4.0), h2 = -(0.7 * std::log(0.7) + 3 * 0.1 * std::log(0.1));
  EXPECT_NEAR(router->aux_loss(out, dprobs.data()), 0.5 * (h1 + h2) / 2, 1e-12);
  // Added to dprobs: d/dp_i = -coeff / T * (log p_i + 1).
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(dprobs[i], 1.0 - 0.25 * (std::log(p[i]) + 1), 1e-12) << i;
  c.entropy_coeff = 0;
  EXPECT_EQ(make_router<double>(c, 1)->aux_loss(out, dprobs.data()), 0.0);
}

TEST(RouterNullExperts, GivesTokensZeroToKRealExpertsRenormalizedOverTheRealOnes) {
  MoeConfig c = config_for(RouterKind::NullExperts);
  c.num_experts = 3;  // ids 3 and 4 are the null experts
  const std::vector<double> p = {
      0.50, 0.30, 0.10, 0.05, 0.05,  // two real experts
      0.40, 0.10, 0.05, 0.35, 0.10,  // one real, one null
      0.05, 0.10, 0.05, 0.45, 0.35,  // only nulls
  };
  const auto logits = log_of(p);
  for (bool normalize : {true, false}) {
    c.normalize_weights = normalize;
    auto router = make_router<double>(c, 1);
    EXPECT_EQ(router->num_logits(), 5);
    RouterOutput<double> out;
    router->route(logits.data(), nullptr, 3, 0, out);
    EXPECT_EQ(out.num_logits, 5);
    EXPECT_EQ(experts_of(out, 0), (std::vector<int>{0, 1}));
    EXPECT_EQ(experts_of(out, 1), (std::vector<int>{0, 3}));
    EXPECT_EQ(experts_of(out, 2), (std::vector<int>{3, 4}));
    expect_near(weights_of(out, 0),
                normalize ? std::vector<double>{0.5 / 0.8, 0.3 / 0.8} : std::vector<double>{0.5, 0.3});
    expect_near(weights_of(out, 1), {normalize ? 1.0 : 0.4, 0.0});
    expect_near(weights_of(out, 2), {0.0, 0.0});
    expect_near(scores_of(out, 1), {0.40, 0.35});
  }
}

TEST(RouterSigmoidBias, BiasChangesTheSelectionButNotTheWeightFormula) {
  MoeConfig c = config_for(RouterKind::SigmoidBias);
  c.bias_update_rate = 0.3;
  auto router = make_router<double>(c, 1);
  const std::vector<double> logits = {2, 1, 0, -1};
  std::vector<double> s(4);
  for (int i = 0; i < 4; ++i) s[i] = 1 / (1 + std::exp(-logits[i]));
  RouterOutput<double> out;
  router->route(logits.data(), nullptr, 1, 0, out);
  expect_near(out.probs, s);
  EXPECT_EQ(experts_of(out, 0), (std::vector<int>{0, 1}));
  expect_near(weights_of(out, 0), {s[0] / (s[0] + s[1]), s[1] / (s[0] + s[1])});

  const std::vector<double> counts = {10, 10, 0, 0};  // experts 0 and 1 over-loaded
  router->update_bias(counts.data());
  expect_near(router->bias(), {-0.3, -0.3, 0.3, 0.3});
  // Keys s + bias: .581, .431, .8, .569.
  router->route(logits.data(), nullptr, 1, 0, out);
  expect_near(out.probs, s);
  EXPECT_EQ(experts_of(out, 0), (std::vector<int>{2, 0}));
  expect_near(weights_of(out, 0), {s[2] / (s[2] + s[0]), s[0] / (s[2] + s[0])});
  expect_near(scores_of(out, 0), {s[2], s[0]});

  c.normalize_weights = false;
  auto raw = make_router<double>(c, 1);
  raw->update_bias(counts.data());
  raw->route(logits.data(), nullptr, 1, 0, out);
  expect_near(weights_of(out, 0), {s[2], s[0]});
}

TEST(RouterSigmoidBias, UpdateBiasMovesTowardUnderloadedExperts) {
  MoeConfig c = config_for(RouterKind::SigmoidBias);
  c.bias_update_rate = 0.01;
  auto router = make_router<double>(c, 1);
  expect_near(router->bias(), {0, 0, 0, 0});
  const std::vector<double> counts = {10, 0, 5, 5};  // mean 5: sign(0) = 0 for experts 2 and 3
  router->update_bias(counts.data());
  expect_near(router->bias(), {-0.01, 0.01, 0, 0});
  router->update_bias(counts.data());
  expect_near(router->bias(), {-0.02, 0.02, 0, 0});
}

TEST(RouterHash, IsDeterministicIgnoresLogitsAndSpreadsIds) {
  MoeConfig c = config_for(RouterKind::Hash);
  c.num_experts = 8;
  auto router = make_router<double>(c, 1);
  EXPECT_FALSE(router->learned());
  EXPECT_EQ(router->num_logits(), 0);
  std::vector<int32_t> ids(1000);
  std::iota(ids.begin(), ids.end(), 0);
  RouterOutput<double> a, b;
  router->route(nullptr, ids.data(), 1000, 0, a);
  const auto junk = random_vector<double>(1000 * 8, 3);
  make_router<double>(c, 99)->route(junk.data(), ids.data(), 1000, 0, b);
  EXPECT_EQ(a.expert, b.expert);
  EXPECT_TRUE(a.probs.empty());
  ASSERT_EQ(a.num_slots(), 1000);
  std::vector<int> load(8, 0);
  for (int64_t t = 0; t < 1000; ++t) {
    ASSERT_EQ(a.token_begin[t + 1] - a.token_begin[t], 1);
    EXPECT_EQ(a.weight[t], 1.0);
    ++load[a.expert[t]];
  }
  for (int e = 0; e < 8; ++e) EXPECT_GE(load[e], 1000 / 8 / 2) << "expert " << e;
  // Consecutive ids do not walk the experts in order.
  int in_step = 0;
  for (int t = 1; t < 1000; ++t) in_step += a.expert[t] == (a.expert[t - 1] + 1) % 8;
  EXPECT_LT(in_step, 300);
  // No gradient to give.
  std::vector<double> dweight(1000, 1.0), dprobs(4, 2.0);
  router->weight_backward(a, dweight.data(), dprobs.data());
  router->probs_backward(a, dprobs.data(), dprobs.data());
  expect_near(dprobs, {2, 2, 2, 2});
}

TEST(RouterHash, RequiresTokenIds) {
  MoeConfig c = config_for(RouterKind::Hash);
  auto router = make_router<float>(c, 1);
  RouterOutput<float> out;
  EXPECT_THROW(router->route(nullptr, nullptr, 4, 0, out), InvalidArgument);
}

TEST(RouterOutputReuse, SecondRouteWithNoMoreTokensDoesNotReallocate) {
  const std::vector<int32_t> ids = [] {
    std::vector<int32_t> v(16);
    std::iota(v.begin(), v.end(), 100);
    return v;
  }();
  for (RouterKind kind : kAllKinds) {
    const MoeConfig c = config_for(kind);
    auto router = make_router<float>(c, 1);
    const int L = router->num_logits();
    const auto logits = random_vector<float>(16 * std::max(L, 1), 5, -2, 2);
    RouterOutput<float> out;
    router->route(logits.data(), ids.data(), 16, 4, out);
    const void* ptrs[] = {out.probs.data(), out.token_begin.data(), out.expert.data(), out.weight.data(),
                          out.score.data()};
    for (int64_t n : {8, 16, 3}) {
      router->route(logits.data(), ids.data(), n, 4, out);
      EXPECT_EQ(out.num_tokens, n);
      const void* now[] = {out.probs.data(), out.token_begin.data(), out.expert.data(), out.weight.data(),
                           out.score.data()};
      for (int i = 0; i < 5; ++i) EXPECT_EQ(now[i], ptrs[i]) << to_string(kind) << " vector " << i << " n " << n;
    }
  }
}

// --- gradients ----------------------------------------------------------------

// Every learned router in the configurations whose backward differs.
struct GradCase {
  std::string label;
  MoeConfig config;
  std::vector<double> counts;  // fed to update_bias before routing (sigmoid_bias), empty = none
};

std::vector<GradCase> grad_cases() {
  std::vector<GradCase> cases;
  auto add = [&](const std::string& label, RouterKind kind, const std::function<void(MoeConfig&)>& edit,
                 std::vector<double> counts = {}) {
    MoeConfig c = config_for(kind);
    c.num_experts = 6;
    c.top_k = kind == RouterKind::Switch ? 1 : 3;
    c.num_null_experts = kind == RouterKind::NullExperts ? 3 : 0;
    edit(c);
    cases.push_back({label, c, std::move(counts)});
  };
  add("topk normalized", RouterKind::TopK, [](MoeConfig& c) { c.normalize_weights = true; });
  add("topk raw", RouterKind::TopK, [](MoeConfig& c) { c.normalize_weights = false; });
  add("switch", RouterKind::Switch, [](MoeConfig&) {});
  add("expert_choice", RouterKind::ExpertChoice, [](MoeConfig&) {});
  add("topp with entropy loss", RouterKind::TopP, [](MoeConfig& c) {
    c.top_p = 0.6;
    c.entropy_coeff = 0.3;
  });
  add("null_experts normalized", RouterKind::NullExperts, [](MoeConfig& c) { c.normalize_weights = true; });
  add("null_experts raw", RouterKind::NullExperts, [](MoeConfig& c) { c.normalize_weights = false; });
  add("sigmoid_bias normalized", RouterKind::SigmoidBias, [](MoeConfig& c) {
    c.normalize_weights = true;
    c.bias_update_rate = 0.2;
  }, {9, 1, 4, 6, 0, 10});
  add("sigmoid_bias raw", RouterKind::SigmoidBias, [](MoeConfig& c) {
    c.normalize_weights = false;
    c.bias_update_rate = 0.2;
  }, {9, 1, 4, 6, 0, 10});
  return cases;
}

template <typename T>
std::unique_ptr<Router<T>> make_case_router(const GradCase& gc) {
  auto router = make_router<T>(gc.config, 1);
  if (!gc.counts.empty()) router->update_bias(gc.counts.data());
  return router;
}

constexpr int64_t kGradTokens = 12;
constexpr int64_t kGradCapacity = 5;  // expert_choice: each expert takes 5 of the 12 tokens

// loss = sum_s weight_s * r[t, expert_s] + aux_loss: r is indexed by (token,
// expert), so the loss is defined whatever the selection. Summed in long
// double: the terms of the tokens a perturbation does not touch are the same
// in both evaluations, and the sum's own rounding would otherwise dominate the
// difference quotient (about 1e-16 |loss| / h).
double weight_loss(const RouterOutput<double>& out, const Router<double>& router, const std::vector<double>& r,
                   std::vector<double>& scratch) {
  const int L = out.num_logits;
  long double loss = 0;
  for (int64_t t = 0; t < out.num_tokens; ++t)
    for (int64_t s = out.token_begin[t]; s < out.token_begin[t + 1]; ++s)
      loss += (long double)(out.weight[s] * r[t * L + out.expert[s]]);
  return double(loss + (long double)router.aux_loss(out, scratch.data()));
}

bool same_selection(const RouterOutput<double>& a, const RouterOutput<double>& b) {
  return a.token_begin == b.token_begin && a.expert == b.expert;
}

TEST(RouterGradient, WeightPathMatchesFiniteDifferences) {
  for (const GradCase& gc : grad_cases()) {
    SCOPED_TRACE(gc.label);
    auto router = make_case_router<double>(gc);
    const int L = router->num_logits();
    const int64_t n = kGradTokens * L;
    auto logits = random_vector<double>(n, 11, -3, 3);
    const auto r = random_vector<double>(n, 12);

    RouterOutput<double> base;
    router->route(logits.data(), nullptr, kGradTokens, kGradCapacity, base);
    std::vector<double> dweight(base.num_slots()), dprobs(n, 0.0), dlogits(n, test::kGarbage);
    for (int64_t t = 0; t < kGradTokens; ++t)
      for (int64_t s = base.token_begin[t]; s < base.token_begin[t + 1]; ++s) dweight[s] = r[t * L + base.expert[s]];
    router->weight_backward(base, dweight.data(), dprobs.data());
    router->aux_loss(base, dprobs.data());
    router->probs_backward(base, dprobs.data(), dlogits.data());

    std::vector<double> numeric(n), scratch(n);
    RouterOutput<double> plus, minus;
    int skipped = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double saved = logits[i];
      logits[i] = saved + test::kFdStep;
      router->route(logits.data(), nullptr, kGradTokens, kGradCapacity, plus);
      const double loss_plus = weight_loss(plus, *router, r, scratch);
      logits[i] = saved - test::kFdStep;
      router->route(logits.data(), nullptr, kGradTokens, kGradCapacity, minus);
      const double loss_minus = weight_loss(minus, *router, r, scratch);
      logits[i] = saved;
      if (!same_selection(plus, base) || !same_selection(minus, base)) {
        numeric[i] = dlogits[i];  // a selection flipped: the loss jumps here, nothing to compare
        ++skipped;
        continue;
      }
      numeric[i] = (loss_plus - loss_minus) / (2 * test::kFdStep);
    }
    EXPECT_LE(skipped, 2);
    double largest = 0;
    for (double g : dlogits) largest = std::max(largest, std::abs(g));
    EXPECT_GT(largest, 1e-2) << "the check would be vacuous";
    EXPECT_TRUE(test::grad_close(gc.label + " dlogits", dlogits, numeric));
  }
}

TEST(RouterGradient, ProbsPathMatchesFiniteDifferences) {
  for (const GradCase& gc : grad_cases()) {
    SCOPED_TRACE(gc.label);
    auto router = make_case_router<double>(gc);
    const int L = router->num_logits();
    const int64_t n = kGradTokens * L;
    auto logits = random_vector<double>(n, 21, -3, 3);
    const auto R = random_vector<double>(n, 22);
    RouterOutput<double> out;
    router->route(logits.data(), nullptr, kGradTokens, kGradCapacity, out);
    std::vector<double> dlogits(n, test::kGarbage);
    router->probs_backward(out, R.data(), dlogits.data());
    const auto numeric = test::numeric_gradient(logits, [&] {
      router->route(logits.data(), nullptr, kGradTokens, kGradCapacity, out);
      return test::dot(out.probs, R);
    });
    EXPECT_TRUE(test::grad_close(gc.label + " dlogits", dlogits, numeric));
  }
}

// --- float against double -------------------------------------------------------

TEST(RouterPrecision, FloatAgreesWithDouble) {
  std::vector<GradCase> cases = grad_cases();
  MoeConfig hash = config_for(RouterKind::Hash);
  cases.push_back({"hash", hash, {}});
  std::vector<int32_t> ids(kGradTokens);
  std::iota(ids.begin(), ids.end(), 17);
  for (const GradCase& gc : cases) {
    SCOPED_TRACE(gc.label);
    auto rd = make_case_router<double>(gc);
    auto rf = make_case_router<float>(gc);
    const int L = rd->num_logits();
    const int64_t n = kGradTokens * L;
    const auto logits_d = random_vector<double>(n, 31, -3, 3);
    const auto logits_f = test::cast<float>(logits_d);
    RouterOutput<double> od;
    RouterOutput<float> of;
    rd->route(logits_d.data(), ids.data(), kGradTokens, kGradCapacity, od);
    rf->route(logits_f.data(), ids.data(), kGradTokens, kGradCapacity, of);
    ASSERT_EQ(od.token_begin, of.token_begin);
    ASSERT_EQ(od.expert, of.expert);
    auto close = [](const std::vector<float>& f, const std::vector<double>& d) {
      const auto fd = test::cast<double>(f);
      return test::max_rel_diff(fd.data(), d.data(), d.size());
    };
    EXPECT_LT(close(of.probs, od.probs), 1e-5);
    EXPECT_LT(close(of.weight, od.weight), 1e-5);
    EXPECT_LT(close(of.score, od.score), 1e-5);
    if (L == 0) continue;

    const auto dweight_d = random_vector<double>(od.num_slots(), 32);
    const auto dweight_f = test::cast<float>(dweight_d);
    std::vector<double> dprobs_d(n, 0.0), dlogits_d(n);
    std::vector<float> dprobs_f(n, 0.0f), dlogits_f(n);
    rd->weight_backward(od, dweight_d.data(), dprobs_d.data());
    rf->weight_backward(of, dweight_f.data(), dprobs_f.data());
    EXPECT_NEAR(rf->aux_loss(of, dprobs_f.data()), rd->aux_loss(od, dprobs_d.data()), 1e-6);
    rd->probs_backward(od, dprobs_d.data(), dlogits_d.data());
    rf->probs_backward(of, dprobs_f.data(), dlogits_f.data());
    EXPECT_LT(close(dlogits_f, dlogits_d), 1e-5);
  }
}

}  // namespace
}  // namespace sy::moe
