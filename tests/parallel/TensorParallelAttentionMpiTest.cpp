// Tensor-parallel attention (heads split over the tp group, Megatron style)
// against one rank. Every layout tp x dp of this run's world: each
// data-parallel rank runs its slice of a global batch (tp peers the same
// tokens); outputs, input gradients and every parameter gradient (summed over
// the dp group, never over tp) equal those of a one-rank block on the whole
// batch with the same parameters, shard by shard. With rotary positions too:
// each rank rotates its own whole heads, by the position of each row within
// its sequence.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/attention_block.hpp"
#include "parallel/process_grid.hpp"
#include "tests/support/mpi_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy::par {
namespace {

using test::world_size;

ModelConfig model_config(NormKind norm, PositionKind position = PositionKind::Learned) {
  ModelConfig m;
  m.dim = 16;
  m.heads = 4;  // divisible by tp = 1, 2, 4; head size 4 (even, for rope)
  m.seq_len = 5;
  m.norm = norm;
  m.position = position;
  return m;
}

template <typename Real>
void expect_tp_dp_equals_one_rank(int tp, int dp, NormKind norm, PositionKind position, double tol) {
  SCOPED_TRACE("tp " + std::to_string(tp) + " x dp " + std::to_string(dp) + ", " + to_string(norm) + ", " +
               to_string(position) + (sizeof(Real) == 4 ? ", float" : ", double"));
  ParallelConfig pc;
  pc.tp = tp;
  pc.dp = dp;
  ProcessGrid grid(pc);
  ASSERT_EQ(grid.tp_group().size(), tp);
  const ModelConfig m = model_config(norm, position);
  const int64_t C = m.dim, T = m.seq_len, B = 4, Bl = B / dp;  // global batch of B sequences
  const int64_t rows = Bl * T * C, first = grid.dp_index() * rows;
  const uint64_t seed = 17;

  models::AttentionBlock<Real> shard(m, Bl * T, seed, &grid.tp_group());
  models::AttentionBlock<Real> one(m, B * T, seed);
  EXPECT_EQ(shard.local_heads(), m.heads / tp);
  EXPECT_EQ(shard.tp_rank(), grid.tp_index());
  // The seeded shards are the one-rank parameters, exactly.
  std::vector<Real> want(shard.num_params());
  shard.shard_from_full(one.params(), want.data());
  EXPECT_EQ(std::vector<Real>(shard.params(), shard.params() + shard.num_params()), want);

  // Random values in every parameter, the same on every rank, so no bias or
  // gain hides a missing term.
  const auto full = test::random_vector<Real>(one.num_params(), 5, -0.6, 0.6);
  one.load_full(full.data());
  shard.load_full(full.data());

  const auto x = test::random_vector<Real>(B * T * C, 31, -2, 2);
  const auto g = test::random_vector<Real>(B * T * C, 32);
  std::vector<Real> out(rows), dx(rows), out1(B * T * C), dx1(B * T * C);
  shard.forward(x.data() + first, Bl, T, out.data());
  one.forward(x.data(), B, T, out1.data());
  EXPECT_LT(test::max_rel_diff(out.data(), out1.data() + first, rows), tol) << "output";
  shard.zero_grads();
  one.zero_grads();
  shard.backward(g.data() + first, dx.data());
  one.backward(g.data(), dx1.data());
  EXPECT_LT(test::max_rel_diff(dx.data(), dx1.data() + first, rows), tol) << "dx";

  // Parameter gradients: summed over the dp group only (the header's rule);
  // sharded views are compared with the one-rank rows / columns, replicated
  // views with the whole one-rank gradient.
  std::vector<Real> grads(shard.grads(), shard.grads() + shard.num_params());
  grid.dp_group().allreduce(grads.data(), static_cast<int64_t>(grads.size()), ReduceOp::Sum);
  shard.shard_from_full(one.grads(), want.data());
  for (const auto& name : shard.param_names()) {
    const int64_t offset = shard.param(name) - shard.params(), n = shard.param_size(name);
    EXPECT_LT(test::max_rel_diff(grads.data() + offset, want.data() + offset, n), tol) << "d" << name;
  }
}

// Every tp x dp layout of the world, tp innermost as in the process grid.
template <typename Real>
void all_layouts(NormKind norm, double tol, PositionKind position = PositionKind::Learned) {
  const int W = world_size();
  for (int tp = 1; tp <= W; tp *= 2)
    if (W % tp == 0 && 4 % (W / tp) == 0) expect_tp_dp_equals_one_rank<Real>(tp, W / tp, norm, position, tol);
}

TEST(TensorParallelAttentionMpi, EveryLayoutEqualsOneRankInDouble) { all_layouts<double>(NormKind::LayerNorm, 1e-11); }

TEST(TensorParallelAttentionMpi, RMSNormEqualsOneRank) { all_layouts<double>(NormKind::RMSNorm, 1e-11); }

TEST(TensorParallelAttentionMpi, EveryLayoutEqualsOneRankInFloat) { all_layouts<float>(NormKind::LayerNorm, 1e-5); }

TEST(TensorParallelAttentionMpi, RopeEveryLayoutEqualsOneRankInDouble) {
  all_layouts<double>(NormKind::LayerNorm, 1e-11, PositionKind::Rope);
  all_layouts<double>(NormKind::RMSNorm, 1e-11, PositionKind::Rope);
}

TEST(TensorParallelAttentionMpi, RopeEveryLayoutEqualsOneRankInFloat) {
  all_layouts<float>(NormKind::LayerNorm, 1e-5, PositionKind::Rope);
}

TEST(TensorParallelAttentionMpi, HeadsNotDivisibleByTpFailsClearly) {
  const int W = world_size();
  if (W == 1) GTEST_SKIP() << "needs a tp group of 2 or more ranks";
  ParallelConfig pc;
  pc.tp = W;
  ProcessGrid grid(pc);
  ModelConfig m = model_config(NormKind::LayerNorm);
  m.heads = W + 1;  // 3 heads on 2 ranks, 5 on 4
  m.dim = 2 * m.heads;
  try {
    models::AttentionBlock<double> block(m, 10, 1, &grid.tp_group());
    ADD_FAILURE() << "no exception for " << m.heads << " heads over tp " << W;
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.heads = " + std::to_string(m.heads)), std::string::npos) << msg;
    EXPECT_NE(msg.find("tensor-parallel size " + std::to_string(W)), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sy::par
