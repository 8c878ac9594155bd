#include "core/ops/softmax.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::ops {
namespace {

using test::random_vector;

TEST(Softmax, RowsSumToOneAndMatchKnownValues) {
  const int64_t N = 3, V = 3;
  const std::vector<double> x = {0.0, std::log(2.0), std::log(3.0),  // -> 1/6, 2/6, 3/6
                                 1000.0, 1000.0, 1000.0,             // overflow without the max shift
                                 -5.0, 0.0, 5.0};
  std::vector<double> p(N * V, test::kGarbage);
  softmax_forward(p.data(), x.data(), N, V);
  EXPECT_NEAR(p[0], 1.0 / 6, 1e-15);
  EXPECT_NEAR(p[1], 2.0 / 6, 1e-15);
  EXPECT_NEAR(p[2], 3.0 / 6, 1e-15);
  for (int64_t v = 3; v < 6; ++v) EXPECT_NEAR(p[v], 1.0 / 3, 1e-15);
  for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(p[n * V] + p[n * V + 1] + p[n * V + 2], 1.0, 1e-15);
  EXPECT_GT(p[8], p[7]);
  EXPECT_GT(p[7], p[6]);
}

TEST(Softmax, BackwardMatchesFiniteDifferences) {
  const int64_t N = 4, V = 7;
  auto x = random_vector<double>(N * V, 1, -2.0, 2.0);
  const auto r = random_vector<double>(N * V, 2);
  std::vector<double> p(N * V);
  auto loss = [&] {
    softmax_forward(p.data(), x.data(), N, V);
    return test::dot(p, r);
  };
  loss();
  std::vector<double> dx(N * V, test::kGarbage);
  softmax_backward(dx.data(), p.data(), r.data(), N, V);
  EXPECT_TRUE(test::grad_close("softmax dlogits", dx, test::numeric_gradient(x, loss)));
}

TEST(Softmax, BackwardMayWriteOverTheOutputGradient) {
  const int64_t N = 2, V = 5;
  const auto x = random_vector<double>(N * V, 1);
  const auto dp = random_vector<double>(N * V, 2);
  std::vector<double> p(N * V), dx(N * V);
  softmax_forward(p.data(), x.data(), N, V);
  softmax_backward(dx.data(), p.data(), dp.data(), N, V);
  auto in_place = dp;
  softmax_backward(in_place.data(), p.data(), in_place.data(), N, V);
  EXPECT_EQ(in_place, dx);
}

TEST(CrossEntropy, UniformLogitsGiveLogV) {
  const int64_t N = 3, V = 11;
  const std::vector<double> x(N * V, 0.25);
  const std::vector<int32_t> targets = {0, 5, 10};
  std::vector<double> losses(N, test::kGarbage);
  const double loss = cross_entropy_forward(losses.data(), x.data(), targets.data(), N, V);
  EXPECT_NEAR(loss, std::log(double(V)), 1e-14);
  for (double l : losses) EXPECT_NEAR(l, std::log(double(V)), 1e-14);
}

TEST(CrossEntropy, KnownValueAndLargeLogits) {
  const int64_t N = 2, V = 3;
  // Row 0: probabilities 1/6, 2/6, 3/6, target 2 -> log 2. Row 1: shifted by 1e4, target 0 -> log 6.
  const std::vector<double> x = {0.0, std::log(2.0), std::log(3.0), 1e4, 1e4 + std::log(2.0), 1e4 + std::log(3.0)};
  const std::vector<int32_t> targets = {2, 0};
  std::vector<double> losses(N);
  const double loss = cross_entropy_forward(losses.data(), x.data(), targets.data(), N, V);
  EXPECT_NEAR(losses[0], std::log(2.0), 1e-14);
  EXPECT_NEAR(losses[1], std::log(6.0), 1e-11);
  EXPECT_NEAR(loss, 0.5 * (std::log(2.0) + std::log(6.0)), 1e-11);
}

TEST(CrossEntropy, IgnoredRowsAreExcludedFromTheMean) {
  const int64_t N = 4, V = 5;
  const auto x = random_vector<double>(N * V, 1, -3.0, 3.0);
  const std::vector<int32_t> targets = {3, kIgnoreIndex, 1, kIgnoreIndex};
  std::vector<double> losses(N, test::kGarbage);
  const double loss = cross_entropy_forward(losses.data(), x.data(), targets.data(), N, V);
  EXPECT_EQ(losses[1], 0.0);
  EXPECT_EQ(losses[3], 0.0);
  EXPECT_GT(losses[0], 0.0);
  EXPECT_NEAR(loss, 0.5 * (losses[0] + losses[2]), 1e-15);
  // Dropping the ignored rows altogether gives the same mean.
  const std::vector<double> kept = [&] {
    std::vector<double> k(x.begin(), x.begin() + V);
    k.insert(k.end(), x.begin() + 2 * V, x.begin() + 3 * V);
    return k;
  }();
  const std::vector<int32_t> kept_targets = {3, 1};
  EXPECT_NEAR(cross_entropy_forward<double>(nullptr, kept.data(), kept_targets.data(), 2, V), loss, 1e-15);

  std::vector<double> dx(N * V, test::kGarbage);
  cross_entropy_backward(dx.data(), x.data(), targets.data(), 1.0, N, V);
  for (int64_t v = 0; v < V; ++v) {
    EXPECT_EQ(dx[1 * V + v], 0.0);
    EXPECT_EQ(dx[3 * V + v], 0.0);
  }
}

TEST(CrossEntropy, AllRowsIgnoredGivesZeroLossAndGradient) {
  const int64_t N = 2, V = 3;
  const auto x = random_vector<double>(N * V, 1);
  const std::vector<int32_t> targets = {kIgnoreIndex, kIgnoreIndex};
  EXPECT_EQ(cross_entropy_forward<double>(nullptr, x.data(), targets.data(), N, V), 0.0);
  std::vector<double> dx(N * V, test::kGarbage);
  cross_entropy_backward(dx.data(), x.data(), targets.data(), 1.0, N, V);
  for (double d : dx) EXPECT_EQ(d, 0.0);
}

TEST(CrossEntropy, BackwardMatchesFiniteDifferences) {
  const int64_t N = 6, V = 7;
  auto x = random_vector<double>(N * V, 1, -2.0, 2.0);
  const std::vector<int32_t> targets = {3, kIgnoreIndex, 0, 6, 2, kIgnoreIndex};
  const double dloss = 0.7;
  auto loss = [&] { return dloss * cross_entropy_forward<double>(nullptr, x.data(), targets.data(), N, V); };
  std::vector<double> dx(N * V, test::kGarbage);
  cross_entropy_backward(dx.data(), x.data(), targets.data(), dloss, N, V);
  EXPECT_TRUE(test::grad_close("cross-entropy dlogits", dx, test::numeric_gradient(x, loss)));
}

TEST(CrossEntropy, FloatPathMatchesDoublePath) {
  const int64_t N = 8, V = 12;
  const auto x = random_vector<double>(N * V, 1, -4.0, 4.0);
  const auto xf = test::cast<float>(x);
  const std::vector<int32_t> targets = {1, 0, 11, kIgnoreIndex, 5, 5, 7, 2};
  std::vector<double> losses(N), dx(N * V);
  std::vector<float> lossesf(N), dxf(N * V);
  const double loss = cross_entropy_forward(losses.data(), x.data(), targets.data(), N, V);
  const float lossf = cross_entropy_forward(lossesf.data(), xf.data(), targets.data(), N, V);
  cross_entropy_backward(dx.data(), x.data(), targets.data(), 1.0, N, V);
  cross_entropy_backward(dxf.data(), xf.data(), targets.data(), 1.0f, N, V);
  EXPECT_NEAR(lossf, loss, 1e-5 * loss);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(lossesf).data(), losses.data(), N), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dxf).data(), dx.data(), N * V), 1e-6);
  std::vector<double> p(N * V), dp = random_vector<double>(N * V, 2), ds(N * V);
  std::vector<float> pf(N * V), dpf = test::cast<float>(dp), dsf(N * V);
  softmax_forward(p.data(), x.data(), N, V);
  softmax_forward(pf.data(), xf.data(), N, V);
  softmax_backward(ds.data(), p.data(), dp.data(), N, V);
  softmax_backward(dsf.data(), pf.data(), dpf.data(), N, V);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(pf).data(), p.data(), N * V), 1e-6);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dsf).data(), ds.data(), N * V), 1e-6);
}

