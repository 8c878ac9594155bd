#include "models/balance.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "tests/support/test_support.hpp"

namespace sy::moe {
namespace {

MoeConfig make_config(BalanceKind kind, int num_experts, double balance_coeff, double z_coeff,
                      RouterKind router = RouterKind::TopK, int num_null = 0) {
  MoeConfig c;
  c.balance = kind;
  c.num_experts = num_experts;
  c.balance_coeff = balance_coeff;
  c.z_loss_coeff = z_coeff;
  c.router = router;
  c.num_null_experts = num_null;
  return c;
}

// A routing built by hand: experts[t] lists token t's chosen experts.
template <typename T>
RouterOutput<T> make_routing(int L, const std::vector<T>& probs, const std::vector<std::vector<int32_t>>& experts) {
  RouterOutput<T> r;
  r.num_tokens = static_cast<int64_t>(experts.size());
  r.num_logits = L;
  r.probs = probs;
  r.token_begin.push_back(0);
  for (const auto& row : experts) {
    for (int32_t e : row) {
      r.expert.push_back(e);
      r.weight.push_back(T(1) / T(row.size()));
      r.score.push_back(T(1));
    }
    r.token_begin.push_back(static_cast<int64_t>(r.expert.size()));
  }
  return r;
}

// Random logits (T, L), their softmax as probs, and each token's top-k experts by probability.
struct RandomRouting {
  std::vector<double> logits;
  RouterOutput<double> routing;
};
RandomRouting random_routing(int64_t T, int L, int k, uint64_t seed) {
  RandomRouting out;
  out.logits = test::random_vector<double>(size_t(T * L), seed, -2.0, 2.0);
  std::vector<double> probs(size_t(T * L));
  std::vector<std::vector<int32_t>> experts(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const double* x = out.logits.data() + t * L;
    double m = *std::max_element(x, x + L), s = 0.0;
    for (int i = 0; i < L; ++i) s += std::exp(x[i] - m);
    for (int i = 0; i < L; ++i) probs[size_t(t * L + i)] = std::exp(x[i] - m) / s;
    std::vector<int32_t> order(static_cast<size_t>(L));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
    experts[size_t(t)].assign(order.begin(), order.begin() + k);
  }
  out.routing = make_routing<double>(L, probs, experts);
  return out;
}

// Central differences of loss(probs) against the analytic dprobs; the balance
// loss is linear in probs (f is a constant), so the difference is rounding only.
void expect_probs_gradient(const RouterOutput<double>& routing,
                           const std::function<double(const RouterOutput<double>&)>& loss,
                           const std::vector<double>& analytic, double tol = 1e-8) {
  const double h = 1e-5;
  ASSERT_EQ(analytic.size(), routing.probs.size());
  for (size_t j = 0; j < routing.probs.size(); ++j) {
    RouterOutput<double> plus = routing, minus = routing;
    plus.probs[j] += h;
    minus.probs[j] -= h;
    const double numeric = (loss(plus) - loss(minus)) / (2 * h);
    EXPECT_NEAR(analytic[j], numeric, tol) << "dprobs[" << j << "]";
  }
}

// micro, E = 2, k = 1, T = 4, balance_coeff = 0.5:
//   probs            chosen
//   t0 [0.7, 0.3]    0
//   t1 [0.6, 0.4]    0
//   t2 [0.2, 0.8]    1
//   t3 [0.9, 0.1]    0
//   c = [3, 1], f = [3/4, 1/4]
//   P = [(0.7 + 0.6 + 0.2 + 0.9) / 4, (0.3 + 0.4 + 0.8 + 0.1) / 4] = [0.6, 0.4]
//   balance = 0.5 * 2 * (0.75 * 0.6 + 0.25 * 0.4) = 0.5 * 2 * 0.55 = 0.55
//   dprobs[t, :] += 0.5 * 2 * f / 4 = [0.1875, 0.0625]
template <typename T>
RouterOutput<T> hand_routing() {
  return make_routing<T>(2, {T(0.7), T(0.3), T(0.6), T(0.4), T(0.2), T(0.8), T(0.9), T(0.1)}, {{0}, {0}, {1}, {0}});
}

TEST(Balance, MicroHandExample) {
  Balancer<double> b(make_config(BalanceKind::Micro, 2, 0.5, 0.0), 4);
  const auto r = hand_routing<double>();
  std::vector<double> dprobs(8, 1.0);  // gradients accumulate onto what is there
  const BalanceParts parts = b.forward_backward(r, nullptr, dprobs.data(), nullptr);
  EXPECT_NEAR(parts.balance, 0.55, 1e-12);
  EXPECT_EQ(parts.z, 0.0);
  for (int t = 0; t < 4; ++t) {
    EXPECT_NEAR(dprobs[t * 2 + 0], 1.0 + 0.1875, 1e-12);
    EXPECT_NEAR(dprobs[t * 2 + 1], 1.0 + 0.0625, 1e-12);
  }
  EXPECT_EQ(b.last_fraction(), (std::vector<double>{0.75, 0.25}));
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{3.0, 1.0}));
}

