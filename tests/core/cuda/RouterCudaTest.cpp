// The CUDA routers, dispatch plan, dispatch and combine against the CPU
// routers and the CPU MoE layer (STYLE 1). Every test needs a GPU and skips
// without one. Decisions: the kernels must agree bit for bit with the SY_HD
// per-token routines run on the host over the probabilities the GPU computed
// (exp differs in the last bit between CUDA and glibc, so near-ties may flip
// against the CPU router: at most 1% of the tokens may). Backward and the
// plan get the CPU router's own routing as input, so they must match it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/config.hpp"
#include "core/cuda/ops/dispatch.hpp"
#include "core/cuda/ops/dispatch_plan.hpp"
#include "core/cuda/ops/router.hpp"
#include "models/moe_layer.hpp"
#include "models/router.hpp"
#include "tests/support/cuda_test_support.hpp"
#include "tests/core/cuda/router_test_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

namespace ops = cuda::ops;
namespace rd = cuda::ops::router_detail;
using test::DeviceBuffer;
using test::LayerPlan;
using test::make_logits;
using test::router_config;
using test::same_bits;
using test::Slots;
using test::to_slots;

template <typename T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> out(n);
  SY_CUDA_CHECK(cudaDeviceSynchronize());
  SY_CUDA_CHECK(cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

DeviceBuffer<double> upload_doubles(const std::vector<double>& v) {
  DeviceBuffer<double> b(v.size());
  SY_CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(double), cudaMemcpyHostToDevice));
  return b;
}

// Tokens whose slot experts differ from the CPU router's.
int64_t tokens_differing(const Slots& a, const std::vector<int32_t>& expert, int64_t T) {
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t)
    if (!std::equal(expert.begin() + t * a.K, expert.begin() + (t + 1) * a.K, a.expert.begin() + t * a.K)) ++n;
  return n;
}

// ---- forward routers ---------------------------------------------------------

struct RouterCase {
  RouterKind kind;
  bool normalize;
  int k;
};

