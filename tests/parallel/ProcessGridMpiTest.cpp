// The process grid on 2 and 4 ranks: every valid layout, the groups' members,
// node emulation, and a bad grid refused on every rank.
#include "parallel/process_grid.hpp"

#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "core/error.hpp"
#include "tests/support/mpi_support.hpp"

namespace sy::par {
namespace {

using test::world_size;

// Sums world ranks over a group: checks the members without trusting the grid.
int64_t member_sum(Communicator& g, int world_rank) {
  int64_t v = world_rank;
  g.allreduce(&v, 1);
  return v;
}

TEST(ProcessGridMpi, EveryFactorizationBuildsConsistentGroups) {
  const int W = world_size();
  for (int tp = 1; tp <= W; ++tp)
    for (int ep = 1; ep <= W; ++ep) {
      if (W % (tp * ep)) continue;
      ParallelConfig pc;
      pc.tp = tp;
      pc.ep = ep;
      pc.dp = W / (tp * ep);
      ProcessGrid g(pc);
      const int r = g.world_rank();
      SCOPED_TRACE("dp=" + std::to_string(pc.dp) + " ep=" + std::to_string(ep) + " tp=" + std::to_string(tp));
      EXPECT_EQ(r, (g.dp_index() * ep + g.ep_index()) * tp + g.tp_index());
      EXPECT_EQ(g.tp_group().size(), tp);
      EXPECT_EQ(g.ep_group().size(), ep);
      EXPECT_EQ(g.dp_group().size(), pc.dp);
      EXPECT_EQ(g.token_group().size(), W / tp);
      EXPECT_EQ(g.tp_group().rank(), g.tp_index());
      EXPECT_EQ(g.ep_group().rank(), g.ep_index());
      EXPECT_EQ(g.dp_group().rank(), g.dp_index());
      // Members: tp peers are consecutive ranks; ep peers step by tp; dp peers by ep * tp.
      const int tp0 = r - g.tp_index(), ep0 = r - g.ep_index() * tp, dp0 = r - g.dp_index() * ep * tp;
      EXPECT_EQ(member_sum(g.tp_group(), r), int64_t(tp) * tp0 + tp * (tp - 1) / 2);
      EXPECT_EQ(member_sum(g.ep_group(), r), int64_t(ep) * ep0 + int64_t(tp) * ep * (ep - 1) / 2);
      EXPECT_EQ(member_sum(g.dp_group(), r), int64_t(pc.dp) * dp0 + int64_t(ep) * tp * pc.dp * (pc.dp - 1) / 2);
    }
}

TEST(ProcessGridMpi, EmulatedNodes) {
  const int W = world_size();
  if (W < 2) GTEST_SKIP() << "two emulated nodes need at least 2 ranks";
  ParallelConfig pc;
  pc.dp = W;
  pc.ranks_per_node = W / 2;
  ProcessGrid g(pc);
  EXPECT_EQ(g.num_nodes(), 2);
  EXPECT_EQ(g.ranks_per_node(), W / 2);
  EXPECT_EQ(g.node_index(), g.world_rank() / (W / 2));
  pc.ranks_per_node = 0;  // detect: one machine
  ProcessGrid one(pc);
  EXPECT_EQ(one.num_nodes(), 1);
  EXPECT_EQ(one.ranks_per_node(), W);
}

TEST(ProcessGridMpi, BadGridIsRefusedOnEveryRankWithTheProduct) {
  const int W = world_size();
  ParallelConfig pc;
  pc.dp = W;
  pc.ep = 2;
  try {
    ProcessGrid g(pc);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("parallel.dp * parallel.ep * parallel.tp = " + std::to_string(W) + " * 2 * 1 = " +
                       std::to_string(2 * W)),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("the job has " + std::to_string(W) + (W == 1 ? " rank" : " ranks")), std::string::npos) << msg;
  }
  pc.ep = 1;
  pc.ranks_per_node = 3;
  EXPECT_THROW(ProcessGrid g(pc), ConfigError);
}

}  // namespace
}  // namespace sy::par
