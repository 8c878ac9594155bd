// The CUDA ops of core/cuda/ops against the CPU ops that specify them (STYLE 1):
// activations, softmax and cross-entropy, LayerNorm and RMSNorm, embedding, RoPE,
// AdamW and the fp32 conversions, forward and backward, for the three storage
// types. The CPU op runs in double on the inputs rounded to the storage type, as
// the CUDA op sees them. Sizes include odd ones and rows wider than the 1024
// threads of a block. Tests that need a GPU skip without one; the argument checks
// at the end run on the host before any CUDA call and need none.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/cuda/ops/activation.hpp"
#include "core/cuda/ops/adamw.hpp"
#include "core/cuda/ops/convert.hpp"
#include "core/cuda/ops/embedding.hpp"
#include "core/cuda/ops/norm.hpp"
#include "core/cuda/ops/rope.hpp"
#include "core/cuda/ops/softmax.hpp"
#include "core/error.hpp"
#include "core/ops/activation.hpp"
#include "core/ops/embedding.hpp"
#include "core/ops/norm.hpp"
#include "core/ops/rope.hpp"
#include "core/ops/softmax.hpp"
#include "models/optimizer.hpp"
#include "tests/support/cuda_test_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

using test::DeviceBuffer;
using test::random_vector;
using test::rounded;
using test::tolerance;

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// max_i |got_i - want_i| / max_i |want_i|: the error relative to the output's scale,
// so tiny entries (probabilities, gradients divided by the row count) are checked
// as strictly as large ones.
double scaled_diff(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::abs(double(got[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return scale > 0.0 ? err / scale : err;
}

template <typename T>
void expect_close(const std::vector<float>& got, const std::vector<double>& want, const char* what) {
  EXPECT_LT(scaled_diff(got, want), tolerance<T>()) << what << " (" << cuda::storage_name(cuda::storage_of<T>())
                                                    << ")";
}

// The raw bytes of a device buffer, to check that two runs agree bit for bit.
template <typename T>
std::vector<unsigned char> bytes(const DeviceBuffer<T>& b) {
  const std::vector<T> r = b.raw();
  std::vector<unsigned char> out(r.size() * sizeof(T));
  if (!r.empty()) std::memcpy(out.data(), r.data(), out.size());
  return out;
}

template <typename T>
class OpsCuda : public ::testing::Test {};
TYPED_TEST_SUITE(OpsCuda, test::StorageTypes, test::StorageName);

// --- activations -------------------------------------------------------------

TYPED_TEST(OpsCuda, PointwiseActivationsMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  const int64_t n = 70001;
  const auto x = rounded<T>(random_vector<float>(n, 1, -5.0, 5.0));
  const auto dy = rounded<T>(random_vector<float>(n, 2, -2.0, 2.0));
  const auto xd = to_double(x), dyd = to_double(dy);
  auto dx_in = DeviceBuffer<T>::from_host(x), d_dy = DeviceBuffer<T>::from_host(dy);
  DeviceBuffer<T> d_out(n), d_din(n);
  std::vector<double> want(n);

  cuda::ops::gelu_forward(d_out.get(), dx_in.get(), n, stream.get());
  ops::gelu_forward(want.data(), xd.data(), n);
  expect_close<T>(d_out.to_float(), want, "gelu_forward");
  cuda::ops::gelu_backward(d_din.get(), dx_in.get(), d_dy.get(), n, stream.get());
  ops::gelu_backward(want.data(), xd.data(), dyd.data(), n);
  expect_close<T>(d_din.to_float(), want, "gelu_backward");

  cuda::ops::relu_forward(d_out.get(), dx_in.get(), n, stream.get());
  ops::relu_forward(want.data(), xd.data(), n);
  expect_close<T>(d_out.to_float(), want, "relu_forward");
  cuda::ops::relu_backward(d_din.get(), dx_in.get(), d_dy.get(), n, stream.get());
  ops::relu_backward(want.data(), xd.data(), dyd.data(), n);
  expect_close<T>(d_din.to_float(), want, "relu_backward");
}

TYPED_TEST(OpsCuda, SwigluMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  for (auto [N, H] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {5, 1031}}) {
    const auto in = rounded<T>(random_vector<float>(N * 2 * H, 3, -5.0, 5.0));
    const auto dout = rounded<T>(random_vector<float>(N * H, 4, -2.0, 2.0));
    const auto ind = to_double(in), doutd = to_double(dout);
    auto d_in = DeviceBuffer<T>::from_host(in), d_dout = DeviceBuffer<T>::from_host(dout);
    DeviceBuffer<T> d_out(N * H), d_din(N * 2 * H);
    cuda::ops::swiglu_forward(d_out.get(), d_in.get(), N, H, stream.get());
    cuda::ops::swiglu_backward(d_din.get(), d_in.get(), d_dout.get(), N, H, stream.get());
    std::vector<double> out(N * H), din(N * 2 * H);
    ops::swiglu_forward(out.data(), ind.data(), N, H);
    ops::swiglu_backward(din.data(), ind.data(), doutd.data(), N, H);
    expect_close<T>(d_out.to_float(), out, "swiglu_forward");
    expect_close<T>(d_din.to_float(), din, "swiglu_backward");
  }
}

// --- softmax and cross-entropy ------------------------------------------------

struct Rows {
  int64_t N, V;
};
const std::vector<Rows> kRowShapes = {{3, 1}, {7, 33}, {5, 1500}, {2, 4099}, {130, 257}};

TYPED_TEST(OpsCuda, SoftmaxMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  for (const Rows& s : kRowShapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " V=" + std::to_string(s.V));
    const int64_t n = s.N * s.V;
    const auto x = rounded<T>(random_vector<float>(n, 5, -6.0, 6.0));
    auto d_x = DeviceBuffer<T>::from_host(x);
    DeviceBuffer<T> d_p(n);
    cuda::ops::softmax_forward(d_p.get(), d_x.get(), s.N, s.V, stream.get());
    const auto xd = to_double(x);
    std::vector<double> p(n);
    ops::softmax_forward(p.data(), xd.data(), s.N, s.V);
    const std::vector<float> gpu_p = d_p.to_float();
    expect_close<T>(gpu_p, p, "softmax_forward");

    // Backward from the GPU's own probabilities, so only the backward is compared.
    const auto dp = rounded<T>(random_vector<float>(n, 6, -1.0, 1.0));
    auto d_dp = DeviceBuffer<T>::from_host(dp);
    DeviceBuffer<T> d_dx(n);
    cuda::ops::softmax_backward(d_dx.get(), d_p.get(), d_dp.get(), s.N, s.V, stream.get());
    const auto pd = to_double(gpu_p), dpd = to_double(dp);
    std::vector<double> dx(n);
    ops::softmax_backward(dx.data(), pd.data(), dpd.data(), s.N, s.V);
    expect_close<T>(d_dx.to_float(), dx, "softmax_backward");
    // dlogits may alias dprobs.
    cuda::ops::softmax_backward(d_dp.get(), d_p.get(), d_dp.get(), s.N, s.V, stream.get());
    expect_close<T>(d_dp.to_float(), dx, "softmax_backward in place");
  }
}

// Targets in [0, V) with every third row ignored.
std::vector<int32_t> make_targets(int64_t N, int64_t V, uint64_t seed) {
  const auto r = random_vector<double>(N, seed, 0.0, double(V));
  std::vector<int32_t> t(N);
  for (int64_t n = 0; n < N; ++n) t[n] = n % 3 == 1 ? ops::kIgnoreIndex : int32_t(std::min<double>(r[n], V - 1));
  return t;
}

TYPED_TEST(OpsCuda, CrossEntropyMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  for (const Rows& s : kRowShapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " V=" + std::to_string(s.V));
    const int64_t n = s.N * s.V;
    const auto x = rounded<T>(random_vector<float>(n, 7, -6.0, 6.0));
    const auto targets = make_targets(s.N, s.V, 8);
    auto d_x = DeviceBuffer<T>::from_host(x);
    auto d_t = DeviceBuffer<int32_t>::from_host(targets);
    DeviceBuffer<float> d_loss(1), d_scratch(s.N);
    DeviceBuffer<T> d_losses(s.N), d_dx(n);
    cuda::ops::cross_entropy_forward(d_loss.get(), d_losses.get(), d_x.get(), d_t.get(), s.N, s.V, d_scratch.get(),
                                     stream.get());
    const float dloss = 1.7f;
    cuda::ops::cross_entropy_backward(d_dx.get(), d_x.get(), d_t.get(), dloss, s.N, s.V, d_scratch.get(),
                                      stream.get());

    const auto xd = to_double(x);
    std::vector<double> losses(s.N), dx(n);
    const double loss = ops::cross_entropy_forward(losses.data(), xd.data(), targets.data(), s.N, s.V);
    ops::cross_entropy_backward(dx.data(), xd.data(), targets.data(), double(dloss), s.N, s.V);
    EXPECT_NEAR(d_loss.to_float()[0], loss, 1e-5 * std::max(1.0, std::abs(loss)));  // fp32 rows, fp64 sum
    expect_close<T>(d_losses.to_float(), losses, "per-row losses");
    expect_close<T>(d_dx.to_float(), dx, "cross_entropy_backward");

    // Bitwise reproducible: the same inputs give the same loss bits.
    const auto first = bytes(d_loss);
    cuda::ops::cross_entropy_forward(d_loss.get(), static_cast<T*>(nullptr), d_x.get(), d_t.get(), s.N, s.V,
                                     d_scratch.get(), stream.get());
    EXPECT_EQ(bytes(d_loss), first);
  }
}

