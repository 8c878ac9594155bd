// The cuBLAS GEMMs and the ops built on them against the CPU ops (STYLE 1):
// cuda::ops::gemm / gemm_strided_batched / grouped_gemm against sy::gemm,
// linear against core/ops/linear.hpp, attention against core/ops/attention.hpp,
// experts against models/experts.hpp; for fp32, bf16 and fp16 storage. The CPU
// op runs in fp32 on the inputs rounded to the storage type. Every test needs a
// GPU and skips (with the reason) without one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda/handles.hpp"
#include "core/cuda/ops/attention.hpp"
#include "core/cuda/ops/experts.hpp"
#include "core/cuda/ops/gemm.hpp"
#include "core/cuda/ops/linear.hpp"
#include "core/gemm.hpp"
#include "core/ops/attention.hpp"
#include "core/ops/linear.hpp"
#include "models/experts.hpp"
#include "tests/support/cuda_test_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

// Host values as the storage type sees them (rounded) and their device copy.
template <typename T>
struct Uploaded {
  std::vector<float> host;
  test::DeviceBuffer<T> dev;
};
template <typename T>
Uploaded<T> upload(const std::vector<float>& v) {
  return Uploaded<T>{test::rounded<T>(v), test::DeviceBuffer<T>::from_host(v)};
}

// Ops that keep intermediates in storage precision (S and P in attention, h1
// and act in the experts) round more than once: allow a few output roundings.
template <typename T>
double chain_tolerance() {
  return 3 * test::tolerance<T>();
}

template <typename T>
void expect_close(const test::DeviceBuffer<T>& got, const std::vector<float>& want, double tol, const char* what) {
  const std::vector<float> g = got.to_float();
  ASSERT_EQ(g.size(), want.size()) << what;
  EXPECT_LE(test::max_rel_diff(g.data(), want.data(), g.size()), tol)
      << what << " (" << cuda::storage_name(cuda::storage_of<T>()) << ")";
}

template <typename T>
class CudaGemmOps : public testing::Test {};
TYPED_TEST_SUITE(CudaGemmOps, test::StorageTypes, test::StorageName);

TYPED_TEST(CudaGemmOps, GemmMatchesCpuGemmForEveryTransposeWithPaddedStrides) {
  using T = TypeParam;
  SY_SKIP_WITHOUT_GPU();
  const cuda::CublasPtr handle = cuda::make_cublas();
  test::TestStream stream;
  const int64_t m = 33, n = 17, k = 40;
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T}) {
      const int64_t lda = (ta == Trans::N ? k : m) + 3, ldb = (tb == Trans::N ? n : k) + 5, ldc = n + 7;
      auto a = upload<T>(test::random_vector<float>((ta == Trans::N ? m : k) * lda, 1));
      auto b = upload<T>(test::random_vector<float>((tb == Trans::N ? k : n) * ldb, 2));
      auto c = upload<T>(test::random_vector<float>(m * ldc, 3));
      std::vector<float> want = c.host;
      gemm<float>(ta, tb, m, n, k, 0.75f, a.host.data(), lda, b.host.data(), ldb, -0.5f, want.data(), ldc);
      cuda::ops::gemm<T>(handle.get(), ta, tb, m, n, k, 0.75f, a.dev.get(), lda, b.dev.get(), ldb, -0.5f, c.dev.get(),
                         ldc, stream.get());
      stream.sync();
      expect_close(c.dev, want, test::tolerance<T>(), "gemm");
      const std::vector<float> got = c.dev.to_float();
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], c.host[i * ldc + j]) << "padding changed";
    }
}

TYPED_TEST(CudaGemmOps, GemmWithEmptyReductionScalesC) {
  using T = TypeParam;
  SY_SKIP_WITHOUT_GPU();
  const cuda::CublasPtr handle = cuda::make_cublas();
  test::TestStream stream;
  const int64_t m = 5, n = 6, ldc = 8;
  for (float beta : {0.5f, 0.0f}) {
    auto c = upload<T>(test::random_vector<float>(m * ldc, 4));
    std::vector<float> want = c.host;  // sy::gemm's rule: C = beta C, exact zeros for beta = 0; padding kept
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) want[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c.host[i * ldc + j];
    cuda::ops::gemm<T>(handle.get(), Trans::N, Trans::N, m, n, 0, 1.0f, static_cast<const T*>(nullptr), 1,
                       static_cast<const T*>(nullptr), n, beta, c.dev.get(), ldc, stream.get());
    stream.sync();
    expect_close(c.dev, want, test::tolerance<T>(), "k = 0");
  }
}

