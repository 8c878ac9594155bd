// Host-side logic of the cuBLAS GEMMs, checked on the CPU (no GPU needed):
// the row-major -> column-major mapping that every cuBLAS call goes through
// (executed here by a plain column-major reference GEMM with BLAS semantics and
// compared against sy::gemm), argument checks, grouped-GEMM plans over the
// expert layout, the expert FFN's six grouped products run against the CPU
// experts, the attention batching and the activation row runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include "core/cuda/ops/attention.hpp"
#include "core/cuda/ops/experts.hpp"
#include "core/cuda/ops/gemm.hpp"
#include "core/error.hpp"
#include "core/gemm.hpp"
#include "core/ops/activation.hpp"
#include "models/experts.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

using cuda::ops::ColumnMajorGemm;
using cuda::ops::GroupedDim;
using cuda::ops::GroupedLayout;
using cuda::ops::GroupedOperand;
using cuda::ops::GroupedProblem;
using cuda::ops::GroupedSizes;

// Column-major BLAS GEMM: X (r, c) with leading dimension ld holds X(i, j) at X[i + j ld].
// Checks the BLAS leading-dimension rules cuBLAS enforces, so a bad mapping fails here.
void colmajor_gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  ASSERT_GE(lda, std::max<int64_t>(1, ta == Trans::N ? m : k));
  ASSERT_GE(ldb, std::max<int64_t>(1, tb == Trans::N ? k : n));
  ASSERT_GE(ldc, std::max<int64_t>(1, m));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = ta == Trans::N ? a[i + p * lda] : a[p + i * lda];
        const double bv = tb == Trans::N ? b[p + j * ldb] : b[j + p * ldb];
        acc += av * bv;
      }
      float& cij = c[i + j * ldc];
      cij = static_cast<float>(beta == 0.0f ? alpha * acc : alpha * acc + beta * static_cast<double>(cij));
    }
}

// What cuda::ops::gemm sends to cuBLAS, executed on the CPU.
void row_major_via_cublas_mapping(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const ColumnMajorGemm cm = cuda::ops::column_major(ta, tb, m, n, k, lda, ldb, ldc);
  colmajor_gemm(cm.trans_first, cm.trans_second, cm.m, cm.n, cm.k, alpha, b, cm.ld_first, a, cm.ld_second, beta, c,
                cm.ldc);
}

// What cuda::ops::grouped_gemm does with a plan, executed on the CPU.
void run_grouped(Trans ta, Trans tb, const GroupedSizes& sizes, int64_t groups, const int64_t* offset,
                 const int64_t* count, float alpha, const float* a, const GroupedOperand& al, const float* b,
                 const GroupedOperand& bl, float beta, float* c, const GroupedOperand& cl) {
  for (const GroupedProblem& p : cuda::ops::plan_grouped_gemm(ta, tb, sizes, groups, offset, count, al, bl, cl))
    row_major_via_cublas_mapping(ta, tb, p.m, p.n, p.k, alpha, a + p.a_offset, al.ld, b + p.b_offset, bl.ld, beta,
                                 c + p.c_offset, cl.ld);
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_LE(test::max_rel_diff(got.data(), want.data(), got.size()), tol) << what;
}

TEST(CudaGemmPlan, ColumnMajorMappingMatchesRowMajorGemmForEveryTranspose) {
  const int64_t m = 7, n = 5, k = 9;
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T}) {
      const int64_t lda = (ta == Trans::N ? k : m) + 3, ldb = (tb == Trans::N ? n : k) + 2, ldc = n + 4;
      const auto a = test::random_vector<float>((ta == Trans::N ? m : k) * lda, 11);
      const auto b = test::random_vector<float>((tb == Trans::N ? k : n) * ldb, 12);
      const auto c0 = test::random_vector<float>(m * ldc, 13);
      std::vector<float> want = c0, got = c0;
      gemm<float>(ta, tb, m, n, k, 0.75f, a.data(), lda, b.data(), ldb, -0.5f, want.data(), ldc);
      row_major_via_cublas_mapping(ta, tb, m, n, k, 0.75f, a.data(), lda, b.data(), ldb, -0.5f, got.data(), ldc);
      expect_close(got, want, 1e-5, "mapped product");
      // The padding columns of C stay untouched.
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], c0[i * ldc + j]);
    }
}

