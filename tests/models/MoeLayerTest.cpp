// The MoE layer against a naive reference (one token, one expert at a time)
// and against central finite differences, for every router and balance kind.
#include "models/moe_layer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "tests/support/test_support.hpp"

namespace sy::moe {
namespace {

MoeConfig small_config(RouterKind router, BalanceKind balance = BalanceKind::Micro) {
  MoeConfig c;
  c.router = router;
  c.num_experts = 4;
  c.top_k = (router == RouterKind::Switch || router == RouterKind::Hash) ? 1 : 2;
  c.top_p = 0.6;
  c.hidden_size = 6;
  c.activation = ActivationKind::GELU;
  c.capacity_factor = 1.0;  // drops happen with 16 tokens
  c.balance = balance;
  c.balance_coeff = 0.05;
  c.z_loss_coeff = 0.01;
  c.entropy_coeff = 0.02;
  c.num_null_experts = router == RouterKind::NullExperts ? 2 : 0;
  c.bias_update_rate = 0.01;
  return c;
}

constexpr int64_t kTokens = 16, kDim = 8, kSeq = 8;

std::vector<int32_t> token_ids(int64_t n) {
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>(i * 7 + 3);
  return ids;
}

// ---- naive reference -------------------------------------------------------

double act_fwd(ActivationKind k, double v) {
  if (k == ActivationKind::ReLU) return v > 0 ? v : 0;
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * v * (1 + std::tanh(c * (v + 0.044715 * v * v * v)));
}
double silu(double g) { return g / (1 + std::exp(-g)); }

// y = W2 act(W1 x) for one token and one expert, in plain loops.
std::vector<double> naive_expert(const ExpertShape& s, const double* w1, const double* w2, const double* x) {
  const int64_t M = s.model_dim, H = s.hidden, H1 = s.h1();
  std::vector<double> h1(H1, 0.0), a(H), y(M, 0.0);
  for (int64_t i = 0; i < H1; ++i)
    for (int64_t j = 0; j < M; ++j) h1[i] += w1[i * M + j] * x[j];
  for (int64_t i = 0; i < H; ++i)
    a[i] = s.activation == ActivationKind::SwiGLU ? silu(h1[i]) * h1[H + i] : act_fwd(s.activation, h1[i]);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < H; ++j) y[i] += w2[i * H + j] * a[j];
  return y;
}

// Which real slots a naive capacity rule keeps: walk tokens in order (position)
// or scores from high to low (score), keeping at most `capacity` per expert.
std::vector<bool> naive_kept(const RouterOutput<double>& r, int64_t E, int64_t capacity, DropPolicy policy) {
  const int64_t S = r.num_slots();
  std::vector<int64_t> order(S);
  for (int64_t s = 0; s < S; ++s) order[s] = s;
  if (policy == DropPolicy::Score)
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return r.score[a] > r.score[b]; });
  std::vector<int64_t> load(E, 0);
  std::vector<bool> kept(S, false);
  for (int64_t s : order) {
    const int32_t e = r.expert[s];
    if (e >= E) continue;
    if (load[e] < capacity) {
      kept[s] = true;
      ++load[e];
    }
  }
  return kept;
}

void expect_matches_naive(const MoeConfig& config, const char* label) {
  SCOPED_TRACE(label);
  MoeLayer<double> layer(config, kDim, kTokens, kSeq, 42);
  const auto x = test::random_vector<double>(kTokens * kDim, 7, -2, 2);
  const auto ids = token_ids(kTokens);
  std::vector<double> out(kTokens * kDim);
  layer.forward(x.data(), ids.data(), kTokens, out.data());

  const auto& r = layer.routing();
  const ExpertShape& s = layer.expert_shape();
  const int64_t E = s.num_experts, M = kDim;
  const auto kept = naive_kept(r, E, layer.stats().capacity, config.drop_policy);
  std::vector<double> want(kTokens * M, 0.0);
  if (config.num_shared_experts > 0) {
    const ExpertShape shared{1, M, config.num_shared_experts * s.hidden, s.activation};
    for (int64_t t = 0; t < kTokens; ++t) {
      const auto y = naive_expert(shared, layer.param("shared_w1"), layer.param("shared_w2"), &x[t * M]);
      for (int64_t j = 0; j < M; ++j) want[t * M + j] += y[j];
    }
  }
  int64_t computed = 0;
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t sl = r.token_begin[t]; sl < r.token_begin[t + 1]; ++sl) {
      ASSERT_EQ(layer.slot_row()[sl] >= 0, bool(kept[sl])) << "slot " << sl << " of token " << t;
      if (!kept[sl]) continue;
      ++computed;
      const int32_t e = r.expert[sl];
      const auto y = naive_expert(s, layer.param("expert_w1") + e * s.h1() * M,
                                  layer.param("expert_w2") + e * M * s.hidden, &x[t * M]);
      for (int64_t j = 0; j < M; ++j) want[t * M + j] += r.weight[sl] * y[j];
    }
  EXPECT_EQ(computed, std::accumulate(layer.stats().tokens_per_expert.begin(),
                                      layer.stats().tokens_per_expert.end(), int64_t(0)));
  EXPECT_LT(test::max_rel_diff(out.data(), want.data(), want.size()), 1e-12);
}

