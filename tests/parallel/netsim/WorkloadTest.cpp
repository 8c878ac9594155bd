// The collectives as phases of flows and the routing trace reader
// (parallel/netsim/workload.hpp).
#include "parallel/netsim/workload.hpp"

#include <gtest/gtest.h>

#include "tests/parallel/netsim/netsim_test_support.hpp"

namespace sy::net {
namespace {

using namespace testing_support;

TEST(NetsimWorkload, AllToAllHasEveryOrderedPair) {
  for (const int N : {2, 5, 12}) {
    const Phase p = alltoall(N, int64_t(N) * 7 + N - 1);
    EXPECT_EQ(count_flows(p, N), int64_t(N) * (N - 1));
    EXPECT_EQ(p.repeat, 1);
    std::vector<Flow> out;
    p.flows_from(1, out);
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(out[i].bytes, 7);  // floor(M / N), M = 8 N - 1
      EXPECT_NE(out[i].dst, 1);
      if (i > 0) {
        EXPECT_LT(out[i - 1].dst, out[i].dst);
      }
    }
    const Topology topo(leafspine(N, 1, 2), {});
    EXPECT_EQ(route(topo, p, kEcmp).flows, int64_t(N) * (N - 1));
  }
  for (auto kind : {WorkloadKind::AllToAll, WorkloadKind::Ring, WorkloadKind::HalvingDoubling})
    expect_config_error([&] { workload_phases(kind, 8, 7, WorkloadConfig{}, nullptr); },
                        {"less than one byte per host", to_string(kind)});
}

TEST(NetsimWorkload, RingInTopologyOrder) {
  const int N = 6;
  const auto phases = workload_phases(WorkloadKind::Ring, N, 1000, WorkloadConfig{}, nullptr);
  ASSERT_EQ(phases.size(), 1u);
  EXPECT_EQ(phases[0].repeat, 2 * (N - 1));
  for (int h = 0; h < N; ++h) {
    std::vector<Flow> out;
    phases[0].flows_from(h, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].dst, (h + 1) % N);
    EXPECT_EQ(out[0].bytes, 167);  // ceil(1000 / 6)
  }
}

TEST(NetsimWorkload, RandomRingIsOneCycleAndSeeded) {
  const int N = 24;
  std::set<std::vector<int>> orders;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    WorkloadConfig c;
    c.ring_order = RingOrder::Random;
    c.seed = seed;
    const auto phases = workload_phases(WorkloadKind::Ring, N, 1 << 20, c, nullptr);
    const auto again = workload_phases(WorkloadKind::Ring, N, 1 << 20, c, nullptr);
    ASSERT_EQ(phases.size(), 1u);
    std::vector<int> next(N, -1);
    for (int h = 0; h < N; ++h) {
      std::vector<Flow> out, out2;
      phases[0].flows_from(h, out);
      again[0].flows_from(h, out2);
      ASSERT_EQ(out.size(), 1u);
      ASSERT_EQ(out2.size(), 1u);
      EXPECT_EQ(out[0].dst, out2[0].dst);
      EXPECT_EQ(out[0].bytes, (int64_t(1 << 20) + N - 1) / N);
      next[h] = out[0].dst;
    }
    // Following next from host 0 visits every host once, back to 0 after N steps.
    std::vector<int> cycle;
    std::vector<bool> seen(N, false);
    int h = 0;
    for (int i = 0; i < N; ++i) {
      ASSERT_FALSE(seen[h]) << "host " << h << " visited twice (seed " << seed << ")";
      seen[h] = true;
      cycle.push_back(h);
      h = next[h];
    }
    EXPECT_EQ(h, 0);
    orders.insert(cycle);
  }
  EXPECT_GT(orders.size(), 1u);
}

TEST(NetsimWorkload, HalvingDoublingPowerOfTwo) {
  const int64_t M = 1 << 20;
  const auto phases = workload_phases(WorkloadKind::HalvingDoubling, 8, M, WorkloadConfig{}, nullptr);
  ASSERT_EQ(phases.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const int dist = 1 << i;
    EXPECT_EQ(phases[i].repeat, 2);
    for (int h = 0; h < 8; ++h) {
      std::vector<Flow> out;
      phases[i].flows_from(h, out);
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0].dst, h ^ dist);
      EXPECT_EQ(out[0].bytes, M >> (i + 1));
    }
  }
}

