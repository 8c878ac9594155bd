// The attention block on one process: against a naive reference in plain
// loops, against central finite differences for x and every parameter (with
// learned and with rotary positions), what rotary positions change, the
// seeded initialisation and its tp shards, and the argument checks.
// The tensor-parallel runs are in tests/parallel/TensorParallelAttentionMpiTest.cpp.
#include "models/attention_block.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::models {
namespace {

using test::random_vector;

// A group that only knows its rank and size: enough to build a shard; any
// collective throws (the block must not communicate while being built).
class FakeGroup : public par::Communicator {
 public:
  FakeGroup(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  par::RequestPtr iallreduce(const void*, void*, int64_t, par::ElemType, par::ReduceOp) override { fail(); }
  par::RequestPtr ireduce_scatter(const void*, void*, int64_t, par::ElemType, par::ReduceOp) override { fail(); }
  par::RequestPtr iall_gather(const void*, void*, int64_t, par::ElemType) override { fail(); }
  par::RequestPtr ialltoallv(const void*, const int64_t*, const int64_t*, void*, const int64_t*, const int64_t*,
                             par::ElemType) override {
    fail();
  }
  par::RequestPtr ibroadcast(void*, int64_t, par::ElemType, int) override { fail(); }
  par::RequestPtr isend(const void*, int64_t, par::ElemType, int, int) override { fail(); }
  par::RequestPtr irecv(void*, int64_t, par::ElemType, int, int) override { fail(); }
  par::RequestPtr ibarrier() override { fail(); }
  std::unique_ptr<par::Communicator> split_group(int, int, const std::string&) const override { fail(); }

 private:
  [[noreturn]] static void fail() { throw std::logic_error("FakeGroup: no collectives"); }
  int rank_, size_;
  std::string name_ = "fake_tp_group";
};

ModelConfig small_model(NormKind norm = NormKind::LayerNorm, PositionKind position = PositionKind::Learned) {
  ModelConfig m;
  m.dim = 8;
  m.heads = 2;
  m.seq_len = 4;
  m.norm = norm;
  m.position = position;
  return m;
}

// Random values in every parameter (the norm gains near 1), so that no term
// of the gradient hides behind a zero bias or a unit gain.
template <typename Real>
void randomize(AttentionBlock<Real>& block, uint64_t seed) {
  const auto v = random_vector<double>(block.num_params(), seed, -0.6, 0.6);
  for (int64_t i = 0; i < block.num_params(); ++i) block.params()[i] = static_cast<Real>(v[i]);
  if (Real* w = block.param("norm_weight"))
    for (int64_t c = 0; c < block.param_size("norm_weight"); ++c) w[c] += Real(1);
}

// ---- naive reference -------------------------------------------------------

// y = x + attn(rope(norm(x) Wqkv^T + bqkv)) Wo^T + bo, one token and one head
// at a time; rope (when asked) turns pair (2i, 2i + 1) of each head of q and k
// at position t by t * 10000^(-2i/D).
std::vector<double> naive_block(AttentionBlock<double>& blk, const std::vector<double>& x, int64_t B, int64_t T,
                                NormKind norm, PositionKind position = PositionKind::Learned) {
  const int64_t C = blk.dim(), H = blk.heads(), D = C / H, N = B * T;
  const double* g = blk.param("norm_weight");
  const double* beta = blk.param("norm_bias");
  const double* wqkv = blk.param("qkv_weight");
  const double* bqkv = blk.param("qkv_bias");
  const double* wo = blk.param("out_weight");
  const double* bo = blk.param("out_bias");
  std::vector<double> a(N * C), qkv(N * 3 * C), o(N * C, 0.0), y(N * C);
  for (int64_t n = 0; n < N; ++n) {
    const double* xr = &x[n * C];
    double mu = 0, ms = 0;
    for (int64_t c = 0; c < C; ++c) mu += xr[c] / double(C);
    for (int64_t c = 0; c < C; ++c) {
      const double centred = norm == NormKind::LayerNorm ? xr[c] - mu : xr[c];
      ms += centred * centred / double(C);
    }
    for (int64_t c = 0; c < C; ++c) {
      const double centred = norm == NormKind::LayerNorm ? xr[c] - mu : xr[c];
      a[n * C + c] = centred / std::sqrt(ms + 1e-5) * g[c] + (beta ? beta[c] : 0.0);
    }
    for (int64_t j = 0; j < 3 * C; ++j) {
      double s = bqkv[j];
      for (int64_t c = 0; c < C; ++c) s += wqkv[j * C + c] * a[n * C + c];
      qkv[n * 3 * C + j] = s;
    }
    if (position == PositionKind::Rope)
      for (int64_t part = 0; part < 2; ++part)  // q, k
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < D / 2; ++i) {
            const double angle = double(n % T) * std::pow(10000.0, -2.0 * double(i) / double(D));
            double* pair = &qkv[n * 3 * C + part * C + h * D + 2 * i];
            const double x0 = pair[0], x1 = pair[1];
            pair[0] = std::cos(angle) * x0 - std::sin(angle) * x1;
            pair[1] = std::sin(angle) * x0 + std::cos(angle) * x1;
          }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> w(t + 1);
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double s = 0;
          const double* q = &qkv[(b * T + t) * 3 * C + h * D];
          const double* k = &qkv[(b * T + j) * 3 * C + C + h * D];
          for (int64_t d = 0; d < D; ++d) s += q[d] * k[d];
          w[j] = s / std::sqrt(double(D));
          m = std::max(m, w[j]);
        }
        for (int64_t j = 0; j <= t; ++j) sum += (w[j] = std::exp(w[j] - m));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t d = 0; d < D; ++d)
            o[(b * T + t) * C + h * D + d] += w[j] / sum * qkv[(b * T + j) * 3 * C + 2 * C + h * D + d];
      }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < C; ++i) {
      double s = x[n * C + i] + bo[i];
      for (int64_t c = 0; c < C; ++c) s += wo[i * C + c] * o[n * C + c];
      y[n * C + i] = s;
    }
  return y;
}