TEST(Balance, MicroHandExampleFloat) {
  Balancer<float> b(make_config(BalanceKind::Micro, 2, 0.5, 0.0), 4);
  std::vector<float> dprobs(8, 0.0f);
  EXPECT_NEAR(b.forward_backward(hand_routing<float>(), nullptr, dprobs.data(), nullptr).balance, 0.55, 1e-6);
  EXPECT_NEAR(dprobs[0], 0.1875f, 1e-7);
  EXPECT_NEAR(dprobs[1], 0.0625f, 1e-7);
}

// z-loss, T = 2, L = 2, z_loss_coeff = 0.1:
//   t0 logits [0, 0]:      lse = log 2,            softmax = [1/2, 1/2]
//   t1 logits [log 3, 0]:  lse = log 4 = 2 log 2,  softmax = [3/4, 1/4]
//   z = 0.1 * ((log 2)^2 + (2 log 2)^2) / 2 = 0.1 * 2.5 (log 2)^2
//   dlogits[t0] = 0.1 * 2 * log 2 * [1/2, 1/2] / 2 = 0.05 log 2 * [1, 1]
//   dlogits[t1] = 0.1 * 2 * 2 log 2 * [3/4, 1/4] / 2 = 0.2 log 2 * [3/4, 1/4]
TEST(Balance, ZLossHandExample) {
  Balancer<double> b(make_config(BalanceKind::None, 2, 0.5, 0.1), 2);
  const auto r = make_routing<double>(2, {0.5, 0.5, 0.75, 0.25}, {{0}, {0}});
  const double ln2 = std::log(2.0);
  const std::vector<double> logits = {0.0, 0.0, std::log(3.0), 0.0};
  std::vector<double> dprobs(4, 0.0), dlogits(4, 0.0);
  const BalanceParts parts = b.forward_backward(r, logits.data(), dprobs.data(), dlogits.data());
  EXPECT_NEAR(parts.z, 0.1 * 2.5 * ln2 * ln2, 1e-12);
  EXPECT_EQ(parts.balance, 0.0);
  EXPECT_NEAR(dlogits[0], 0.05 * ln2, 1e-12);
  EXPECT_NEAR(dlogits[1], 0.05 * ln2, 1e-12);
  EXPECT_NEAR(dlogits[2], 0.2 * ln2 * 0.75, 1e-12);
  EXPECT_NEAR(dlogits[3], 0.2 * ln2 * 0.25, 1e-12);
}