TEST(RouterCuda, PerTokenRoutersMatchTheirHostRoutinesAndTheCpuRouters) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  const int64_t T = 1000;
  const int E = 16;
  for (bool coarse : {false, true})
    for (const RouterCase& rc :
         {RouterCase{RouterKind::TopK, true, 4}, RouterCase{RouterKind::TopK, false, 2},
          RouterCase{RouterKind::Switch, false, 1}, RouterCase{RouterKind::TopP, false, 1},
          RouterCase{RouterKind::NullExperts, true, 3}, RouterCase{RouterKind::NullExperts, false, 2},
          RouterCase{RouterKind::SigmoidBias, true, 3}, RouterCase{RouterKind::SigmoidBias, false, 2}}) {
      const std::string label = std::string(to_string(rc.kind)) + (coarse ? " coarse" : "");
      MoeConfig c = router_config(rc.kind, E, rc.k);
      c.normalize_weights = rc.normalize;
      auto router = moe::make_router<float>(c, 1);
      std::vector<double> bias(E, 0.0);
      if (rc.kind == RouterKind::SigmoidBias) {
        for (int e = 0; e < E; ++e) bias[e] = 0.02 * ((e * 5) % 7 - 3);
        router->set_bias(bias);
      }
      const int L = router->num_logits();
      const int K = rc.kind == RouterKind::TopP ? E : rc.k;
      const std::vector<float> logits = make_logits(T, L, 3 + rc.k, coarse);
      moe::RouterOutput<float> out;
      router->route(logits.data(), nullptr, T, 0, out);
      const Slots want = to_slots(out, K);

      auto d_logits = DeviceBuffer<float>::from_host(logits);
      DeviceBuffer<float> d_probs(size_t(T) * L), d_weight(size_t(T) * K), d_score(size_t(T) * K);
      DeviceBuffer<int32_t> d_expert(size_t(T) * K);
      auto d_bias = upload_doubles(bias);
      switch (rc.kind) {
        case RouterKind::TopK:
          ops::topk_route(d_logits.get(), T, E, rc.k, rc.normalize, d_probs.get(), d_expert.get(), d_weight.get(),
                          d_score.get(), stream.get());
          break;
        case RouterKind::Switch:
          ops::switch_route(d_logits.get(), T, E, d_probs.get(), d_expert.get(), d_weight.get(), d_score.get(),
                            stream.get());
          break;
        case RouterKind::TopP:
          ops::topp_route(d_logits.get(), T, E, c.top_p, E, d_probs.get(), d_expert.get(), d_weight.get(),
                          d_score.get(), stream.get());
          break;
        case RouterKind::NullExperts:
          ops::null_experts_route(d_logits.get(), T, E, c.num_null_experts, rc.k, rc.normalize, d_probs.get(),
                                  d_expert.get(), d_weight.get(), d_score.get(), stream.get());
          break;
        case RouterKind::SigmoidBias:
          ops::sigmoid_bias_route(d_logits.get(), d_bias.get(), T, E, rc.k, rc.normalize, d_probs.get(),
                                  d_expert.get(), d_weight.get(), d_score.get(), stream.get());
          break;
        default: FAIL();
      }
      stream.sync();
      const auto probs = d_probs.raw();
      const auto expert = d_expert.raw();
      const auto weight = d_weight.raw();
      const auto score = d_score.raw();
      EXPECT_LE(test::max_rel_diff(probs.data(), out.probs.data(), probs.size()), 1e-6) << label;

      // The kernels run the host routines: same decisions and weights on the GPU's probabilities.
      std::vector<int32_t> ex(K);
      std::vector<float> w(K), s(K), sig(E);
      for (int64_t t = 0; t < T; ++t) {
        const float* p = probs.data() + t * L;
        switch (rc.kind) {
          case RouterKind::TopK:
          case RouterKind::Switch: rd::topk_token(p, E, K, rc.normalize, ex.data(), w.data(), s.data()); break;
          case RouterKind::TopP: rd::topp_token(p, E, c.top_p, E, ex.data(), w.data(), s.data()); break;
          case RouterKind::NullExperts:
            rd::null_experts_token(p, E, L, K, rc.normalize, ex.data(), w.data(), s.data());
            break;
          default: {
            // sigmoid_bias_token's selection and weights over the GPU's s (the
            // routine itself recomputes s from the logits with the host's expf).
            const rd::BiasedKey key{p, bias.data()};
            rd::select_top_k(key, E, K, ex.data());
            float sum = 0.0f;
            for (int j = 0; j < K; ++j) sum += p[ex[j]];
            for (int j = 0; j < K; ++j) {
              w[j] = rc.normalize ? p[ex[j]] / sum : p[ex[j]];
              s[j] = p[ex[j]];
            }
          }
        }
        for (int j = 0; j < K; ++j) {
          const size_t at = size_t(t) * K + j;
          ASSERT_EQ(expert[at], ex[j]) << label << " token " << t << " slot " << j;
          ASSERT_TRUE(same_bits(weight[at], w[j])) << label << " token " << t << " slot " << j;
          ASSERT_TRUE(same_bits(score[at], s[j])) << label << " token " << t << " slot " << j;
        }
      }
      EXPECT_LE(tokens_differing(want, expert, T), T / 100) << label;
    }
}

TEST(RouterCuda, HashMatchesCpuRouter) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  const int E = 13;
  std::vector<int32_t> ids(777);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i * 2654435761u);
  auto router = moe::make_router<float>(router_config(RouterKind::Hash, E, 1), 1);
  moe::RouterOutput<float> out;
  router->route(nullptr, ids.data(), int64_t(ids.size()), 0, out);
  auto d_ids = DeviceBuffer<int32_t>::from_host(ids);
  DeviceBuffer<int32_t> d_expert(ids.size());
  DeviceBuffer<float> d_weight(ids.size()), d_score(ids.size());
  ops::hash_route(d_ids.get(), int64_t(ids.size()), E, d_expert.get(), d_weight.get(), d_score.get(), stream.get());
  stream.sync();
  EXPECT_EQ(d_expert.raw(), out.expert);
  for (float w : d_weight.raw()) EXPECT_EQ(w, 1.0f);
}