TEST(AttentionBlock, ForwardMatchesNaiveReference) {
  for (PositionKind position : {PositionKind::Learned, PositionKind::Rope})
    for (NormKind norm : {NormKind::LayerNorm, NormKind::RMSNorm}) {
      SCOPED_TRACE(std::string(to_string(norm)) + ", " + to_string(position));
      const int64_t B = 3, T = 4;
      AttentionBlock<double> blk(small_model(norm, position), B * T, 5);
      randomize(blk, 6);
      const auto x = random_vector<double>(B * T * blk.dim(), 7, -2, 2);
      std::vector<double> out(x.size(), test::kGarbage);
      blk.forward(x.data(), B, T, out.data());
      const auto want = naive_block(blk, x, B, T, norm, position);
      EXPECT_LT(test::max_rel_diff(out.data(), want.data(), out.size()), 1e-13);
      // A shorter sequence and a smaller batch than the block was sized for
      // (with rope: positions restart at row % 3, not row % model.seq_len).
      std::vector<double> out2(2 * 3 * blk.dim(), test::kGarbage);
      const std::vector<double> x2(x.begin(), x.begin() + out2.size());
      blk.forward(x2.data(), 2, 3, out2.data());
      const auto want2 = naive_block(blk, x2, 2, 3, norm, position);
      EXPECT_LT(test::max_rel_diff(out2.data(), want2.data(), out2.size()), 1e-13);
    }
}