TEST(Balance, ZLossGradientMatchesFiniteDifferences) {
  const int64_t T = 5;
  const int L = 6;
  const auto rr = random_routing(T, L, 2, 11);
  // Large logits check the max-subtracted logsumexp too.
  std::vector<double> logits = rr.logits;
  for (auto& x : logits) x *= 20.0;
  const MoeConfig config = make_config(BalanceKind::Micro, L, 0.0, 0.03);
  auto z_of = [&](const std::vector<double>& lg) {
    Balancer<double> b(config, T);
    std::vector<double> dp(size_t(T * L)), dl(size_t(T * L));
    return b.forward_backward(rr.routing, lg.data(), dp.data(), dl.data()).z;
  };
  Balancer<double> b(config, T);
  std::vector<double> dprobs(size_t(T * L), 0.0), dlogits(size_t(T * L), 0.0);
  b.forward_backward(rr.routing, logits.data(), dprobs.data(), dlogits.data());
  const double h = 1e-5;
  for (size_t j = 0; j < logits.size(); ++j) {
    std::vector<double> plus = logits, minus = logits;
    plus[j] += h;
    minus[j] -= h;
    EXPECT_NEAR(dlogits[j], (z_of(plus) - z_of(minus)) / (2 * h), 1e-7) << "dlogits[" << j << "]";
  }
}

TEST(Balance, MicroGradientMatchesFiniteDifferences) {
  const int64_t T = 7;
  const int L = 5;
  const auto rr = random_routing(T, L, 2, 21);
  const MoeConfig config = make_config(BalanceKind::Micro, L, 0.3, 0.0);
  auto loss = [&](const RouterOutput<double>& r) {
    Balancer<double> b(config, T);
    std::vector<double> dp(size_t(T * L));
    return b.forward_backward(r, nullptr, dp.data(), nullptr).balance;
  };
  Balancer<double> b(config, T);
  std::vector<double> dprobs(size_t(T * L), 0.0);
  b.forward_backward(rr.routing, nullptr, dprobs.data(), nullptr);
  expect_probs_gradient(rr.routing, loss, dprobs);
}

TEST(Balance, GlobalGradientMatchesFiniteDifferences) {
  const int64_t T = 6;
  const int L = 4;
  const auto first = random_routing(T, L, 2, 31);
  const auto second = random_routing(T, L, 2, 32);
  const MoeConfig config = make_config(BalanceKind::Global, L, 0.2, 0.0);
  // Each evaluation: a fresh buffer, the first micro-batch, then the second (perturbed).
  auto loss = [&](const RouterOutput<double>& r) {
    Balancer<double> b(config, T);
    std::vector<double> dp(size_t(T * L));
    b.forward_backward(first.routing, nullptr, dp.data(), nullptr);
    return b.forward_backward(r, nullptr, dp.data(), nullptr).balance;
  };
  Balancer<double> b(config, T);
  std::vector<double> dprobs(size_t(T * L), 0.0);
  b.forward_backward(first.routing, nullptr, dprobs.data(), nullptr);
  std::fill(dprobs.begin(), dprobs.end(), 0.0);
  b.forward_backward(second.routing, nullptr, dprobs.data(), nullptr);
  expect_probs_gradient(second.routing, loss, dprobs);
}

TEST(Balance, SequenceGradientMatchesFiniteDifferences) {
  const int64_t T = 9, seq_len = 3;
  const int L = 4;
  const auto rr = random_routing(T, L, 2, 41);
  const MoeConfig config = make_config(BalanceKind::Sequence, L, 0.4, 0.0);
  auto loss = [&](const RouterOutput<double>& r) {
    Balancer<double> b(config, seq_len);
    std::vector<double> dp(size_t(T * L));
    return b.forward_backward(r, nullptr, dp.data(), nullptr).balance;
  };
  Balancer<double> b(config, seq_len);
  std::vector<double> dprobs(size_t(T * L), 0.0);
  b.forward_backward(rr.routing, nullptr, dprobs.data(), nullptr);
  expect_probs_gradient(rr.routing, loss, dprobs);
}

TEST(Balance, NullExpertGradientMatchesFiniteDifferences) {
  const int64_t T = 8;
  const int E = 3, m = 2, L = E + m;
  const auto rr = random_routing(T, L, 2, 51);
  const MoeConfig config = make_config(BalanceKind::Micro, E, 0.25, 0.0, RouterKind::NullExperts, m);
  auto loss = [&](const RouterOutput<double>& r) {
    Balancer<double> b(config, T);
    std::vector<double> dp(size_t(T * L));
    return b.forward_backward(r, nullptr, dp.data(), nullptr).balance;
  };
  Balancer<double> b(config, T);
  ASSERT_EQ(b.num_logits(), L);
  std::vector<double> dprobs(size_t(T * L), 0.0);
  b.forward_backward(rr.routing, nullptr, dprobs.data(), nullptr);
  expect_probs_gradient(rr.routing, loss, dprobs);
}