TEST(RouterCuda, ExpertChoiceMatchesCpuRouterAndLayerRows) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  const int E = 8;
  const int64_t T = 500;
  for (bool coarse : {false, true})
    for (int64_t capacity : {int64_t(0), int64_t(7), int64_t(120), int64_t(500), int64_t(900)}) {
      const std::string label = "capacity " + std::to_string(capacity) + (coarse ? " coarse" : "");
      auto router = moe::make_router<float>(router_config(RouterKind::ExpertChoice, E, 2), 1);
      const std::vector<float> logits = make_logits(T, E, 8, coarse);
      moe::RouterOutput<float> out;
      router->route(logits.data(), nullptr, T, capacity, out);
      const Slots want = to_slots(out, E);
      const int64_t C = ops::expert_choice_take(T, capacity);

      auto d_logits = DeviceBuffer<float>::from_host(logits);
      DeviceBuffer<float> d_probs(T * E), d_cw(std::max<int64_t>(1, E * C)), d_weight(T * E), d_score(T * E);
      DeviceBuffer<int32_t> d_token(std::max<int64_t>(1, E * C)), d_expert(T * E), d_rows(T * E);
      const size_t bytes = ops::expert_choice_scratch_bytes(T, E);
      DeviceBuffer<char> scratch(bytes);
      ops::expert_choice_route(d_logits.get(), T, E, capacity, d_probs.get(), d_token.get(), d_cw.get(),
                               d_expert.get(), d_weight.get(), d_score.get(), d_rows.get(), scratch.get(), bytes,
                               stream.get());
      stream.sync();
      const auto probs = d_probs.raw();
      const auto expert = d_expert.raw();
      const auto weight = d_weight.raw();
      const auto rows = d_rows.raw();
      EXPECT_LE(test::max_rel_diff(probs.data(), out.probs.data(), probs.size()), 1e-6) << label;

      // Exactly the algorithm on the GPU's probabilities: each expert's C best
      // tokens (ties to the lower token), listed in token order.
      for (int e = 0; e < E && C > 0; ++e) {
        std::vector<int32_t> order(T);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t a, int32_t b) { return probs[a * E + e] > probs[b * E + e]; });
        order.resize(C);
        std::sort(order.begin(), order.end());
        const auto token = download(d_token.get() + e * C, C);
        const auto cw = download(d_cw.get() + e * C, C);
        ASSERT_EQ(token, order) << label << " expert " << e;
        for (int64_t j = 0; j < C; ++j) ASSERT_TRUE(same_bits(cw[j], probs[order[j] * E + e]));
      }
      // The token view points back at those rows, in expert order.
      const auto all_tokens = C > 0 ? download(d_token.get(), size_t(E * C)) : std::vector<int32_t>();
      for (int64_t t = 0; t < T; ++t) {
        int used = 0;
        for (int j = 0; j < E; ++j) {
          const size_t at = size_t(t) * E + j;
          if (expert[at] < 0) {
            ASSERT_EQ(rows[at], -1);
            continue;
          }
          ASSERT_EQ(j, used++) << "used slots come first";
          if (j > 0) {
            ASSERT_GT(expert[at], expert[at - 1]);
          }
          const int32_t r = rows[at];
          ASSERT_TRUE(r >= expert[at] * C && r < (expert[at] + 1) * C) << label;
          ASSERT_EQ(all_tokens[r], t);
          ASSERT_TRUE(same_bits(weight[at], probs[t * E + expert[at]]));
        }
      }
      EXPECT_LE(tokens_differing(want, expert, T), T / 100) << label;
    }
}

// ---- backward ----------------------------------------------------------------

