// The per-element math of the CUDA kernels (core/cuda/ops/elementwise_math.hpp),
// run on the host and compared with the CPU ops that specify it. Needs no GPU:
// these SY_HD functions are the code the kernels run on each element.
#include "core/cuda/ops/elementwise_math.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/ops/activation.hpp"
#include "models/optimizer.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

using test::random_vector;

// The CPU op evaluates the same expression in the same order: the host results
// agree to the last bit but for FMA contraction, which moves them by an ulp or so.
constexpr double kSameExpression = 1e-6;

// Many values over the range that matters, plus the edges: 0, -0, tiny, large.
std::vector<float> sample_inputs() {
  std::vector<float> x = random_vector<float>(20000, 11, -8.0, 8.0);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-3f, -1e-3f, 1.0f, -1.0f, 20.0f, -20.0f, 60.0f, -60.0f, 1e4f, -1e4f})
    x.push_back(v);
  return x;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  return test::max_rel_diff(a.data(), b.data(), a.size());
}

TEST(CudaElementwiseMath, GeluMatchesCpuOp) {
  const auto x = sample_inputs();
  const int64_t n = int64_t(x.size());
  std::vector<float> want(n), got(n);
  ops::gelu_forward(want.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) got[i] = cuda::math::gelu(x[i]);
  EXPECT_LT(max_diff(got, want), kSameExpression);
  EXPECT_EQ(cuda::math::gelu(0.0f), 0.0f);
  EXPECT_NEAR(cuda::math::gelu(1.0f), 0.8411919906082768, 1e-6);  // tanh form, not erf (0.8413447)
}

TEST(CudaElementwiseMath, GeluGradMatchesCpuBackward) {
  const auto x = sample_inputs();
  const int64_t n = int64_t(x.size());
  const auto dout = random_vector<float>(x.size(), 12, -2.0, 2.0);
  std::vector<float> want(n), got(n);
  ops::gelu_backward(want.data(), x.data(), dout.data(), n);
  for (int64_t i = 0; i < n; ++i) got[i] = cuda::math::gelu_grad(x[i]) * dout[i];
  EXPECT_LT(max_diff(got, want), kSameExpression);
}

TEST(CudaElementwiseMath, GeluGradIsTheDerivative) {
  // Central differences of the double CPU op; the float derivative agrees to ~1e-6.
  const auto x = random_vector<double>(2000, 13, -6.0, 6.0);
  for (double xi : x) {
    const double h = 1e-5;
    double lo, hi;
    const double xl = xi - h, xh = xi + h;
    ops::gelu_forward(&lo, &xl, 1);
    ops::gelu_forward(&hi, &xh, 1);
    EXPECT_NEAR(cuda::math::gelu_grad(float(xi)), (hi - lo) / (2 * h), 2e-6) << "x = " << xi;
  }
}

TEST(CudaElementwiseMath, ReluMatchesCpuOp) {
  const auto x = sample_inputs();
  const int64_t n = int64_t(x.size());
  const auto dout = random_vector<float>(x.size(), 14);
  std::vector<float> want(n), wantd(n);
  ops::relu_forward(want.data(), x.data(), n);
  ops::relu_backward(wantd.data(), x.data(), dout.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    // Bitwise: no arithmetic, so no contraction can differ (and -0 gives +0).
    EXPECT_EQ(std::signbit(cuda::math::relu(x[i])), std::signbit(want[i]));
    EXPECT_EQ(cuda::math::relu(x[i]), want[i]);
    EXPECT_EQ(cuda::math::relu_backward(x[i], dout[i]), wantd[i]);
  }
  EXPECT_EQ(cuda::math::relu_backward(0.0f, 5.0f), 0.0f);  // the kink's derivative is 0
}

TEST(CudaElementwiseMath, SwigluMatchesCpuOp) {
  const int64_t N = 3, H = 7001;
  auto in = random_vector<float>(N * 2 * H, 15, -8.0, 8.0);
  in[0] = 0.0f, in[1] = 60.0f, in[2] = -60.0f, in[3] = -1e4f;  // gates at the edges
  const auto dout = random_vector<float>(N * H, 16, -2.0, 2.0);
  std::vector<float> want(N * H), wantd(N * 2 * H), got(N * H), gotd(N * 2 * H);
  ops::swiglu_forward(want.data(), in.data(), N, H);
  ops::swiglu_backward(wantd.data(), in.data(), dout.data(), N, H);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < H; ++j) {
      const float g = in[r * 2 * H + j], up = in[r * 2 * H + H + j], d = dout[r * H + j];
      got[r * H + j] = cuda::math::swiglu(g, up);
      const cuda::math::SwigluGrad grad = cuda::math::swiglu_backward(g, up, d);
      gotd[r * 2 * H + j] = grad.dgate;
      gotd[r * 2 * H + H + j] = grad.dup;
    }
  EXPECT_LT(max_diff(got, want), kSameExpression);
  EXPECT_LT(max_diff(gotd, wantd), kSameExpression);
}

