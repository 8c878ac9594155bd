#include "core/ops/attention.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::ops {
namespace {

using test::random_vector;

// Plain loops over (b, h, t): the definition the GEMM version is checked against.
std::vector<double> reference_attention(const std::vector<double>& qkv, int64_t B, int64_t T, int64_t C, int64_t H) {
  const int64_t D = C / H;
  std::vector<double> out(B * T * C, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const double* q = &qkv[(b * T + t) * 3 * C + h * D];
        std::vector<double> w(t + 1);
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          const double* k = &qkv[(b * T + j) * 3 * C + C + h * D];
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += q[d] * k[d];
          w[j] = s / std::sqrt(double(D));
          m = std::max(m, w[j]);
        }
        for (int64_t j = 0; j <= t; ++j) sum += (w[j] = std::exp(w[j] - m));
        for (int64_t j = 0; j <= t; ++j) {
          const double* v = &qkv[(b * T + j) * 3 * C + 2 * C + h * D];
          for (int64_t d = 0; d < D; ++d) out[(b * T + t) * C + h * D + d] += w[j] / sum * v[d];
        }
      }
  return out;
}

TEST(Attention, ForwardMatchesReferenceAndProbsAreCausal) {
  const int64_t B = 2, T = 5, C = 6, H = 2;
  const auto qkv = random_vector<double>(B * T * 3 * C, 1, -2.0, 2.0);
  std::vector<double> out(B * T * C, test::kGarbage), probs(B * H * T * T, test::kGarbage);
  attention_forward(out.data(), probs.data(), qkv.data(), B, T, C, H);
  const auto want = reference_attention(qkv, B, T, C, H);
  EXPECT_LT(test::max_rel_diff(out.data(), want.data(), out.size()), 1e-14);
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t t = 0; t < T; ++t) {
      double sum = 0;
      for (int64_t j = 0; j < T; ++j) {
        const double p = probs[(bh * T + t) * T + j];
        if (j > t) {
          EXPECT_EQ(p, 0.0) << "future key " << j << " visible from query " << t;
        }
        sum += p;
      }
      EXPECT_NEAR(sum, 1.0, 1e-14);
    }
  // The first token can only attend to itself: its output is its own value.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) EXPECT_DOUBLE_EQ(out[b * T * C + c], qkv[b * T * 3 * C + 2 * C + c]);
}

TEST(Attention, OutputAtPositionTDependsOnlyOnInputsUpToT) {
  const int64_t B = 1, T = 6, C = 4, H = 2;
  const auto qkv = random_vector<double>(B * T * 3 * C, 1);
  std::vector<double> base(T * C), probs(H * T * T);
  attention_forward(base.data(), probs.data(), qkv.data(), B, T, C, H);
  for (int64_t changed = 0; changed < T; ++changed) {
    auto perturbed = qkv;
    for (int64_t c = 0; c < 3 * C; ++c) perturbed[changed * 3 * C + c] += 0.5;
    std::vector<double> out(T * C);
    attention_forward(out.data(), probs.data(), perturbed.data(), B, T, C, H);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        if (t < changed) {
          EXPECT_EQ(out[t * C + c], base[t * C + c]) << "output " << t << " saw input " << changed;
        } else if (t == changed) {
          EXPECT_NE(out[t * C + c], base[t * C + c]);
        }
      }
  }
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  const int64_t B = 2, T = 4, C = 6, H = 2;
  auto qkv = random_vector<double>(B * T * 3 * C, 1, -1.5, 1.5);
  const auto r = random_vector<double>(B * T * C, 2);
  std::vector<double> out(B * T * C), probs(B * H * T * T);
  attention_forward(out.data(), probs.data(), qkv.data(), B, T, C, H);
  std::vector<double> dqkv(B * T * 3 * C, test::kGarbage), dscores(B * H * T * T, test::kGarbage);
  attention_backward(dqkv.data(), dscores.data(), r.data(), qkv.data(), probs.data(), B, T, C, H);

  std::vector<double> fout(B * T * C), fprobs(B * H * T * T);
  auto loss = [&] {
    attention_forward(fout.data(), fprobs.data(), qkv.data(), B, T, C, H);
    return test::dot(fout, r);
  };
  const auto numeric = test::numeric_gradient(qkv, loss);
  // Report q, k and v separately so a failure says which product is wrong.
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

TEST(Attention, FloatPathMatchesDoublePath) {
  const int64_t B = 2, T = 6, C = 8, H = 2;
  const auto qkv = random_vector<double>(B * T * 3 * C, 1, -2.0, 2.0);
  const auto dout = random_vector<double>(B * T * C, 2);
  std::vector<double> out(B * T * C), probs(B * H * T * T), dqkv(B * T * 3 * C), ds(B * H * T * T);
  attention_forward(out.data(), probs.data(), qkv.data(), B, T, C, H);
  attention_backward(dqkv.data(), ds.data(), dout.data(), qkv.data(), probs.data(), B, T, C, H);
  const auto qkvf = test::cast<float>(qkv), doutf = test::cast<float>(dout);
  std::vector<float> outf(B * T * C), probsf(B * H * T * T), dqkvf(B * T * 3 * C), dsf(B * H * T * T);
  attention_forward(outf.data(), probsf.data(), qkvf.data(), B, T, C, H);
  attention_backward(dqkvf.data(), dsf.data(), doutf.data(), qkvf.data(), probsf.data(), B, T, C, H);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(outf).data(), out.data(), out.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(probsf).data(), probs.data(), probs.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dqkvf).data(), dqkv.data(), dqkv.size()), 1e-5);
}

TEST(Attention, DoesNotDependOnThreadCount) {
  const int64_t B = 3, T = 6, C = 8, H = 2;
  const auto qkv = random_vector<double>(B * T * 3 * C, 1, -2.0, 2.0);
  const auto dout = random_vector<double>(B * T * C, 2);
  auto run = [&](int threads) {
    test::ScopedThreads scoped(threads);
    std::vector<double> out(B * T * C), probs(B * H * T * T), dqkv(B * T * 3 * C), ds(B * H * T * T);
    attention_forward(out.data(), probs.data(), qkv.data(), B, T, C, H);
    attention_backward(dqkv.data(), ds.data(), dout.data(), qkv.data(), probs.data(), B, T, C, H);
    out.insert(out.end(), dqkv.begin(), dqkv.end());
    return out;
  };
  EXPECT_EQ(run(1), run(4));
}

TEST(Attention, RejectsBadArguments) {
  std::vector<float> a(512), b(512), c(512), d(512), e(512);
  EXPECT_THROW(attention_forward<float>(a.data(), b.data(), c.data(), 1, 4, 6, 4), InvalidArgument);  // 6 % 4 != 0
  EXPECT_THROW(attention_forward<float>(a.data(), b.data(), c.data(), 1, 0, 6, 2), InvalidArgument);
  EXPECT_THROW(attention_forward<float>(a.data(), nullptr, c.data(), 1, 4, 6, 2), InvalidArgument);
  EXPECT_THROW(attention_backward<float>(a.data(), nullptr, c.data(), d.data(), e.data(), 1, 4, 6, 2),
               InvalidArgument);
}

}  // namespace
}  // namespace sy::ops