TEST(RouterCuda, BackwardMatchesCpuRoutersOnTheirRouting) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  const int64_t T = 400;
  const int E = 12;
  for (const RouterCase& rc :
       {RouterCase{RouterKind::TopK, true, 3}, RouterCase{RouterKind::TopK, false, 2},
        RouterCase{RouterKind::Switch, false, 1}, RouterCase{RouterKind::TopP, false, 1},
        RouterCase{RouterKind::NullExperts, true, 3}, RouterCase{RouterKind::SigmoidBias, true, 2},
        RouterCase{RouterKind::SigmoidBias, false, 2}, RouterCase{RouterKind::ExpertChoice, false, 2}}) {
    const std::string label = to_string(rc.kind);
    MoeConfig c = router_config(rc.kind, E, rc.k);
    c.normalize_weights = rc.normalize;
    auto router = moe::make_router<float>(c, 1);
    const int L = router->num_logits();
    const int K = (rc.kind == RouterKind::TopP || rc.kind == RouterKind::ExpertChoice) ? E : rc.k;
    const auto logits = make_logits(T, L, 12, false);
    moe::RouterOutput<float> out;
    router->route(logits.data(), nullptr, T, 70, out);
    const Slots slots = to_slots(out, K);
    const auto dweight_csr = test::random_vector<float>(out.num_slots(), 2);
    std::vector<float> dweight(size_t(T) * K, 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = out.token_begin[t]; s < out.token_begin[t + 1]; ++s)
        dweight[t * K + (s - out.token_begin[t])] = dweight_csr[s];
    const auto dprobs0 = test::random_vector<float>(size_t(T) * L, 4);

    std::vector<float> want_dp = dprobs0, want_dl(size_t(T) * L);
    double want_loss = router->aux_loss(out, want_dp.data());
    router->weight_backward(out, dweight_csr.data(), want_dp.data());
    router->probs_backward(out, want_dp.data(), want_dl.data());

    auto d_probs = DeviceBuffer<float>::from_host(out.probs);
    auto d_expert = DeviceBuffer<int32_t>::from_host(slots.expert);
    auto d_weight = DeviceBuffer<float>::from_host(slots.weight);
    auto d_dweight = DeviceBuffer<float>::from_host(dweight);
    auto d_dprobs = DeviceBuffer<float>::from_host(dprobs0);
    DeviceBuffer<float> d_dlogits(size_t(T) * L);
    DeviceBuffer<double> d_loss(1);
    if (rc.kind == RouterKind::TopP) {
      ops::topp_aux_loss(d_probs.get(), T, E, c.entropy_coeff, d_dprobs.get(), d_loss.get(), stream.get());
    }
    ops::weight_backward_rows(d_probs.get(), d_expert.get(), d_weight.get(), d_dweight.get(), T, L, K, E,
                              rc.normalize, d_dprobs.get(), stream.get());
    if (rc.kind == RouterKind::SigmoidBias)
      ops::sigmoid_backward(d_probs.get(), d_dprobs.get(), T, E, d_dlogits.get(), stream.get());
    else
      ops::softmax_rows_backward(d_probs.get(), d_dprobs.get(), T, L, d_dlogits.get(), stream.get());
    stream.sync();
    const auto dp = d_dprobs.raw();
    const auto dl = d_dlogits.raw();
    EXPECT_LE(test::max_rel_diff(dp.data(), want_dp.data(), dp.size()), 1e-5) << label;
    EXPECT_LE(test::max_rel_diff(dl.data(), want_dl.data(), dl.size()), 1e-5) << label;
    if (rc.kind == RouterKind::TopP) {
      const double loss = download(d_loss.get(), 1)[0];
      EXPECT_NEAR(loss, want_loss, 1e-6 * std::max(1.0, std::abs(want_loss))) << label;
      EXPECT_GT(want_loss, 0.0);
    }
  }
}

TEST(RouterCuda, ToppAuxLossIsZeroWithoutCoefficient) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  DeviceBuffer<double> d_loss(1);
  const std::vector<double> nan = {std::nan("")};
  SY_CUDA_CHECK(cudaMemcpy(d_loss.get(), nan.data(), sizeof(double), cudaMemcpyHostToDevice));
  ops::topp_aux_loss(nullptr, 0, 4, 0.1, nullptr, d_loss.get(), stream.get());
  stream.sync();
  EXPECT_EQ(download(d_loss.get(), 1)[0], 0.0);
}

// ---- dispatch plan -----------------------------------------------------------