TYPED_TEST(OpsCuda, CrossEntropyEdgeCases) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  const int64_t N = 4, V = 1300;
  auto d_x = DeviceBuffer<T>::from_host(random_vector<float>(N * V, 9, -3.0, 3.0));
  DeviceBuffer<float> d_loss(1), d_scratch(N);
  DeviceBuffer<T> d_dx(N * V);

  // Every row ignored: loss 0 and gradient 0 (K = 0).
  auto d_ignored = DeviceBuffer<int32_t>::from_host(std::vector<int32_t>(N, ops::kIgnoreIndex));
  auto one = DeviceBuffer<float>::from_host(std::vector<float>{123.0f});
  cuda::ops::cross_entropy_forward(one.get(), static_cast<T*>(nullptr), d_x.get(), d_ignored.get(), N, V,
                                   d_scratch.get(), stream.get());
  EXPECT_EQ(one.to_float()[0], 0.0f);
  cuda::ops::cross_entropy_backward(d_dx.get(), d_x.get(), d_ignored.get(), 1.0f, N, V, d_scratch.get(), stream.get());
  for (float v : d_dx.to_float()) ASSERT_EQ(v, 0.0f);

  // No rows at all: the loss is written as 0.
  cuda::ops::cross_entropy_forward(one.get(), static_cast<T*>(nullptr), d_x.get(), d_ignored.get(), 0, V,
                                   d_scratch.get(), stream.get());
  EXPECT_EQ(one.to_float()[0], 0.0f);

  // A target outside [0, V) is never read through: its row's loss, the mean loss and
  // its row's gradient are NaN; the other rows' gradients stay finite.
  auto d_bad = DeviceBuffer<int32_t>::from_host(std::vector<int32_t>{0, int32_t(V), 5, ops::kIgnoreIndex});
  DeviceBuffer<T> d_losses(N);
  cuda::ops::cross_entropy_forward(d_loss.get(), d_losses.get(), d_x.get(), d_bad.get(), N, V, d_scratch.get(),
                                   stream.get());
  EXPECT_TRUE(std::isnan(d_loss.to_float()[0]));
  const auto losses = d_losses.to_float();
  EXPECT_TRUE(std::isfinite(losses[0]));
  EXPECT_TRUE(std::isnan(losses[1]));
  EXPECT_EQ(losses[3], 0.0f);
  cuda::ops::cross_entropy_backward(d_dx.get(), d_x.get(), d_bad.get(), 1.0f, N, V, d_scratch.get(), stream.get());
  const auto dx = d_dx.to_float();
  EXPECT_TRUE(std::isfinite(dx[0]));
  EXPECT_TRUE(std::isnan(dx[V]));
  EXPECT_TRUE(std::isfinite(dx[2 * V]));
  EXPECT_EQ(dx[3 * V], 0.0f);
}