TEST(CudaGemmPlan, ColumnMajorMappingSwapsOperandsAndSizes) {
  const ColumnMajorGemm cm = cuda::ops::column_major(Trans::T, Trans::N, 3, 4, 5, 6, 7, 8);
  EXPECT_EQ(cm.trans_first, Trans::N);   // the row-major B's flag
  EXPECT_EQ(cm.trans_second, Trans::T);  // the row-major A's flag
  EXPECT_EQ(cm.m, 4);
  EXPECT_EQ(cm.n, 3);
  EXPECT_EQ(cm.k, 5);
  EXPECT_EQ(cm.ld_first, 7);
  EXPECT_EQ(cm.ld_second, 6);
  EXPECT_EQ(cm.ldc, 8);
}

TEST(CudaGemmPlan, ArgumentChecksNameTheProblem) {
  using cuda::ops::check_gemm_args;
  EXPECT_NO_THROW(check_gemm_args("gemm", Trans::N, Trans::T, 4, 3, 2, 2, 2, 3));
  EXPECT_NO_THROW(check_gemm_args("gemm", Trans::T, Trans::N, 4, 3, 2, 4, 3, 3));
  EXPECT_NO_THROW(check_gemm_args("gemm", Trans::N, Trans::N, 0, 0, 0, 1, 1, 1));
  EXPECT_THROW(check_gemm_args("gemm", Trans::N, Trans::N, -1, 3, 2, 2, 3, 3), InvalidArgument);
  EXPECT_THROW(check_gemm_args("gemm", Trans::N, Trans::N, 4, 3, 2, 1, 3, 3), InvalidArgument);  // lda < k
  EXPECT_THROW(check_gemm_args("gemm", Trans::T, Trans::N, 4, 3, 2, 3, 3, 3), InvalidArgument);  // lda < m
  EXPECT_THROW(check_gemm_args("gemm", Trans::N, Trans::T, 4, 3, 2, 2, 1, 3), InvalidArgument);  // ldb < k
  EXPECT_THROW(check_gemm_args("gemm", Trans::N, Trans::N, 4, 3, 2, 2, 3, 2), InvalidArgument);  // ldc < n
  EXPECT_THROW(check_gemm_args("gemm", Trans::N, Trans::N, 4, 3, 0, 0, 3, 3), InvalidArgument);  // ld >= 1
  try {
    check_gemm_args("linear_forward", Trans::N, Trans::N, 4, 3, 2, 1, 3, 3);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("linear_forward: lda=1"), std::string::npos) << e.what();
  }
}

// The expert layout: 5 groups, one empty, one gap of unused rows between groups.
struct Layout {
  std::vector<int64_t> offset{0, 3, 3, 9, 10};
  std::vector<int64_t> count{3, 0, 4, 1, 2};
  int64_t rows = 12;
};