TEST(RouterCuda, DispatchPlanMatchesCpuLayer) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  for (RouterKind kind :
       {RouterKind::TopK, RouterKind::NullExperts, RouterKind::TopP, RouterKind::Hash, RouterKind::SigmoidBias})
    for (double factor : {1.0, 0.5, 0.0, -0.75})
      for (DropPolicy policy : {DropPolicy::Position, DropPolicy::Score})
        for (bool coarse : {false, true}) {
          const LayerPlan p = test::run_layer(kind, factor, policy, coarse, 777, 8, 0.7);
          const std::string label = std::string(to_string(kind)) + " factor " + std::to_string(factor) + " " +
                                    to_string(policy) + (coarse ? " coarse" : "");
          const int64_t S = p.T * p.K;
          auto d_expert = DeviceBuffer<int32_t>::from_host(p.slots.expert);
          auto d_score = DeviceBuffer<float>::from_host(p.slots.score);
          DeviceBuffer<int32_t> d_rows(S), d_routed(p.E), d_kept(p.E), d_offset(p.E + 1);
          const size_t bytes = ops::dispatch_plan_scratch_bytes(S, p.E);
          DeviceBuffer<char> scratch(bytes);
          ops::dispatch_plan(d_expert.get(), policy == DropPolicy::Score ? d_score.get() : nullptr, p.T, p.K, p.E,
                             p.capacity, policy, d_rows.get(), d_routed.get(), d_kept.get(), d_offset.get(),
                             scratch.get(), bytes, stream.get());
          stream.sync();
          ASSERT_EQ(d_rows.raw(), p.slot_row) << label;
          const auto routed = d_routed.raw(), kept = d_kept.raw(), offset = d_offset.raw();
          int32_t at = 0;
          for (int e = 0; e < p.E; ++e) {
            EXPECT_EQ(routed[e], p.routed[e]) << label;
            EXPECT_EQ(kept[e], p.kept[e]) << label;
            EXPECT_EQ(offset[e], at) << label;
            at += kept[e];
          }
          EXPECT_EQ(offset[p.E], at) << label;
        }
}

TEST(RouterCuda, DispatchPlanOfNoTokensGivesZeroCounts) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  const int E = 5;
  DeviceBuffer<int32_t> d_routed(E), d_kept(E), d_offset(E + 1);
  const size_t bytes = ops::dispatch_plan_scratch_bytes(0, E);
  DeviceBuffer<char> scratch(bytes);
  ops::dispatch_plan(nullptr, nullptr, 0, 2, E, 3, DropPolicy::Score, nullptr, d_routed.get(), d_kept.get(),
                     d_offset.get(), scratch.get(), bytes, stream.get());
  stream.sync();
  EXPECT_EQ(d_routed.raw(), std::vector<int32_t>(E, 0));
  EXPECT_EQ(d_offset.raw(), std::vector<int32_t>(E + 1, 0));
}

// ---- dispatch and combine ----------------------------------------------------

template <typename T>
class DispatchCuda : public ::testing::Test {};
TYPED_TEST_SUITE(DispatchCuda, test::StorageTypes, test::StorageName);

// A routing with unused (-1) and null (>= E) slots and drops, planned by the reference.
struct Routing {
  int64_t T;
  int K, E;
  std::vector<int32_t> slot_row;
  std::vector<float> weight;
  int64_t rows;
};
Routing make_routing(int64_t T, int K, int E, int64_t capacity) {
  Routing r{T, K, E, {}, {}, 0};
  std::mt19937_64 rng(77);
  std::vector<int32_t> expert(T * K);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> perm(E + 2);
    std::iota(perm.begin(), perm.end(), 0);  // E, E + 1: null experts
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int j = 0; j < K; ++j) expert[t * K + j] = (rng() % 5 == 0) ? -1 : perm[j];
  }
  r.weight = test::random_vector<float>(T * K, 9, 0.0, 1.0);
  r.slot_row.resize(T * K);
  std::vector<int32_t> routed(E), kept(E), offset(E + 1);
  ops::dispatch_plan_reference(expert.data(), r.weight.data(), T * K, E, capacity, DropPolicy::Score,
                               r.slot_row.data(), routed.data(), kept.data(), offset.data());
  r.rows = offset[E];
  return r;
}