// Naive backward, one (token, expert) pair at a time, for loss = sum(out * g)
// with no auxiliary losses: the expert weights' and input gradients through
// the experts, the combine weights' gradient, and through the router's own
// backward (already checked against finite differences) the router weight's
// and the input's router part.
void expect_gradients_match_naive(MoeConfig config, const char* label) {
  SCOPED_TRACE(label);
  config.balance = BalanceKind::None;
  config.z_loss_coeff = 0;
  config.entropy_coeff = 0;
  MoeLayer<double> layer(config, kDim, kTokens, kSeq, 42);
  const auto x = test::random_vector<double>(kTokens * kDim, 7, -2, 2);
  const auto g = test::random_vector<double>(kTokens * kDim, 8);
  const auto ids = token_ids(kTokens);
  std::vector<double> out(kTokens * kDim), dx(kTokens * kDim);
  layer.forward(x.data(), ids.data(), kTokens, out.data());
  layer.zero_grads();
  layer.backward(g.data(), dx.data());

  const ExpertShape& s = layer.expert_shape();
  const int64_t M = kDim, H = s.hidden, H1 = s.h1(), E = s.num_experts;
  const auto& r = layer.routing();
  const double* w1 = layer.param("expert_w1");
  const double* w2 = layer.param("expert_w2");
  std::vector<double> dw1(E * H1 * M, 0.0), dw2(E * M * H, 0.0), want_dx(kTokens * M, 0.0);
  std::vector<double> dweight(r.num_slots(), 0.0);
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t sl = r.token_begin[t]; sl < r.token_begin[t + 1]; ++sl) {
      if (layer.slot_row()[sl] < 0) continue;
      const int32_t e = r.expert[sl];
      const double* W1 = w1 + e * H1 * M;
      const double* W2 = w2 + e * M * H;
      const double* xt = &x[t * M];
      const double* gt = &g[t * M];
      std::vector<double> h1(H1, 0.0), a(H), y(M, 0.0), da(H, 0.0), dh1(H1, 0.0);
      for (int64_t i = 0; i < H1; ++i)
        for (int64_t j = 0; j < M; ++j) h1[i] += W1[i * M + j] * xt[j];
      for (int64_t i = 0; i < H; ++i)
        a[i] = s.activation == ActivationKind::SwiGLU ? silu(h1[i]) * h1[H + i] : act_fwd(s.activation, h1[i]);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < H; ++j) y[i] += W2[i * H + j] * a[j];
      for (int64_t i = 0; i < M; ++i) dweight[sl] += gt[i] * y[i];
      const double w = r.weight[sl];
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < H; ++j) {
          dw2[e * M * H + i * H + j] += w * gt[i] * a[j];
          da[j] += W2[i * H + j] * w * gt[i];
        }
      for (int64_t i = 0; i < H; ++i) {
        if (s.activation == ActivationKind::SwiGLU) {
          const double gate = h1[i], up = h1[H + i], sg = 1 / (1 + std::exp(-gate));
          dh1[i] = da[i] * up * sg * (1 + gate * (1 - sg));
          dh1[H + i] = da[i] * silu(gate);
        } else if (s.activation == ActivationKind::ReLU) {
          dh1[i] = h1[i] > 0 ? da[i] : 0;
        } else {
          const double c = std::sqrt(2.0 / M_PI), v = h1[i], u = c * (v + 0.044715 * v * v * v);
          const double th = std::tanh(u);
          dh1[i] = da[i] * (0.5 * (1 + th) + 0.5 * v * (1 - th * th) * c * (1 + 3 * 0.044715 * v * v));
        }
      }
      for (int64_t i = 0; i < H1; ++i)
        for (int64_t j = 0; j < M; ++j) {
          dw1[e * H1 * M + i * M + j] += dh1[i] * xt[j];
          want_dx[t * M + j] += W1[i * M + j] * dh1[i];
        }
    }
  EXPECT_LT(test::max_rel_diff(layer.grad("expert_w1"), dw1.data(), dw1.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(layer.grad("expert_w2"), dw2.data(), dw2.size()), 1e-5);
  if (double* wr = layer.param("router_weight")) {
    const int L = layer.router().num_logits();
    std::vector<double> dprobs(kTokens * L, 0.0), dlogits(kTokens * L);
    layer.router().weight_backward(r, dweight.data(), dprobs.data());
    layer.router().probs_backward(r, dprobs.data(), dlogits.data());
    std::vector<double> dwr(L * M, 0.0);
    for (int64_t t = 0; t < kTokens; ++t)
      for (int i = 0; i < L; ++i)
        for (int64_t j = 0; j < M; ++j) {
          dwr[i * M + j] += dlogits[t * L + i] * x[t * M + j];
          want_dx[t * M + j] += dlogits[t * L + i] * wr[i * M + j];
        }
    EXPECT_LT(test::max_rel_diff(layer.grad("router_weight"), dwr.data(), dwr.size()), 1e-5);
  }
  EXPECT_LT(test::max_rel_diff(dx.data(), want_dx.data(), want_dx.size()), 1e-5);
}