// --- norms ----------------------------------------------------------------------

const std::vector<Rows> kNormShapes = {{1, 1}, {5, 7}, {3, 1500}, {64, 129}, {2, 2049}};

TYPED_TEST(OpsCuda, LayerNormMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  for (const Rows& s : kNormShapes) {
    const int64_t N = s.N, C = s.V, n = N * C;
    SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
    const float eps = 1e-5f;
    const auto x = rounded<T>(random_vector<float>(n, 10, -1.0, 3.0));  // mean far from 0
    const auto w = rounded<T>(random_vector<float>(C, 11, 0.5, 1.5));
    const auto b = rounded<T>(random_vector<float>(C, 12, -0.5, 0.5));
    const auto dy = rounded<T>(random_vector<float>(n, 13, -1.0, 1.0));
    const auto dw0 = rounded<T>(random_vector<float>(C, 14, -0.5, 0.5));  // existing gradients: += is checked
    const auto db0 = rounded<T>(random_vector<float>(C, 15, -0.5, 0.5));
    auto d_x = DeviceBuffer<T>::from_host(x), d_w = DeviceBuffer<T>::from_host(w), d_b = DeviceBuffer<T>::from_host(b);
    auto d_dy = DeviceBuffer<T>::from_host(dy);
    auto d_dw = DeviceBuffer<T>::from_host(dw0), d_db = DeviceBuffer<T>::from_host(db0);
    DeviceBuffer<T> d_y(n), d_dx(n);
    DeviceBuffer<float> d_mean(N), d_rstd(N);
    cuda::ops::layernorm_forward(d_y.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_w.get(), d_b.get(), N, C, eps,
                                 stream.get());
    cuda::ops::layernorm_backward(d_dx.get(), d_dw.get(), d_db.get(), d_dy.get(), d_x.get(), d_w.get(), d_mean.get(),
                                  d_rstd.get(), N, C, stream.get());

    const auto xd = to_double(x), wd = to_double(w), bd = to_double(b), dyd = to_double(dy);
    std::vector<double> y(n), mean(N), rstd(N), dx(n), dw = to_double(dw0), db = to_double(db0);
    ops::layernorm_forward(y.data(), mean.data(), rstd.data(), xd.data(), wd.data(), bd.data(), N, C, double(eps));
    ops::layernorm_backward(dx.data(), dw.data(), db.data(), dyd.data(), xd.data(), wd.data(), mean.data(),
                            rstd.data(), N, C);
    expect_close<T>(d_y.to_float(), y, "layernorm out");
    expect_close<float>(d_mean.to_float(), mean, "layernorm mean");  // fp32 statistics for every T
    expect_close<float>(d_rstd.to_float(), rstd, "layernorm rstd");
    expect_close<T>(d_dx.to_float(), dx, "layernorm dx");
    expect_close<T>(d_dw.to_float(), dw, "layernorm dweight");
    expect_close<T>(d_db.to_float(), db, "layernorm dbias");

    // Bitwise reproducible parameter gradients.
    auto d_dw2 = DeviceBuffer<T>::from_host(dw0), d_db2 = DeviceBuffer<T>::from_host(db0);
    cuda::ops::layernorm_backward(d_dx.get(), d_dw2.get(), d_db2.get(), d_dy.get(), d_x.get(), d_w.get(),
                                  d_mean.get(), d_rstd.get(), N, C, stream.get());
    EXPECT_EQ(bytes(d_dw2), bytes(d_dw));
    EXPECT_EQ(bytes(d_db2), bytes(d_db));
  }
}

