#include "core/ops/norm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::ops {
namespace {

using test::random_vector;

TEST(LayerNorm, OutputHasZeroMeanAndUnitVariance) {
  const int64_t N = 4, C = 9;
  const auto x = random_vector<double>(N * C, 1, -3.0, 5.0);
  const std::vector<double> ones(C, 1.0), zeros(C, 0.0);
  std::vector<double> y(N * C), mean(N), rstd(N);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), ones.data(), zeros.data(), N, C, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double mu = 0, var = 0, x_mu = 0, x_var = 0;
    for (int64_t c = 0; c < C; ++c) mu += y[n * C + c], x_mu += x[n * C + c];
    mu /= C, x_mu /= C;
    for (int64_t c = 0; c < C; ++c) {
      var += (y[n * C + c] - mu) * (y[n * C + c] - mu);
      x_var += (x[n * C + c] - x_mu) * (x[n * C + c] - x_mu);
    }
    EXPECT_NEAR(mu, 0.0, 1e-14);
    EXPECT_NEAR(var / C, 1.0, 1e-13);
    EXPECT_NEAR(mean[n], x_mu, 1e-14);
    EXPECT_NEAR(rstd[n], 1.0 / std::sqrt(x_var / C), 1e-12);
  }
  // Weight scales and bias shifts each column.
  const std::vector<double> w = {2, 2, 2, 2, 2, 2, 2, 2, 2}, b = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  std::vector<double> y2(N * C);
  layernorm_forward(y2.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 0.0);
  for (int64_t i = 0; i < N * C; ++i) EXPECT_NEAR(y2[i], 2 * y[i] + 1, 1e-14);
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  const int64_t N = 5, C = 8;
  const double eps = 1e-5;
  auto x = random_vector<double>(N * C, 1, -2.0, 2.0);
  auto w = random_vector<double>(C, 2, 0.5, 1.5);
  auto b = random_vector<double>(C, 3);
  const auto r = random_vector<double>(N * C, 4);
  std::vector<double> y(N * C), mean(N), rstd(N);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, eps);
  std::vector<double> dx(N * C, test::kGarbage);
  auto dw = random_vector<double>(C, 5);
  auto db = random_vector<double>(C, 6);
  const auto dw0 = dw, db0 = db;
  layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);

  std::vector<double> fy(N * C), fmean(N), frstd(N);
  auto loss = [&] {
    layernorm_forward(fy.data(), fmean.data(), frstd.data(), x.data(), w.data(), b.data(), N, C, eps);
    return test::dot(fy, r);
  };
  EXPECT_TRUE(test::grad_close("layernorm dx", dx, test::numeric_gradient(x, loss)));
  EXPECT_TRUE(test::grad_close("layernorm dweight (+=)", test::minus(dw, dw0), test::numeric_gradient(w, loss)));
  EXPECT_TRUE(test::grad_close("layernorm dbias (+=)", test::minus(db, db0), test::numeric_gradient(b, loss)));
}

TEST(RMSNorm, OutputHasUnitRootMeanSquare) {
  const int64_t N = 3, C = 10;
  const auto x = random_vector<double>(N * C, 1, -3.0, 5.0);
  const std::vector<double> ones(C, 1.0);
  std::vector<double> y(N * C), rstd(N);
  rmsnorm_forward(y.data(), rstd.data(), x.data(), ones.data(), N, C, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0, x_ms = 0;
    for (int64_t c = 0; c < C; ++c) ms += y[n * C + c] * y[n * C + c], x_ms += x[n * C + c] * x[n * C + c];
    EXPECT_NEAR(ms / C, 1.0, 1e-13);
    EXPECT_NEAR(rstd[n], 1.0 / std::sqrt(x_ms / C), 1e-12);
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(y[n * C + c], x[n * C + c] * rstd[n], 1e-15);  // no centering
  }
}

TEST(RMSNorm, BackwardMatchesFiniteDifferences) {
  const int64_t N = 5, C = 8;
  const double eps = 1e-5;
  auto x = random_vector<double>(N * C, 1, -2.0, 2.0);
  auto w = random_vector<double>(C, 2, 0.5, 1.5);
  const auto r = random_vector<double>(N * C, 4);
  std::vector<double> y(N * C), rstd(N);
  rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  std::vector<double> dx(N * C, test::kGarbage);
  auto dw = random_vector<double>(C, 5);
  const auto dw0 = dw;
  rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, C);

  std::vector<double> fy(N * C), frstd(N);
  auto loss = [&] {
    rmsnorm_forward(fy.data(), frstd.data(), x.data(), w.data(), N, C, eps);
    return test::dot(fy, r);
  };
  EXPECT_TRUE(test::grad_close("rmsnorm dx", dx, test::numeric_gradient(x, loss)));
  EXPECT_TRUE(test::grad_close("rmsnorm dweight (+=)", test::minus(dw, dw0), test::numeric_gradient(w, loss)));
}