TEST(MoeLayer, GradientsMatchNaiveReference) {
  for (RouterKind k : {RouterKind::TopK, RouterKind::Switch, RouterKind::ExpertChoice, RouterKind::TopP,
                       RouterKind::NullExperts, RouterKind::SigmoidBias, RouterKind::Hash})
    expect_gradients_match_naive(small_config(k), to_string(k));
  for (ActivationKind a : {ActivationKind::ReLU, ActivationKind::SwiGLU}) {
    MoeConfig c = small_config(RouterKind::TopK);
    c.activation = a;
    c.drop_policy = DropPolicy::Score;
    expect_gradients_match_naive(c, to_string(a));
  }
}

TEST(MoeLayer, MatchesNaiveReferenceForEveryRouter) {
  for (RouterKind k : {RouterKind::TopK, RouterKind::Switch, RouterKind::ExpertChoice, RouterKind::TopP,
                       RouterKind::NullExperts, RouterKind::SigmoidBias, RouterKind::Hash})
    expect_matches_naive(small_config(k), to_string(k));
}

TEST(MoeLayer, MatchesNaiveReferenceForEveryActivationDropPolicyAndSharedExpert) {
  for (ActivationKind a : {ActivationKind::ReLU, ActivationKind::GELU, ActivationKind::SwiGLU})
    for (DropPolicy p : {DropPolicy::Position, DropPolicy::Score})
      for (int shared : {0, 1}) {
        MoeConfig c = small_config(RouterKind::TopK);
        c.activation = a;
        c.drop_policy = p;
        c.num_shared_experts = shared;
        expect_matches_naive(c, (std::string(to_string(a)) + "/" + to_string(p) + "/shared=" +
                                 std::to_string(shared)).c_str());
      }
}

