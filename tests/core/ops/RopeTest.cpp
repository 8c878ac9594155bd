// Rotary position embeddings: the table and the forward against the formula
// written out per element, the backward as the transpose (adjoint identity and
// finite differences), the relative-position property of the rotated scores,
// float against double, thread-count independence and the argument checks.
#include "core/ops/rope.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::ops {
namespace {

using test::random_vector;

// The tables of rope_table for head size D, positions [0, S).
template <typename Real>
struct Table {
  Table(int64_t S, int64_t D) : cos(S * D / 2, Real(test::kGarbage)), sin(S * D / 2, Real(test::kGarbage)) {
    rope_table(cos.data(), sin.data(), S, D);
  }
  std::vector<Real> cos, sin;  // (S, D/2) each
};

// The forward written out element by element, angles from std::pow directly:
// pair (2i, 2i+1) of each head of q and k at position t = n % T rotated by
// t * 10000^(-2i/D); v copied.
std::vector<double> naive_rope(const std::vector<double>& qkv, int64_t B, int64_t T, int64_t C, int64_t H) {
  const int64_t D = C / H;
  std::vector<double> out = qkv;
  for (int64_t n = 0; n < B * T; ++n)
    for (int part = 0; part < 2; ++part)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          const double angle = double(n % T) * std::pow(10000.0, -2.0 * double(i) / double(D));
          const int64_t at = n * 3 * C + part * C + h * D + 2 * i;
          out[at] = std::cos(angle) * qkv[at] - std::sin(angle) * qkv[at + 1];
          out[at + 1] = std::sin(angle) * qkv[at] + std::cos(angle) * qkv[at + 1];
        }
  return out;
}

TEST(Rope, TableHoldsTheAngles) {
  const int64_t S = 7, D = 6;
  Table<double> tab(S, D);
  for (int64_t t = 0; t < S; ++t)
    for (int64_t i = 0; i < D / 2; ++i) {
      const double angle = double(t) / std::pow(10000.0, double(2 * i) / double(D));
      EXPECT_NEAR(tab.cos[t * D / 2 + i], std::cos(angle), 1e-15) << "t " << t << " i " << i;
      EXPECT_NEAR(tab.sin[t * D / 2 + i], std::sin(angle), 1e-15) << "t " << t << " i " << i;
    }
  // Pair 0 turns by one radian per position; position 0 is the identity.
  EXPECT_DOUBLE_EQ(tab.sin[1 * D / 2], std::sin(1.0));
  for (int64_t i = 0; i < D / 2; ++i) {
    EXPECT_EQ(tab.cos[i], 1.0);
    EXPECT_EQ(tab.sin[i], 0.0);
  }
}

