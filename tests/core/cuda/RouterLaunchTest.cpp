// CPU-run checks of the CUDA routers and dispatch plan (no GPU needed): the
// SY_HD per-token routines the router kernels run, against the CPU routers
// (models/routers/*.cpp) bit for bit; the expert_choice and dispatch plan
// algorithms (the kernels' step functions, with std::stable_sort standing in
// for cub's stable radix sort) against the CPU router and the CPU MoE layer;
// the scratch layouts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "core/config.hpp"
#include "core/cuda/ops/dispatch_plan.hpp"
#include "core/cuda/ops/router.hpp"
#include "models/moe_layer.hpp"
#include "models/router.hpp"
#include "tests/core/cuda/router_test_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

namespace rd = cuda::ops::router_detail;
namespace pd = cuda::ops::plan_detail;
using test::LayerPlan;
using test::make_logits;
using test::router_config;
using test::same_bits;
using test::Slots;
using test::to_slots;

// Runs the CPU router of `kind` and checks the per-token routine `route_token`
// (t, probs row of the CPU, expert, weight, score) against it, bit for bit.
template <typename RouteToken>
void expect_token_routine_matches(const MoeConfig& c, int K, const std::vector<float>& logits, int64_t T,
                                  RouteToken route_token, const char* label) {
  auto router = moe::make_router<float>(c, 1);
  moe::RouterOutput<float> out;
  router->route(logits.data(), nullptr, T, 0, out);
  const Slots want = to_slots(out, K);
  const int L = router->num_logits();
  std::vector<int32_t> expert(K);
  std::vector<float> weight(K), score(K);
  for (int64_t t = 0; t < T; ++t) {
    route_token(t, out.probs.data() + t * L, expert.data(), weight.data(), score.data());
    for (int j = 0; j < K; ++j) {
      const size_t at = size_t(t) * K + j;
      ASSERT_EQ(expert[j], want.expert[at]) << label << ": token " << t << " slot " << j;
      ASSERT_TRUE(same_bits(weight[j], want.weight[at]))
          << label << ": token " << t << " slot " << j << " weight " << weight[j] << " vs " << want.weight[at];
      ASSERT_TRUE(same_bits(score[j], want.score[at])) << label << ": token " << t << " slot " << j;
    }
  }
}

// ---- per-token routines ----------------------------------------------------

TEST(CudaRouterHost, SoftmaxRowMatchesCpuRouterProbsBitForBit) {
  const int64_t T = 64;
  for (int E : {1, 7, 64}) {
    const std::vector<float> logits = make_logits(T, E, 11 + E, false);
    auto router = moe::make_router<float>(router_config(RouterKind::TopK, E, 1), 1);
    moe::RouterOutput<float> out;
    router->route(logits.data(), nullptr, T, 0, out);
    std::vector<float> p(E);
    for (int64_t t = 0; t < T; ++t) {
      rd::softmax_row(logits.data() + t * E, E, p.data());
      for (int e = 0; e < E; ++e)
        ASSERT_TRUE(same_bits(p[e], out.probs[t * E + e])) << "E " << E << " token " << t << " expert " << e;
    }
  }
}

TEST(CudaRouterHost, TopkAndSwitchMatchCpuRouters) {
  const int64_t T = 300;
  for (bool coarse : {false, true})
    for (bool normalize : {true, false})
      for (int k : {1, 2, 5}) {
        const int E = 16;
        MoeConfig c = router_config(RouterKind::TopK, E, k);
        c.normalize_weights = normalize;
        const auto logits = make_logits(T, E, 100 + k, coarse);
        expect_token_routine_matches(
            c, k, logits, T,
            [&](int64_t, const float* p, int32_t* ex, float* w, float* s) {
              rd::topk_token(p, E, k, normalize, ex, w, s);
            },
            "topk");
      }
  for (bool coarse : {false, true}) {
    const int E = 9;
    const auto logits = make_logits(T, E, 7, coarse);
    expect_token_routine_matches(
        router_config(RouterKind::Switch, E, 1), 1, logits, T,
        [&](int64_t, const float* p, int32_t* ex, float* w, float* s) { rd::topk_token(p, E, 1, false, ex, w, s); },
        "switch");
  }
}