// Interleaved column blocks, as attention heads: problem i reads columns [i D, (i + 1) D).
TYPED_TEST(CudaGemmOps, StridedBatchedMatchesOneGemmPerProblem) {
  using T = TypeParam;
  SY_SKIP_WITHOUT_GPU();
  const cuda::CublasPtr handle = cuda::make_cublas();
  test::TestStream stream;
  const int64_t batch = 3, rows = 9, D = 4, width = batch * D;
  auto a = upload<T>(test::random_vector<float>(rows * width, 5));  // (rows, width)
  auto b = upload<T>(test::random_vector<float>(rows * width, 6));  // (rows, width)
  auto c = upload<T>(test::random_vector<float>(batch * rows * rows, 7));  // (batch, rows, rows)
  std::vector<float> want = c.host;
  for (int64_t i = 0; i < batch; ++i)  // C_i = A_i B_i^T
    gemm<float>(Trans::N, Trans::T, rows, rows, D, 0.5f, a.host.data() + i * D, width, b.host.data() + i * D, width,
                0.25f, want.data() + i * rows * rows, rows);
  cuda::ops::gemm_strided_batched<T>(handle.get(), Trans::N, Trans::T, rows, rows, D, 0.5f, a.dev.get(), width, D,
                                     b.dev.get(), width, D, 0.25f, c.dev.get(), rows, rows * rows, batch, stream.get());
  stream.sync();
  expect_close(c.dev, want, test::tolerance<T>(), "strided batched");
}

// 5 groups, one empty, a gap of unused rows: grouped over M (forward) and over K (weight gradient).
TYPED_TEST(CudaGemmOps, GroupedGemmMatchesOneGemmPerGroup) {
  using T = TypeParam;
  SY_SKIP_WITHOUT_GPU();
  const cuda::CublasPtr handle = cuda::make_cublas();
  test::TestStream stream;
  using cuda::ops::GroupedDim;
  using cuda::ops::GroupedLayout;
  using cuda::ops::GroupedOperand;
  const std::vector<int64_t> offset{0, 3, 3, 9, 10}, count{3, 0, 4, 1, 2};
  const int64_t G = 5, R = 12, n = 6, k = 5;
  auto x = upload<T>(test::random_vector<float>(R * k, 8));      // (R, k)
  auto w = upload<T>(test::random_vector<float>(G * n * k, 9));  // (G, n, k)
  auto y = upload<T>(test::random_vector<float>(R * n, 10));     // (R, n)
  auto dw = upload<T>(test::random_vector<float>(G * n * k, 11));
  std::vector<float> want_y = y.host, want_dw = dw.host;
  for (int64_t g = 0; g < G; ++g) {
    if (count[g] == 0) continue;
    gemm<float>(Trans::N, Trans::T, count[g], n, k, 1.0f, x.host.data() + offset[g] * k, k, w.host.data() + g * n * k,
                k, 0.0f, want_y.data() + offset[g] * n, n);
    gemm<float>(Trans::T, Trans::N, n, k, count[g], 1.0f, want_y.data() + offset[g] * n, n,
                x.host.data() + offset[g] * k, k, 1.0f, want_dw.data() + g * n * k, k);
  }
  cuda::ops::grouped_gemm<T>(handle.get(), Trans::N, Trans::T, {GroupedDim::M, 0, n, k}, G, offset.data(),
                             count.data(), 1.0f, x.dev.get(), GroupedOperand{GroupedLayout::Packed, k}, w.dev.get(),
                             GroupedOperand{GroupedLayout::PerGroup, k, n * k}, 0.0f, y.dev.get(),
                             GroupedOperand{GroupedLayout::Packed, n}, stream.get());
  cuda::ops::grouped_gemm<T>(handle.get(), Trans::T, Trans::N, {GroupedDim::K, n, k, 0}, G, offset.data(),
                             count.data(), 1.0f, y.dev.get(), GroupedOperand{GroupedLayout::Packed, n}, x.dev.get(),
                             GroupedOperand{GroupedLayout::Packed, k}, 1.0f, dw.dev.get(),
                             GroupedOperand{GroupedLayout::PerGroup, k, n * k}, stream.get());
  stream.sync();
  expect_close(y.dev, want_y, test::tolerance<T>(), "grouped over rows (gap rows untouched)");
  expect_close(dw.dev, want_dw, chain_tolerance<T>(), "grouped over the reduction (empty group untouched)");
}