// Finite differences for x and every parameter, each view reported by name.
void check_gradients(NormKind norm, PositionKind position = PositionKind::Learned) {
  SCOPED_TRACE(std::string(to_string(norm)) + ", " + to_string(position));
  const int64_t B = 2, T = 3;
  AttentionBlock<double> blk(small_model(norm, position), B * T, 11);
  randomize(blk, 12);
  const int64_t C = blk.dim(), N = B * T;
  auto x = random_vector<double>(N * C, 13, -1.5, 1.5);
  const auto r = random_vector<double>(N * C, 14);
  std::vector<double> out(N * C), dx(N * C, test::kGarbage);
  blk.forward(x.data(), B, T, out.data());
  std::fill(blk.grads(), blk.grads() + blk.num_params(), test::kGarbage);
  blk.zero_grads();
  blk.backward(r.data(), dx.data());
  const std::vector<double> grads(blk.grads(), blk.grads() + blk.num_params());

  std::vector<double> fout(N * C);
  std::vector<double> params(blk.params(), blk.params() + blk.num_params());
  auto loss = [&] {
    std::copy(params.begin(), params.end(), blk.params());
    blk.forward(x.data(), B, T, fout.data());
    return test::dot(fout, r);
  };
  // A step of 1e-5, not the default 1e-6: this loss sums 48 outputs of size ~1
  // to 3 (the residual included), so its rounding noise at h = 1e-6 is ~1e-9,
  // as large as the tolerance on gradients below kGradFloor (kGradTol *
  // kGradFloor = 1e-9). The key bias has such gradients: a shift b of every key
  // moves a query's scores by the same q.b (zero gradient) unless rope rotates
  // b differently per position. At 1e-5 the worst error is ~1e-7.
  const double h = 1e-5;
  EXPECT_TRUE(test::grad_close("dx", dx, test::numeric_gradient(x, loss, h)));
  const auto numeric = test::numeric_gradient(params, loss, h);
  for (const auto& name : blk.param_names()) {
    const int64_t offset = blk.param(name) - blk.params(), n = blk.param_size(name);
    const std::vector<double> a(grads.begin() + offset, grads.begin() + offset + n);
    const std::vector<double> f(numeric.begin() + offset, numeric.begin() + offset + n);
    EXPECT_TRUE(test::grad_close("d" + name, a, f));
  }
}

TEST(AttentionBlock, LayerNormBackwardMatchesFiniteDifferences) { check_gradients(NormKind::LayerNorm); }
TEST(AttentionBlock, RMSNormBackwardMatchesFiniteDifferences) { check_gradients(NormKind::RMSNorm); }
TEST(AttentionBlock, RopeBackwardMatchesFiniteDifferences) {
  check_gradients(NormKind::LayerNorm, PositionKind::Rope);
  check_gradients(NormKind::RMSNorm, PositionKind::Rope);
}

// What rotary positions change, against the same block with learned positions
// (which sees no positions at all): position 0 is not rotated, so the first
// token of every sequence gets exactly the learned block's output; every later
// token's scores are rotated, so its output differs.
TEST(AttentionBlock, RopeLeavesPositionZeroAloneAndChangesTheRest) {
  const int64_t B = 2, T = 4;
  AttentionBlock<double> rope(small_model(NormKind::LayerNorm, PositionKind::Rope), B * T, 31);
  AttentionBlock<double> learned(small_model(), B * T, 31);
  randomize(rope, 32);
  randomize(learned, 32);
  const int64_t C = rope.dim();
  const auto x = random_vector<double>(B * T * C, 33, -2, 2);
  std::vector<double> y_rope(x.size()), y_learned(x.size());
  rope.forward(x.data(), B, T, y_rope.data());
  learned.forward(x.data(), B, T, y_learned.data());
  for (int64_t n = 0; n < B * T; ++n) {
    const double diff = test::max_rel_diff(&y_rope[n * C], &y_learned[n * C], C);
    if (n % T == 0) {
      EXPECT_EQ(diff, 0.0) << "row " << n << " is at position 0";
    } else {
      EXPECT_GT(diff, 1e-6) << "row " << n << " is at position " << n % T;
    }
  }
}

// Order within the prefix: the learned block sees no positions, so the output
// of the last token is a function of the set of earlier tokens (causal
// attention sums over them) and swapping two of them changes nothing but
// rounding. With rope the scores depend on the offsets to the keys, so the same
// swap changes the last token's output. (The relative-position property of the
// rotated scores themselves is checked on the op, tests/core/ops/RopeTest.cpp.)
TEST(AttentionBlock, RopeMakesTheOutputDependOnTheOrderOfEarlierTokens) {
  const int64_t T = 4;
  for (PositionKind position : {PositionKind::Learned, PositionKind::Rope}) {
    SCOPED_TRACE(to_string(position));
    AttentionBlock<double> blk(small_model(NormKind::LayerNorm, position), T, 41);
    randomize(blk, 42);
    const int64_t C = blk.dim(), last = (T - 1) * C;
    const auto x = random_vector<double>(T * C, 43, -2, 2);
    auto swapped = x;  // tokens 0 and 1 exchanged
    std::swap_ranges(swapped.begin(), swapped.begin() + C, swapped.begin() + C);
    std::vector<double> y(x.size()), y_swapped(x.size());
    blk.forward(x.data(), 1, T, y.data());
    blk.forward(swapped.data(), 1, T, y_swapped.data());
    const double diff = test::max_rel_diff(&y[last], &y_swapped[last], C);
    if (position == PositionKind::Learned) {
      EXPECT_LT(diff, 1e-13);
    } else {
      EXPECT_GT(diff, 1e-4);
    }
  }
}

