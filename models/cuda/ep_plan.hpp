// The expert-parallel exchange of the GPU MoE layer, planned on the host (plain
// C++, tested on the CPU: tests/models/cuda/EpPlanTest.cpp).
//
// W ranks, E = W * El experts, rank p owns experts [p El, (p + 1) El) whole.
// Each rank's packed dispatch buffer is expert-major over all E experts
// (core/cuda/ops/dispatch.hpp), so the rows for owner p are one contiguous
// block: experts p El .. (p + 1) El - 1. The owner receives peer-major: the
// block from peer q, itself expert-major over the owner's El experts, with
// recv_counts[q, j] rows for local expert j (the counts exchanged first).
//
// Pipelining over d chunks (DESIGN section 4): the block between a sender
// and an owner, n rows, is cut into d chunks at rows n c / d, the same cut on
// both sides (both know n). Chunk c's exchange overlaps the experts of chunk
// c - 1 and the return of chunk c - 2. A chunk may cross expert boundaries:
// its rows for local expert j are the intersection of the chunk with expert
// j's rows in that block (chunk_ex_*), which is what the grouped GEMM of the
// chunk takes. The return exchange is the same plan with sides swapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sy::moe {

struct EpPlan {
  int ranks = 1;          // W
  int local_experts = 1;  // El
  int chunks = 1;         // d
  // Sender side, rows of the packed buffer.
  std::vector<int64_t> send_rows, send_displs;  // (W) block to owner p
  // Owner side, rows of the receive buffer (peer-major).
  std::vector<int64_t> recv_counts;             // (W, El) rows from peer q for local expert j
  std::vector<int64_t> recv_rows, recv_displs;  // (W) block from peer q
  int64_t recv_total = 0;
  // Chunk c (of d) of each block, absolute rows: (d, W) each.
  std::vector<int64_t> chunk_send_displs, chunk_send_rows;
  std::vector<int64_t> chunk_recv_displs, chunk_recv_rows;
  // Rows of chunk c from peer q for local expert j, absolute in the receive
  // buffer: (d, W, El) each; count 0 where the chunk misses the expert.
  std::vector<int64_t> chunk_ex_offset, chunk_ex_count;

  size_t at(int c, int q) const { return size_t(c) * size_t(ranks) + size_t(q); }
  size_t at(int c, int q, int j) const { return at(c, q) * size_t(local_experts) + size_t(j); }
};

// tokens_per_expert and expert_offset (E) describe this rank's packed buffer;
// recv_counts (W, El) the rows every peer sends to this rank's experts.
// Throws InvalidArgument for inconsistent input (negative counts, offsets
// that are not the expert-major layout, d outside {1, 2, 4, 8}).
EpPlan plan_expert_parallel(int ranks, int local_experts, int chunks, const int64_t* tokens_per_expert,
                            const int64_t* expert_offset, const int64_t* recv_counts);

}  // namespace sy::moe