TEST(MoeLayer, FloatMatchesDouble) {
  for (RouterKind k : {RouterKind::TopK, RouterKind::TopP, RouterKind::NullExperts}) {
    const MoeConfig c = small_config(k);
    MoeLayer<double> ld(c, kDim, kTokens, kSeq, 5);
    MoeLayer<float> lf(c, kDim, kTokens, kSeq, 5);
    for (int64_t i = 0; i < ld.num_params(); ++i) lf.params()[i] = static_cast<float>(ld.params()[i]);
    const auto xd = test::random_vector<double>(kTokens * kDim, 9, -2, 2);
    std::vector<float> xf(xd.begin(), xd.end());
    const auto ids = token_ids(kTokens);
    std::vector<double> od(kTokens * kDim), dxd(kTokens * kDim);
    std::vector<float> of(kTokens * kDim), dxf(kTokens * kDim);
    ld.forward(xd.data(), ids.data(), kTokens, od.data());
    lf.forward(xf.data(), ids.data(), kTokens, of.data());
    ASSERT_EQ(ld.slot_row(), lf.slot_row()) << to_string(k);  // same decisions
    std::vector<double> ofd(of.begin(), of.end());
    EXPECT_LT(test::max_rel_diff(ofd.data(), od.data(), od.size()), 1e-5) << to_string(k);
    const auto g = test::random_vector<double>(kTokens * kDim, 10);
    std::vector<float> gf(g.begin(), g.end());
    ld.backward(g.data(), dxd.data());
    lf.backward(gf.data(), dxf.data());
    std::vector<double> dxfd(dxf.begin(), dxf.end());
    EXPECT_LT(test::max_rel_diff(dxfd.data(), dxd.data(), dxd.size()), 1e-5) << to_string(k);
    std::vector<double> gfd(lf.grads(), lf.grads() + lf.num_params());
    EXPECT_LT(test::max_rel_diff(gfd.data(), ld.grads(), gfd.size()), 1e-5) << to_string(k);
  }
}

// ---- finite differences ----------------------------------------------------

// loss = sum(out * R) + aux. Checks d/dx and d/dparams (a sample of each
// parameter block) against central differences; elements whose perturbation
// changes a routing decision are skipped (the loss is not differentiable there),
// and at most a few may be.
void expect_gradients_match_fd(const MoeConfig& config, const std::string& label) {
  SCOPED_TRACE(label);
  MoeLayer<double> layer(config, kDim, kTokens, kSeq, 3);
  auto x = test::random_vector<double>(kTokens * kDim, 21, -2, 2);
  const auto R = test::random_vector<double>(kTokens * kDim, 22);
  const auto ids = token_ids(kTokens);
  std::vector<double> out(kTokens * kDim), dx(kTokens * kDim);

  auto loss_and_decisions = [&](std::vector<int64_t>* rows) {
    layer.balancer().reset();  // global counts: each evaluation is the same first micro-batch
    const double aux = layer.forward(x.data(), ids.data(), kTokens, out.data());
    if (rows) *rows = layer.slot_row();
    double l = aux;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * R[i];
    return l;
  };
  std::vector<int64_t> base_rows;
  loss_and_decisions(&base_rows);
  layer.zero_grads();
  layer.backward(R.data(), dx.data());
  const std::vector<double> grads(layer.grads(), layer.grads() + layer.num_params());

  const double h = 1e-6;
  int skipped = 0, checked = 0;
  auto check = [&](double* value, double analytic, const std::string& what) {
    const double saved = *value;
    std::vector<int64_t> rp, rm;
    *value = saved + h;
    const double lp = loss_and_decisions(&rp);
    *value = saved - h;
    const double lm = loss_and_decisions(&rm);
    *value = saved;
    if (rp != base_rows || rm != base_rows) {
      ++skipped;
      return;
    }
    const double numeric = (lp - lm) / (2 * h);
    ++checked;
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric))) << what;
  };
  std::mt19937_64 pick(5);
  for (int i = 0; i < 24; ++i) {
    const int64_t idx = static_cast<int64_t>(pick() % x.size());
    check(&x[idx], dx[idx], "dx[" + std::to_string(idx) + "]");
  }
  for (const char* name : {"router_weight", "expert_w1", "expert_w2", "shared_w1", "shared_w2"}) {
    double* p = layer.param(name);
    if (!p) continue;
    const int64_t n = layer.param_size(name);
    const int64_t offset = p - layer.params();
    for (int i = 0; i < 16; ++i) {
      const int64_t idx = static_cast<int64_t>(pick() % n);
      check(p + idx, grads[offset + idx], std::string(name) + "[" + std::to_string(idx) + "]");
    }
  }
  EXPECT_LE(skipped, 4) << "too many routing flips under perturbation";
  EXPECT_GE(checked, 30);
}

TEST(MoeLayer, GradientsMatchFiniteDifferencesForEveryRouter) {
  for (RouterKind k : {RouterKind::TopK, RouterKind::Switch, RouterKind::ExpertChoice, RouterKind::TopP,
                       RouterKind::NullExperts, RouterKind::SigmoidBias, RouterKind::Hash})
    expect_gradients_match_fd(small_config(k), to_string(k));
}

