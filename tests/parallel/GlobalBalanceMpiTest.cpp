// Global-batch balancing across ranks: with the count hook summing over the
// ranks that hold different tokens, the mean of the ranks' balance losses
// equals the one-rank balance loss of the concatenated batch.
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "core/config.hpp"
#include "models/moe_layer.hpp"
#include "parallel/moe_hooks.hpp"
#include "parallel/process_grid.hpp"
#include "tests/support/test_support.hpp"

namespace sy::par {
namespace {

TEST(GlobalBalanceMpi, RanksTogetherEqualOneRankOfTheConcatenatedBatch) {
  int W = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &W);
  ParallelConfig pc;
  pc.dp = W;
  ProcessGrid grid(pc);
  MoeConfig mc;
  mc.num_experts = 4;
  mc.top_k = 2;
  mc.hidden_size = 8;
  mc.balance = BalanceKind::Global;
  mc.balance_coeff = 0.1;
  mc.z_loss_coeff = 0;
  mc.capacity_factor = 0;
  const int64_t T = 32, M = 8;
  // Same seed everywhere: identical parameters on every rank.
  moe::MoeLayer<double> layer(mc, M, T, T, 5), whole(mc, M, T * W, T * W, 5);
  connect_moe_layer(layer, grid.token_group());
  const auto all = test::random_vector<double>(T * W * M, 77, -2, 2);  // the global batch
  std::vector<double> out(T * M), out_all(T * W * M);
  const double mine = layer.forward(all.data() + grid.world_rank() * T * M, nullptr, T, out.data());
  const double one_rank = whole.forward(all.data(), nullptr, T * W, out_all.data());
  double sum = mine;
  grid.world().allreduce(&sum, 1);
  EXPECT_NEAR(sum / W, one_rank, 1e-12);
  // The counts buffer holds the global batch's counts on every rank.
  const auto& counts = layer.balancer().accumulated_counts();
  const auto& want = whole.balancer().accumulated_counts();
  EXPECT_EQ(counts, want);
  // A second micro-batch accumulates; the optimizer step clears.
  layer.forward(all.data() + grid.world_rank() * T * M, nullptr, T, out.data());
  EXPECT_EQ(layer.balancer().accumulated_counts()[0], 2 * want[0]);
  layer.on_optimizer_step();
  EXPECT_EQ(layer.balancer().accumulated_counts()[0], 0.0);
}

}  // namespace
}  // namespace sy::par