TYPED_TEST(OpsCuda, RmsNormMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  for (const Rows& s : kNormShapes) {
    const int64_t N = s.N, C = s.V, n = N * C;
    SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
    const float eps = 1e-6f;
    const auto x = rounded<T>(random_vector<float>(n, 20, -2.0, 2.0));
    const auto w = rounded<T>(random_vector<float>(C, 21, 0.5, 1.5));
    const auto dy = rounded<T>(random_vector<float>(n, 22, -1.0, 1.0));
    const auto dw0 = rounded<T>(random_vector<float>(C, 23, -0.5, 0.5));
    auto d_x = DeviceBuffer<T>::from_host(x), d_w = DeviceBuffer<T>::from_host(w);
    auto d_dy = DeviceBuffer<T>::from_host(dy), d_dw = DeviceBuffer<T>::from_host(dw0);
    DeviceBuffer<T> d_y(n), d_dx(n);
    DeviceBuffer<float> d_rstd(N);
    cuda::ops::rmsnorm_forward(d_y.get(), d_rstd.get(), d_x.get(), d_w.get(), N, C, eps, stream.get());
    cuda::ops::rmsnorm_backward(d_dx.get(), d_dw.get(), d_dy.get(), d_x.get(), d_w.get(), d_rstd.get(), N, C,
                                stream.get());

    const auto xd = to_double(x), wd = to_double(w), dyd = to_double(dy);
    std::vector<double> y(n), rstd(N), dx(n), dw = to_double(dw0);
    ops::rmsnorm_forward(y.data(), rstd.data(), xd.data(), wd.data(), N, C, double(eps));
    ops::rmsnorm_backward(dx.data(), dw.data(), dyd.data(), xd.data(), wd.data(), rstd.data(), N, C);
    expect_close<T>(d_y.to_float(), y, "rmsnorm out");
    expect_close<float>(d_rstd.to_float(), rstd, "rmsnorm rstd");
    expect_close<T>(d_dx.to_float(), dx, "rmsnorm dx");
    expect_close<T>(d_dw.to_float(), dw, "rmsnorm dweight");
  }
}