// Sequence loss = mean of the micro losses of each sequence alone; its gradient
// on a sequence's rows = that sequence's micro gradient / number of sequences.
TEST(Balance, SequenceIsTheMeanOfPerSequenceMicroLosses) {
  const int64_t seq_len = 4, num_seq = 3, T = seq_len * num_seq;
  const int L = 5;
  const auto rr = random_routing(T, L, 2, 61);
  Balancer<double> seq(make_config(BalanceKind::Sequence, L, 0.7, 0.0), seq_len);
  std::vector<double> dseq(size_t(T * L), 0.0);
  const double loss = seq.forward_backward(rr.routing, nullptr, dseq.data(), nullptr).balance;
  double mean = 0.0;
  for (int64_t q = 0; q < num_seq; ++q) {
    RouterOutput<double> part;
    part.num_tokens = seq_len;
    part.num_logits = L;
    part.probs.assign(rr.routing.probs.begin() + q * seq_len * L, rr.routing.probs.begin() + (q + 1) * seq_len * L);
    const int64_t s0 = rr.routing.token_begin[size_t(q * seq_len)];
    for (int64_t t = 0; t <= seq_len; ++t) part.token_begin.push_back(rr.routing.token_begin[size_t(q * seq_len + t)] - s0);
    part.expert.assign(rr.routing.expert.begin() + s0, rr.routing.expert.begin() + s0 + part.num_slots());
    Balancer<double> micro(make_config(BalanceKind::Micro, L, 0.7, 0.0), seq_len);
    std::vector<double> dmicro(size_t(seq_len * L), 0.0);
    mean += micro.forward_backward(part, nullptr, dmicro.data(), nullptr).balance / double(num_seq);
    for (int64_t j = 0; j < seq_len * L; ++j)
      EXPECT_NEAR(dseq[size_t(q * seq_len * L + j)], dmicro[size_t(j)] / double(num_seq), 1e-14);
  }
  EXPECT_NEAR(loss, mean, 1e-14);
}

TEST(Balance, GlobalAccumulatesMicroBatchesAndResetClears) {
  const int L = 2;
  Balancer<double> b(make_config(BalanceKind::Global, L, 0.5, 0.0), 4);
  std::vector<double> dprobs(8, 0.0);
  // First micro-batch: the hand example, c = [3, 1].
  b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr);
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{3.0, 1.0}));
  EXPECT_EQ(b.last_fraction(), (std::vector<double>{0.75, 0.25}));
  // Second: every token on expert 1, c = [0, 4]; buffer [3, 5], f = [3/8, 5/8].
  // balance = 0.5 * 2 * (3/8 * 0.6 + 5/8 * 0.4) = 0.475 (P of the second batch = the same probs).
  auto second = make_routing<double>(2, hand_routing<double>().probs, {{1}, {1}, {1}, {1}});
  const double balance = b.forward_backward(second, nullptr, dprobs.data(), nullptr).balance;
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{3.0, 5.0}));
  EXPECT_EQ(b.last_fraction(), (std::vector<double>{0.375, 0.625}));
  EXPECT_NEAR(balance, 0.475, 1e-12);
  // The step's counts are the buffer itself for global (reduced already).
  EXPECT_EQ(&b.reduced_step_counts(), &b.accumulated_counts());
  b.reset();
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{0.0, 0.0}));
  // After reset the buffer holds only the new micro-batch: global = micro for one micro-batch.
  EXPECT_NEAR(b.forward_backward(second, nullptr, dprobs.data(), nullptr).balance, 0.5 * 2 * 0.4, 1e-12);
  EXPECT_EQ(b.last_fraction(), (std::vector<double>{0.0, 1.0}));
}