TEST(CudaRouterHost, ToppMatchesCpuRouterWithMaxKEqualE) {
  const int64_t T = 300;
  const int E = 12;
  for (bool coarse : {false, true})
    for (double top_p : {0.2, 0.5, 0.9, 1.0}) {
      MoeConfig c = router_config(RouterKind::TopP, E, 1);
      c.top_p = top_p;
      const auto logits = make_logits(T, E, 31, coarse);
      expect_token_routine_matches(
          c, E, logits, T,
          [&](int64_t, const float* p, int32_t* ex, float* w, float* s) { rd::topp_token(p, E, top_p, E, ex, w, s); },
          "topp");
    }
}

TEST(CudaRouterHost, ToppMaxKKeepsTheCpuPrefix) {
  const int64_t T = 100;
  const int E = 12, max_k = 3;
  MoeConfig c = router_config(RouterKind::TopP, E, 1);
  c.top_p = 0.95;
  const auto logits = make_logits(T, E, 5, true);
  auto router = moe::make_router<float>(c, 1);
  moe::RouterOutput<float> out;
  router->route(logits.data(), nullptr, T, 0, out);
  const Slots want = to_slots(out, E);
  std::vector<int32_t> ex(max_k);
  std::vector<float> w(max_k), s(max_k);
  for (int64_t t = 0; t < T; ++t) {
    const int used = rd::topp_token(out.probs.data() + t * E, E, c.top_p, max_k, ex.data(), w.data(), s.data());
    const int cpu_used = int(out.token_begin[t + 1] - out.token_begin[t]);
    ASSERT_EQ(used, std::min(cpu_used, max_k)) << "token " << t;
    for (int j = 0; j < max_k; ++j) {
      ASSERT_EQ(ex[j], j < used ? want.expert[t * E + j] : -1) << "token " << t << " slot " << j;
      if (j >= used) {
        ASSERT_EQ(w[j], 0.0f);
      }
    }
  }
}

TEST(CudaRouterHost, NullExpertsMatchCpuRouter) {
  const int64_t T = 300;
  const int E = 8;
  for (bool coarse : {false, true})
    for (bool normalize : {true, false})
      for (int k : {1, 3}) {
        MoeConfig c = router_config(RouterKind::NullExperts, E, k);
        c.normalize_weights = normalize;
        const int L = E + c.num_null_experts;
        const auto logits = make_logits(T, L, 50 + k, coarse);
        expect_token_routine_matches(
            c, k, logits, T,
            [&](int64_t, const float* p, int32_t* ex, float* w, float* s) {
              rd::null_experts_token(p, E, L, k, normalize, ex, w, s);
            },
            "null_experts");
      }
}

TEST(CudaRouterHost, SigmoidBiasMatchesCpuRouterWithBias) {
  const int64_t T = 300;
  const int E = 10, k = 3;
  for (bool coarse : {false, true})
    for (bool normalize : {true, false})
      for (bool zero_bias : {true, false}) {
        MoeConfig c = router_config(RouterKind::SigmoidBias, E, k);
        c.normalize_weights = normalize;
        auto router = moe::make_router<float>(c, 1);
        std::vector<double> bias(E, 0.0);
        if (!zero_bias)
          for (int e = 0; e < E; ++e) bias[e] = 0.01 * ((e * 7) % 5 - 2);  // some equal, some ties after adding
        router->set_bias(bias);
        const auto logits = make_logits(T, E, 70, coarse);
        moe::RouterOutput<float> out;
        router->route(logits.data(), nullptr, T, 0, out);
        const Slots want = to_slots(out, k);
        std::vector<float> s(E), w(k), sc(k);
        std::vector<int32_t> ex(k);
        for (int64_t t = 0; t < T; ++t) {
          rd::sigmoid_bias_token(logits.data() + t * E, zero_bias ? nullptr : bias.data(), E, k, normalize, s.data(),
                                 ex.data(), w.data(), sc.data());
          for (int e = 0; e < E; ++e) ASSERT_TRUE(same_bits(s[e], out.probs[t * E + e])) << "token " << t;
          for (int j = 0; j < k; ++j) {
            ASSERT_EQ(ex[j], want.expert[t * k + j]) << "token " << t << " slot " << j;
            ASSERT_TRUE(same_bits(w[j], want.weight[t * k + j])) << "token " << t << " slot " << j;
            ASSERT_TRUE(same_bits(sc[j], want.score[t * k + j])) << "token " << t << " slot " << j;
          }
        }
      }
}

