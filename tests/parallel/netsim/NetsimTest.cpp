// Routing (parallel/netsim/netsim.hpp): flow-split against spraying link by
// link, ECMP and mp-K never beating spray, the unequal-size split to within one
// byte, and the per-leaf-pair aggregation of the fluid model.
#include "parallel/netsim/netsim.hpp"

#include <gtest/gtest.h>

#include "tests/parallel/netsim/netsim_test_support.hpp"

namespace sy::net {
namespace {

using namespace testing_support;

// ---- 1. flow-split equals spray link by link for uniform all-to-all --------

TEST(NetsimFlowSplit, EqualsSprayOnEveryFabricLinkForUniformAllToAll) {
  // Every flow carries f bytes, divisible by every s/g up to 8 (lcm(1..8) = 840):
  // flow-split's pieces and spray's shares f/s are whole bytes.
  constexpr int64_t f = 840 * 8;
  int shapes = 0;
  for (const int leaves : {2, 3, 4})
    for (const int n : {1, 2, 3, 4, 5, 6, 8})
      for (const int s : {1, 2, 3, 4, 5, 8}) {
        SCOPED_TRACE(::testing::Message() << leaves << " leaves x " << n << " hosts, " << s << " spines");
        const Topology topo(leafspine(leaves, n, s), {});
        const int N = topo.hosts();
        const Phase phase = alltoall(N, f * N);
        const PhaseRoute sp = route(topo, phase, kSpray);
        const PhaseRoute fsr = route(topo, phase, kFlowSplit);
        ASSERT_EQ(sp.load.size(), size_t(topo.num_links()));
        ASSERT_EQ(fsr.load.size(), size_t(topo.num_links()));
        // Each uplink and downlink: (leaves - 1) leaf pairs of n senders x n flows, over s paths.
        const double per_fabric_link = double((leaves - 1) * n * n * f / s);
        ASSERT_EQ((leaves - 1) * n * n * f % s, 0);
        int fabric = 0;
        for (int l = 0; l < topo.num_links(); ++l) {
          if (topo.is_fabric(l)) {
            ++fabric;
            EXPECT_EQ(fsr.load[l], sp.load[l]) << topo.link_name(l);
            EXPECT_EQ(fsr.load[l], per_fabric_link) << topo.link_name(l);
          } else {
            EXPECT_EQ(fsr.load[l], double((N - 1) * f)) << topo.link_name(l);
            EXPECT_EQ(sp.load[l], double((N - 1) * f)) << topo.link_name(l);
          }
        }
        EXPECT_EQ(fabric, 2 * leaves * s);
        EXPECT_EQ(fsr.max_time, sp.max_time);
        EXPECT_GT(sp.ideal_time, 0.0);
        EXPECT_NEAR(sp.max_time / sp.ideal_time, 1.0, 1e-12);
        EXPECT_NEAR(fsr.max_time / fsr.ideal_time, 1.0, 1e-12);
        EXPECT_EQ(sp.ideal_time, fsr.ideal_time);
        EXPECT_EQ(sp.fabric_bytes, double(N * n * (leaves - 1) * f));
        // Counts: every flow once; flow-split cuts the last q = n mod s flows to
        // each other leaf into s / g pieces (DESIGN.md section 5).
        const int64_t flows = int64_t(N) * (N - 1);
        EXPECT_EQ(sp.flows, flows);
        EXPECT_EQ(sp.subflows, flows);
        EXPECT_EQ(fsr.flows, flows);
        const int q = n % s, g = std::gcd(q, s);
        const int64_t extra = q == 0 ? 0 : int64_t(N) * (leaves - 1) * q * (s / g - 1);
        EXPECT_EQ(fsr.subflows, flows + extra);
        EXPECT_EQ(sp.max_links, 4);
        ++shapes;
      }
  EXPECT_EQ(shapes, 3 * 7 * 6);
}

TEST(NetsimFlowSplit, EqualsSprayOnEveryFabricLinkOfAFatTree) {
  constexpr int64_t f = 840 * 8;
  // Spines x cores a power of two: spray's merged shares are exact.
  for (const auto& [pods, leaves, n, s, c] : std::vector<std::array<int, 5>>{
           {2, 2, 3, 2, 2}, {2, 2, 5, 4, 2}, {3, 2, 2, 2, 4}, {2, 3, 6, 4, 1}, {4, 2, 3, 1, 8}}) {
    SCOPED_TRACE(::testing::Message() << pods << " pods x " << leaves << " leaves x " << n << " hosts, " << s
                                      << " spines x " << c << " cores");
    const Topology topo(fattree(pods, leaves, n, s, c), {});
    const int N = topo.hosts();
    const Phase phase = alltoall(N, f * N);
    const PhaseRoute sp = route(topo, phase, kSpray);
    const PhaseRoute fsr = route(topo, phase, kFlowSplit);
    for (int l = 0; l < topo.num_links(); ++l) {
      EXPECT_EQ(fsr.load[l], sp.load[l]) << topo.link_name(l);
      if (topo.is_fabric(l)) {
EXPECT_GT(sp.load[l], 0.0) << topo.link_name(l);
}
    }
    EXPECT_EQ(fsr.max_time, sp.max_time);
    EXPECT_NEAR(sp.max_time / sp.ideal_time, 1.0, 1e-12);
    EXPECT_NEAR(fsr.max_time / fsr.ideal_time, 1.0, 1e-12);
    EXPECT_EQ(sp.max_links, 6);
  }
}

// ---- 2. ECMP and mp-K never beat spray ---------------------------------------

TEST(NetsimPolicies, EcmpAndMultipathNeverBeatSpray) {
  const std::vector<TopologyConfig> shapes = {leafspine(4, 4, 4), leafspine(3, 5, 3), leafspine(4, 3, 8),
                                              leafspine(2, 6, 5), fattree(2, 2, 2, 2, 2), fattree(3, 2, 3, 2, 3)};
  int strictly_worse = 0, cases = 0;
  for (const auto& config : shapes) {
    const Topology topo(config, {});
    const int N = topo.hosts();
    for (uint64_t seed = 1; seed <= 12; ++seed) {
      WorkloadConfig ring_cfg;
      ring_cfg.ring_order = RingOrder::Random;
      ring_cfg.seed = seed;
      std::vector<Phase> phases = {alltoall(N, int64_t(N) * 1000 + int64_t(seed)), random_alltoall(N, seed)};
      for (auto& ph : workload_phases(WorkloadKind::Ring, N, 1 << 20, ring_cfg, nullptr)) phases.push_back(ph);
      for (auto& ph : workload_phases(WorkloadKind::HalvingDoubling, N, 1 << 20, ring_cfg, nullptr))
        phases.push_back(ph);
      for (const auto& phase : phases) {
        SCOPED_TRACE(::testing::Message() << topo.describe() << ", " << phase.name << ", seed " << seed);
        const PhaseRoute sp = route(topo, phase, kSpray, seed);
        if (sp.fabric_bytes == 0.0) continue;
        // Spraying balances every link class: it meets the lower bound.
        EXPECT_NEAR(sp.max_time / sp.ideal_time, 1.0, 1e-9);
        for (const Policy& p : {kEcmp, mp(2), mp(4), kFlowSplit}) {
          const PhaseRoute r = route(topo, phase, p, seed);
          EXPECT_GE(r.max_time, sp.max_time * (1.0 - 1e-12)) << to_string(p);
          EXPECT_GE(r.max_time, r.ideal_time * (1.0 - 1e-12)) << to_string(p);
          EXPECT_EQ(r.ideal_time, sp.ideal_time) << to_string(p);
          EXPECT_EQ(r.fabric_bytes, sp.fabric_bytes) << to_string(p);
          if (p == kEcmp) {
            ++cases;
            if (r.max_time > sp.max_time * (1.0 + 1e-9)) ++strictly_worse;
          }
        }
      }
    }
  }
  // The hash is not degenerate: ECMP collides somewhere.
  EXPECT_GT(strictly_worse, cases / 2) << strictly_worse << " of " << cases;
}

TEST(NetsimPolicies, EcmpSeedChangesThePaths) {
  const Topology topo(leafspine(4, 4, 4), {});
  const Phase phase = alltoall(16, 16 * 1000);
  const PhaseRoute a = route(topo, phase, kEcmp, 1), a2 = route(topo, phase, kEcmp, 1), b = route(topo, phase, kEcmp, 2);
  EXPECT_EQ(a.load, a2.load);
  EXPECT_NE(a.load, b.load);
  // mp-K: K pieces per crossing flow, near-equal.
  const PhaseRoute m = route(topo, phase, mp(3), 1);
  const int64_t crossing = 16 * 12, local = 16 * 3;
  EXPECT_EQ(m.flows, crossing + local);
  EXPECT_EQ(m.subflows, 3 * crossing + local);
}

// ---- 3. unequal flows: every path to within one byte ------------------------

// One sender per leaf sends random unequal flows to every host of the next leaf:
// each uplink of a leaf and each downlink into a leaf carries one sender's split.
void check_unequal_split(const TopologyConfig& config, const std::string& failures, uint64_t seed) {
  const Topology topo(config, named_failures(failures));
  const int L = topo.leaves(), n = topo.hosts_per_leaf(), S = config.spines;
  SCOPED_TRACE(::testing::Message() << topo.describe() << ", failed '" << failures << "', seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> size(1, 1000003);
  std::map<int, std::vector<Flow>> flows;
  std::vector<int64_t> sent(L, 0);
  std::vector<std::vector<int64_t>> counts(L);
  for (int a = 0; a < L; ++a) {
    const int src = a * n + a % n, b = (a + 1) % L;
    for (int i = 0; i < n; ++i) {
      counts[a].push_back(size(rng));
      flows[src].push_back({b * n + i, counts[a].back()});
      sent[a] += counts[a].back();
    }
    ASSERT_FALSE(std::all_of(counts[a].begin(), counts[a].end(), [&](int64_t c) { return c == counts[a][0]; }));
  }
  const Phase phase = custom_phase(flows);
  const PhaseRoute r = route(topo, phase, kFlowSplit);
  std::vector<Path> paths;
  int64_t subflows = 0;
  for (int a = 0; a < L; ++a) {
    const int b = (a + 1) % L;
    topo.paths(a, b, paths);
    const int p = static_cast<int>(paths.size());
    ASSERT_GT(p, 0);
    subflows += static_cast<int64_t>(par::plan_flowsplit(counts[a].data(), n, p).size());
    // The uplinks of leaf a and the downlinks into leaf b on the surviving paths:
    // between them, the shares [boundary(k), boundary(k + 1)) of the sender's bytes
    // (which path takes which share is the router's choice: it rotates them per sender).
    std::vector<double> up, down, want;
    for (int k = 0; k < p; ++k) {
      const int u = paths[k].links[0], d = paths[k].links[1];
      EXPECT_EQ(topo.link_class(u), LinkClass::LeafUp);
      EXPECT_EQ(topo.link_class(d), LinkClass::SpineDown);
      EXPECT_EQ(r.load[u], r.load[d]) << topo.link_name(u) << " and " << topo.link_name(d);
      up.push_back(r.load[u]);
      down.push_back(r.load[d]);
      want.push_back(double(par::flowsplit_boundary(sent[a], p, k + 1) - par::flowsplit_boundary(sent[a], p, k)));
    }
    std::vector<double> sorted_up = up;
    std::sort(sorted_up.begin(), sorted_up.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(sorted_up, want) << "uplinks of leaf " << a;
    EXPECT_LE(*std::max_element(up.begin(), up.end()) - *std::min_element(up.begin(), up.end()), 1.0)
        << "uplinks of leaf " << a;
    EXPECT_LE(*std::max_element(down.begin(), down.end()) - *std::min_element(down.begin(), down.end()), 1.0)
        << "downlinks into leaf " << b;
    EXPECT_EQ(std::accumulate(up.begin(), up.end(), 0.0), double(sent[a]));
    // Links off the surviving paths carry nothing.
    for (int j = 0; j < S; ++j) {
      const int u = leaf_up_link(topo, S, a, j);
      const bool used = std::any_of(paths.begin(), paths.end(), [&](const Path& pa) { return pa.links[0] == u; });
      if (!used) {
EXPECT_EQ(r.load[u], 0.0) << topo.link_name(u);
}
    }
  }
  EXPECT_EQ(r.subflows, subflows);
  EXPECT_LE(r.subflows, int64_t(L) * (n + S - 1));
}

TEST(NetsimFlowSplit, UnequalFlowsBalanceEveryUplinkToOneByte) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    check_unequal_split(leafspine(4, 5, 3), "", seed);
    check_unequal_split(leafspine(3, 7, 4), "", seed);
    check_unequal_split(leafspine(5, 3, 8), "", seed);
    check_unequal_split(leafspine(4, 5, 3), "leaf1-spine2", seed);
    check_unequal_split(leafspine(3, 7, 4), "leaf0-spine1, leaf2-spine3", seed);
  }
}


// ---- 9. aggregation -------------------------------------------------------------------

TEST(NetsimAggregation, PerLeafPairMatchesExactForUniformAllToAll) {
  const Topology topo(leafspine(4, 4, 4), {});
  const Phase phase = alltoall(16, 16 * 65536);
  EXPECT_EQ(choose_aggregation(topo, phase, Aggregation::Auto), Aggregation::None);
  EXPECT_EQ(choose_aggregation(topo, phase, Aggregation::Leaf), Aggregation::Leaf);
  for (const Policy& p : {kSpray, kEcmp, mp(4), kFlowSplit}) {
    const PhaseRoute exact = route(topo, phase, p, 1, true, Aggregation::None);
    const PhaseRoute leaf = route(topo, phase, p, 1, true, Aggregation::Leaf);
    EXPECT_EQ(exact.aggregate, Aggregation::None);
    EXPECT_EQ(leaf.aggregate, Aggregation::Leaf);
    EXPECT_EQ(exact.load, leaf.load) << to_string(p);
    EXPECT_LT(leaf.fluid[0].classes(), exact.fluid[0].classes()) << to_string(p);
    const double te = exact.fluid[0].completion_time(), tl = leaf.fluid[0].completion_time();
    EXPECT_NEAR(tl / te, 1.0, 0.01) << to_string(p) << ": exact " << te << " s, per leaf pair " << tl << " s";
    std::cout << "[ measured ] " << to_string(p) << ": exact " << te * 1e3 << " ms, per leaf pair " << tl * 1e3
              << " ms, ratio " << tl / te << "\n";
  }
}

// auto pools a leaf's host links only for a large phase whose hosts all carry
// equal bytes; an incast or unequal flows keep the exact model at any size.
TEST(NetsimAggregation, AutoPoolsOnlyLargeBalancedPhases) {
  const Topology topo(leafspine(32, 32, 32), {});  // 1024 hosts: an all-to-all far past the exact budget
  EXPECT_EQ(choose_aggregation(topo, alltoall(1024, 1024 * 64), Aggregation::Auto), Aggregation::Leaf);
  EXPECT_EQ(choose_aggregation(topo, random_alltoall(1024, 3), Aggregation::Auto), Aggregation::None);
  // One host receives a little more than its leaf's other hosts.
  Phase skewed = alltoall(1024, 1024 * 64);
  skewed.flows_from = [base = skewed.flows_from](int src, std::vector<Flow>& out) {
    const size_t first = out.size();
    base(src, out);
    for (size_t i = first; i < out.size(); ++i)
      if (out[i].dst == 5) out[i].bytes += 2;
  };
  EXPECT_EQ(choose_aggregation(topo, skewed, Aggregation::Auto), Aggregation::None);
  EXPECT_EQ(choose_aggregation(topo, skewed, Aggregation::Leaf), Aggregation::Leaf) << "an explicit choice stands";
}

// The pooled classes key on (path, bytes) whole: flows of 2^44 bytes and more
// keep their size (a packed 44-bit key once wrapped them to a few bytes).
TEST(NetsimAggregation, HugeFlowsKeepTheirSizeWhenPooled) {
  const Topology topo(leafspine(2, 2, 2), {});
  const int64_t big = (int64_t(1) << 45) + 3;
  const Phase phase = custom_phase({{0, {{2, big}, {3, big / 2}}}, {1, {{2, big / 3}}}});
  for (const Policy& p : {kSpray, kEcmp, kFlowSplit}) {
    const double exact = route(topo, phase, p, 1, true, Aggregation::None).fluid[0].completion_time();
    const double pooled = route(topo, phase, p, 1, true, Aggregation::Leaf).fluid[0].completion_time();
    EXPECT_GT(exact, double(big) / kHostRate) << to_string(p);
    EXPECT_GE(pooled, double(big) / (2 * kHostRate)) << to_string(p) << ": a pooled host link carries at most 2 links' rate";
  }
}

}  // namespace
}  // namespace sy::net