// The hook plays a second rank whose counts are other = [1, 3] (summed into the
// local counts, as an all-reduce SUM would): called once per micro-batch with L counts.
TEST(Balance, GlobalHookSumsOverRanksOncePerMicroBatch) {
  const int L = 2;
  Balancer<double> b(make_config(BalanceKind::Global, L, 0.5, 0.0), 4);
  int calls = 0;
  const std::vector<double> other = {1.0, 3.0};
  b.set_count_reduce_hook([&](double* counts, int n) {
    ++calls;
    ASSERT_EQ(n, L);
    for (int i = 0; i < n; ++i) counts[i] += other[size_t(i)];
  });
  std::vector<double> dprobs(8, 0.0);
  // Local c = [3, 1] + other [1, 3] = [4, 4]: f = [1/2, 1/2]; balance = 0.5 * 2 * (0.5 * 0.6 + 0.5 * 0.4) = 0.5.
  const double balance = b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr).balance;
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{4.0, 4.0}));
  EXPECT_EQ(b.last_fraction(), (std::vector<double>{0.5, 0.5}));
  EXPECT_NEAR(balance, 0.5, 1e-12);
  EXPECT_NEAR(dprobs[0], 0.5 * 2 * 0.5 / 4, 1e-12);  // P stays local: divided by the local T
  b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{8.0, 8.0}));
  b.reduced_step_counts();  // global: no further hook call
  EXPECT_EQ(calls, 2);

  // A second rank with the same counts: the hook doubles them; f is unchanged, the buffer doubles.
  Balancer<double> twice(make_config(BalanceKind::Global, L, 0.5, 0.0), 4);
  twice.set_count_reduce_hook([](double* counts, int n) {
    for (int i = 0; i < n; ++i) counts[i] *= 2.0;
  });
  twice.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr);
  EXPECT_EQ(twice.accumulated_counts(), (std::vector<double>{6.0, 2.0}));
  EXPECT_EQ(twice.last_fraction(), (std::vector<double>{0.75, 0.25}));
}

// Two micro-batches A and B of equal size T. A global balancer that has seen A
// then B ends with f = f(AB), the f of the concatenated batch, so its loss on B
// is balance_coeff * L * sum f(AB) P(B); one that has seen B then A gives the
// same for A. Since P(AB) = (P(A) + P(B)) / 2, the mean of those two losses is
// exactly the micro loss of the concatenated batch AB, and each global
// gradient row is 2x the micro gradient row on AB (denominator T, not 2T).
TEST(Balance, GlobalOverTwoMicroBatchesMatchesTheConcatenatedBatch) {
  const int64_t T = 6;
  const int L = 4;
  const auto a = random_routing(T, L, 2, 71), bb = random_routing(T, L, 2, 72);
  RouterOutput<double> ab = a.routing;
  ab.num_tokens = 2 * T;
  ab.probs.insert(ab.probs.end(), bb.routing.probs.begin(), bb.routing.probs.end());
  for (int64_t t = 1; t <= T; ++t) ab.token_begin.push_back(a.routing.num_slots() + bb.routing.token_begin[size_t(t)]);
  ab.expert.insert(ab.expert.end(), bb.routing.expert.begin(), bb.routing.expert.end());

  const MoeConfig global = make_config(BalanceKind::Global, L, 0.3, 0.0);
  std::vector<double> scratch(size_t(T * L), 0.0), dglobal_b(size_t(T * L), 0.0);
  Balancer<double> a_then_b(global, T), b_then_a(global, T);
  a_then_b.forward_backward(a.routing, nullptr, scratch.data(), nullptr);
  const double loss_b = a_then_b.forward_backward(bb.routing, nullptr, dglobal_b.data(), nullptr).balance;
  b_then_a.forward_backward(bb.routing, nullptr, scratch.data(), nullptr);
  const double loss_a = b_then_a.forward_backward(a.routing, nullptr, scratch.data(), nullptr).balance;

  Balancer<double> micro(make_config(BalanceKind::Micro, L, 0.3, 0.0), 2 * T);
  std::vector<double> dmicro(size_t(2 * T * L), 0.0);
  const double loss_ab = micro.forward_backward(ab, nullptr, dmicro.data(), nullptr).balance;

  for (int i = 0; i < L; ++i) EXPECT_NEAR(a_then_b.last_fraction()[size_t(i)], micro.last_fraction()[size_t(i)], 1e-15);
  EXPECT_NEAR(0.5 * (loss_a + loss_b), loss_ab, 1e-14);
  for (int64_t j = 0; j < T * L; ++j) EXPECT_NEAR(dglobal_b[size_t(j)], 2.0 * dmicro[size_t(T * L + j)], 1e-15);
}