TEST(CudaRouterHost, HashMatchesCpuRouter) {
  const int E = 7;
  std::vector<int32_t> ids = {0, 1, 2, 3, -1, -7, std::numeric_limits<int32_t>::max(),
                              std::numeric_limits<int32_t>::min(), 123456, 50257};
  auto router = moe::make_router<float>(router_config(RouterKind::Hash, E, 1), 1);
  moe::RouterOutput<float> out;
  router->route(nullptr, ids.data(), int64_t(ids.size()), 0, out);
  for (size_t t = 0; t < ids.size(); ++t) EXPECT_EQ(rd::hash_expert(ids[t], E), out.expert[t]) << "id " << ids[t];
}

TEST(CudaRouterHost, SelectNextWalksTheWholeOrderThenStops) {
  const std::vector<float> key = {0.5f, 1.0f, 0.5f, -0.0f, 0.0f, 1.0f};
  const rd::ProbKey k{key.data()};
  std::vector<int> order;
  for (int prev = rd::select_next(k, 6, -1); prev >= 0; prev = rd::select_next(k, 6, prev)) order.push_back(prev);
  EXPECT_EQ(order, (std::vector<int>{1, 5, 0, 2, 3, 4}));  // -0 == +0: index order
}

// ---- sort keys ---------------------------------------------------------------

// NaN probabilities (a diverged router) must not make a kernel index outside
// the row: slots that cannot be chosen are -1 (unused) with weight 0.
TEST(CudaRouterHost, NanProbabilitiesLeaveUnusedSlotsNotWildIndices) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> p = {0.1f, nan, 0.3f, nan, 0.2f};
  const int E = int(p.size()), k = 4;
  std::vector<int32_t> expert(k);
  std::vector<float> weight(k), score(k);
  rd::topk_token(p.data(), E, k, true, expert.data(), weight.data(), score.data());
  for (int j = 0; j < k; ++j) {
    EXPECT_GE(expert[j], -1) << j;
    EXPECT_LT(expert[j], E) << j;
    if (expert[j] < 0) {
      EXPECT_EQ(weight[j], 0.0f) << j;
    }
  }
  const std::vector<float> all_nan(4, nan);
  rd::topk_token(all_nan.data(), 4, 2, false, expert.data(), weight.data(), score.data());
  for (int j = 0; j < 2; ++j) EXPECT_TRUE(expert[j] >= -1 && expert[j] < 4) << expert[j];
}

TEST(CudaRouterHost, DescendingKeysSortLikeTheCpuComparator) {
  std::vector<float> v = test::random_vector<float>(2000, 3, -3.0, 3.0);
  for (size_t i = 0; i < v.size(); i += 3) v[i] = std::round(v[i]);  // ties
  v.insert(v.end(), {0.0f, -0.0f, 0.0f, -0.0f, std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                     std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
                     std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()});
  const int n = int(v.size());
  std::vector<int> by_key(n), by_cmp(n);
  std::iota(by_key.begin(), by_key.end(), 0);
  std::iota(by_cmp.begin(), by_cmp.end(), 0);
  std::stable_sort(by_key.begin(), by_key.end(),
                   [&](int a, int b) { return rd::expert_value_key(2, v[a]) < rd::expert_value_key(2, v[b]); });
  std::stable_sort(by_cmp.begin(), by_cmp.end(), [&](int a, int b) { return v[a] > v[b]; });
  EXPECT_EQ(by_key, by_cmp);
  // The expert dominates the value.
  EXPECT_LT(rd::expert_value_key(1, -1e30f), rd::expert_value_key(2, 1e30f));
  EXPECT_EQ(rd::expert_value_key(3, 0.0f), rd::expert_value_key(3, -0.0f));
}