TEST(MoeLayer, GradientsMatchFiniteDifferencesForEveryBalanceKind) {
  for (BalanceKind b : {BalanceKind::Micro, BalanceKind::Global, BalanceKind::Sequence, BalanceKind::None})
    for (RouterKind k : {RouterKind::TopK, RouterKind::NullExperts})
      expect_gradients_match_fd(small_config(k, b), std::string(to_string(k)) + "/" + to_string(b));
}

TEST(MoeLayer, GradientsMatchFiniteDifferencesWithSharedExpertSwiGLUScoreDropsAndJitter) {
  MoeConfig c = small_config(RouterKind::TopK);
  c.activation = ActivationKind::SwiGLU;
  c.num_shared_experts = 1;
  c.drop_policy = DropPolicy::Score;
  expect_gradients_match_fd(c, "swiglu/shared/score");
  MoeConfig s = small_config(RouterKind::Switch);
  s.jitter = 0.1;
  expect_gradients_match_fd(s, "switch/jitter");
  MoeConfig n = small_config(RouterKind::TopK);
  n.normalize_weights = false;
  n.capacity_factor = 0;  // dropless
  expect_gradients_match_fd(n, "topk/unnormalized/dropless");
}

// ---- capacity, drops and statistics on hand-made routing --------------------

// Router weight = 10 * identity (M = E = 4) and one-hot tokens: token t goes
// to expert e_t with certainty; scaling a token scales its score.
struct HandRouted {
  MoeConfig config;
  std::unique_ptr<MoeLayer<double>> layer;
  std::vector<double> x, out;
  HandRouted(std::vector<int> experts, std::vector<double> scale, double capacity_factor, DropPolicy policy) {
    config = small_config(RouterKind::Switch);
    config.capacity_factor = capacity_factor;
    config.drop_policy = policy;
    const int64_t T = static_cast<int64_t>(experts.size());
    layer = std::make_unique<MoeLayer<double>>(config, 4, T, T, 1);
    double* wr = layer->param("router_weight");
    for (int i = 0; i < 16; ++i) wr[i] = (i % 5 == 0) ? 10.0 : 0.0;
    x.assign(T * 4, 0.0);
    for (int64_t t = 0; t < T; ++t) x[t * 4 + experts[t]] = scale[t];
    out.resize(T * 4);
    layer->forward(x.data(), nullptr, T, out.data());
  }
};

TEST(MoeLayer, CapacityDropsByPosition) {
  // 8 tokens, k = 1, E = 4, c = 1: C = ceil(1 * 8 / 4 * 1) = 2. Expert 0 gets tokens 0..3.
  HandRouted h({0, 0, 0, 0, 1, 1, 2, 3}, {1, 1, 1, 1, 1, 1, 1, 1}, 1.0, DropPolicy::Position);
  const auto& st = h.layer->stats();
  EXPECT_EQ(st.capacity, 2);
  EXPECT_EQ(st.routed_slots, 8);
  EXPECT_EQ(st.dropped_slots, 2);
  EXPECT_DOUBLE_EQ(st.dropped_fraction(), 0.25);
  EXPECT_EQ(st.tokens_per_expert, (std::vector<int64_t>{2, 2, 1, 1}));
  EXPECT_EQ(st.routed_per_expert, (std::vector<int64_t>{4, 2, 1, 1}));
  EXPECT_DOUBLE_EQ(st.experts_per_token, 6.0 / 8.0);
  EXPECT_DOUBLE_EQ(st.load_max_over_mean(), 2.0 / 1.5);
  const auto& rows = h.layer->slot_row();
  EXPECT_GE(rows[0], 0);
  EXPECT_GE(rows[1], 0);
  EXPECT_EQ(rows[2], -1);  // the later tokens are dropped
  EXPECT_EQ(rows[3], -1);
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(h.out[2 * 4 + j], 0.0);  // a dropped token's layer output is zero: it rides the residual
    EXPECT_EQ(h.out[3 * 4 + j], 0.0);
  }
}

TEST(MoeLayer, CapacityDropsByScore) {
  // Tokens 2 and 3 have the larger router scores: they are kept, 0 and 1 dropped.
  HandRouted h({0, 0, 0, 0, 1, 1, 2, 3}, {0.1, 0.2, 1, 0.9, 1, 1, 1, 1}, 1.0, DropPolicy::Score);
  const auto& rows = h.layer->slot_row();
  EXPECT_EQ(rows[0], -1);
  EXPECT_EQ(rows[1], -1);
  EXPECT_GE(rows[2], 0);
  EXPECT_GE(rows[3], 0);
  EXPECT_EQ(h.layer->stats().dropped_slots, 2);
}

