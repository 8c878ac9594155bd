#include "core/ops/activation.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::ops {
namespace {

using test::random_vector;

// Inputs away from 0, where ReLU has its kink and differences would straddle it.
std::vector<double> inputs_off_zero(size_t n, uint64_t seed) {
  auto x = random_vector<double>(n, seed, -2.0, 2.0);
  for (auto& v : x)
    if (std::abs(v) < 0.05) v += 0.1;
  return x;
}

TEST(Activation, GeluIsTheTanhApproximation) {
  const std::vector<double> x = {0.0, 1.0, -1.0, 2.0, -3.0};
  std::vector<double> y(x.size());
  gelu_forward(y.data(), x.data(), int64_t(x.size()));
  EXPECT_EQ(y[0], 0.0);
  // Values of 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))); the exact erf GELU
  // gives 0.8413447 at 1, which this tolerance rejects.
  EXPECT_NEAR(y[1], 0.8411919906082768, 1e-12);
  EXPECT_NEAR(y[2], -0.15880800939172324, 1e-12);
  EXPECT_NEAR(y[3], 1.954597694087775, 1e-12);
  EXPECT_NEAR(y[4], -0.0036373920817729943, 1e-12);
}

TEST(Activation, ReluKeepsPositivePart) {
  const std::vector<float> x = {-2.0f, -0.0f, 0.0f, 0.5f, 3.0f};
  std::vector<float> y(x.size());
  relu_forward(y.data(), x.data(), int64_t(x.size()));
  EXPECT_EQ(y, (std::vector<float>{0.0f, 0.0f, 0.0f, 0.5f, 3.0f}));
  const std::vector<float> dy = {1, 2, 3, 4, 5};
  std::vector<float> dx(x.size(), NAN);
  relu_backward(dx.data(), x.data(), dy.data(), int64_t(x.size()));
  EXPECT_EQ(dx, (std::vector<float>{0.0f, 0.0f, 0.0f, 4.0f, 5.0f}));
}

TEST(Activation, SwigluMultipliesSiluOfGateByUp) {
  // Two rows, H = 2: [gate0 gate1 | up0 up1].
  const std::vector<double> x = {1.0, 0.0, 2.0, 5.0, -0.5, 3.0, -0.5, 0.0};
  std::vector<double> y(4);
  swiglu_forward(y.data(), x.data(), 2, 2);
  EXPECT_NEAR(y[0], 2.0 / (1.0 + std::exp(-1.0)), 1e-15);  // silu(1) * 2
  EXPECT_EQ(y[1], 0.0);                                    // silu(0) = 0
  EXPECT_NEAR(y[2], 0.09438516719953635, 1e-15);           // silu(-0.5) * -0.5
  EXPECT_NEAR(y[3], 0.0, 1e-15);                           // up = 0
}

TEST(Activation, GeluBackwardMatchesFiniteDifferences) {
  const int64_t n = 24;
  auto x = random_vector<double>(n, 1, -3.0, 3.0);
  const auto r = random_vector<double>(n, 2);
  std::vector<double> y(n);
  auto loss = [&] {
    gelu_forward(y.data(), x.data(), n);
    return test::dot(y, r);
  };
  std::vector<double> dx(n, test::kGarbage);
  gelu_backward(dx.data(), x.data(), r.data(), n);
  EXPECT_TRUE(test::grad_close("gelu dx", dx, test::numeric_gradient(x, loss)));
}

TEST(Activation, ReluBackwardMatchesFiniteDifferences) {
  const int64_t n = 24;
  auto x = inputs_off_zero(n, 1);
  const auto r = random_vector<double>(n, 2);
  std::vector<double> y(n);
  auto loss = [&] {
    relu_forward(y.data(), x.data(), n);
    return test::dot(y, r);
  };
  std::vector<double> dx(n, test::kGarbage);
  relu_backward(dx.data(), x.data(), r.data(), n);
  EXPECT_TRUE(test::grad_close("relu dx", dx, test::numeric_gradient(x, loss)));
}

TEST(Activation, SwigluBackwardMatchesFiniteDifferences) {
  const int64_t N = 4, H = 5;
  auto x = random_vector<double>(N * 2 * H, 1, -3.0, 3.0);
  const auto r = random_vector<double>(N * H, 2);
  std::vector<double> y(N * H);
  auto loss = [&] {
    swiglu_forward(y.data(), x.data(), N, H);
    return test::dot(y, r);
  };
  std::vector<double> dx(N * 2 * H, test::kGarbage);
  swiglu_backward(dx.data(), x.data(), r.data(), N, H);
  EXPECT_TRUE(test::grad_close("swiglu d[gate|up]", dx, test::numeric_gradient(x, loss)));
}

TEST(Activation, FloatPathMatchesDoublePath) {
  const int64_t N = 6, H = 8, n = N * 2 * H;
  const auto x = random_vector<double>(n, 1, -3.0, 3.0);
  const auto dy = random_vector<double>(n, 2);
  const auto xf = test::cast<float>(x), dyf = test::cast<float>(dy);
  std::vector<double> y(n), dx(n);
  std::vector<float> yf(n), dxf(n);
  auto check = [&](const char* what, size_t count) {
    EXPECT_LT(test::max_rel_diff(test::cast<double>(yf).data(), y.data(), count), 1e-6) << what;
    EXPECT_LT(test::max_rel_diff(test::cast<double>(dxf).data(), dx.data(), count), 1e-6) << what;
  };
  gelu_forward(y.data(), x.data(), n), gelu_backward(dx.data(), x.data(), dy.data(), n);
  gelu_forward(yf.data(), xf.data(), n), gelu_backward(dxf.data(), xf.data(), dyf.data(), n);
  check("gelu", n);
  relu_forward(y.data(), x.data(), n), relu_backward(dx.data(), x.data(), dy.data(), n);
  relu_forward(yf.data(), xf.data(), n), relu_backward(dxf.data(), xf.data(), dyf.data(), n);
  check("relu", n);
  swiglu_forward(y.data(), x.data(), N, H), swiglu_backward(dx.data(), x.data(), dy.data(), N, H);
  swiglu_forward(yf.data(), xf.data(), N, H), swiglu_backward(dxf.data(), xf.data(), dyf.data(), N, H);
  check("swiglu", n);
}

TEST(Activation, RejectsBadArguments) {
  std::vector<float> a(8), b(8);
  EXPECT_THROW(gelu_forward<float>(a.data(), b.data(), 0), InvalidArgument);
  EXPECT_THROW(relu_backward<float>(a.data(), nullptr, b.data(), 8), InvalidArgument);
  EXPECT_THROW(swiglu_forward<float>(a.data(), b.data(), 2, -1), InvalidArgument);
  EXPECT_THROW(swiglu_backward<float>(nullptr, a.data(), b.data(), 2, 2), InvalidArgument);
}

}  // namespace
}  // namespace sy::ops