TEST(CudaGemmPlan, GroupedOverRowsMatchesPerExpertGemmAndSkipsEmptyGroups) {
  const Layout L;
  const int64_t G = 5, n = 6, k = 4;  // C_g (count, n) = A_g (count, k) W_g^T, W (G, n, k)
  const auto a = test::random_vector<float>(L.rows * k, 21);
  const auto w = test::random_vector<float>(G * n * k, 22);
  const auto c0 = test::random_vector<float>(L.rows * n, 23);
  std::vector<float> want = c0, got = c0;
  for (int64_t g = 0; g < G; ++g)
    if (L.count[g] > 0)
      gemm<float>(Trans::N, Trans::T, L.count[g], n, k, 1.0f, a.data() + L.offset[g] * k, k, w.data() + g * n * k, k,
                  0.5f, want.data() + L.offset[g] * n, n);
  const GroupedOperand packed_a{GroupedLayout::Packed, k}, per_group_w{GroupedLayout::PerGroup, k, n * k},
      packed_c{GroupedLayout::Packed, n};
  run_grouped(Trans::N, Trans::T, GroupedSizes{GroupedDim::M, 0, n, k}, G, L.offset.data(), L.count.data(), 1.0f,
              a.data(), packed_a, w.data(), per_group_w, 0.5f, got.data(), packed_c);
  expect_close(got, want, 1e-5, "grouped over M");
  for (int64_t r = 7; r < 9; ++r)  // the gap rows 7, 8 belong to no group: untouched despite beta != 1
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(got[r * n + j], c0[r * n + j]);

  const auto plan = cuda::ops::plan_grouped_gemm(Trans::N, Trans::T, GroupedSizes{GroupedDim::M, 0, n, k}, G,
                                                 L.offset.data(), L.count.data(), packed_a, per_group_w, packed_c);
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_EQ(plan[1].group, 2);
  EXPECT_EQ(plan[1].m, 4);
  EXPECT_EQ(plan[1].a_offset, 3 * k);
  EXPECT_EQ(plan[1].b_offset, 2 * n * k);
  EXPECT_EQ(plan[1].c_offset, 3 * n);
}

TEST(CudaGemmPlan, GroupedOverReductionMatchesPerExpertWeightGradient) {
  const Layout L;
  const int64_t G = 5, m = 3, n = 4;  // dW_g (m, n) += dY_g^T (m, count) X_g (count, n)
  const auto dy = test::random_vector<float>(L.rows * m, 31);
  const auto x = test::random_vector<float>(L.rows * n, 32);
  const auto dw0 = test::random_vector<float>(G * m * n, 33);
  std::vector<float> want = dw0, got = dw0;
  for (int64_t g = 0; g < G; ++g)
    if (L.count[g] > 0)
      gemm<float>(Trans::T, Trans::N, m, n, L.count[g], 1.0f, dy.data() + L.offset[g] * m, m,
                  x.data() + L.offset[g] * n, n, 1.0f, want.data() + g * m * n, n);
  run_grouped(Trans::T, Trans::N, GroupedSizes{GroupedDim::K, m, n, 0}, G, L.offset.data(), L.count.data(), 1.0f,
              dy.data(), GroupedOperand{GroupedLayout::Packed, m}, x.data(), GroupedOperand{GroupedLayout::Packed, n},
              1.0f, got.data(), GroupedOperand{GroupedLayout::PerGroup, n, m * n});
  expect_close(got, want, 1e-5, "grouped over K");
  for (int64_t j = 0; j < m * n; ++j) ASSERT_EQ(got[1 * m * n + j], dw0[1 * m * n + j]) << "empty group 1 changed";
}

TEST(CudaGemmPlan, GroupedRejectsPackedOperandsNotCutAlongTheGroupedDimension) {
  const Layout L;
  const GroupedOperand packed{GroupedLayout::Packed, 8}, per_group{GroupedLayout::PerGroup, 8, 64};
  const GroupedSizes over_m{GroupedDim::M, 0, 8, 8}, over_k{GroupedDim::K, 8, 8, 0};
  auto plan = [&](Trans ta, Trans tb, const GroupedSizes& s, const GroupedOperand& a, const GroupedOperand& b,
                  const GroupedOperand& c) {
    cuda::ops::plan_grouped_gemm(ta, tb, s, 5, L.offset.data(), L.count.data(), a, b, c);
  };
  EXPECT_NO_THROW(plan(Trans::N, Trans::T, over_m, packed, per_group, packed));
  EXPECT_THROW(plan(Trans::T, Trans::T, over_m, packed, per_group, packed), InvalidArgument);  // A^T rows are k
  EXPECT_THROW(plan(Trans::N, Trans::T, over_m, packed, packed, packed), InvalidArgument);     // B has no m
  EXPECT_NO_THROW(plan(Trans::T, Trans::N, over_k, packed, packed, per_group));
  EXPECT_THROW(plan(Trans::T, Trans::T, over_k, packed, packed, per_group), InvalidArgument);  // B^T rows are n
  EXPECT_THROW(plan(Trans::T, Trans::N, over_k, packed, packed, packed), InvalidArgument);     // C has no k
  const std::vector<int64_t> bad_count{3, -1, 4, 1, 2};
  EXPECT_THROW(cuda::ops::plan_grouped_gemm(Trans::N, Trans::T, over_m, 5, L.offset.data(), bad_count.data(), packed,
                                            per_group, packed),
               InvalidArgument);
  EXPECT_TRUE(cuda::ops::plan_grouped_gemm(Trans::N, Trans::T, over_m, 0, nullptr, nullptr, packed, per_group, packed)
                  .empty());
}