TEST(CrossEntropy, LossDoesNotDependOnThreadCount) {
  const int64_t N = 1000, V = 40;  // several fixed row blocks and several row tasks
  const auto x = random_vector<double>(N * V, 1, -3.0, 3.0);
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) targets[n] = n % 7 == 0 ? kIgnoreIndex : int32_t((n * 13) % V);
  auto run = [&](int threads) {
    test::ScopedThreads scoped(threads);
    std::vector<double> dx(N * V);
    const double loss = cross_entropy_forward<double>(nullptr, x.data(), targets.data(), N, V);
    cross_entropy_backward(dx.data(), x.data(), targets.data(), 1.0, N, V);
    dx.push_back(loss);
    return dx;
  };
  EXPECT_EQ(run(1), run(3));
}

TEST(CrossEntropy, RejectsBadTargetsNamingThem) {
  const std::vector<double> x(6, 0.0);
  const std::vector<int32_t> targets = {1, 3};  // V = 3: 3 is out of range
  try {
    cross_entropy_forward<double>(nullptr, x.data(), targets.data(), 2, 3);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("target 3 at row 1"), std::string::npos) << e.what();
  }
  const std::vector<int32_t> negative = {-2, 0};
  std::vector<double> dx(6);
  EXPECT_THROW(cross_entropy_backward(dx.data(), x.data(), negative.data(), 1.0, 2, 3), InvalidArgument);
  EXPECT_THROW(softmax_forward<double>(dx.data(), x.data(), 2, 0), InvalidArgument);
  EXPECT_THROW(softmax_backward<double>(dx.data(), nullptr, x.data(), 2, 3), InvalidArgument);
}

}  // namespace
}  // namespace sy::ops