TEST(AttentionBlock, ParameterGradientsAccumulateAndDxIsOverwritten) {
  const int64_t B = 2, T = 4;
  AttentionBlock<double> blk(small_model(), B * T, 3);
  randomize(blk, 4);
  const auto x = random_vector<double>(B * T * blk.dim(), 5);
  const auto g = random_vector<double>(x.size(), 6);
  std::vector<double> out(x.size()), dx1(x.size(), test::kGarbage), dx2(x.size(), test::kGarbage);
  blk.forward(x.data(), B, T, out.data());
  blk.zero_grads();
  blk.backward(g.data(), dx1.data());
  const std::vector<double> once(blk.grads(), blk.grads() + blk.num_params());
  blk.backward(g.data(), dx2.data());
  EXPECT_EQ(dx1, dx2);
  // The norm ops add row by row into the gradient, so twice is 2x up to rounding.
  for (int64_t i = 0; i < blk.num_params(); ++i)
    ASSERT_NEAR(blk.grads()[i], 2 * once[i], 1e-13 * std::max(1.0, std::abs(once[i]))) << "element " << i;
}

TEST(AttentionBlock, InitialisationIsSeededAndShardsTileTheOneRankParameters) {
  ModelConfig m = small_model();
  m.heads = 4;
  const int64_t C = m.dim;
  AttentionBlock<double> one(m, 8, 21), same(m, 8, 21), other(m, 8, 22);
  EXPECT_EQ(std::vector<double>(one.params(), one.params() + one.num_params()),
            std::vector<double>(same.params(), same.params() + same.num_params()));
  EXPECT_NE(std::vector<double>(one.params(), one.params() + one.num_params()),
            std::vector<double>(other.params(), other.params() + other.num_params()));
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_EQ(one.param("norm_weight")[c], 1.0);
    EXPECT_EQ(one.param("norm_bias")[c], 0.0);
    EXPECT_EQ(one.param("out_bias")[c], 0.0);
  }
  const double bound = 1 / std::sqrt(double(C));
  for (const char* name : {"qkv_weight", "out_weight"})
    for (int64_t i = 0; i < one.param_size(name); ++i) ASSERT_LE(std::abs(one.param(name)[i]), bound) << name;
  EXPECT_EQ(one.full_num_params(), one.num_params());

  for (int P : {2, 4}) {
    SCOPED_TRACE("tp " + std::to_string(P));
    const int64_t Cl = C / P;
    for (int p = 0; p < P; ++p) {
      FakeGroup group(p, P);
      AttentionBlock<double> shard(m, 8, 21, &group);
      EXPECT_EQ(shard.local_heads(), 4 / P);
      EXPECT_EQ(shard.param_size("qkv_weight"), 3 * Cl * C);
      EXPECT_EQ(shard.param_size("out_weight"), C * Cl);
      for (int part = 0; part < 3; ++part)
        for (int64_t i = 0; i < Cl; ++i)
          for (int64_t c = 0; c < C; ++c)
            ASSERT_EQ(shard.param("qkv_weight")[(part * Cl + i) * C + c],
                      one.param("qkv_weight")[(part * C + p * Cl + i) * C + c]);
      for (int64_t row = 0; row < C; ++row)
        for (int64_t j = 0; j < Cl; ++j)
          ASSERT_EQ(shard.param("out_weight")[row * Cl + j], one.param("out_weight")[row * C + p * Cl + j]);
      // The same shard again through shard_from_full.
      std::vector<double> local(shard.num_params(), test::kGarbage);
      shard.shard_from_full(one.params(), local.data());
      EXPECT_EQ(local, std::vector<double>(shard.params(), shard.params() + shard.num_params()));
    }
  }
}

