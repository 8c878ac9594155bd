// The expert-parallel exchange plan of the GPU MoE layer, on the CPU: W
// simulated ranks run their plans' chunked exchanges on host buffers, apply a
// per-expert function on the owners chunk by chunk, exchange back, and every
// row must return to its sender transformed by the expert it was routed to.
#include "models/cuda/ep_plan.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/error.hpp"

namespace sy::moe {
namespace {

struct Rank {
  std::vector<int64_t> tokens, offset;  // (E) packed layout
  std::vector<double> packed;           // one value per row: what the row carries
  std::vector<int> row_expert;          // (rows) the expert of each packed row
};

void run_exchange(int W, int El, int d, uint64_t seed) {
  const int E = W * El;
  std::mt19937_64 rng(seed);
  std::vector<Rank> ranks(static_cast<size_t>(W));
  for (int r = 0; r < W; ++r) {
    Rank& k = ranks[size_t(r)];
    k.tokens.resize(size_t(E));
    k.offset.resize(size_t(E));
    int64_t at = 0;
    for (int e = 0; e < E; ++e) {
      k.tokens[size_t(e)] = int64_t(rng() % 7);  // zero counts included
      k.offset[size_t(e)] = at;
      at += k.tokens[size_t(e)];
      for (int64_t i = 0; i < k.tokens[size_t(e)]; ++i) {
        k.packed.push_back(double(r * 1000 + int(k.packed.size())));
        k.row_expert.push_back(e);
      }
    }
  }
  std::vector<EpPlan> plans;
  for (int p = 0; p < W; ++p) {
    std::vector<int64_t> recv(size_t(W) * size_t(El));
    for (int q = 0; q < W; ++q)
      for (int j = 0; j < El; ++j) recv[size_t(q) * size_t(El) + size_t(j)] = ranks[size_t(q)].tokens[size_t(p * El + j)];
    plans.push_back(plan_expert_parallel(W, El, d, ranks[size_t(p)].tokens.data(), ranks[size_t(p)].offset.data(),
                                         recv.data()));
  }
  std::vector<std::vector<double>> owner(static_cast<size_t>(W)), back(static_cast<size_t>(W));
  for (int p = 0; p < W; ++p) {
    owner[size_t(p)].assign(size_t(plans[size_t(p)].recv_total), -1.0);
    back[size_t(p)].assign(ranks[size_t(p)].packed.size(), -1.0);
  }
  std::vector<std::vector<int>> computed(static_cast<size_t>(W));
  for (int p = 0; p < W; ++p) computed[size_t(p)].assign(owner[size_t(p)].size(), 0);
  for (int c = 0; c < d; ++c) {
    // Dispatch chunk c: sender q's chunk to p lands in p's chunk from q.
    for (int q = 0; q < W; ++q)
      for (int p = 0; p < W; ++p) {
        const EpPlan &s = plans[size_t(q)], &o = plans[size_t(p)];
        ASSERT_EQ(s.chunk_send_rows[s.at(c, p)], o.chunk_recv_rows[o.at(c, q)]) << "chunk " << c << " " << q << "->" << p;
        for (int64_t i = 0; i < s.chunk_send_rows[s.at(c, p)]; ++i)
          owner[size_t(p)][size_t(o.chunk_recv_displs[o.at(c, q)] + i)] =
              ranks[size_t(q)].packed[size_t(s.chunk_send_displs[s.at(c, p)] + i)];
      }
    // Experts of chunk c on each owner: local expert j adds (global expert + 1) * 1e6.
    for (int p = 0; p < W; ++p) {
      const EpPlan& o = plans[size_t(p)];
      for (int q = 0; q < W; ++q)
        for (int j = 0; j < El; ++j)
          for (int64_t i = 0; i < o.chunk_ex_count[o.at(c, q, j)]; ++i) {
            const size_t row = size_t(o.chunk_ex_offset[o.at(c, q, j)] + i);
            ASSERT_GE(int64_t(row), o.chunk_recv_displs[o.at(c, q)]);
            ASSERT_LT(int64_t(row), o.chunk_recv_displs[o.at(c, q)] + o.chunk_recv_rows[o.at(c, q)]);
            ASSERT_GE(owner[size_t(p)][row], 0.0) << "computed before it arrived";
            owner[size_t(p)][row] += double(p * El + j + 1) * 1e6;
            ++computed[size_t(p)][row];
          }
    }
    // Return chunk c: the same plan, sides swapped.
    for (int q = 0; q < W; ++q)
      for (int p = 0; p < W; ++p) {
        const EpPlan &s = plans[size_t(q)], &o = plans[size_t(p)];
        for (int64_t i = 0; i < s.chunk_send_rows[s.at(c, p)]; ++i)
          back[size_t(q)][size_t(s.chunk_send_displs[s.at(c, p)] + i)] =
              owner[size_t(p)][size_t(o.chunk_recv_displs[o.at(c, q)] + i)];
      }
  }
  for (int p = 0; p < W; ++p) {
    for (int n : computed[size_t(p)]) ASSERT_EQ(n, 1) << "each received row runs through exactly one expert";
    const Rank& k = ranks[size_t(p)];
    for (size_t i = 0; i < k.packed.size(); ++i)
      ASSERT_EQ(back[size_t(p)][i], k.packed[i] + double(k.row_expert[i] + 1) * 1e6)
          << "rank " << p << " row " << i << " (W " << W << ", El " << El << ", d " << d << ")";
  }
}

TEST(EpPlan, ChunkedExchangeReturnsEveryRowThroughItsExpert) {
  uint64_t seed = 1;
  for (int W : {1, 2, 3, 4})
    for (int El : {1, 2, 3})
      for (int d : {1, 2, 4, 8}) run_exchange(W, El, d, seed++);
}

TEST(EpPlan, BlocksAndChunksCoverTheBuffers) {
  const std::vector<int64_t> tokens = {3, 0, 5, 2}, offset = {0, 3, 3, 8};
  const std::vector<int64_t> recv = {4, 1, 0, 0};  // W = 2, El = 2: from rank 0 (4, 1), from rank 1 (0, 0)
  const EpPlan plan = plan_expert_parallel(2, 2, 4, tokens.data(), offset.data(), recv.data());
  EXPECT_EQ(plan.send_rows, (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(plan.send_displs, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(plan.recv_rows, (std::vector<int64_t>{5, 0}));
  EXPECT_EQ(plan.recv_total, 5);
  int64_t rows = 0;
  for (int c = 0; c < 4; ++c) rows += plan.chunk_send_rows[plan.at(c, 1)];
  EXPECT_EQ(rows, 7);
  // The 5 rows from rank 0 in 4 chunks: cuts at 0, 1, 2, 3, 5; local expert 1 (row 4) is in the last.
  EXPECT_EQ(plan.chunk_ex_count[plan.at(3, 0, 0)], 1);
  EXPECT_EQ(plan.chunk_ex_count[plan.at(3, 0, 1)], 1);
  EXPECT_EQ(plan.chunk_ex_offset[plan.at(3, 0, 1)], 4);
  EXPECT_EQ(plan.chunk_ex_count[plan.at(0, 0, 1)], 0);
}

TEST(EpPlan, RefusesInconsistentInput) {
  const std::vector<int64_t> tokens = {1, 2}, offset = {0, 1}, recv = {1, 2};
  EXPECT_THROW(plan_expert_parallel(1, 2, 3, tokens.data(), offset.data(), recv.data()), InvalidArgument);
  const std::vector<int64_t> gap = {0, 2};
  EXPECT_THROW(plan_expert_parallel(1, 2, 1, tokens.data(), gap.data(), recv.data()), InvalidArgument);
  const std::vector<int64_t> negative = {1, -2};
  EXPECT_THROW(plan_expert_parallel(1, 2, 1, tokens.data(), offset.data(), negative.data()), InvalidArgument);
}

}  // namespace
}  // namespace sy::moe