TEST(Balance, NonGlobalKindsAccumulateLocalCountsAndReduceOnceAtTheStep) {
  const int L = 2;
  Balancer<double> b(make_config(BalanceKind::Micro, L, 0.5, 0.0), 4);
  int calls = 0;
  b.set_count_reduce_hook([&](double* counts, int n) {
    ++calls;
    for (int i = 0; i < n; ++i) counts[i] += 10.0;  // another rank with 10 slots per expert
  });
  std::vector<double> dprobs(8, 0.0);
  const double balance = b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr).balance;
  b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr);
  EXPECT_EQ(calls, 0);  // micro: the loss never communicates
  EXPECT_NEAR(balance, 0.55, 1e-12);
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{6.0, 2.0}));
  EXPECT_EQ(b.reduced_step_counts(), (std::vector<double>{16.0, 12.0}));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{6.0, 2.0}));  // the buffer itself is not reduced
  b.reset();
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{0.0, 0.0}));
}

TEST(Balance, SequenceNeedsWholeSequences) {
  Balancer<double> b(make_config(BalanceKind::Sequence, 2, 0.5, 0.0), 3);
  std::vector<double> dprobs(8, 0.0);
  EXPECT_THROW(b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr), InvalidArgument);
  EXPECT_THROW(Balancer<double>(make_config(BalanceKind::Sequence, 2, 0.5, 0.0), 0), InvalidArgument);
  // seq_len 2: sequences {t0, t1} (c = [2, 0], f = [1, 0], P = [0.65, 0.35]) and {t2, t3}
  // (c = [1, 1], f = [1/2, 1/2], P = [0.55, 0.45]); balance = 0.5 * 2 * (0.65 + 0.5) / 2 = 0.575.
  Balancer<double> two(make_config(BalanceKind::Sequence, 2, 0.5, 0.0), 2);
  EXPECT_NEAR(two.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr).balance, 0.575, 1e-12);
}

TEST(Balance, NoneGivesZeroAndLeavesGradientsUntouched) {
  Balancer<double> b(make_config(BalanceKind::None, 2, 0.5, 0.0), 4);
  std::vector<double> dprobs(8, 3.0), dlogits(8, -2.0), logits(8, 0.25);
  const BalanceParts parts = b.forward_backward(hand_routing<double>(), logits.data(), dprobs.data(), dlogits.data());
  EXPECT_EQ(parts.balance, 0.0);
  EXPECT_EQ(parts.z, 0.0);
  EXPECT_EQ(dprobs, std::vector<double>(8, 3.0));
  EXPECT_EQ(dlogits, std::vector<double>(8, -2.0));
  EXPECT_NO_THROW(b.forward_backward(hand_routing<double>(), nullptr, nullptr, nullptr));
  // Counts still accumulate (the sigmoid_bias update reads them).
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{6.0, 2.0}));
}