// --- embedding ------------------------------------------------------------------

TYPED_TEST(OpsCuda, EmbeddingMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  struct Shape {
    int64_t N, V, C;
  };
  // V = 200 > kEmbeddingBuckets: ids share buckets; few distinct ids: many repeats.
  for (const Shape& s : {Shape{7, 3, 5}, Shape{50, 17, 1500}, Shape{300, 200, 33}}) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " V=" + std::to_string(s.V) + " C=" + std::to_string(s.C));
    const auto r = random_vector<double>(s.N, 30, 0.0, double(s.V));
    std::vector<int32_t> ids(s.N);
    for (int64_t n = 0; n < s.N; ++n) ids[n] = n % 4 == 0 ? int32_t(s.V - 1) : int32_t(std::min<double>(r[n], s.V - 1));
    const auto table = rounded<T>(random_vector<float>(s.V * s.C, 31));
    const auto dout = rounded<T>(random_vector<float>(s.N * s.C, 32));
    const auto dtable0 = rounded<T>(random_vector<float>(s.V * s.C, 33));
    auto d_ids = DeviceBuffer<int32_t>::from_host(ids);
    auto d_table = DeviceBuffer<T>::from_host(table), d_dout = DeviceBuffer<T>::from_host(dout);
    auto d_dtable = DeviceBuffer<T>::from_host(dtable0);
    DeviceBuffer<T> d_out(s.N * s.C);
    cuda::ops::embedding_forward(d_out.get(), d_ids.get(), d_table.get(), s.N, s.V, s.C, stream.get());
    cuda::ops::embedding_backward(d_dtable.get(), d_ids.get(), d_dout.get(), s.N, s.V, s.C, stream.get());

    const auto tabled = to_double(table), doutd = to_double(dout);
    std::vector<double> out(s.N * s.C), dtable = to_double(dtable0);
    ops::embedding_forward(out.data(), ids.data(), tabled.data(), s.N, s.V, s.C);
    ops::embedding_backward(dtable.data(), ids.data(), doutd.data(), s.N, s.V, s.C);
    const auto got = d_out.to_float();
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(double(got[i]), out[i]) << i;  // a copy: exact
    expect_close<T>(d_dtable.to_float(), dtable, "embedding dtable");

    auto d_dtable2 = DeviceBuffer<T>::from_host(dtable0);
    cuda::ops::embedding_backward(d_dtable2.get(), d_ids.get(), d_dout.get(), s.N, s.V, s.C, stream.get());
    EXPECT_EQ(bytes(d_dtable2), bytes(d_dtable));  // bitwise reproducible with repeated ids
  }
}

TYPED_TEST(OpsCuda, EmbeddingOutOfRangeIdIsNaNForwardAndSkippedBackward) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  const int64_t N = 3, V = 4, C = 6;
  auto d_ids = DeviceBuffer<int32_t>::from_host(std::vector<int32_t>{1, 4, -1});
  auto d_table = DeviceBuffer<T>::from_host(random_vector<float>(V * C, 40));
  auto d_dout = DeviceBuffer<T>::from_host(std::vector<float>(N * C, 1.0f));
  DeviceBuffer<T> d_out(N * C), d_dtable(V * C);
  d_dtable.zero();
  cuda::ops::embedding_forward(d_out.get(), d_ids.get(), d_table.get(), N, V, C, stream.get());
  cuda::ops::embedding_backward(d_dtable.get(), d_ids.get(), d_dout.get(), N, V, C, stream.get());
  const auto out = d_out.to_float(), dtable = d_dtable.to_float();
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_TRUE(std::isfinite(out[c]));
    EXPECT_TRUE(std::isnan(out[C + c]));
    EXPECT_TRUE(std::isnan(out[2 * C + c]));
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(dtable[v * C + c], v == 1 ? 1.0f : 0.0f);
  }
}