TEST(MoeLayer, DroplessAndCappedDropless) {
  HandRouted dropless({0, 0, 0, 0, 1, 1, 2, 3}, {1, 1, 1, 1, 1, 1, 1, 1}, 0.0, DropPolicy::Position);
  EXPECT_EQ(dropless.layer->stats().capacity, 4);  // the largest load
  EXPECT_EQ(dropless.layer->stats().dropped_slots, 0);
  // c = -1.5: C = min(largest load 4, ceil(1.5 * 8 / 4) = 3).
  HandRouted capped({0, 0, 0, 0, 1, 1, 2, 3}, {1, 1, 1, 1, 1, 1, 1, 1}, -1.5, DropPolicy::Position);
  EXPECT_EQ(capped.layer->stats().capacity, 3);
  EXPECT_EQ(capped.layer->stats().dropped_slots, 1);
}

TEST(MoeLayer, NullExpertsGiveZeroToKRealExpertsPerToken) {
  MoeConfig c = small_config(RouterKind::NullExperts);
  c.num_null_experts = 4;
  c.capacity_factor = 0;
  MoeLayer<double> layer(c, kDim, 64, kSeq, 11);
  // A strong router so some tokens pick nulls only and some real only.
  double* wr = layer.param("router_weight");
  for (int64_t i = 0; i < layer.param_size("router_weight"); ++i) wr[i] *= 200.0;
  const auto x = test::random_vector<double>(64 * kDim, 12, -2, 2);
  std::vector<double> out(64 * kDim);
  layer.forward(x.data(), nullptr, 64, out.data());
  const auto& r = layer.routing();
  std::set<int> real_counts;
  for (int64_t t = 0; t < 64; ++t) {
    int real = 0;
    for (int64_t s = r.token_begin[t]; s < r.token_begin[t + 1]; ++s) real += r.expert[s] < c.num_experts;
    ASSERT_LE(real, c.top_k);
    real_counts.insert(real);
  }
  EXPECT_TRUE(real_counts.count(0) && real_counts.count(c.top_k)) << "expected tokens with 0 and with k real experts";
  EXPECT_GT(layer.stats().null_slots, 0);
  EXPECT_LT(layer.stats().experts_per_token, double(c.top_k));
}

TEST(MoeLayer, TopPUsesAVaryingNumberOfExperts) {
  MoeConfig c = small_config(RouterKind::TopP);
  c.capacity_factor = 0;
  MoeLayer<double> layer(c, kDim, 64, kSeq, 13);
  double* wr = layer.param("router_weight");
  for (int64_t i = 0; i < layer.param_size("router_weight"); ++i) wr[i] *= 30.0;
  const auto x = test::random_vector<double>(64 * kDim, 14, -2, 2);
  std::vector<double> out(64 * kDim);
  layer.forward(x.data(), nullptr, 64, out.data());
  std::set<int64_t> per_token;
  const auto& r = layer.routing();
  for (int64_t t = 0; t < 64; ++t) per_token.insert(r.token_begin[t + 1] - r.token_begin[t]);
  EXPECT_GE(per_token.size(), 2u) << "top-p should give tokens different expert counts";
}

TEST(MoeLayer, ExpertChoiceRespectsPerExpertCapacity) {
  MoeConfig c = small_config(RouterKind::ExpertChoice);
  MoeLayer<double> layer(c, kDim, kTokens, kSeq, 15);
  const auto x = test::random_vector<double>(kTokens * kDim, 16, -2, 2);
  std::vector<double> out(kTokens * kDim);
  layer.forward(x.data(), nullptr, kTokens, out.data());
  const int64_t C = layer.capacity_for(kTokens, kTokens);  // ceil(2 * 16 / 4 * 1.0) = 8
  EXPECT_EQ(C, 8);
  for (int64_t n : layer.stats().tokens_per_expert) EXPECT_EQ(n, C);
  EXPECT_EQ(layer.stats().dropped_slots, 0);
}