TEST(CudaElementwiseMath, SiluAndItsDerivative) {
  for (float g : sample_inputs()) {
    // swiglu with up = 1 is silu; its dgate with up = d = 1 is silu'.
    EXPECT_NEAR(cuda::math::silu(g), cuda::math::swiglu(g, 1.0f), 1e-6 * std::max(1.0f, std::abs(g))) << g;
    EXPECT_NEAR(cuda::math::silu_grad(g), cuda::math::swiglu_backward(g, 1.0f, 1.0f).dgate, 1e-6) << g;
    EXPECT_NEAR(cuda::math::swiglu_backward(g, 1.0f, 1.0f).dup, cuda::math::silu(g),
                1e-6 * std::max(1.0f, std::abs(g)))
        << g;
  }
  for (double g : random_vector<double>(2000, 17, -10.0, 10.0)) {
    const double h = 1e-4;
    const auto silu_d = [](double x) { return x / (1.0 + std::exp(-x)); };
    EXPECT_NEAR(cuda::math::silu_grad(float(g)), (silu_d(g + h) - silu_d(g - h)) / (2 * h), 2e-6) << g;
  }
  EXPECT_EQ(cuda::math::silu(0.0f), 0.0f);
  EXPECT_EQ(cuda::math::silu_grad(0.0f), 0.5f);
}

TEST(CudaElementwiseMath, IsFinite) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(cuda::math::is_finite(0.0f));
  EXPECT_TRUE(cuda::math::is_finite(-3.5f));
  EXPECT_TRUE(cuda::math::is_finite(std::numeric_limits<float>::max()));
  EXPECT_TRUE(cuda::math::is_finite(std::numeric_limits<float>::denorm_min()));
  EXPECT_FALSE(cuda::math::is_finite(inf));
  EXPECT_FALSE(cuda::math::is_finite(-inf));
  EXPECT_FALSE(cuda::math::is_finite(nan));
}

TEST(CudaElementwiseMath, AdamWCoefficients) {
  const models::AdamWStep s{2e-3, 0.9, 0.95, 1e-8, 0.1, 3};
  const cuda::math::AdamWCoefficients c = cuda::math::adamw_coefficients(s);
  EXPECT_DOUBLE_EQ(c.step_size, 2e-3 / (1.0 - 0.9 * 0.9 * 0.9));
  EXPECT_DOUBLE_EQ(c.bias_correction2, 1.0 - 0.95 * 0.95 * 0.95);
  EXPECT_DOUBLE_EQ(c.decay_step, 2e-4);
  EXPECT_EQ(c.beta1, 0.9);
  EXPECT_EQ(c.beta2, 0.95);
  EXPECT_EQ(c.eps, 1e-8);
}

// Several steps of the CPU op on fp32 state against adamw_element on the same
// fp32 state, stored back as the CUDA kernel stores it (master, m, v in fp32).
TEST(CudaElementwiseMath, AdamWElementMatchesCpuUpdate) {
  const int64_t n = 5003;
  std::vector<float> p_cpu = random_vector<float>(n, 21, -2.0, 2.0), m_cpu(n, 0.0f), v_cpu(n, 0.0f);
  std::vector<float> p = p_cpu, m = m_cpu, v = v_cpu;
  std::vector<uint8_t> decay(n);
  for (int64_t i = 0; i < n; ++i) decay[i] = uint8_t(i % 3 != 0);
  for (int64_t t = 1; t <= 5; ++t) {
    auto g = random_vector<float>(n, 100 + t, -1.0, 1.0);
    for (int64_t i = 0; i < n; i += 97) g[i] *= 1e-6f;  // tiny gradients: eps matters
    const bool masked = t % 2 == 0;                      // alternate mask / decay everywhere
    const models::AdamWStep s{1e-2, 0.9, 0.999, 1e-8, t == 3 ? 0.0 : 0.1, t};
    const int64_t bad = models::adamw_update(p_cpu.data(), g.data(), m_cpu.data(), v_cpu.data(),
                                             masked ? decay.data() : nullptr, n, s);
    EXPECT_EQ(bad, 0);
    const cuda::math::AdamWCoefficients c = cuda::math::adamw_coefficients(s);
    for (int64_t i = 0; i < n; ++i) {
      double mi = m[i], vi = v[i];
      p[i] = float(cuda::math::adamw_element(p[i], g[i], mi, vi, !masked || decay[i] != 0, c));
      m[i] = float(mi);
      v[i] = float(vi);
    }
    EXPECT_LT(max_diff(p, p_cpu), kSameExpression) << "step " << t;
    EXPECT_LT(max_diff(m, m_cpu), kSameExpression) << "step " << t;
    EXPECT_LT(max_diff(v, v_cpu), kSameExpression) << "step " << t;
  }
}

TEST(CudaElementwiseMath, AdamWElementPropagatesNonFiniteGradients) {
  const models::AdamWStep s{1e-3, 0.9, 0.95, 1e-8, 0.1, 1};
  const cuda::math::AdamWCoefficients c = cuda::math::adamw_coefficients(s);
  for (float g : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    double m = 0.0, v = 0.0;
    const double p = cuda::math::adamw_element(1.0, g, m, v, true, c);
    EXPECT_FALSE(cuda::math::is_finite(float(p))) << g;
    float cpu_p = 1.0f, cpu_m = 0.0f, cpu_v = 0.0f;
    EXPECT_EQ(models::adamw_update(&cpu_p, &g, &cpu_m, &cpu_v, nullptr, 1, s), 1);  // the CPU counts it too
  }
}

}  // namespace
}  // namespace sy