// --- rope -----------------------------------------------------------------------

TEST(OpsCudaRope, TableMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  test::TestStream stream;
  for (auto [L, D] : {std::pair<int64_t, int64_t>{37, 10}, {4096, 128}}) {
    DeviceBuffer<float> d_cos(L * D / 2), d_sin(L * D / 2);
    cuda::ops::rope_table(d_cos.get(), d_sin.get(), L, D, cuda::ops::kRopeBase, stream.get());
    std::vector<double> cos_t(L * D / 2), sin_t(L * D / 2);
    ops::rope_table(cos_t.data(), sin_t.data(), L, D);
    const auto gc = d_cos.to_float(), gs = d_sin.to_float();
    for (size_t i = 0; i < gc.size(); ++i) {
      ASSERT_NEAR(gc[i], cos_t[i], 1e-7) << i;  // fp32 rounding of a double angle
      ASSERT_NEAR(gs[i], sin_t[i], 1e-7) << i;
    }
  }
}

TYPED_TEST(OpsCuda, RopeMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  struct Shape {
    int64_t B, T_seq, H, D;
  };
  for (const Shape& s : {Shape{1, 1, 1, 2}, Shape{2, 11, 3, 6}, Shape{1, 5, 2, 1100}}) {
    const int64_t C = s.H * s.D, N = s.B * s.T_seq, n = N * 3 * C, L = s.T_seq + 3;
    SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T_seq) + " C=" + std::to_string(C));
    DeviceBuffer<float> d_cos(L * s.D / 2), d_sin(L * s.D / 2);
    cuda::ops::rope_table(d_cos.get(), d_sin.get(), L, s.D, cuda::ops::kRopeBase, stream.get());
    std::vector<double> cos_t(L * s.D / 2), sin_t(L * s.D / 2);
    ops::rope_table(cos_t.data(), sin_t.data(), L, s.D);

    const auto qkv = rounded<T>(random_vector<float>(n, 50, -2.0, 2.0));
    for (int backward = 0; backward < 2; ++backward) {
      auto d_qkv = DeviceBuffer<T>::from_host(qkv);
      std::vector<double> want = to_double(qkv);
      if (backward) {
        cuda::ops::rope_backward(d_qkv.get(), d_cos.get(), d_sin.get(), s.B, s.T_seq, C, s.H, stream.get());
        ops::rope_backward(want.data(), cos_t.data(), sin_t.data(), s.B, s.T_seq, C, s.H);
      } else {
        cuda::ops::rope_forward(d_qkv.get(), d_cos.get(), d_sin.get(), s.B, s.T_seq, C, s.H, stream.get());
        ops::rope_forward(want.data(), cos_t.data(), sin_t.data(), s.B, s.T_seq, C, s.H);
      }
      const auto got = d_qkv.to_float();
      expect_close<T>(got, want, backward ? "rope_backward" : "rope_forward");
      for (int64_t r = 0; r < N; ++r)  // v untouched, bit for bit
        for (int64_t c = 2 * C; c < 3 * C; ++c) ASSERT_EQ(got[r * 3 * C + c], qkv[r * 3 * C + c]);
    }
  }
}

// --- adamw ----------------------------------------------------------------------