TEST(CudaGemmPlan, ActivationRowRunsMergeAdjacentExpertsOnly) {
  const Layout L;  // rows [0,3) [3,7) [9,10) [10,12): runs [0,7) and [9,12)
  const auto runs = cuda::ops::expert_row_runs(5, L.offset.data(), L.count.data());
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].first_row, 0);
  EXPECT_EQ(runs[0].rows, 7);
  EXPECT_EQ(runs[1].first_row, 9);
  EXPECT_EQ(runs[1].rows, 3);
  const std::vector<int64_t> none{0, 0};
  EXPECT_TRUE(cuda::ops::expert_row_runs(2, none.data(), none.data()).empty());
}

// The six grouped products of cuda::ops::experts_forward/backward, executed on the
// CPU with the CPU activations, against the CPU experts (models/experts.hpp).
template <typename Fn>
void for_runs(const Layout& L, Fn fn) {
  for (const auto& r : cuda::ops::expert_row_runs(5, L.offset.data(), L.count.data())) fn(r.first_row, r.rows);
}

class CudaExpertGemms : public testing::TestWithParam<ActivationKind> {};

TEST_P(CudaExpertGemms, MatchCpuExpertsForwardAndBackward) {
  const Layout L;
  const moe::ExpertShape s{5, 6, 4, GetParam()};
  const int64_t E = s.num_experts, M = s.model_dim, H = s.hidden, H1 = s.h1(), R = L.rows;
  const auto x = test::random_vector<float>(R * M, 41);
  const auto w1 = test::random_vector<float>(E * H1 * M, 42);
  const auto w2 = test::random_vector<float>(E * M * H, 43);
  const auto dy = test::random_vector<float>(R * M, 44);
  const auto dw1_0 = test::random_vector<float>(E * H1 * M, 45);
  const auto dw2_0 = test::random_vector<float>(E * M * H, 46);

  std::vector<float> h1(R * H1, 0.f), act(R * H, 0.f), y(R * M, 0.f), dact(R * H, 0.f), dh1(R * H1, 0.f),
      dx(R * M, 0.f), dw1 = dw1_0, dw2 = dw2_0;
  moe::experts_forward<float>(s, L.offset.data(), L.count.data(), x.data(), w1.data(), w2.data(), h1.data(),
                              act.data(), y.data());
  moe::experts_backward<float>(s, L.offset.data(), L.count.data(), x.data(), w1.data(), w2.data(), h1.data(),
                               act.data(), dy.data(), dact.data(), dh1.data(), dx.data(), dw1.data(), dw2.data());

  const cuda::ops::ExpertGemms g = cuda::ops::expert_gemms(s);
  auto run = [&](const cuda::ops::ExpertGemm& p, const float* a, const float* b, float* c) {
    run_grouped(p.trans_a, p.trans_b, p.sizes, E, L.offset.data(), L.count.data(), 1.0f, a, p.a, b, p.b, p.beta, c,
                p.c);
  };
  std::vector<float> h1_g(R * H1, 0.f), act_g(R * H, 0.f), y_g(R * M, 0.f), dact_g(R * H, 0.f),
      dh1_g(R * H1, 0.f), dx_g(R * M, 0.f), dw1_g = dw1_0, dw2_g = dw2_0;
  run(g.h1, x.data(), w1.data(), h1_g.data());
  for_runs(L, [&](int64_t r0, int64_t n) {
    float* out = act_g.data() + r0 * H;
    const float* in = h1_g.data() + r0 * H1;
    if (s.activation == ActivationKind::SwiGLU) ops::swiglu_forward(out, in, n, H);
    else if (s.activation == ActivationKind::GELU) ops::gelu_forward(out, in, n * H);
    else ops::relu_forward(out, in, n * H);
  });
  run(g.y, act_g.data(), w2.data(), y_g.data());
  run(g.dact, dy.data(), w2.data(), dact_g.data());
  run(g.dw2, dy.data(), act_g.data(), dw2_g.data());
  for_runs(L, [&](int64_t r0, int64_t n) {
    float* din = dh1_g.data() + r0 * H1;
    const float* in = h1_g.data() + r0 * H1;
    const float* dout = dact_g.data() + r0 * H;
    if (s.activation == ActivationKind::SwiGLU) ops::swiglu_backward(din, in, dout, n, H);
    else if (s.activation == ActivationKind::GELU) ops::gelu_backward(din, in, dout, n * H);
    else ops::relu_backward(din, in, dout, n * H);
  });
  run(g.dx, dh1_g.data(), w1.data(), dx_g.data());
  run(g.dw1, dh1_g.data(), x.data(), dw1_g.data());

  expect_close(h1_g, h1, 1e-5, "h1");
  expect_close(act_g, act, 1e-5, "act");
  expect_close(y_g, y, 1e-5, "y");
  expect_close(dact_g, dact, 1e-5, "dact");
  expect_close(dh1_g, dh1, 1e-5, "dh1");
  expect_close(dx_g, dx, 1e-5, "dx");
  expect_close(dw1_g, dw1, 1e-5, "dw1");
  expect_close(dw2_g, dw2, 1e-5, "dw2");
}