TYPED_TEST(DispatchCuda, ForwardAndBackwardMatchTheCpuLayerLoops) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  const int64_t Tn = 300, M = 200;
  const int K = 3, E = 7;
  const Routing r = make_routing(Tn, K, E, 100);
  ASSERT_GT(r.rows, 0);
  const auto x = test::rounded<T>(test::random_vector<float>(Tn * M, 1));
  const auto y = test::rounded<T>(test::random_vector<float>(r.rows * M, 2));
  const auto dout = test::rounded<T>(test::random_vector<float>(Tn * M, 3));
  const auto dpacked = test::rounded<T>(test::random_vector<float>(r.rows * M, 4));
  const auto base = test::rounded<T>(test::random_vector<float>(Tn * M, 5));
  auto d_rows = DeviceBuffer<int32_t>::from_host(r.slot_row);
  auto d_weight = DeviceBuffer<float>::from_host(r.weight);
  auto d_x = DeviceBuffer<T>::from_host(x);
  auto d_y = DeviceBuffer<T>::from_host(y);
  auto d_dout = DeviceBuffer<T>::from_host(dout);
  auto d_dpacked = DeviceBuffer<T>::from_host(dpacked);

  // CPU layer loops (models/moe_layer.cpp), in double.
  std::vector<float> packed_want(r.rows * M, 0.0f), combined(Tn * M), combined_acc(Tn * M), undispatched(Tn * M),
      undispatched_acc(Tn * M), dy_want(r.rows * M, 0.0f), dw_want(Tn * K, 0.0f);
  for (int64_t t = 0; t < Tn; ++t)
    for (int64_t j = 0; j < M; ++j) {
      double c = 0, u = 0;
      for (int k = 0; k < K; ++k) {
        const int32_t row = r.slot_row[t * K + k];
        if (row < 0) continue;
        packed_want[row * M + j] = x[t * M + j];
        c += double(r.weight[t * K + k]) * y[row * M + j];
        u += dpacked[row * M + j];
        dy_want[row * M + j] = r.weight[t * K + k] * dout[t * M + j];
      }
      combined[t * M + j] = float(c);
      combined_acc[t * M + j] = float(c + base[t * M + j]);
      undispatched[t * M + j] = float(u);
      undispatched_acc[t * M + j] = float(u + base[t * M + j]);
    }
  for (int64_t t = 0; t < Tn; ++t)
    for (int k = 0; k < K; ++k) {
      const int32_t row = r.slot_row[t * K + k];
      if (row < 0) continue;
      double dot = 0;
      for (int64_t j = 0; j < M; ++j) dot += double(dout[t * M + j]) * y[row * M + j];
      dw_want[t * K + k] = float(dot);
    }
  const double tol = test::tolerance<T>();

  DeviceBuffer<T> d_packed(r.rows * M);
  ops::dispatch_forward(d_x.get(), d_rows.get(), Tn, K, M, d_packed.get(), stream.get());
  stream.sync();
  EXPECT_EQ(d_packed.to_float(), packed_want);  // copies are exact

  for (bool acc : {false, true}) {
    auto d_out = DeviceBuffer<T>::from_host(base);
    ops::combine_forward(d_y.get(), d_weight.get(), d_rows.get(), Tn, K, M, acc, d_out.get(), stream.get());
    auto d_dx = DeviceBuffer<T>::from_host(base);
    ops::dispatch_backward(d_dpacked.get(), d_rows.get(), Tn, K, M, acc, d_dx.get(), stream.get());
    stream.sync();
    const auto out = d_out.to_float(), dx = d_dx.to_float();
    const auto& want_out = acc ? combined_acc : combined;
    const auto& want_dx = acc ? undispatched_acc : undispatched;
    EXPECT_LE(test::max_rel_diff(out.data(), want_out.data(), out.size()), tol) << "accumulate " << acc;
    EXPECT_LE(test::max_rel_diff(dx.data(), want_dx.data(), dx.size()), tol) << "accumulate " << acc;
  }

  DeviceBuffer<T> d_dy(r.rows * M);
  DeviceBuffer<float> d_dw(Tn * K);
  ops::combine_backward(d_dout.get(), d_y.get(), d_weight.get(), d_rows.get(), Tn, K, M, d_dy.get(), d_dw.get(),
                        stream.get());
  stream.sync();
  const auto dy = d_dy.to_float(), dw = d_dw.raw();
  EXPECT_LE(test::max_rel_diff(dy.data(), dy_want.data(), dy.size()), tol);
  EXPECT_LE(test::max_rel_diff(dw.data(), dw_want.data(), dw.size()), 1e-4);  // float accumulation of M products
  for (int64_t s = 0; s < Tn * K; ++s)
    if (r.slot_row[s] < 0) {
      EXPECT_EQ(dw[s], 0.0f) << "slot " << s;
    }

  // Deterministic: a second run gives the same bits.
  DeviceBuffer<float> d_dw2(Tn * K);
  ops::combine_backward(d_dout.get(), d_y.get(), d_weight.get(), d_rows.get(), Tn, K, M, d_dy.get(), d_dw2.get(),
                        stream.get());
  stream.sync();
  EXPECT_EQ(d_dw2.raw(), dw);
}

}  // namespace
}  // namespace sy