TEST(MoeLayer, HashIsDeterministicAndIgnoresTheInput) {
  const MoeConfig c = small_config(RouterKind::Hash);
  MoeLayer<double> a(c, kDim, kTokens, kSeq, 1), b(c, kDim, kTokens, kSeq, 2);
  const auto ids = token_ids(kTokens);
  const auto x1 = test::random_vector<double>(kTokens * kDim, 1), x2 = test::random_vector<double>(kTokens * kDim, 2);
  std::vector<double> out(kTokens * kDim);
  a.forward(x1.data(), ids.data(), kTokens, out.data());
  b.forward(x2.data(), ids.data(), kTokens, out.data());
  EXPECT_EQ(a.routing().expert, b.routing().expert);
  EXPECT_THROW(a.forward(x1.data(), nullptr, kTokens, out.data()), InvalidArgument);
}

TEST(MoeLayer, SigmoidBiasUpdateShiftsLoadTowardIdleExperts) {
  MoeConfig c = small_config(RouterKind::SigmoidBias, BalanceKind::None);
  c.bias_update_rate = 0.002;
  c.capacity_factor = 0;
  MoeLayer<double> layer(c, kDim, 64, kSeq, 17);
  double* wr = layer.param("router_weight");
  for (int64_t i = 0; i < kDim; ++i) wr[i] += 0.3;  // expert 0 attracts most tokens (x has mean +1)
  const auto x = test::random_vector<double>(64 * kDim, 18, -1, 3);
  std::vector<double> out(64 * kDim);
  layer.forward(x.data(), nullptr, 64, out.data());
  const double before = layer.stats().load_max_over_mean();
  ASSERT_GT(before, 1.25) << "the test needs an unbalanced start";
  const std::vector<double> weights_before(layer.routing().weight);
  double late = 0;  // mean imbalance over the last 50 steps (the sign rule oscillates around balance)
  for (int step = 0; step < 300; ++step) {
    layer.on_optimizer_step();
    layer.forward(x.data(), nullptr, 64, out.data());
    if (step >= 250) late += layer.stats().load_max_over_mean() / 50;
  }
  EXPECT_LT(late, 1.2) << "started at " << before;
  // The bias moved toward the idle experts: positive where the first load was below the mean.
  const auto bias = layer.router().bias();
  EXPECT_GT(*std::max_element(bias.begin(), bias.end()), 0.0);
  EXPECT_LT(*std::min_element(bias.begin(), bias.end()), 0.0);
}

TEST(MoeLayer, Bf16RouterRoundsTheLogitsInputsOnly) {
  MoeConfig c = small_config(RouterKind::TopK);
  c.capacity_factor = 0;
  MoeConfig b = c;
  b.router_dtype = DType::BF16;
  MoeLayer<double> l32(c, kDim, 64, kSeq, 19), l16(b, kDim, 64, kSeq, 19);
  const auto x = test::random_vector<double>(64 * kDim, 20, -2, 2);
  std::vector<double> o32(64 * kDim), o16(64 * kDim);
  l32.forward(x.data(), nullptr, 64, o32.data());
  l16.forward(x.data(), nullptr, 64, o16.data());
  int same = 0;
  for (size_t s = 0; s < l32.routing().expert.size(); ++s) same += l32.routing().expert[s] == l16.routing().expert[s];
  EXPECT_GE(same, int(0.9 * l32.routing().expert.size())) << "bf16 logits should rarely change the choice";
  EXPECT_NE(l32.routing().weight, l16.routing().weight) << "bf16 rounding must change the logits";
  for (size_t s = 0; s < l32.routing().weight.size(); ++s) {
    if (l32.routing().expert[s] == l16.routing().expert[s]) {
      EXPECT_NEAR(l32.routing().weight[s], l16.routing().weight[s], 0.02);
    }
  }
}

TEST(MoeLayer, RejectsBadCalls) {
  MoeLayer<double> layer(small_config(RouterKind::TopK), kDim, kTokens, kSeq, 1);
  std::vector<double> x(kTokens * kDim), out(kTokens * kDim);
  EXPECT_THROW(layer.forward(x.data(), nullptr, kTokens + 1, out.data()), InvalidArgument);
  EXPECT_THROW(layer.forward(x.data(), nullptr, 0, out.data()), InvalidArgument);
  MoeLayer<double> fresh(small_config(RouterKind::TopK), kDim, kTokens, kSeq, 1);
  EXPECT_THROW(fresh.backward(out.data(), x.data()), InvalidArgument);
}

}  // namespace
}  // namespace sy::moe
