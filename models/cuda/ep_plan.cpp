#include "models/cuda/ep_plan.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace sy::moe {

EpPlan plan_expert_parallel(int ranks, int local_experts, int chunks, const int64_t* tokens_per_expert,
                            const int64_t* expert_offset, const int64_t* recv_counts) {
  SY_REQUIRE(ranks >= 1 && local_experts >= 1, "plan_expert_parallel: ranks = " << ranks << ", local experts = "
                                                                                 << local_experts << " must be >= 1");
  SY_REQUIRE(chunks == 1 || chunks == 2 || chunks == 4 || chunks == 8,
             "plan_expert_parallel: pipeline degree " << chunks << " is not one of 1, 2, 4, 8");
  SY_REQUIRE(tokens_per_expert && expert_offset && recv_counts, "plan_expert_parallel: null counts");
  const int W = ranks, El = local_experts, d = chunks;
  const int E = W * El;
  EpPlan plan;
  plan.ranks = W;
  plan.local_experts = El;
  plan.chunks = d;
  int64_t expected = 0;
  for (int e = 0; e < E; ++e) {
    SY_REQUIRE(tokens_per_expert[e] >= 0, "plan_expert_parallel: expert " << e << " has " << tokens_per_expert[e]
                                                                          << " rows");
    SY_REQUIRE(expert_offset[e] == expected, "plan_expert_parallel: expert " << e << " starts at row "
                                                                             << expert_offset[e] << ", expected "
                                                                             << expected << " (expert-major)");
    expected += tokens_per_expert[e];
  }
  plan.send_rows.assign(size_t(W), 0);
  plan.send_displs.assign(size_t(W), 0);
  for (int p = 0; p < W; ++p) {
    plan.send_displs[size_t(p)] = expert_offset[p * El];
    for (int j = 0; j < El; ++j) plan.send_rows[size_t(p)] += tokens_per_expert[p * El + j];
  }
  plan.recv_counts.assign(recv_counts, recv_counts + size_t(W) * size_t(El));
  plan.recv_rows.assign(size_t(W), 0);
  plan.recv_displs.assign(size_t(W), 0);
  for (int q = 0; q < W; ++q) {
    plan.recv_displs[size_t(q)] = plan.recv_total;
    for (int j = 0; j < El; ++j) {
      const int64_t n = recv_counts[size_t(q) * size_t(El) + size_t(j)];
      SY_REQUIRE(n >= 0, "plan_expert_parallel: peer " << q << " sends " << n << " rows for local expert " << j);
      plan.recv_rows[size_t(q)] += n;
    }
    plan.recv_total += plan.recv_rows[size_t(q)];
  }

  const size_t cw = size_t(d) * size_t(W);
  plan.chunk_send_displs.assign(cw, 0);
  plan.chunk_send_rows.assign(cw, 0);
  plan.chunk_recv_displs.assign(cw, 0);
  plan.chunk_recv_rows.assign(cw, 0);
  plan.chunk_ex_offset.assign(cw * size_t(El), 0);
  plan.chunk_ex_count.assign(cw * size_t(El), 0);
  for (int c = 0; c < d; ++c)
    for (int q = 0; q < W; ++q) {
      // The same cut of an n-row block on the sender and on the owner.
      const auto cut = [&](int64_t n, int64_t& begin, int64_t& rows) {
        begin = n * c / d;
        rows = n * (c + 1) / d - begin;
      };
      int64_t b = 0, r = 0;
      cut(plan.send_rows[size_t(q)], b, r);
      plan.chunk_send_displs[plan.at(c, q)] = plan.send_displs[size_t(q)] + b;
      plan.chunk_send_rows[plan.at(c, q)] = r;
      cut(plan.recv_rows[size_t(q)], b, r);
      plan.chunk_recv_displs[plan.at(c, q)] = plan.recv_displs[size_t(q)] + b;
      plan.chunk_recv_rows[plan.at(c, q)] = r;
      // Local expert j holds rows [e0, e1) of the block from q.
      int64_t e0 = 0;
      for (int j = 0; j < El; ++j) {
        const int64_t e1 = e0 + recv_counts[size_t(q) * size_t(El) + size_t(j)];
        const int64_t lo = std::max(e0, b), hi = std::min(e1, b + r);
        if (hi > lo) {
          plan.chunk_ex_offset[plan.at(c, q, j)] = plan.recv_displs[size_t(q)] + lo;
          plan.chunk_ex_count[plan.at(c, q, j)] = hi - lo;
        }
        e0 = e1;
      }
    }
  return plan;
}

}  // namespace sy::moe