TEST(LayerNorm, FloatPathMatchesDoublePath) {
  const int64_t N = 6, C = 12;
  const auto x = random_vector<double>(N * C, 1, -2.0, 2.0);
  const auto w = random_vector<double>(C, 2, 0.5, 1.5);
  const auto b = random_vector<double>(C, 3);
  const auto dy = random_vector<double>(N * C, 4);
  std::vector<double> y(N * C), mean(N), rstd(N), dx(N * C), dw(C, 0.0), db(C, 0.0);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5);
  layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  const auto xf = test::cast<float>(x), wf = test::cast<float>(w), bf = test::cast<float>(b);
  const auto dyf = test::cast<float>(dy);
  std::vector<float> yf(N * C), meanf(N), rstdf(N), dxf(N * C), dwf(C, 0.0f), dbf(C, 0.0f);
  layernorm_forward(yf.data(), meanf.data(), rstdf.data(), xf.data(), wf.data(), bf.data(), N, C, 1e-5f);
  layernorm_backward(dxf.data(), dwf.data(), dbf.data(), dyf.data(), xf.data(), wf.data(), meanf.data(),
                     rstdf.data(), N, C);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(yf).data(), y.data(), y.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dxf).data(), dx.data(), dx.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dwf).data(), dw.data(), dw.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dbf).data(), db.data(), db.size()), 1e-5);
}

TEST(RMSNorm, FloatPathMatchesDoublePath) {
  const int64_t N = 6, C = 12;
  const auto x = random_vector<double>(N * C, 1, -2.0, 2.0);
  const auto w = random_vector<double>(C, 2, 0.5, 1.5);
  const auto dy = random_vector<double>(N * C, 4);
  std::vector<double> y(N * C), rstd(N), dx(N * C), dw(C, 0.0);
  rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
  rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
  const auto xf = test::cast<float>(x), wf = test::cast<float>(w), dyf = test::cast<float>(dy);
  std::vector<float> yf(N * C), rstdf(N), dxf(N * C), dwf(C, 0.0f);
  rmsnorm_forward(yf.data(), rstdf.data(), xf.data(), wf.data(), N, C, 1e-5f);
  rmsnorm_backward(dxf.data(), dwf.data(), dyf.data(), xf.data(), wf.data(), rstdf.data(), N, C);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(yf).data(), y.data(), y.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dxf).data(), dx.data(), dx.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dwf).data(), dw.data(), dw.size()), 1e-5);
}

TEST(LayerNorm, ParameterGradientsDoNotDependOnThreadCount) {
  const int64_t N = 300, C = 200;  // several row tasks and several column tasks
  const auto x = random_vector<double>(N * C, 1, -2.0, 2.0);
  const auto w = random_vector<double>(C, 2);
  const auto b = random_vector<double>(C, 3);
  const auto dy = random_vector<double>(N * C, 4);
  auto run = [&](int threads) {
    test::ScopedThreads scoped(threads);
    std::vector<double> y(N * C), mean(N), rstd(N), dx(N * C), dw(C, 0.0), db(C, 0.0);
    layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5);
    layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                       C);
    std::vector<double> all = y;
    for (const auto* v : {&dx, &dw, &db}) all.insert(all.end(), v->begin(), v->end());
    rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
    std::fill(dw.begin(), dw.end(), 0.0);
    rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
    for (const auto* v : {&y, &dx, &dw}) all.insert(all.end(), v->begin(), v->end());
    return all;
  };
  EXPECT_EQ(run(1), run(4));
}

TEST(LayerNorm, RejectsBadArguments) {
  std::vector<float> a(8), b(8), c(8), d(8), e(8), f(8);
  EXPECT_THROW(layernorm_forward<float>(a.data(), b.data(), c.data(), d.data(), e.data(), f.data(), 2, 0, 1e-5f),
               InvalidArgument);
  EXPECT_THROW(layernorm_forward<float>(a.data(), b.data(), c.data(), d.data(), e.data(), f.data(), 2, 4, -1.0f),
               InvalidArgument);
  EXPECT_THROW(layernorm_backward<float>(a.data(), b.data(), nullptr, c.data(), d.data(), e.data(), f.data(), f.data(),
                                         2, 4),
               InvalidArgument);
  EXPECT_THROW(rmsnorm_forward<float>(a.data(), nullptr, c.data(), d.data(), 2, 4, 1e-5f), InvalidArgument);
  EXPECT_THROW(rmsnorm_backward<float>(a.data(), b.data(), c.data(), d.data(), e.data(), f.data(), -1, 4),
               InvalidArgument);
}

}  // namespace
}  // namespace sy::ops