INSTANTIATE_TEST_SUITE_P(Activations, CudaExpertGemms,
                         testing::Values(ActivationKind::ReLU, ActivationKind::GELU, ActivationKind::SwiGLU),
                         [](const testing::TestParamInfo<ActivationKind>& i) {
                           return std::string(to_string(i.param));
                         });

// Every (b, h) is one problem of exactly one strided-batched call, at the offsets
// the CPU op uses: qkv b T 3C + h D, out b T C + h D, probs (b H + h) T T.
TEST(CudaAttentionBatching, CoversEveryHeadOnceAtTheCpuOffsets) {
  for (auto [B, H] : {std::pair<int64_t, int64_t>{2, 4}, {4, 2}, {3, 3}, {1, 1}}) {
    const int64_t T = 5, D = 3, C = H * D;
    const cuda::ops::AttentionBatching bt = cuda::ops::attention_batching(B, T, C, H);
    EXPECT_EQ(bt.outer * bt.batch, B * H);
    EXPECT_EQ(bt.outer, std::min(B, H));
    std::set<std::pair<int64_t, int64_t>> seen;
    for (int64_t o = 0; o < bt.outer; ++o)
      for (int64_t i = 0; i < bt.batch; ++i) {
        const int64_t b = B <= H ? o : i, h = B <= H ? i : o;
        EXPECT_TRUE(seen.insert({b, h}).second);
        EXPECT_EQ(o * bt.qkv_outer + i * bt.qkv_inner, b * T * 3 * C + h * D);
        EXPECT_EQ(o * bt.out_outer + i * bt.out_inner, b * T * C + h * D);
        EXPECT_EQ(o * bt.probs_outer + i * bt.probs_inner, (b * H + h) * T * T);
      }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), B * H);
  }
}

}  // namespace
}  // namespace sy