TYPED_TEST(OpsCuda, AdamWMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  const int64_t n = 10007;
  std::vector<float> master = random_vector<float>(n, 60, -2.0, 2.0);
  std::vector<float> m = random_vector<float>(n, 61, -0.1, 0.1), v = random_vector<float>(n, 62, 0.0, 0.01);
  std::vector<float> g = rounded<T>(random_vector<float>(n, 63, -1.0, 1.0));
  g[5] = std::numeric_limits<float>::quiet_NaN();
  g[17] = std::numeric_limits<float>::infinity();
  master[23] = 1e5f;  // finite in fp32 and bf16, beyond fp16: its fp16 working copy is inf
  std::vector<int> decay(n);
  for (int64_t i = 0; i < n; ++i) decay[i] = i % 3 != 0;
  const models::AdamWStep step{1e-3, 0.9, 0.95, 1e-8, 0.1, 3};

  auto d_master = DeviceBuffer<float>::from_host(master), d_m = DeviceBuffer<float>::from_host(m),
       d_v = DeviceBuffer<float>::from_host(v);
  auto d_g = DeviceBuffer<T>::from_host(g);
  auto d_decay = DeviceBuffer<uint8_t>::from_host(decay);
  DeviceBuffer<T> d_param(n);
  DeviceBuffer<int64_t> d_bad(1);
  d_bad.zero();
  cuda::ops::adamw_update(d_master.get(), d_param.get(), d_g.get(), d_m.get(), d_v.get(), d_decay.get(), n, step,
                          d_bad.get(), stream.get());

  // The CPU op on the same fp32 state computes the same double expression.
  std::vector<uint8_t> decay8(decay.begin(), decay.end());
  const int64_t cpu_bad = models::adamw_update(master.data(), g.data(), m.data(), v.data(), decay8.data(), n, step);
  const auto gm = d_master.to_float(), gmm = d_m.to_float(), gv = d_v.to_float(), gp = d_param.to_float();
  for (int64_t i = 0; i < n; ++i) {
    if (i == 5 || i == 17) {
      EXPECT_TRUE(std::isnan(gm[i]) && std::isnan(master[i])) << i;
      continue;
    }
    ASSERT_NEAR(gm[i], master[i], 1e-6 * std::max(1.0f, std::abs(master[i]))) << i;
    ASSERT_NEAR(gmm[i], m[i], 1e-6 * std::max(1e-3f, std::abs(m[i]))) << i;
    ASSERT_NEAR(gv[i], v[i], 1e-6 * std::max(1e-6f, std::abs(v[i]))) << i;
    if (i != 23 || cuda::storage_of<T>() != cuda::Storage::F16) {
      ASSERT_NEAR(gp[i], rounded<T>({master[i]})[0], tolerance<T>() * std::max(1.0f, std::abs(master[i]))) << i;
    }
  }
  EXPECT_EQ(cpu_bad, 2);
  const int64_t fp16_overflow = cuda::storage_of<T>() == cuda::Storage::F16 ? 1 : 0;
  EXPECT_EQ(d_bad.raw()[0], cpu_bad + fp16_overflow);

  // The counter is added to, and fp32 storage may omit the working copy.
  if constexpr (std::is_same_v<T, float>) {
    cuda::ops::adamw_update(d_master.get(), static_cast<float*>(nullptr), d_g.get(), d_m.get(), d_v.get(),
                            static_cast<const uint8_t*>(nullptr), n, models::AdamWStep{1e-3, 0.9, 0.95, 1e-8, 0.1, 4},
                            d_bad.get(), stream.get());
    EXPECT_EQ(d_bad.raw()[0], 4);
  }
}

// --- conversions ----------------------------------------------------------------

TYPED_TEST(OpsCuda, ConvertRoundsToNearestEvenAndWidensExactly) {
  SY_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  test::TestStream stream;
  std::vector<float> x = random_vector<float>(70001, 70, -100.0, 100.0);
  for (float s : {0.0f, -0.0f, 1e-8f, 1e5f, -1e5f, 3.0e38f, std::numeric_limits<float>::infinity()}) x.push_back(s);
  auto d_x = DeviceBuffer<float>::from_host(x);
  DeviceBuffer<T> d_t(x.size());
  DeviceBuffer<float> d_back(x.size());
  cuda::ops::convert_from_f32(d_t.get(), d_x.get(), int64_t(x.size()), stream.get());
  cuda::ops::convert_to_f32(d_back.get(), d_t.get(), int64_t(x.size()), stream.get());
  const auto want = rounded<T>(x), got = d_back.to_float();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4), std::memcpy(&b, &want[i], 4);
    ASSERT_EQ(a, b) << "x = " << x[i];
  }
}

// --- argument checks: host code only, no GPU needed -----------------------------

