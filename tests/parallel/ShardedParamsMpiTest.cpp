// Sharded dense parameters on the world of this run (1, 2 or 4 ranks):
// scatter/gather round trips, bucketed reduce-scatter of gradients into the
// shard positions of their parameters, the global gradient norm, an optimizer
// step on the shard, and the errors a caller can make.
//
// Parameters double as tags: with param(c) = c + 1 at canonical index c, the
// value at shard[k] says which parameter sits there, so the gradient at
// grad_shard[k] can be checked without trusting the class's own mapping.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "parallel/mpi/mpi_communicator.hpp"
#include "parallel/sharded_params.hpp"
#include "tests/support/mpi_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy::par {
namespace {

// Awkward sizes so that the padding of every bucket matters.
const std::vector<int64_t> kSizes = {1, 7, 33, 1000, 3, 64, 17};
constexpr int64_t kTinyBucketBytes = 128;  // several buckets: 32 floats, 16 doubles

std::string tensor_name(size_t i) {
  std::string name = "t";
  name += std::to_string(i);  // not "t" + ...: GCC 12 reports a false -Wrestrict there
  return name;
}

template <typename T>
std::unique_ptr<ShardedParams<T>> make_set(Communicator& comm, int64_t bucket_bytes) {
  auto p = std::make_unique<ShardedParams<T>>(comm, bucket_bytes);
  for (size_t i = 0; i < kSizes.size(); ++i) p->add(tensor_name(i), kSizes[i]);
  p->finalize();
  return p;
}

// Writes value(c) at every canonical index c of the full buffer `full` (params or grads).
template <typename T, typename Fn>
void fill_canonical(ShardedParams<T>& p, T* full, Fn value) {
  for (int i = 0; i < p.num_tensors(); ++i) {
    const std::string& n = p.name(i);
    const int64_t f0 = p.flat_offset(n), c0 = p.canonical_index(f0);
    for (int64_t j = 0; j < p.numel(n); ++j) full[f0 + j] = value(c0 + j);
  }
}

// Tags the parameters (param(c) = c + 1, padding 0) and scatters them.
template <typename T>
void tag_params(ShardedParams<T>& p) {
  fill_canonical(p, p.full_params(), [](int64_t c) { return T(c + 1); });
  p.scatter_from_full();
}

template <typename T>
class ShardedParamsMpi : public testing::Test {};
using Types = testing::Types<float, double>;
TYPED_TEST_SUITE(ShardedParamsMpi, Types);

TYPED_TEST(ShardedParamsMpi, LayoutPadsEveryBucketAndCoversEachElementOnce) {
  using T = TypeParam;
  auto c = test::world_communicator();
  const int W = c->size(), r = c->rank();
  auto p = make_set<T>(*c, kTinyBucketBytes);
  const int64_t total = std::accumulate(kSizes.begin(), kSizes.end(), int64_t(0));
  EXPECT_EQ(p->canonical_size(), total);
  EXPECT_EQ(p->flat_size() % (W * ShardedParams<T>::kShardAlign), 0);
  EXPECT_EQ(p->shard_size() * W, p->flat_size());
  EXPECT_EQ(p->shard_size() % ShardedParams<T>::kShardAlign, 0);
  ASSERT_GE(p->num_buckets(), 4);

  // Buckets in reverse registration order, adjacent in the flat buffer, each
  // at least the target except the one holding the first tensor.
  const int nb = p->num_buckets();
  EXPECT_EQ(p->bucket(0).end_tensor, int(kSizes.size()));
  EXPECT_EQ(p->bucket(nb - 1).first_tensor, 0);
  EXPECT_EQ(p->bucket(nb - 1).flat_begin, 0);
  EXPECT_EQ(p->bucket(0).flat_end, p->flat_size());
  for (int b = 0; b < nb; ++b) {
    const auto& bk = p->bucket(b);
    if (b + 1 < nb) {
      EXPECT_EQ(p->bucket(b + 1).end_tensor, bk.first_tensor);
      EXPECT_EQ(p->bucket(b + 1).flat_end, bk.flat_begin);
    }
    EXPECT_EQ((bk.flat_end - bk.flat_begin) % (W * ShardedParams<T>::kShardAlign), 0);
    EXPECT_EQ(bk.chunk * W, bk.flat_end - bk.flat_begin);
    int64_t elems = 0;
    for (int i = bk.first_tensor; i < bk.end_tensor; ++i) {
      EXPECT_EQ(p->bucket_of(tensor_name(i)), b);
      elems += kSizes[i];
    }
    if (b + 1 < nb) {
      EXPECT_GE(elems * int64_t(sizeof(T)), kTinyBucketBytes) << "bucket " << b;
    }
    if (bk.end_tensor - bk.first_tensor > 1) {  // closed as soon as it reached the target
      EXPECT_LT((elems - kSizes[bk.first_tensor]) * int64_t(sizeof(T)), kTinyBucketBytes) << "bucket " << b;
    }
  }

  // This rank's pieces: its 1/W of every bucket, in flat order.
  const auto pieces = p->shard_pieces();
  ASSERT_EQ(int(pieces.size()), nb);
  int64_t k = 0;
  for (int b = nb - 1; b >= 0; --b) {
    const auto& piece = pieces[nb - 1 - b];
    EXPECT_EQ(piece.shard_begin, k);
    EXPECT_EQ(piece.flat_begin, p->bucket(b).flat_begin + r * p->bucket(b).chunk);
    EXPECT_EQ(piece.count, p->bucket(b).chunk);
    EXPECT_EQ(p->bucket(b).shard_begin, k);
    k += piece.count;
  }
  EXPECT_EQ(k, p->shard_size());

  // Every canonical element sits at exactly one flat index and in exactly one rank's shard.
  std::vector<int64_t> seen(size_t(total), 0);
  int64_t non_padding = 0;
  for (int64_t f = 0; f < p->flat_size(); ++f) non_padding += p->canonical_index(f) >= 0;
  EXPECT_EQ(non_padding, total);
  for (int64_t s = 0; s < p->shard_size(); ++s) {
    const int64_t ci = p->canonical_index(p->shard_to_flat(s));
    if (ci >= 0) ++seen[size_t(ci)];
  }
  c->allreduce(seen.data(), int64_t(seen.size()));
  for (int64_t ci = 0; ci < total; ++ci) ASSERT_EQ(seen[size_t(ci)], 1) << "canonical element " << ci;

  // The default target (25 MiB) holds everything in one bucket.
  auto one = make_set<T>(*c, ShardedParams<T>::kDefaultBucketBytes);
  EXPECT_EQ(one->num_buckets(), 1);
  EXPECT_EQ(one->flat_size(), (total + W * 16 - 1) / (W * 16) * (W * 16));
}

TYPED_TEST(ShardedParamsMpi, ScatterThenGatherRestoresTheFullParameters) {
  using T = TypeParam;
  auto c = test::world_communicator();
  for (int64_t bucket_bytes : {kTinyBucketBytes, ShardedParams<T>::kDefaultBucketBytes}) {
    SCOPED_TRACE("bucket_bytes " + std::to_string(bucket_bytes));
    auto p = make_set<T>(*c, bucket_bytes);
    const auto orig = test::random_vector<T>(size_t(p->canonical_size()), 11);  // same on every rank
    p->init_full([&](const std::string& name, T* data, int64_t n) {
      const int64_t c0 = p->canonical_index(p->flat_offset(name));
      std::copy_n(orig.data() + c0, n, data);
    });
    const std::vector<T> full(p->full_params(), p->full_params() + p->flat_size());
    // The shard holds this rank's pieces of the full buffer.
    for (int64_t k = 0; k < p->shard_size(); ++k) ASSERT_EQ(p->shard()[k], full[size_t(p->shard_to_flat(k))]);

    for (bool blocking : {true, false}) {
      std::fill_n(p->full_params(), p->flat_size(), T(-7));
      if (blocking) {
        p->gather();
      } else {
        auto rq = p->igather();
        rq->wait();
        EXPECT_TRUE(rq->test());
      }
      for (int64_t f = 0; f < p->flat_size(); ++f) {
        const int64_t ci = p->canonical_index(f);
        ASSERT_EQ(p->full_params()[f], ci >= 0 ? orig[size_t(ci)] : T(0)) << "flat " << f << " blocking " << blocking;
      }
      for (size_t i = 0; i < kSizes.size(); ++i) {
        const T* v = p->param(tensor_name(i));
        const int64_t c0 = p->canonical_index(p->flat_offset(tensor_name(i)));
        for (int64_t j = 0; j < kSizes[i]; ++j) ASSERT_EQ(v[j], orig[size_t(c0 + j)]);
      }
    }
  }
}

enum class MarkOrder { Reverse, Scrambled };

// Gradient of canonical element ci on rank r: distinct per element, exact sums in float.
double rank_grad(int64_t ci, int r) { return double(ci) + 10000.0 * (r + 1); }

template <typename T>
void check_bucketed_sync(MarkOrder order, double grad_scale) {
  auto c = test::world_communicator();
  const int W = c->size(), r = c->rank();
  auto p = make_set<T>(*c, kTinyBucketBytes);
  ASSERT_GE(p->num_buckets(), 4);
  tag_params(*p);
  p->zero_grad();
  fill_canonical(*p, p->full_grads(), [r](int64_t ci) { return T(rank_grad(ci, r)); });

  std::vector<int> marks(kSizes.size());
  std::iota(marks.rbegin(), marks.rend(), 0);  // n-1, ..., 0
  if (order == MarkOrder::Scrambled) {
    std::mt19937 rng(1000 + r);  // a different order on every rank
    std::shuffle(marks.begin(), marks.end(), rng);
  }
  std::vector<bool> marked(kSizes.size(), false);
  auto leading_complete_buckets = [&] {
    int b = 0;
    for (; b < p->num_buckets(); ++b) {
      const auto& bk = p->bucket(b);
      for (int i = bk.first_tensor; i < bk.end_tensor; ++i)
        if (!marked[size_t(i)]) return b;
    }
    return b;
  };

  p->begin_backward(grad_scale);
  EXPECT_TRUE(p->in_backward());
  EXPECT_EQ(p->buckets_started(), 0);
  for (int i : marks) {
    p->mark_ready(tensor_name(size_t(i)));
    marked[size_t(i)] = true;
    // A bucket starts as soon as it and every bucket before it are complete.
    ASSERT_EQ(p->buckets_started(), leading_complete_buckets()) << "after marking " << tensor_name(size_t(i));
    if (order == MarkOrder::Reverse && p->buckets_started() == 1 && i == p->bucket(0).first_tensor) {
      // Bucket 0 is in flight on every rank before finish(): it completes on its own.
      EXPECT_FALSE(p->bucket_done(p->num_buckets() - 1));  // not started
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      bool done = false;
      while (!(done = p->bucket_done(0)) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      EXPECT_TRUE(done) << "bucket 0 did not complete before finish()";
    }
  }
  EXPECT_EQ(p->buckets_started(), p->num_buckets());
  p->finish();
  EXPECT_FALSE(p->in_backward());

  // grad_shard[k] = grad_scale * sum over ranks of the gradient of the parameter at shard[k].
  int64_t tagged = 0;
  for (int64_t k = 0; k < p->shard_size(); ++k) {
    const int64_t tag = int64_t(p->shard()[k]);
    if (tag == 0) {
      ASSERT_EQ(p->grad_shard()[k], T(0)) << "padding at shard " << k;
      continue;
    }
    ++tagged;
    double want = 0;
    for (int q = 0; q < W; ++q) want += rank_grad(tag - 1, q);
    ASSERT_EQ(p->grad_shard()[k], T(grad_scale * want)) << "shard " << k << " holds parameter " << tag - 1;
  }
  c->allreduce(&tagged, 1);
  EXPECT_EQ(tagged, p->canonical_size());
}

TYPED_TEST(ShardedParamsMpi, BucketedReduceScatterInReverseOrderSumsIntoShardPositions) {
  check_bucketed_sync<TypeParam>(MarkOrder::Reverse, 1.0);
}

TYPED_TEST(ShardedParamsMpi, BucketedReduceScatterInScrambledOrderWithGradScale) {
  check_bucketed_sync<TypeParam>(MarkOrder::Scrambled, 0.5);
}

TYPED_TEST(ShardedParamsMpi, OptimizerStepOnShardThenGatherEqualsFullUpdate) {
  using T = TypeParam;
  auto c = test::world_communicator();
  const int W = c->size(), r = c->rank();
  auto p = make_set<T>(*c, kTinyBucketBytes);
  // Exact binary fractions, so the sums and the update are exact in float too
  // (the comparison below is then independent of reduction order and FMA).
  auto p0 = [](int64_t ci) { return T(double(ci % 97) * 0.25 - 3.0); };
  auto g = [](int64_t ci, int q) { return T(double((ci * 7 + q * 13) % 31) * 0.125); };
  const T lr = T(0.125);
  p->init_full([&](const std::string& name, T* data, int64_t n) {
    const int64_t c0 = p->canonical_index(p->flat_offset(name));
    for (int64_t j = 0; j < n; ++j) data[j] = p0(c0 + j);
  });
  const T* params_before = p->full_params();
  p->zero_grad();
  fill_canonical(*p, p->full_grads(), [&](int64_t ci) { return g(ci, r); });
  p->begin_backward();
  for (int i = p->num_tensors() - 1; i >= 0; --i) p->mark_ready(p->name(i));
  p->finish();

  for (int64_t k = 0; k < p->shard_size(); ++k) p->shard()[k] -= lr * p->grad_shard()[k];
  std::fill_n(p->full_params(), p->flat_size(), T(0));
  p->gather();

  EXPECT_EQ(p->full_params(), params_before);  // no reallocation
  for (int64_t f = 0; f < p->flat_size(); ++f) {
    const int64_t ci = p->canonical_index(f);
    if (ci < 0) {
      ASSERT_EQ(p->full_params()[f], T(0)) << "padding at flat " << f;
      continue;
    }
    T gsum = 0;
    for (int q = 0; q < W; ++q) gsum += g(ci, q);
    ASSERT_EQ(p->full_params()[f], p0(ci) - lr * gsum) << "flat " << f << " canonical " << ci;
  }
  // The same full parameters on every rank.
  std::vector<T> lo(p->full_params(), p->full_params() + p->flat_size()), hi = lo;
  c->allreduce(lo.data(), int64_t(lo.size()), ReduceOp::Min);
  c->allreduce(hi.data(), int64_t(hi.size()), ReduceOp::Max);
  EXPECT_EQ(lo, hi);
}

// Sum over ranks q < n of the random gradient vectors seeded seed0 + q.
std::vector<double> summed_random_grads(size_t size, int n, uint64_t seed0) {
  std::vector<double> sum(size, 0.0);
  for (int q = 0; q < n; ++q) {
    const auto v = test::random_vector<double>(size, seed0 + uint64_t(q));
    for (size_t i = 0; i < size; ++i) sum[i] += v[i];
  }
  return sum;
}

double norm_sq(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return s;
}

void sync_reverse(ShardedParams<double>& p) {
  p.begin_backward();
  for (int i = p.num_tensors() - 1; i >= 0; --i) p.mark_ready(p.name(i));
  p.finish();
}

// train.dtype = bf16: the gathered parameters are the masters rounded to
// bf16 (nearest even), the masters themselves are untouched, and the same
// holds when the gather is completed by test() instead of wait().
TEST(ShardedParamsMpiBf16, GatherRoundsTheMastersAndKeepsThem) {
  auto c = test::world_communicator();
  for (bool poll : {false, true}) {
    ShardedParams<float> p(*c, kTinyBucketBytes);
    p.set_param_dtype(DType::BF16);
    for (size_t i = 0; i < kSizes.size(); ++i) p.add(tensor_name(i), kSizes[i]);
    p.finalize();
    // Values with more bits than bf16 keeps, the same on every rank.
    fill_canonical(p, p.full_params(), [](int64_t k) { return 1.0f + float(k) * 1e-4f + 1e-7f; });
    p.scatter_from_full();
    const std::vector<float> master(p.shard(), p.shard() + p.shard_size());
    std::fill_n(p.full_params(), p.flat_size(), -1.0f);
    if (poll) {
      auto req = p.igather();
      while (!req->test()) std::this_thread::yield();
    } else {
      p.gather();
    }
    int64_t inexact = 0;
    for (int64_t f = 0; f < p.flat_size(); ++f) {
      const int64_t k = p.canonical_index(f);
      const float want = k < 0 ? 0.0f : bf16_to_float(float_to_bf16(1.0f + float(k) * 1e-4f + 1e-7f));
      ASSERT_EQ(p.full_params()[f], want) << "flat " << f << (poll ? " (polled)" : "");
      if (k >= 0) inexact += want != 1.0f + float(k) * 1e-4f + 1e-7f;
    }
    EXPECT_GT(inexact, p.canonical_size() / 2);  // the rounding did happen
    for (int64_t k = 0; k < p.shard_size(); ++k) ASSERT_EQ(p.shard()[k], master[size_t(k)]) << "shard " << k;
  }
}

TEST(ShardedParamsMpiNorm, GlobalGradNormMatchesNormOfSummedGradient) {
  auto c = test::world_communicator();
  const int W = c->size(), r = c->rank();
  // Sharded over the world: copies = 1.
  auto p = make_set<double>(*c, kTinyBucketBytes);
  const size_t n = size_t(p->canonical_size());
  const auto mine = test::random_vector<double>(n, 100 + uint64_t(r));
  fill_canonical(*p, p->full_grads(), [&](int64_t ci) { return mine[size_t(ci)]; });
  sync_reverse(*p);
  const double want = std::sqrt(norm_sq(summed_random_grads(n, W, 100)));
  const double norm = global_grad_norm({{p->grad_norm_sq_local(), 1}}, *c);
  EXPECT_LE(std::abs(norm - want), 1e-12 * want);

  // Clipping scales the norm by exactly the clip factor.
  const double s = clip_scale(norm, 0.5 * norm);
  EXPECT_LT(s, 0.51);
  EXPECT_GT(s, 0.49);
  EXPECT_EQ(clip_scale(norm, 10 * norm), 1.0);
  EXPECT_EQ(clip_scale(norm, 0), 1.0);  // clipping off
  p->clip_grad_shard(s);
  const double clipped = global_grad_norm({{p->grad_norm_sq_local(), 1}}, *c);
  EXPECT_LE(std::abs(clipped - s * want), 1e-12 * want);

  // A set sharded over half the world and replicated over the halves
  // (copies = W / half), plus a set replicated on every rank (copies = W).
  auto half = c->split(r % 2, r, "half");
  ASSERT_EQ(W % half->size(), 0);
  auto q = make_set<double>(*half, kTinyBucketBytes);
  const auto mine_half = test::random_vector<double>(n, 200 + uint64_t(half->rank()));
  fill_canonical(*q, q->full_grads(), [&](int64_t ci) { return mine_half[size_t(ci)]; });
  sync_reverse(*q);
  const auto replicated = test::random_vector<double>(50, 7);
  const double want_mixed = std::sqrt(norm_sq(summed_random_grads(n, half->size(), 200)) + norm_sq(replicated));
  const double mixed = global_grad_norm(
      {{q->grad_norm_sq_local(), W / half->size()}, {norm_sq(replicated), int64_t(W)}}, *c);
  EXPECT_LE(std::abs(mixed - want_mixed), 1e-12 * want_mixed);
}

// Runs fn, expects InvalidArgument whose message contains every one of `parts`.
template <typename Fn>
void expect_invalid(Fn fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    for (const char* part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  }
}

TEST(ShardedParamsMpiErrors, UnknownNamesListTheKnownOnes) {
  auto c = test::world_communicator();
  auto p = make_set<float>(*c, kTinyBucketBytes);
  const char* known = "known tensors: t0, t1, t2, t3, t4, t5, t6";
  expect_invalid([&] { p->param("nope"); }, {"unknown tensor 'nope'", known});
  expect_invalid([&] { p->grad("w_q"); }, {"unknown tensor 'w_q'", known});
  expect_invalid([&] { p->numel("x"); }, {"'x'", known});
  expect_invalid([&] { p->bucket_of("x"); }, {"'x'", known});
  p->begin_backward();
  expect_invalid([&] { p->mark_ready("t7"); }, {"unknown tensor 't7'", known});
  for (int i = p->num_tensors() - 1; i >= 0; --i) p->mark_ready(p->name(i));
  p->finish();
}

TEST(ShardedParamsMpiErrors, RegistrationAndBackwardMisuse) {
  auto c = test::world_communicator();
  expect_invalid([&] { ShardedParams<float>(*c, 0); }, {"bucket size"});
  ShardedParams<float> p(*c, kTinyBucketBytes);
  expect_invalid([&] { p.finalize(); }, {"no tensors"});
  p.add("a", 5);
  expect_invalid([&] { p.add("a", 3); }, {"'a' registered twice"});
  expect_invalid([&] { p.add("b", 0); }, {"'b'", "numel > 0"});
  expect_invalid([&] { p.param("a"); }, {"finalize() first"});
  p.add("b", 9);
  p.finalize();
  expect_invalid([&] { p.add("c", 1); }, {"after finalize"});
  expect_invalid([&] { p.mark_ready("a"); }, {"outside a backward"});
  expect_invalid([&] { p.finish(); }, {"without begin_backward"});
  p.begin_backward();
  expect_invalid([&] { p.begin_backward(); }, {"in flight"});
  p.mark_ready("b");
  expect_invalid([&] { p.mark_ready("b"); }, {"'b' marked ready twice"});
  p.mark_ready("a");
  p.finish();
}

TEST(ShardedParamsMpiErrors, FinishNamesTheGradientsNeverMarked) {
  auto c = test::world_communicator();
  auto p = make_set<double>(*c, kTinyBucketBytes);
  tag_params(*p);
  fill_canonical(*p, p->full_grads(), [](int64_t ci) { return double(ci); });
  p->begin_backward();
  for (int i = p->num_tensors() - 1; i >= 0; --i)
    if (i != 2 && i != 5) p->mark_ready(p->name(i));
  expect_invalid([&] { p->finish(); }, {"2 gradient(s) never marked ready: t2, t5"});
  EXPECT_FALSE(p->in_backward());

  // The set stays usable: a complete backward afterwards syncs every bucket.
  p->begin_backward();
  for (int i = 0; i < p->num_tensors(); ++i) p->mark_ready(p->name(i));
  p->finish();
  const int W = c->size();
  for (int64_t k = 0; k < p->shard_size(); ++k) {
    const int64_t tag = int64_t(p->shard()[k]);
    ASSERT_EQ(p->grad_shard()[k], tag == 0 ? 0.0 : double(W) * double(tag - 1)) << "shard " << k;
  }
}

}  // namespace
}  // namespace sy::par