TEST(AttentionBlock, FloatMatchesDouble) {
  const int64_t B = 2, T = 4;
  AttentionBlock<double> d(small_model(), B * T, 8);
  AttentionBlock<float> f(small_model(), B * T, 8);
  randomize(d, 9);
  randomize(f, 9);
  const auto x = random_vector<double>(B * T * d.dim(), 10);
  const auto g = random_vector<double>(x.size(), 11);
  const auto xf = test::cast<float>(x), gf = test::cast<float>(g);
  std::vector<double> out(x.size()), dx(x.size());
  std::vector<float> outf(x.size()), dxf(x.size());
  d.forward(x.data(), B, T, out.data());
  f.forward(xf.data(), B, T, outf.data());
  d.zero_grads();
  f.zero_grads();
  d.backward(g.data(), dx.data());
  f.backward(gf.data(), dxf.data());
  EXPECT_LT(test::max_rel_diff(test::cast<double>(outf).data(), out.data(), out.size()), 1e-5);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dxf).data(), dx.data(), dx.size()), 1e-5);
  const std::vector<double> gfd(f.grads(), f.grads() + f.num_params());
  EXPECT_LT(test::max_rel_diff(gfd.data(), d.grads(), gfd.size()), 1e-5);
}

// Runs fn, expects ErrorT, and that the message holds every fragment.
template <typename ErrorT, typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const ErrorT& e) {
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(AttentionBlock, RejectsBadConfigurationsWithClearMessages) {
  ModelConfig m = small_model();
  m.heads = 4;
  FakeGroup three(0, 3);
  expect_error<ConfigError>([&] { AttentionBlock<double> b(m, 8, 1, &three); },
                            {"model.heads = 4", "tensor-parallel size 3", "fake_tp_group"});
  ModelConfig bad_dim = small_model();
  bad_dim.heads = 3;
  expect_error<ConfigError>([&] { AttentionBlock<double> b(bad_dim, 8, 1); },
                            {"model.dim = 8", "model.heads = 3"});
  ModelConfig rope = small_model();  // D = 8 / 2 = 4: rope is fine
  rope.position = PositionKind::Rope;
  EXPECT_NO_THROW(AttentionBlock<double>(rope, 8, 1));
  rope.heads = 8;  // D = 1
  expect_error<ConfigError>([&] { AttentionBlock<double> b(rope, 8, 1); }, {"rope", "even head size", "8 / 8 = 1"});
  expect_error<InvalidArgument>([&] { AttentionBlock<double> b(small_model(), 0, 1); }, {"max_tokens"});
  // A group of one is no tensor parallelism, whatever the head count.
  FakeGroup one(0, 1);
  ModelConfig odd = small_model();
  odd.heads = 1;
  EXPECT_EQ(AttentionBlock<double>(odd, 8, 1, &one).tp_size(), 1);
}

TEST(AttentionBlock, ForwardAndBackwardCheckTheirArguments) {
  AttentionBlock<double> blk(small_model(), 8, 1);  // seq_len 4, 8 tokens
  std::vector<double> x(16 * 8), out(16 * 8);
  expect_error<InvalidArgument>([&] { blk.backward(x.data(), out.data()); }, {"before forward"});
  expect_error<InvalidArgument>([&] { blk.forward(x.data(), 1, 5, out.data()); }, {"T = 5", "model.seq_len = 4"});
  expect_error<InvalidArgument>([&] { blk.forward(x.data(), 3, 4, out.data()); }, {"12", "max_tokens = 8"});
  expect_error<InvalidArgument>([&] { blk.forward(x.data(), 2, 4, x.data()); }, {"alias"});
  blk.forward(x.data(), 2, 4, out.data());
  expect_error<InvalidArgument>([&] { blk.backward(out.data(), out.data()); }, {"alias"});
}

}  // namespace
}  // namespace sy::models