TYPED_TEST(CudaGemmOps, LinearMatchesCpuLinear) {
  using T = TypeParam;
  SY_SKIP_WITHOUT_GPU();
  const cuda::CublasPtr handle = cuda::make_cublas();
  test::TestStream stream;
  const int64_t N = 70, in = 24, out = 40;  // out not a multiple of the 32-column bias-gradient tile
  auto x = upload<T>(test::random_vector<float>(N * in, 12));
  auto w = upload<T>(test::random_vector<float>(out * in, 13, -0.5, 0.5));
  auto bias = upload<T>(test::random_vector<float>(out, 14));
  auto dy = upload<T>(test::random_vector<float>(N * out, 15));
  auto dw = upload<T>(test::random_vector<float>(out * in, 16));
  auto db = upload<T>(test::random_vector<float>(out, 17));
  test::DeviceBuffer<T> y(N * out), dx(N * in), y_nobias(N * out);
  std::vector<float> want_y(N * out), want_y_nobias(N * out), want_dx(N * in), want_dw = dw.host,
                                                                                 want_db = db.host;
  ops::linear_forward<float>(want_y.data(), x.host.data(), w.host.data(), bias.host.data(), N, in, out);
  ops::linear_forward<float>(want_y_nobias.data(), x.host.data(), w.host.data(), nullptr, N, in, out);
  ops::linear_backward<float>(want_dx.data(), want_dw.data(), want_db.data(), dy.host.data(), x.host.data(),
                              w.host.data(), N, in, out);
  cuda::ops::linear_forward<T>(y.get(), x.dev.get(), w.dev.get(), bias.dev.get(), N, in, out, handle.get(),
                               stream.get());
  cuda::ops::linear_forward<T>(y_nobias.get(), x.dev.get(), w.dev.get(), static_cast<const T*>(nullptr), N, in, out,
                               handle.get(), stream.get());
  cuda::ops::linear_backward<T>(dx.get(), dw.dev.get(), db.dev.get(), dy.dev.get(), x.dev.get(), w.dev.get(), N, in,
                                out, handle.get(), stream.get());
  stream.sync();
  expect_close(y, want_y, test::tolerance<T>(), "y");
  expect_close(y_nobias, want_y_nobias, test::tolerance<T>(), "y without bias");
  expect_close(dx, want_dx, test::tolerance<T>(), "dx");
  expect_close(dw.dev, want_dw, test::tolerance<T>(), "dweight +=");
  expect_close(db.dev, want_db, test::tolerance<T>(), "dbias +=");

  // dx == nullptr and dbias == nullptr skip those gradients; the bias gradient is deterministic.
  auto dw2 = upload<T>(dw.dev.to_float());
  const std::vector<T> db_before = db.dev.raw();
  cuda::ops::linear_backward<T>(nullptr, dw2.dev.get(), nullptr, dy.dev.get(), x.dev.get(), nullptr, N, in, out,
                                handle.get(), stream.get());
  stream.sync();
  const std::vector<T> db_after = db.dev.raw();
  EXPECT_EQ(0, std::memcmp(db_before.data(), db_after.data(), db_before.size() * sizeof(T)));
  auto db_a = upload<T>(db.host), db_b = upload<T>(db.host);
  cuda::ops::linear_backward<T>(dx.get(), dw.dev.get(), db_a.dev.get(), dy.dev.get(), x.dev.get(), w.dev.get(), N,
                                in, out, handle.get(), stream.get());
  cuda::ops::linear_backward<T>(dx.get(), dw.dev.get(), db_b.dev.get(), dy.dev.get(), x.dev.get(), w.dev.get(), N,
                                in, out, handle.get(), stream.get());
  stream.sync();
  const std::vector<T> ra = db_a.dev.raw(), rb = db_b.dev.raw();
  EXPECT_EQ(0, std::memcmp(ra.data(), rb.data(), ra.size() * sizeof(T))) << "dbias differs between runs";
}

TYPED_TEST(CudaGemmOps, AttentionMatchesCpuAttention) {
  using T = TypeParam;
  SY_SKIP_WITHOUT_GPU();
  const cuda::CublasPtr handle = cuda::make_cublas();
  test::TestStream stream;
  struct Sizes {
    int64_t B, T, C, H;
  };
  // B <= H batches over heads, B > H over sequences (AttentionBatching).
  for (const Sizes z : {Sizes{2, 7, 12, 3}, Sizes{3, 33, 8, 2}}) {
    const int64_t BT3C = z.B * z.T * 3 * z.C, BTC = z.B * z.T * z.C, P = z.B * z.H * z.T * z.T;
    auto qkv = upload<T>(test::random_vector<float>(BT3C, 18));
    auto dout = upload<T>(test::random_vector<float>(BTC, 19));
    test::DeviceBuffer<T> out(BTC), probs(P), dqkv(BT3C), dscores(P);
    std::vector<float> want_out(BTC), want_probs(P), want_dqkv(BT3C), scratch(P);
    ops::attention_forward<float>(want_out.data(), want_probs.data(), qkv.host.data(), z.B, z.T, z.C, z.H);
    ops::attention_backward<float>(want_dqkv.data(), scratch.data(), dout.host.data(), qkv.host.data(),
                                   want_probs.data(), z.B, z.T, z.C, z.H);
    cuda::ops::attention_forward<T>(out.get(), probs.get(), qkv.dev.get(), z.B, z.T, z.C, z.H, handle.get(),
                                    stream.get());
    cuda::ops::attention_backward<T>(dqkv.get(), dscores.get(), dout.dev.get(), qkv.dev.get(), probs.get(), z.B, z.T,
                                     z.C, z.H, handle.get(), stream.get());
    stream.sync();
    expect_close(probs, want_probs, chain_tolerance<T>(), "probs");
    expect_close(out, want_out, chain_tolerance<T>(), "out");
    expect_close(dqkv, want_dqkv, chain_tolerance<T>(), "dqkv");
    const std::vector<float> p = probs.to_float();
    for (int64_t r = 0; r < z.B * z.H * z.T; ++r)
      for (int64_t j = r % z.T + 1; j < z.T; ++j) ASSERT_EQ(p[r * z.T + j], 0.0f) << "causal mask at row " << r;
  }
}