TEST(CudaRouterHost, KeyBitsHoldEveryExpertId) {
  EXPECT_EQ(cuda::ops::key_bits(0), 1);
  EXPECT_EQ(cuda::ops::key_bits(1), 1);
  EXPECT_EQ(cuda::ops::key_bits(2), 2);
  EXPECT_EQ(cuda::ops::key_bits(255), 8);
  EXPECT_EQ(cuda::ops::key_bits(256), 9);
  for (int64_t v : {3, 7, 8, 100, 1000, 4096})
    EXPECT_TRUE((int64_t(1) << cuda::ops::key_bits(v)) > v && (int64_t(1) << (cuda::ops::key_bits(v) - 1)) <= v)
        << v;
}

TEST(CudaRouterHost, ScratchLayoutsAreAlignedAndDisjoint) {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(33), int64_t(100000)})
    for (size_t temp : {size_t(0), size_t(1), size_t(777)}) {
      const cuda::ops::DispatchPlanLayout l = cuda::ops::dispatch_plan_layout(n, 13, temp);
      const size_t offsets[] = {l.sort.keys_in, l.sort.keys_out, l.sort.values_in, l.sort.values_out, l.sort.temp,
                                l.begin};
      const size_t sizes[] = {size_t(n) * 8, size_t(n) * 8, size_t(n) * 4, size_t(n) * 4, temp, 14 * 4};
      for (size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(offsets[i] % cuda::ops::kScratchAlign, 0u);
        EXPECT_LE(offsets[i] + sizes[i], i + 1 < 6 ? offsets[i + 1] : l.total) << "region " << i;
      }
      EXPECT_EQ(l.sort.temp_bytes, temp);
    }
}

// ---- expert_choice -----------------------------------------------------------

// The kernels' algorithm on the host: stable sort of (e, descending p) keys
// over the e-major pairs, each expert's first `take` picked, prefix sum of
// the picks = rows, then expert_choice_token per token. Returns row_of (E, T).
std::vector<int32_t> expert_choice_mirror(const float* probs, int64_t T, int E, int64_t take) {
  const int64_t n = T * E;
  std::vector<uint64_t> keys(n);
  std::vector<int32_t> tokens(n), order(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = i / T, t = i - e * T;
    keys[i] = rd::expert_value_key(int(e), probs[t * E + e]);
    tokens[i] = int32_t(t);
  }
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return keys[a] < keys[b]; });
  std::vector<int32_t> row_of(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = i / T, j = i - e * T;
    EXPECT_EQ(int64_t(keys[order[i]] >> 32), e);  // segment e is [e T, (e + 1) T)
    row_of[e * T + tokens[order[i]]] = j < take ? 1 : 0;
  }
  int32_t row = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t picked = row_of[i];
    row_of[i] = picked ? row : -1;
    row += picked;
  }
  EXPECT_EQ(row, E * take);
  return row_of;
}

