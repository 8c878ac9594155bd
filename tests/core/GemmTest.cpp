#include "core/gemm.hpp"

#include <cmath>
#include <limits>

#include "core/error.hpp"

#include <gtest/gtest.h>

#include "core/thread_pool.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

// Plain triple loop in double: the reference every GEMM path is compared to.
std::vector<double> reference(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, double alpha,
                              const std::vector<float>& a, int64_t lda, const std::vector<float>& b, int64_t ldb,
                              double beta, const std::vector<float>& c0, int64_t ldc) {
  std::vector<double> c(c0.begin(), c0.end());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = ta == Trans::N ? a[i * lda + p] : a[p * lda + i];
        const double bv = tb == Trans::N ? b[p * ldb + j] : b[j * ldb + p];
        acc += av * bv;
      }
      c[i * ldc + j] = alpha * acc + beta * c0[i * ldc + j];
    }
  return c;
}

struct GemmCase {
  int64_t m, n, k;
  Trans ta, tb;
  int threads;
};

class GemmTest : public testing::TestWithParam<GemmCase> {};

TEST_P(GemmTest, MatchesTripleLoopWithPaddedStrides) {
  const auto p = GetParam();
  ThreadPool pool(p.threads);
  const int64_t lda = (p.ta == Trans::N ? p.k : p.m) + 3;
  const int64_t ldb = (p.tb == Trans::N ? p.n : p.k) + 5;
  const int64_t ldc = p.n + 7;
  const auto a = test::random_vector<float>((p.ta == Trans::N ? p.m : p.k) * lda, 1);
  const auto b = test::random_vector<float>((p.tb == Trans::N ? p.k : p.n) * ldb, 2);
  auto c = test::random_vector<float>(p.m * ldc, 3);
  const auto want = reference(p.ta, p.tb, p.m, p.n, p.k, 0.5, a, lda, b, ldb, 0.25, c, ldc);
  gemm<float>(p.ta, p.tb, p.m, p.n, p.k, 0.5f, a.data(), lda, b.data(), ldb, 0.25f, c.data(), ldc, &pool);
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < p.n; ++j)
      ASSERT_NEAR(c[i * ldc + j], want[i * ldc + j], 1e-4 * (1 + std::abs(want[i * ldc + j])))
          << "at (" << i << ", " << j << ")";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmTest,
    testing::Values(GemmCase{1, 1, 1, Trans::N, Trans::N, 1}, GemmCase{37, 29, 53, Trans::N, Trans::N, 2},
                    GemmCase{37, 29, 53, Trans::T, Trans::N, 2}, GemmCase{37, 29, 53, Trans::N, Trans::T, 2},
                    GemmCase{37, 29, 53, Trans::T, Trans::T, 2}, GemmCase{300, 40, 120, Trans::N, Trans::T, 2},
                    GemmCase{40, 300, 120, Trans::T, Trans::N, 3}, GemmCase{257, 129, 64, Trans::N, Trans::N, 4},
                    // Past every blocking size of the packed kernel (kMC, kKC, kNC) with ragged edges.
                    GemmCase{203, 1037, 531, Trans::N, Trans::N, 1}, GemmCase{203, 1037, 531, Trans::T, Trans::T, 2},
                    GemmCase{203, 1037, 531, Trans::T, Trans::N, 1}, GemmCase{203, 1037, 531, Trans::N, Trans::T, 2}));

TEST(Gemm, BetaZeroOverwritesNaN) {
  const std::vector<float> a{1, 2}, b{3, 4};  // (1,2) x (2,1)
  std::vector<float> c{std::numeric_limits<float>::quiet_NaN()};
  gemm<float>(Trans::N, Trans::N, 1, 1, 2, 1.0f, a.data(), 2, b.data(), 1, 0.0f, c.data(), 1);
  EXPECT_FLOAT_EQ(c[0], 11.0f);
}

TEST(Gemm, ZeroInnerDimensionScalesC) {
  std::vector<float> c{2, 4};
  gemm<float>(Trans::N, Trans::N, 1, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2);
  EXPECT_FLOAT_EQ(c[0], 1.0f);
  EXPECT_FLOAT_EQ(c[1], 2.0f);
}

TEST(Gemm, RejectsTooSmallLeadingDimension) {
  std::vector<float> a(4), b(4), c(4);
  EXPECT_THROW(gemm<float>(Trans::N, Trans::N, 2, 2, 2, 1.0f, a.data(), 1, b.data(), 2, 0.0f, c.data(), 2),
               InvalidArgument);
}

}  // namespace
}  // namespace sy