TEST(Rope, ForwardMatchesNaiveFormulaAndLeavesVAlone) {
  const int64_t B = 3, T = 5, C = 12, H = 2;  // D = 6: an odd number of pairs per head
  const auto qkv = random_vector<double>(B * T * 3 * C, 1, -2.0, 2.0);
  Table<double> tab(T + 2, C / H);  // a longer table than this T: rows past T are unused
  auto got = qkv;
  rope_forward(got.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
  const auto want = naive_rope(qkv, B, T, C, H);
  EXPECT_LT(test::max_rel_diff(got.data(), want.data(), got.size()), 1e-14);
  for (int64_t n = 0; n < B * T; ++n)
    for (int64_t c = 0; c < C; ++c) {
      ASSERT_EQ(got[n * 3 * C + 2 * C + c], qkv[n * 3 * C + 2 * C + c]) << "v changed at row " << n;
      // The first token of each sequence is at position 0: not rotated.
      if (n % T == 0) {
        ASSERT_EQ(got[n * 3 * C + c], qkv[n * 3 * C + c]) << "q rotated at position 0, row " << n;
      }
    }
}

TEST(Rope, BackwardIsTheTransposeOfForward) {
  const int64_t B = 2, T = 6, C = 8, H = 2;
  const auto x = random_vector<double>(B * T * 3 * C, 3, -2.0, 2.0);
  const auto y = random_vector<double>(B * T * 3 * C, 4, -2.0, 2.0);
  Table<double> tab(T, C / H);
  auto rx = x, rty = y;
  rope_forward(rx.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
  rope_backward(rty.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
  // <R x, y> = <x, R^T y>
  const double lhs = test::dot(rx, y), rhs = test::dot(x, rty);
  EXPECT_NEAR(lhs, rhs, 1e-12 * std::abs(lhs));
  // R is orthogonal: R^T R x = x, and R changes q and k (it is not the identity).
  auto back = rx;
  rope_backward(back.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
  EXPECT_LT(test::max_rel_diff(back.data(), x.data(), x.size()), 1e-14);
  EXPECT_GT(test::max_rel_diff(rx.data(), x.data(), x.size()), 0.1);
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  const int64_t B = 2, T = 4, C = 8, H = 2;
  auto qkv = random_vector<double>(B * T * 3 * C, 5, -1.5, 1.5);
  const auto r = random_vector<double>(B * T * 3 * C, 6);
  Table<double> tab(T, C / H);
  auto dqkv = r;  // dout = R: the gradient of L = <rope(qkv), R>
  rope_backward(dqkv.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
  std::vector<double> fout;
  auto loss = [&] {
    fout = qkv;
    rope_forward(fout.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
    return test::dot(fout, r);
  };
  const auto numeric = test::numeric_gradient(qkv, loss);
  for (int part = 0; part < 3; ++part) {
    std::vector<double> a, n;
    for (int64_t row = 0; row < B * T; ++row)
      for (int64_t c = 0; c < C; ++c) {
        a.push_back(dqkv[row * 3 * C + part * C + c]);
        n.push_back(numeric[row * 3 * C + part * C + c]);
      }
    EXPECT_TRUE(test::grad_close(part == 0 ? "dq" : part == 1 ? "dk" : "dv", a, n));
  }
}

// The point of RoPE: with the same q and k vectors at every position, the
// score <q at p, k at p - j> depends on the offset j only, not on p; and it
// does depend on j (without rotation every score would be <q, k>).
TEST(Rope, ScoresDependOnlyOnTheRelativePosition) {
  const int64_t T = 12, D = 8, C = D, H = 1;  // one sequence, one head
  const auto q = random_vector<double>(D, 7), k = random_vector<double>(D, 8);
  std::vector<double> qkv(T * 3 * C);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      qkv[t * 3 * C + d] = q[d];
      qkv[t * 3 * C + C + d] = k[d];
    }
  Table<double> tab(T, D);
  rope_forward(qkv.data(), tab.cos.data(), tab.sin.data(), 1, T, C, H);
  auto score = [&](int64_t p, int64_t s) {  // <R_p q, R_s k>
    double sum = 0;
    for (int64_t d = 0; d < D; ++d) sum += qkv[p * 3 * C + d] * qkv[s * 3 * C + C + d];
    return sum;
  };
  const double unrotated = test::dot(q, k);
  EXPECT_NEAR(score(0, 0), unrotated, 1e-15);
  for (int64_t j = 0; j < T; ++j) {
    const double at_offset = score(j, 0);
    if (j > 0) {
      EXPECT_GT(std::abs(at_offset - unrotated), 1e-3) << "offset " << j << " scores like offset 0";
    }
    for (int64_t p = j; p < T; ++p)
      EXPECT_NEAR(score(p, p - j), at_offset, 1e-14) << "q at " << p << ", k at " << p - j;
  }
}

TEST(Rope, FloatMatchesDouble) {
  const int64_t B = 2, T = 16, C = 8, H = 2;
  const auto qkv = random_vector<double>(B * T * 3 * C, 9, -2.0, 2.0);
  Table<double> tab(T, C / H);
  Table<float> tabf(T, C / H);
  auto d = qkv;
  auto f = test::cast<float>(qkv);
  rope_forward(d.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
  rope_forward(f.data(), tabf.cos.data(), tabf.sin.data(), B, T, C, H);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(f).data(), d.data(), d.size()), 1e-6);
  rope_backward(d.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
  rope_backward(f.data(), tabf.cos.data(), tabf.sin.data(), B, T, C, H);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(f).data(), d.data(), d.size()), 1e-6);
}

TEST(Rope, DoesNotDependOnThreadCount) {
  const int64_t B = 4, T = 512, C = 8, H = 2;  // enough rows for several tasks
  const auto qkv = random_vector<double>(B * T * 3 * C, 10, -2.0, 2.0);
  Table<double> tab(T, C / H);
  auto run = [&](int threads) {
    test::ScopedThreads scoped(threads);
    auto fwd = qkv, bwd = qkv;
    rope_forward(fwd.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
    rope_backward(bwd.data(), tab.cos.data(), tab.sin.data(), B, T, C, H);
    fwd.insert(fwd.end(), bwd.begin(), bwd.end());
    return fwd;
  };
  EXPECT_EQ(run(1), run(4));
}

TEST(Rope, RejectsBadArguments) {
  std::vector<float> qkv(512), c(64), s(64);
  EXPECT_THROW(rope_table<float>(c.data(), s.data(), 4, 5, kRopeBase), InvalidArgument);   // odd D
  EXPECT_THROW(rope_table<float>(c.data(), s.data(), 0, 4, kRopeBase), InvalidArgument);
  EXPECT_THROW(rope_table<float>(c.data(), s.data(), 4, 4, 0.0), InvalidArgument);
  EXPECT_THROW(rope_table<float>(nullptr, s.data(), 4, 4, kRopeBase), InvalidArgument);
  EXPECT_THROW(rope_forward<float>(qkv.data(), c.data(), s.data(), 1, 4, 6, 2), InvalidArgument);  // D = 3
  EXPECT_THROW(rope_forward<float>(qkv.data(), c.data(), s.data(), 1, 4, 6, 4), InvalidArgument);  // 6 % 4 != 0
  EXPECT_THROW(rope_forward<float>(qkv.data(), c.data(), s.data(), 0, 4, 8, 2), InvalidArgument);
  EXPECT_THROW(rope_backward<float>(qkv.data(), nullptr, s.data(), 1, 4, 8, 2), InvalidArgument);
}

}  // namespace
}  // namespace sy::ops