// E = 2, m = 2 (L = 4), slots on experts 0, 2, 2, 3: c = [1, 0, 2, 1],
// f = [1/4, 0, 1/2, 1/4] -> null experts averaged: [1/4, 0, 3/8, 3/8].
// probs rows all [0.1, 0.2, 0.3, 0.4] (P the same), balance_coeff = 1:
// balance = 4 * (0.25 * 0.1 + 0 + 0.375 * 0.3 + 0.375 * 0.4) = 4 * 0.2875 = 1.15.
TEST(Balance, NullExpertsShareTheirMeanFraction) {
  const MoeConfig config = make_config(BalanceKind::Micro, 2, 1.0, 0.0, RouterKind::NullExperts, 2);
  Balancer<double> b(config, 4);
  ASSERT_EQ(b.num_logits(), 4);
  std::vector<double> probs;
  for (int t = 0; t < 4; ++t) probs.insert(probs.end(), {0.1, 0.2, 0.3, 0.4});
  const auto r = make_routing<double>(4, probs, {{0}, {2}, {2}, {3}});
  std::vector<double> dprobs(16, 0.0);
  const double balance = b.forward_backward(r, nullptr, dprobs.data(), nullptr).balance;
  EXPECT_EQ(b.last_fraction(), (std::vector<double>{0.25, 0.0, 0.375, 0.375}));
  EXPECT_NEAR(balance, 1.15, 1e-12);
  EXPECT_NEAR(dprobs[2], 4 * 0.375 / 4, 1e-12);
  EXPECT_NEAR(dprobs[3], 4 * 0.375 / 4, 1e-12);
  EXPECT_EQ(b.accumulated_counts(), (std::vector<double>{1.0, 0.0, 2.0, 1.0}));  // raw counts, not averaged
  // The same slots under a topk config (no null experts, L = E = 4) keep f as counted.
  Balancer<double> plain(make_config(BalanceKind::Micro, 4, 1.0, 0.0), 4);
  plain.forward_backward(r, nullptr, dprobs.data(), nullptr);
  EXPECT_EQ(plain.last_fraction(), (std::vector<double>{0.25, 0.0, 0.5, 0.25}));
}

TEST(Balance, HashRouterIsANoOp) {
  Balancer<double> b(make_config(BalanceKind::Global, 4, 0.5, 0.1, RouterKind::Hash), 4);
  EXPECT_EQ(b.num_logits(), 0);
  int calls = 0;
  b.set_count_reduce_hook([&](double*, int) { ++calls; });
  RouterOutput<double> r;  // hash: no logits, probs empty, slots on real experts
  r.num_tokens = 3;
  r.num_logits = 0;
  r.token_begin = {0, 1, 2, 3};
  r.expert = {2, 0, 3};
  r.weight = {1.0, 1.0, 1.0};
  r.score = {1.0, 1.0, 1.0};
  const BalanceParts parts = b.forward_backward(r, nullptr, nullptr, nullptr);
  EXPECT_EQ(parts.balance, 0.0);
  EXPECT_EQ(parts.z, 0.0);
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(b.accumulated_counts().empty());
  EXPECT_TRUE(b.last_fraction().empty());
}

TEST(Balance, RejectsRoutingThatDoesNotMatchTheConfig) {
  Balancer<double> b(make_config(BalanceKind::Micro, 3, 0.5, 0.0), 4);
  std::vector<double> dprobs(8, 0.0);
  EXPECT_THROW(b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr), InvalidArgument);  // L = 2 != 3
  Balancer<double> two(make_config(BalanceKind::Micro, 2, 0.5, 0.0), 4);
  auto bad = hand_routing<double>();
  bad.expert[2] = 2;  // outside [0, L)
  EXPECT_THROW(two.forward_backward(bad, nullptr, dprobs.data(), nullptr), InvalidArgument);
  bad = hand_routing<double>();
  bad.probs.pop_back();
  EXPECT_THROW(two.forward_backward(bad, nullptr, dprobs.data(), nullptr), InvalidArgument);
  EXPECT_THROW(two.forward_backward(hand_routing<double>(), nullptr, nullptr, nullptr), InvalidArgument);  // dprobs needed
}

TEST(Balance, BuffersAreReusedAcrossCalls) {
  Balancer<double> b(make_config(BalanceKind::Global, 2, 0.5, 0.0), 4);
  std::vector<double> dprobs(8, 0.0);
  b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr);
  const double* fraction = b.last_fraction().data();
  const double* counts = b.accumulated_counts().data();
  for (int i = 0; i < 3; ++i) b.forward_backward(hand_routing<double>(), nullptr, dprobs.data(), nullptr);
  b.reset();
  EXPECT_EQ(b.last_fraction().data(), fraction);
  EXPECT_EQ(b.accumulated_counts().data(), counts);
}

}  // namespace
}  // namespace sy::moe
