// The flow-split planner (parallel/alltoall.hpp): per-path balance, coverage
// of every flow once and in order, at most s - 1 extra sub-flows per leaf, and
// the receiver's view (flowsplit_segments) equal to the sender's plan.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "parallel/alltoall.hpp"

namespace sy::par {
namespace {

// Every property of one plan; returns the number of extra sub-flows.
int check_plan(const std::vector<int64_t>& counts, int s) {
  const int n = static_cast<int>(counts.size());
  SCOPED_TRACE(::testing::Message() << "n = " << n << ", s = " << s);
  const auto plan = plan_flowsplit(counts.data(), n, s);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t(0));

  // Per path: within one element of total / s, and all bytes accounted for.
  std::vector<int64_t> per_path(s, 0);
  for (const auto& f : plan) {
    EXPECT_GE(f.path, 0);
    EXPECT_LT(f.path, s);
    EXPECT_GT(f.count, 0) << "empty sub-flow";
    per_path[f.path] += f.count;
  }
  for (int k = 0; k < s; ++k) {
    EXPECT_LT(std::abs(double(per_path[k]) - double(total) / s), 1.0) << "path " << k << " carries " << per_path[k]
                                                                      << " of " << total;
    EXPECT_EQ(per_path[k], flowsplit_boundary(total, s, k + 1) - flowsplit_boundary(total, s, k));
  }
  EXPECT_EQ(std::accumulate(per_path.begin(), per_path.end(), int64_t(0)), total);

  // Coverage: flows in order, each flow's sub-flows contiguous from offset 0 to
  // its count, paths non-decreasing (paths fill in order).
  size_t at = 0;
  int last_path = 0, nonzero = 0;
  int64_t prefix = 0;
  for (int i = 0; i < n; ++i) {
    int64_t covered = 0;
    std::vector<SubFlow> mine;
    while (at < plan.size() && plan[at].dest == i) {
      EXPECT_EQ(plan[at].offset, covered) << "flow " << i << " has a gap or overlap";
      EXPECT_GE(plan[at].path, last_path) << "paths out of order";
      last_path = plan[at].path;
      covered += plan[at].count;
      mine.push_back(plan[at++]);
    }
    EXPECT_EQ(covered, counts[i]) << "flow " << i << " not covered exactly once";
    if (counts[i] > 0) ++nonzero;
    // The receiver's view of this flow equals the sender's plan.
    std::vector<SubFlow> seen;
    flowsplit_segments(i, prefix, counts[i], total, s, seen);
    EXPECT_EQ(seen.size(), mine.size()) << "flow " << i;
    for (size_t j = 0; j < std::min(seen.size(), mine.size()); ++j) {
      EXPECT_EQ(seen[j].offset, mine[j].offset);
      EXPECT_EQ(seen[j].count, mine[j].count);
      EXPECT_EQ(seen[j].path, mine[j].path);
      EXPECT_EQ(seen[j].dest, i);
    }
    prefix += counts[i];
  }
  EXPECT_EQ(at, plan.size()) << "sub-flows out of destination order";
  const int extra = static_cast<int>(plan.size()) - nonzero;
  EXPECT_LE(extra, s - 1) << "more than s - 1 extra sub-flows";
  EXPECT_GE(extra, 0);
  return extra;
}

TEST(FlowSplit, WorkedExample) {
  // 16 elements over 4 paths, 4 each: flow 0 spans paths 0 and 1, flow 2 is
  // empty, flow 3 spans paths 2 and 3.
  const std::vector<int64_t> counts = {5, 3, 0, 8};
  const auto plan = plan_flowsplit(counts.data(), 4, 4);
  const std::vector<SubFlow> want = {{0, 0, 4, 0}, {0, 4, 1, 1}, {1, 0, 3, 1}, {3, 0, 4, 2}, {3, 4, 4, 3}};
  ASSERT_EQ(plan.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(plan[i].dest, want[i].dest) << i;
    EXPECT_EQ(plan[i].offset, want[i].offset) << i;
    EXPECT_EQ(plan[i].count, want[i].count) << i;
    EXPECT_EQ(plan[i].path, want[i].path) << i;
  }
  EXPECT_EQ(check_plan(counts, 4), 2);
}

TEST(FlowSplit, RandomUnequalSizesIncludingZeros) {
  std::mt19937_64 rng(20261123);
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 17), s = 1 + static_cast<int>(rng() % 9);
    std::vector<int64_t> counts(n);
    const int64_t scale = (trial % 3 == 0) ? 5 : 100000;  // tiny flows: total < s happens
    for (auto& c : counts) c = (rng() % 4 == 0) ? 0 : static_cast<int64_t>(rng() % scale);
    check_plan(counts, s);
  }
}

TEST(FlowSplit, EdgeCases) {
  check_plan({}, 3);                  // no ranks in the leaf
  check_plan({0, 0, 0}, 4);           // nothing to send
  check_plan({7}, 4);                 // one flow over four paths: split 3 times
  EXPECT_EQ(check_plan({7}, 4), 3);
  check_plan({1, 0, 1}, 4);           // fewer elements than paths: some paths carry nothing
  check_plan({3, 3}, 5);              // n < s
  check_plan({10, 10, 10, 10, 10}, 3);  // n mod s != 0
  check_plan({100, 1, 1, 1}, 2);      // one large flow
  EXPECT_EQ(check_plan({4, 4, 4, 4}, 1), 0);  // one path: nothing split
}

// Equal flows: every path carries n f / s, as under DESIGN.md section 5's rule
// (whole flows round-robin, the n mod s leftovers split in s / g), with no
// more extra sub-flows than that rule's q (s / g - 1).
TEST(FlowSplit, EqualSizesMatchTheDesignRule) {
  for (int n = 1; n <= 12; ++n)
    for (int s = 1; s <= 8; ++s) {
      const int64_t f = 4 * s;  // s divides n f: no rounding
      const std::vector<int64_t> counts(n, f);
      const auto plan = plan_flowsplit(counts.data(), n, s);
      std::vector<int64_t> per_path(s, 0);
      for (const auto& sf : plan) per_path[sf.path] += sf.count;
      for (int k = 0; k < s; ++k) EXPECT_EQ(per_path[k], n * f / s) << "n = " << n << ", s = " << s << ", path " << k;
      const int extra = check_plan(counts, s);
      const int q = n % s, g = std::gcd(q, s);
      const int design_extra = q == 0 ? 0 : q * (s / g - 1);
      EXPECT_LE(extra, design_extra) << "n = " << n << ", s = " << s;
      EXPECT_EQ(extra, s - std::gcd(n, s)) << "n = " << n << ", s = " << s;
    }
}

TEST(FlowSplit, BoundariesAreFloorOfKTotalOverS) {
  for (int64_t total : {int64_t(0), int64_t(1), int64_t(7), int64_t(1) << 40, (int64_t(1) << 62) + 3})
    for (int s = 1; s <= 7; ++s) {
      EXPECT_EQ(flowsplit_boundary(total, s, 0), 0);
      EXPECT_EQ(flowsplit_boundary(total, s, s), total);
      for (int k = 0; k < s; ++k) {
        const int64_t width = flowsplit_boundary(total, s, k + 1) - flowsplit_boundary(total, s, k);
        EXPECT_TRUE(width == total / s || width == total / s + 1) << total << " " << s << " " << k;
      }
    }
}

}  // namespace
}  // namespace sy::par