TEST(OpsCudaArguments, RejectBadSizesBeforeAnyCudaCall) {
  cudaStream_t s = nullptr;
  float* f = nullptr;
  const int32_t* ids = nullptr;
  EXPECT_THROW(cuda::ops::gelu_forward(f, f, -1, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::swiglu_backward(f, f, f, 2, -3, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::softmax_forward(f, f, -2, 5, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::cross_entropy_forward(f, f, f, ids, 3, 0, f, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::cross_entropy_backward(f, f, ids, 1.0f, -1, 4, f, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::layernorm_forward(f, f, f, f, f, f, 2, 3, -1e-5f, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::rmsnorm_forward(f, f, f, f, 2, 3, std::nanf(""), s), InvalidArgument);
  EXPECT_THROW(cuda::ops::embedding_backward(f, ids, f, 1, -1, 4, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::rope_forward(f, f, f, 1, 2, 9, 3, s), InvalidArgument);  // D = 3 is odd
  EXPECT_THROW(cuda::ops::rope_backward(f, f, f, 1, 2, 10, 3, s), InvalidArgument);  // 10 % 3 != 0
  EXPECT_THROW(cuda::ops::rope_table(f, f, 4, 7, 10000.0, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::rope_table(f, f, 4, 8, 0.0, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::convert_to_f32(f, f, -1, s), InvalidArgument);
}

TEST(OpsCudaArguments, RejectNullBuffers) {
  cudaStream_t s = nullptr;
  float* f = nullptr;
  EXPECT_THROW(cuda::ops::relu_backward(f, f, f, 10, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::softmax_backward(f, f, f, 2, 3, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::layernorm_backward(f, f, f, f, f, f, f, f, 2, 3, s), InvalidArgument);
  EXPECT_THROW(cuda::ops::convert_from_f32(static_cast<__half*>(nullptr), f, 5, s), InvalidArgument);
}

TEST(OpsCudaArguments, AdamWChecksStepAndWorkingCopy) {
  cudaStream_t s = nullptr;
  // Host pointers that are never dereferenced: the checks throw before any launch.
  float master = 0, m = 0, v = 0;
  __nv_bfloat16 g{};
  const models::AdamWStep ok{1e-3, 0.9, 0.95, 1e-8, 0.1, 1};
  EXPECT_THROW(cuda::ops::adamw_update(&master, static_cast<__nv_bfloat16*>(nullptr), &g, &m, &v, nullptr, 1, ok,
                                       static_cast<int64_t*>(nullptr), s),
               InvalidArgument);  // bf16 storage needs its working copy
  __nv_bfloat16 p{};
  EXPECT_THROW(cuda::ops::adamw_update(&master, &p, &g, &m, &v, nullptr, 1,
                                       models::AdamWStep{1e-3, 0.9, 0.95, 1e-8, 0.1, 0}, nullptr, s),
               InvalidArgument);  // step count 0
  EXPECT_THROW(cuda::ops::adamw_update(&master, &p, &g, &m, &v, nullptr, -1, ok, nullptr, s), InvalidArgument);
}

TEST(OpsCudaArguments, EmptyTensorsLaunchNothing) {
  // Nothing to do: no launch, so this runs (and returns) without a GPU too.
  cudaStream_t s = nullptr;
  float* f = nullptr;
  const int32_t* ids = nullptr;
  cuda::ops::gelu_backward(f, f, f, 0, s);
  cuda::ops::swiglu_forward(f, f, 0, 8, s);
  cuda::ops::softmax_forward(f, f, 0, 8, s);
  cuda::ops::cross_entropy_backward(f, f, ids, 1.0f, 0, 8, f, s);
  cuda::ops::layernorm_backward(f, f, f, f, f, f, f, f, 0, 8, s);
  cuda::ops::rmsnorm_forward(f, f, f, f, 4, 0, 1e-5f, s);
  cuda::ops::embedding_forward(f, ids, f, 0, 8, 8, s);
  cuda::ops::embedding_backward(f, ids, f, 4, 8, 0, s);
  cuda::ops::rope_forward(f, f, f, 0, 4, 8, 2, s);
  cuda::ops::adamw_update(f, f, f, f, f, nullptr, 0, models::AdamWStep{1e-3, 0.9, 0.95, 1e-8, 0.1, 1}, nullptr, s);
  cuda::ops::convert_to_f32(f, static_cast<const __nv_bfloat16*>(nullptr), 0, s);
  SUCCEED();
}

}  // namespace
}  // namespace sy