TEST(CudaRouterHost, ExpertChoiceAlgorithmMatchesCpuRouterAndLayerRows) {
  const int E = 6;
  const int64_t T = 40, M = 8;
  for (bool coarse : {false, true})
    for (double factor : {0.25, 1.0, 2.0, 4.0}) {  // take = 4, 14, 27, 40 (all tokens)
      MoeConfig c = router_config(RouterKind::ExpertChoice, E, 2);
      c.capacity_factor = factor;
      c.hidden_size = 4;
      // Through the layer, so its rows are checked too; coarse inputs make tied logits.
      moe::MoeLayer<float> layer(c, M, T, T, 17);
      std::vector<float> x = make_logits(T, int(M), 23, coarse), out(T * M);
      if (coarse)
        for (int64_t i = 0; i < T * M; ++i) x[i] = x[(i % M) + M * ((i / M) % 5)];  // 5 distinct tokens
      layer.forward(x.data(), nullptr, T, out.data());
      const auto& routing = layer.routing();
      const int64_t take = cuda::ops::expert_choice_take(T, layer.capacity_for(T, T));
      const std::vector<int32_t> row_of = expert_choice_mirror(routing.probs.data(), T, E, take);
      const Slots want = to_slots(routing, E);
      std::vector<int32_t> ex(E), rows(E);
      std::vector<float> w(E), s(E);
      for (int64_t t = 0; t < T; ++t) {
        rd::expert_choice_token(row_of.data(), routing.probs.data() + t * E, t, T, E, ex.data(), w.data(), s.data(),
                                rows.data());
        for (int j = 0; j < E; ++j) {
          const size_t at = size_t(t) * E + j;
          ASSERT_EQ(ex[j], want.expert[at]) << "factor " << factor << " token " << t << " slot " << j;
          ASSERT_TRUE(same_bits(w[j], want.weight[at]));
          ASSERT_TRUE(same_bits(s[j], want.score[at]));
          const int64_t cpu_slot = routing.token_begin[t] + j;
          const int64_t cpu_row = j < routing.token_begin[t + 1] - routing.token_begin[t] ? layer.slot_row()[cpu_slot] : -1;
          ASSERT_EQ(rows[j], cpu_row) << "factor " << factor << " token " << t << " slot " << j;
        }
      }
    }
}

// ---- weight and probs backward ------------------------------------------------

TEST(CudaRouterHost, WeightAndSoftmaxBackwardMatchCpuRouters) {
  const int64_t T = 50;
  struct Case {
    RouterKind kind;
    bool normalize;
  };
  for (const Case& cs : {Case{RouterKind::TopK, true}, Case{RouterKind::TopK, false}, Case{RouterKind::Switch, false},
                         Case{RouterKind::TopP, false}, Case{RouterKind::NullExperts, true},
                         Case{RouterKind::NullExperts, false}, Case{RouterKind::SigmoidBias, true},
                         Case{RouterKind::ExpertChoice, false}}) {
    const int E = 8;
    MoeConfig c = router_config(cs.kind, E, cs.kind == RouterKind::Switch ? 1 : 3);
    c.normalize_weights = cs.normalize;
    c.top_p = 0.7;
    auto router = moe::make_router<float>(c, 1);
    const int L = router->num_logits();
    const int K = (cs.kind == RouterKind::TopP || cs.kind == RouterKind::ExpertChoice) ? E : c.top_k;
    const auto logits = make_logits(T, L, 91, false);
    moe::RouterOutput<float> out;
    router->route(logits.data(), nullptr, T, 10, out);
    const Slots slots = to_slots(out, K);
    const std::vector<float> dweight_csr = test::random_vector<float>(out.num_slots(), 5);
    std::vector<float> dweight(size_t(T) * K, 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = out.token_begin[t]; s < out.token_begin[t + 1]; ++s)
        dweight[t * K + (s - out.token_begin[t])] = dweight_csr[s];
    const std::vector<float> dprobs0 = test::random_vector<float>(size_t(T) * L, 6);
    std::vector<float> want = dprobs0, got = dprobs0;
    router->weight_backward(out, dweight_csr.data(), want.data());
    for (int64_t t = 0; t < T; ++t)
      rd::weight_backward_token(out.probs.data() + t * L, slots.expert.data() + t * K, slots.weight.data() + t * K,
                                dweight.data() + t * K, K, E, cs.normalize, got.data() + t * L);
    EXPECT_LE(test::max_rel_diff(got.data(), want.data(), got.size()), 1e-6) << to_string(cs.kind);

    std::vector<float> want_dl(size_t(T) * L), got_dl(size_t(T) * L);
    router->probs_backward(out, want.data(), want_dl.data());
    for (int64_t t = 0; t < T; ++t) {
      if (cs.kind == RouterKind::SigmoidBias) {
        for (int e = 0; e < L; ++e) {
          const float sv = out.probs[t * L + e];
          got_dl[t * L + e] = want[t * L + e] * sv * (1.0f - sv);  // the sigmoid_backward kernel's line
        }
      } else {
        rd::softmax_backward_row(out.probs.data() + t * L, want.data() + t * L, L, got_dl.data() + t * L);
      }
    }
    EXPECT_LE(test::max_rel_diff(got_dl.data(), want_dl.data(), got_dl.size()), 1e-6) << to_string(cs.kind);
  }
}