TYPED_TEST(CudaGemmOps, ExpertsMatchCpuExperts) {
  using T = TypeParam;
  SY_SKIP_WITHOUT_GPU();
  const cuda::CublasPtr handle = cuda::make_cublas();
  test::TestStream stream;
  const std::vector<int64_t> offset{0, 3, 3, 9, 10}, count{3, 0, 4, 1, 2};  // an empty expert, a gap
  const int64_t R = 12;
  for (ActivationKind act_kind : {ActivationKind::ReLU, ActivationKind::GELU, ActivationKind::SwiGLU}) {
    const moe::ExpertShape s{5, 16, 12, act_kind};
    const int64_t E = s.num_experts, M = s.model_dim, H = s.hidden, H1 = s.h1();
    auto x = upload<T>(test::random_vector<float>(R * M, 20));
    auto w1 = upload<T>(test::random_vector<float>(E * H1 * M, 21, -0.5, 0.5));
    auto w2 = upload<T>(test::random_vector<float>(E * M * H, 22, -0.5, 0.5));
    auto dy = upload<T>(test::random_vector<float>(R * M, 23));
    auto dw1 = upload<T>(test::random_vector<float>(E * H1 * M, 24));
    auto dw2 = upload<T>(test::random_vector<float>(E * M * H, 25));
    // Rows no expert owns (7, 8) must stay as they were: start every output from zeros on both sides.
    test::DeviceBuffer<T> h1(R * H1), act(R * H), y(R * M), dact(R * H), dh1(R * H1), dx(R * M);
    for (auto* b : {&h1, &act, &y, &dact, &dh1, &dx}) b->zero();
    std::vector<float> want_h1(R * H1, 0.f), want_act(R * H, 0.f), want_y(R * M, 0.f), sc_dact(R * H, 0.f),
        sc_dh1(R * H1, 0.f), want_dx(R * M, 0.f), want_dw1 = dw1.host, want_dw2 = dw2.host;
    moe::experts_forward<float>(s, offset.data(), count.data(), x.host.data(), w1.host.data(), w2.host.data(),
                                want_h1.data(), want_act.data(), want_y.data());
    moe::experts_backward<float>(s, offset.data(), count.data(), x.host.data(), w1.host.data(), w2.host.data(),
                                 want_h1.data(), want_act.data(), dy.host.data(), sc_dact.data(), sc_dh1.data(),
                                 want_dx.data(), want_dw1.data(), want_dw2.data());
    cuda::ops::experts_forward<T>(s, offset.data(), count.data(), x.dev.get(), w1.dev.get(), w2.dev.get(), h1.get(),
                                  act.get(), y.get(), handle.get(), stream.get());
    cuda::ops::experts_backward<T>(s, offset.data(), count.data(), x.dev.get(), w1.dev.get(), w2.dev.get(), h1.get(),
                                   act.get(), dy.dev.get(), dact.get(), dh1.get(), dx.get(), dw1.dev.get(),
                                   dw2.dev.get(), handle.get(), stream.get());
    stream.sync();
    const std::string what = std::string("experts ") + to_string(act_kind);
    expect_close(h1, want_h1, test::tolerance<T>(), (what + " h1").c_str());
    expect_close(act, want_act, chain_tolerance<T>(), (what + " act").c_str());
    expect_close(y, want_y, chain_tolerance<T>(), (what + " y").c_str());
    expect_close(dx, want_dx, chain_tolerance<T>(), (what + " dx").c_str());
    expect_close(dw1.dev, want_dw1, chain_tolerance<T>(), (what + " dw1 +=").c_str());
    expect_close(dw2.dev, want_dw2, chain_tolerance<T>(), (what + " dw2 +=").c_str());
  }
}

}  // namespace
}  // namespace sy