TEST(NetsimWorkload, HalvingDoublingFoldsExtraHosts) {
  const int64_t M = 1000;
  const auto phases = workload_phases(WorkloadKind::HalvingDoubling, 6, M, WorkloadConfig{}, nullptr);
  ASSERT_EQ(phases.size(), 4u);  // fold in, distance 1, distance 2, fold out
  const auto flows = [](const Phase& p, int h) {
    std::vector<Flow> out;
    p.flows_from(h, out);
    return out;
  };
  EXPECT_EQ(phases[0].repeat, 1);
  EXPECT_EQ(phases[3].repeat, 1);
  for (int h = 0; h < 6; ++h) {
    const auto in = flows(phases[0], h), out = flows(phases[3], h);
    if (h >= 4) {
      ASSERT_EQ(in.size(), 1u);
      EXPECT_EQ(in[0].dst, h - 4);
      EXPECT_EQ(in[0].bytes, M);
      EXPECT_TRUE(out.empty());
    } else if (h < 2) {
      EXPECT_TRUE(in.empty());
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0].dst, h + 4);
      EXPECT_EQ(out[0].bytes, M);
    } else {
      EXPECT_TRUE(in.empty());
      EXPECT_TRUE(out.empty());
    }
    for (int i = 1; i <= 2; ++i) {
      const auto x = flows(phases[i], h);
      EXPECT_EQ(phases[i].repeat, 2);
      if (h >= 4) {
        EXPECT_TRUE(x.empty());
      } else {
        ASSERT_EQ(x.size(), 1u);
        EXPECT_EQ(x[0].dst, h ^ i);
        EXPECT_EQ(x[0].bytes, M >> i);
      }
    }
  }
}

TEST(NetsimWorkload, MoeFromATraceFile) {
  const int64_t t0[] = {1, 2, 3, 4, 4, 3, 2, 1};  // 2 ranks x 4 experts
  const int64_t t1[] = {0, 0, 5, 5, 10, 0, 0, 0};
  const std::string path =
      write_file("trace.txt", routing_trace_header(2, 4) + "# a comment\n\n" + routing_trace_block(3, 1, t0, 2, 4) +
                                  routing_trace_block(3, 2, t1, 2, 4));
  const RoutingTrace trace = read_routing_trace(path);
  EXPECT_EQ(trace.ranks, 2);
  EXPECT_EQ(trace.experts, 4);
  ASSERT_EQ(trace.blocks.size(), 2u);
  EXPECT_EQ(trace.labels[0], "step 3 layer 1");
  EXPECT_EQ(trace.labels[1], "step 3 layer 2");
  EXPECT_EQ(trace.blocks[0], std::vector<int64_t>(t0, t0 + 8));
  EXPECT_EQ(trace.blocks[1], std::vector<int64_t>(t1, t1 + 8));

  const auto flows = [](const Phase& p, int h) {
    std::vector<Flow> out;
    p.flows_from(h, out);
    std::vector<std::pair<int, int64_t>> v;
    for (const auto& f : out) v.emplace_back(f.dst, f.bytes);
    return v;
  };
  using V = std::vector<std::pair<int, int64_t>>;
  {
    // 4 hosts, 4 experts: expert e on host e. Tokens over hosts and blocks:
    // 4 x 10 + 2 x (10 + 10) = 80; M = 1000 per host and block: 100 bytes a token.
    const auto phases = workload_phases(WorkloadKind::MoeDispatch, 4, 1000, WorkloadConfig{}, &trace);
    ASSERT_EQ(phases.size(), 2u);
    EXPECT_EQ(phases[0].name, "moe dispatch step 3 layer 1");
    EXPECT_EQ(flows(phases[0], 0), (V{{1, 200}, {2, 300}, {3, 400}}));
    EXPECT_EQ(flows(phases[0], 1), (V{{0, 400}, {2, 200}, {3, 100}}));
    EXPECT_EQ(flows(phases[0], 2), (V{{0, 100}, {1, 200}, {3, 400}}));
    EXPECT_EQ(flows(phases[0], 3), (V{{0, 400}, {1, 300}, {2, 200}}));
    EXPECT_EQ(flows(phases[1], 0), (V{{2, 500}, {3, 500}}));
    EXPECT_EQ(flows(phases[1], 1), (V{{0, 1000}}));
    EXPECT_EQ(flows(phases[1], 2), (V{{3, 500}}));  // row 0; its tokens to expert 2 stay home
    EXPECT_EQ(flows(phases[1], 3), (V{{0, 1000}}));
  }
  {
    // 2 hosts, 4 experts: experts 0, 1 on host 0 and 2, 3 on host 1; one flow per destination.
    const auto phases = workload_phases(WorkloadKind::MoeDispatch, 2, 1000, WorkloadConfig{}, &trace);
    // Tokens: 2 x 10 + 10 + 10 = 40 over 2 hosts x 2 blocks x 1000 bytes: 100 a token.
    EXPECT_EQ(flows(phases[0], 0), (V{{1, 700}}));
    EXPECT_EQ(flows(phases[0], 1), (V{{0, 700}}));
    EXPECT_EQ(flows(phases[1], 1), (V{{0, 1000}}));
  }
  {
    // 8 hosts, 4 experts: 2 replicas, expert e on hosts 2e and 2e + 1, host h to replica h mod 2.
    const auto phases = workload_phases(WorkloadKind::MoeDispatch, 8, 1000, WorkloadConfig{}, &trace);
    // Tokens: 8 x 10 + 4 x 20 = 160 over 8 x 2 x 1000 bytes: 100 a token.
    EXPECT_EQ(flows(phases[0], 5), (V{{1, 400}, {3, 300}, {7, 100}}));  // row 1; expert 2's replica is host 5 itself
    EXPECT_EQ(flows(phases[0], 4), (V{{0, 100}, {2, 200}, {6, 400}}));  // row 0; expert 2 on host 4 itself
  }
  expect_config_error([&] { workload_phases(WorkloadKind::MoeDispatch, 6, 1000, WorkloadConfig{}, &trace); },
                      {"4 experts", "6 hosts", "one must divide the other"});
  expect_config_error([&] { workload_phases(WorkloadKind::MoeDispatch, 4, 1000, WorkloadConfig{}, nullptr); },
                      {"workload.trace"});
  const int64_t zeros[8] = {};
  const RoutingTrace empty = read_routing_trace(
      write_file("zeros.txt", routing_trace_header(2, 4) + routing_trace_block(0, 0, zeros, 2, 4)));
  expect_config_error([&] { workload_phases(WorkloadKind::MoeDispatch, 4, 1000, WorkloadConfig{}, &empty); },
                      {"no tokens"});
}