// ---- dispatch plan -------------------------------------------------------------

TEST(CudaDispatchPlanHost, ReferenceMatchesCpuLayerForEveryPolicyAndCapacity) {
  int64_t cases_with_drops = 0;
  for (RouterKind kind : {RouterKind::TopK, RouterKind::NullExperts, RouterKind::TopP, RouterKind::Hash,
                          RouterKind::SigmoidBias, RouterKind::Switch})
    for (double factor : {1.0, 0.5, 0.0, -0.75})
      for (DropPolicy policy : {DropPolicy::Position, DropPolicy::Score})
        for (bool coarse : {false, true}) {
          const LayerPlan p = test::run_layer(kind, factor, policy, coarse, 48, 6, 0.6);
          const int64_t S = p.T * p.K;
          std::vector<int32_t> rows(S), routed(p.E), kept(p.E), offset(p.E + 1);
          cuda::ops::dispatch_plan_reference(p.slots.expert.data(), p.slots.score.data(), S, p.E, p.capacity, policy,
                                             rows.data(), routed.data(), kept.data(), offset.data());
          const std::string label = std::string(to_string(kind)) + " factor " + std::to_string(factor) + " " +
                                    to_string(policy) + (coarse ? " coarse" : "");
          ASSERT_EQ(rows, p.slot_row) << label;
          int32_t at = 0;
          for (int e = 0; e < p.E; ++e) {
            EXPECT_EQ(routed[e], p.routed[e]) << label << " expert " << e;
            EXPECT_EQ(kept[e], p.kept[e]) << label << " expert " << e;
            EXPECT_EQ(offset[e], at) << label << " expert " << e;
            at += kept[e];
          }
          EXPECT_EQ(offset[p.E], at) << label;
          for (int e = 0; e < p.E; ++e)
            if (kept[e] < routed[e]) {
              ++cases_with_drops;
              break;
            }
        }
  EXPECT_GT(cases_with_drops, 20);  // the capacities do drop slots
}

TEST(CudaDispatchPlanHost, ScoreTiesKeepSlotOrder) {
  // One expert, five slots, capacity 3; scores 0.5, 0.9, 0.5, 0.5, 0.9 keep
  // slots 1, 4 (highest) and 0 (first of the ties), back in slot order.
  const std::vector<int32_t> expert = {0, 0, 0, 0, 0, -1, 3};  // -1 unused, 3 >= E: null
  const std::vector<float> score = {0.5f, 0.9f, 0.5f, 0.5f, 0.9f, 1.0f, 1.0f};
  std::vector<int32_t> rows(7), routed(2), kept(2), offset(3);
  cuda::ops::dispatch_plan_reference(expert.data(), score.data(), 7, 2, 3, DropPolicy::Score, rows.data(),
                                     routed.data(), kept.data(), offset.data());
  EXPECT_EQ(rows, (std::vector<int32_t>{0, 1, -1, -1, 2, -1, -1}));
  EXPECT_EQ(routed, (std::vector<int32_t>{5, 0}));
  EXPECT_EQ(kept, (std::vector<int32_t>{3, 0}));
  EXPECT_EQ(offset, (std::vector<int32_t>{0, 3, 3}));
  cuda::ops::dispatch_plan_reference(expert.data(), nullptr, 7, 2, 3, DropPolicy::Position, rows.data(),
                                     routed.data(), kept.data(), offset.data());
  EXPECT_EQ(rows, (std::vector<int32_t>{0, 1, 2, -1, -1, -1, -1}));
}

}  // namespace
}  // namespace sy
