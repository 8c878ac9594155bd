#include "core/ops/linear.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::ops {
namespace {

using test::random_vector;

TEST(Linear, ForwardMatchesHandComputedValues) {
  // x = [[1, 2], [3, -1]], W = [[1, 0], [2, 1], [-1, 3]], b = [0.5, -1, 2]
  const std::vector<double> x = {1, 2, 3, -1};
  const std::vector<double> w = {1, 0, 2, 1, -1, 3};
  const std::vector<double> b = {0.5, -1, 2};
  std::vector<double> y(6, test::kGarbage);
  linear_forward(y.data(), x.data(), w.data(), b.data(), 2, 2, 3);
  EXPECT_EQ(y, (std::vector<double>{1.5, 3, 7, 3.5, 4, -4}));
  linear_forward<double>(y.data(), x.data(), w.data(), nullptr, 2, 2, 3);
  EXPECT_EQ(y, (std::vector<double>{1, 4, 5, 3, 5, -6}));
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  const int64_t N = 5, in = 7, out = 4;
  auto x = random_vector<double>(N * in, 1);
  auto w = random_vector<double>(out * in, 2);
  auto b = random_vector<double>(out, 3);
  const auto r = random_vector<double>(N * out, 4);
  std::vector<double> y(N * out);
  auto loss = [&] {
    linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
    return test::dot(y, r);
  };
  std::vector<double> dx(N * in, test::kGarbage);
  auto dw = random_vector<double>(out * in, 5);
  auto db = random_vector<double>(out, 6);
  const auto dw0 = dw, db0 = db;
  linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), N, in, out);
  EXPECT_TRUE(test::grad_close("dx", dx, test::numeric_gradient(x, loss)));
  EXPECT_TRUE(test::grad_close("dweight (+=)", test::minus(dw, dw0), test::numeric_gradient(w, loss)));
  EXPECT_TRUE(test::grad_close("dbias (+=)", test::minus(db, db0), test::numeric_gradient(b, loss)));
}

TEST(Linear, BackwardSkipsNullGradients) {
  const int64_t N = 3, in = 4, out = 2;
  const auto x = random_vector<double>(N * in, 1);
  const auto w = random_vector<double>(out * in, 2);
  const auto dy = random_vector<double>(N * out, 3);
  std::vector<double> dw_full(out * in, 0.0), db(out, 0.0), dx(N * in);
  linear_backward(dx.data(), dw_full.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
  std::vector<double> dw(out * in, 0.0);
  linear_backward<double>(nullptr, dw.data(), nullptr, dy.data(), x.data(), nullptr, N, in, out);
  EXPECT_EQ(dw, dw_full);
}

TEST(Linear, FloatPathMatchesDoublePath) {
  const int64_t N = 8, in = 12, out = 10;
  const auto x = random_vector<double>(N * in, 1);
  const auto w = random_vector<double>(out * in, 2);
  const auto b = random_vector<double>(out, 3);
  const auto dy = random_vector<double>(N * out, 4);
  std::vector<double> y(N * out), dx(N * in), dw(out * in, 0.0), db(out, 0.0);
  linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
  linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);

  const auto xf = test::cast<float>(x), wf = test::cast<float>(w), bf = test::cast<float>(b);
  const auto dyf = test::cast<float>(dy);
  std::vector<float> yf(N * out), dxf(N * in), dwf(out * in, 0.0f), dbf(out, 0.0f);
  linear_forward(yf.data(), xf.data(), wf.data(), bf.data(), N, in, out);
  linear_backward(dxf.data(), dwf.data(), dbf.data(), dyf.data(), xf.data(), wf.data(), N, in, out);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(yf).data(), y.data(), y.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dxf).data(), dx.data(), dx.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dwf).data(), dw.data(), dw.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dbf).data(), db.data(), db.size()), 1e-5);
}

TEST(Linear, BiasGradientDoesNotDependOnThreadCount) {
  const int64_t N = 16, in = 3, out = 300;  // wide enough to split db over columns
  const auto x = random_vector<double>(N * in, 1);
  const auto w = random_vector<double>(out * in, 2);
  const auto dy = random_vector<double>(N * out, 3);
  auto run = [&](int threads) {
    test::ScopedThreads scoped(threads);
    std::vector<double> dx(N * in), dw(out * in, 0.0), db(out, 0.0);
    linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
    return db;
  };
  EXPECT_EQ(run(1), run(4));
}

TEST(Linear, RejectsBadArguments) {
  std::vector<float> x(4), w(4), y(4), dw(4);
  EXPECT_THROW(linear_forward<float>(y.data(), x.data(), w.data(), nullptr, 0, 2, 2), InvalidArgument);
  EXPECT_THROW(linear_forward<float>(y.data(), nullptr, w.data(), nullptr, 2, 2, 2), InvalidArgument);
  EXPECT_THROW(linear_backward<float>(nullptr, nullptr, nullptr, y.data(), x.data(), w.data(), 2, 2, 2),
               InvalidArgument);
  EXPECT_THROW(linear_backward<float>(x.data(), dw.data(), nullptr, y.data(), x.data(), nullptr, 2, 2, 2),
               InvalidArgument);
}

}  // namespace
}  // namespace sy::ops