TEST(NetsimWorkload, MalformedTracesNameTheLine) {
  const auto bad = [](const std::string& name, const std::string& text, const std::vector<std::string>& parts) {
    const std::string path = write_file(name, text);
    std::vector<std::string> all = {path};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_config_error([&] { read_routing_trace(path); }, all);
  };
  bad("header.txt", "# c\nranks 2 expert 4\nstep 0 layer 0\n1 2 3 4\n1 2 3 4\n", {"line 2:", "ranks R experts E"});
  bad("zero.txt", "ranks 0 experts 4\n", {"line 1:", "R, E >= 1"});
  bad("huge.txt", "ranks 100000 experts 100000\n", {"line 1:", "at most 2^24"});
  bad("empty.txt", "# nothing\n\n", {"empty"});
  bad("short.txt", "ranks 2 experts 4\nstep 0 layer 0\n1 2 3 4\n1 2 3\n", {"line 4:", "expected 4 token counts"});
  bad("negative.txt", "ranks 2 experts 4\nstep 0 layer 0\n1 2 3 4\n\n1 -2 3 4\n", {"line 5:", "token counts >= 0"});
  bad("long.txt", "ranks 1 experts 2\nstep 0 layer 0\n1 2 3\n", {"line 3:", "more than 2 token counts"});
  bad("word.txt", "ranks 1 experts 2\nstep 0 layer 0\n1 x\n", {"line 3:"});
  bad("noblock.txt", "ranks 2 experts 4\n# only a header\n", {"no 'step S layer L' block"});
  bad("notstep.txt", "ranks 1 experts 2\nblock 0\n1 2\n", {"line 2:", "expected 'step S layer L'"});
  bad("truncated.txt", "ranks 3 experts 2\nstep 0 layer 0\n1 2\n3 4\n", {"line 4:", "ends after 2 of 3 rows"});
  bad("truncated2.txt", "ranks 2 experts 2\nstep 0 layer 0\n1 2\n3 4\nstep 1 layer 0\n1 2\n",
      {"line 6:", "'step 1 layer 0' ends after 1 of 2 rows"});
  EXPECT_THROW(read_routing_trace((temp_dir() / "does-not-exist.txt").string()), IoError);
  // CRLF line ends are fine.
  const RoutingTrace t = read_routing_trace(write_file("crlf.txt", "ranks 1 experts 2\r\nstep 0 layer 0\r\n1 2\r\n"));
  EXPECT_EQ(t.blocks.size(), 1u);
  EXPECT_EQ(t.labels[0], "step 0 layer 0");
}

}  // namespace
}  // namespace sy::net
