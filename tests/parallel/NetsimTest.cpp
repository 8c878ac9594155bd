// The flow-level network simulator (parallel/netsim/): flow-split against
// spraying link by link, ECMP never beating spray, the unequal-size split to
// within one byte, hand-computed fluid completion times, link failures, the
// workloads, the config, the command line, and the per-leaf aggregation.
#include "parallel/netsim/netsim.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "parallel/alltoall.hpp"
#include "parallel/netsim/fluid.hpp"
#include "parallel/netsim/netsim_config.hpp"
#include "parallel/netsim/topology.hpp"
#include "parallel/netsim/workload.hpp"
#include "tests/support/test_support.hpp"

namespace sy::net {
namespace {

namespace fs = std::filesystem;

constexpr Policy kSpray{PolicyKind::Spray, 1};
constexpr Policy kEcmp{PolicyKind::Ecmp, 1};
constexpr Policy kFlowSplit{PolicyKind::FlowSplit, 1};
constexpr Policy mp(int k) { return Policy{PolicyKind::MultiPath, k}; }

// link_gbps = 8: host links carry exactly 1e9 bytes per second.
constexpr double kHostRate = 1e9;

TopologyConfig leafspine(int leaves, int hosts_per_leaf, int spines, double oversubscription = 1.0) {
  TopologyConfig c;
  c.kind = TopologyKind::LeafSpine;
  c.leaves = leaves;
  c.hosts_per_leaf = hosts_per_leaf;
  c.spines = spines;
  c.link_gbps = 8.0;
  c.oversubscription = oversubscription;
  return c;
}

TopologyConfig fattree(int pods, int leaves, int hosts_per_leaf, int spines, int cores) {
  TopologyConfig c;
  c.kind = TopologyKind::FatTree;
  c.pods = pods;
  c.leaves = leaves;
  c.hosts_per_leaf = hosts_per_leaf;
  c.spines = spines;
  c.cores_per_spine = cores;
  c.link_gbps = 8.0;
  return c;
}

FailureConfig named_failures(const std::string& links) {
  FailureConfig f;
  f.links = links;
  return f;
}

// The links of the header's numbering (topology.hpp), for a topology of `spines` spines per pod.
int leaf_up_link(const Topology& t, int spines, int l, int j) { return 2 * t.hosts() + l * spines + j; }
int spine_down_link(const Topology& t, int spines, int j, int l) {
  return 2 * t.hosts() + t.leaves() * spines + l * spines + j;
}

PhaseRoute route(const Topology& topo, const Phase& phase, const Policy& policy, uint64_t seed = 1, bool fluid = false,
                 Aggregation aggregate = Aggregation::None) {
  return route_phase(topo, phase, policy, RouteOptions{.seed = seed, .aggregate = aggregate, .fluid = fluid});
}

Phase alltoall(int hosts, int64_t bytes) {
  auto phases = workload_phases(WorkloadKind::AllToAll, hosts, bytes, WorkloadConfig{}, nullptr);
  EXPECT_EQ(phases.size(), 1u);
  return phases.at(0);
}

// A custom phase from an explicit list of flows per source (sorted by destination here).
Phase custom_phase(std::map<int, std::vector<Flow>> flows) {
  for (auto& [src, list] : flows)
    std::sort(list.begin(), list.end(), [](const Flow& a, const Flow& b) { return a.dst < b.dst; });
  Phase p;
  p.name = "custom";
  p.flows_from = [flows = std::move(flows)](int src, std::vector<Flow>& out) {
    const auto it = flows.find(src);
    if (it != flows.end()) out.insert(out.end(), it->second.begin(), it->second.end());
  };
  return p;
}

// All-to-all with a seeded random size per (source, destination).
Phase random_alltoall(int hosts, uint64_t seed) {
  Phase p;
  p.name = "random alltoall";
  p.flows_from = [hosts, seed](int src, std::vector<Flow>& out) {
    for (int d = 0; d < hosts; ++d)
      if (d != src) out.push_back({d, 1 + static_cast<int64_t>(mix64(seed ^ mix64(uint64_t(src) * 100003 + d)) % 1000000)});
  };
  return p;
}

int64_t count_flows(const Phase& phase, int hosts) {
  std::vector<Flow> out;
  for (int h = 0; h < hosts; ++h) phase.flows_from(h, out);
  return static_cast<int64_t>(out.size());
}

// Runs fn, expects a one-line ConfigError containing every part.
void expect_config_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a ConfigError containing '" << parts.front() << "'";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' missing from: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a ConfigError containing '" << parts.front() << "', got another exception: " << e.what();
  }
}

fs::path temp_dir() {
  const fs::path dir = fs::path(testing::TempDir()) / "switchyard_netsim_test";
  fs::create_directories(dir);
  return dir;
}

std::string write_file(const std::string& name, const std::string& text) {
  const fs::path path = temp_dir() / name;
  std::ofstream(path) << text;
  return path.string();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

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

// ---- 4. the fluid model by hand ------------------------------------------------

TEST(NetsimFluid, TwoFlowsShareOneLink) {
  const double C = 100.0;
  FluidNetwork net({C});
  const int32_t link = 0;
  const double one = 1.0;
  net.add_class(100.0, 1.0, &link, &one, 1);
  net.add_class(300.0, 1.0, &link, &one, 1);
  EXPECT_EQ(net.classes(), 2u);
  EXPECT_EQ(net.incidences(), 2u);
  const auto rates = net.fair_rates();
  ASSERT_EQ(rates.size(), 2u);
  EXPECT_DOUBLE_EQ(rates[0], C / 2);
  EXPECT_DOUBLE_EQ(rates[1], C / 2);
  int64_t events = 0;
  // 2 b1 / C, then the rest of b2 alone: (2 b1) / C + (b2 - b1) / C.
  EXPECT_DOUBLE_EQ(net.completion_time(&events), 2 * 100.0 / C + (300.0 - 100.0) / C);
  EXPECT_EQ(events, 2);
}

TEST(NetsimFluid, MaxMinWithAFlowBottleneckedElsewhere) {
  // Link 0 (12): A, B, C.  Link 1 (4): C, D.  Link 2 (100): B, E.
  // Link 1 fills first at 2 (C, D); A and B share link 0's other 10; E takes link 2's remaining 95.
  FluidNetwork net({12.0, 4.0, 100.0});
  const double ones[2] = {1.0, 1.0};
  const int32_t a[] = {0}, b[] = {0, 2}, c[] = {0, 1}, d[] = {1}, e[] = {2};
  net.add_class(10.0, 1.0, a, ones, 1);
  net.add_class(10.0, 1.0, b, ones, 2);
  net.add_class(10.0, 1.0, c, ones, 2);
  net.add_class(10.0, 1.0, d, ones, 1);
  net.add_class(950.0, 1.0, e, ones, 1);
  const auto rates = net.fair_rates();
  ASSERT_EQ(rates.size(), 5u);
  EXPECT_DOUBLE_EQ(rates[0], 5.0);
  EXPECT_DOUBLE_EQ(rates[1], 5.0);
  EXPECT_DOUBLE_EQ(rates[2], 2.0);
  EXPECT_DOUBLE_EQ(rates[3], 2.0);
  EXPECT_DOUBLE_EQ(rates[4], 95.0);
  // At t = 2 A and B finish (10 bytes at 5); C and D have 6 left. Then link 0 has
  // only C, link 1 C and D: 2 each, 3 s more: t = 5. E: 190 bytes by t = 2, then
  // link 2 alone at 100: 760 / 100 = 7.6 s more, t = 9.6, the last.
  EXPECT_NEAR(net.completion_time(), 9.6, 1e-12);
}

TEST(NetsimFluid, ClassOfThreeMembersIsThreeFlows) {
  const int32_t link = 0;
  const double one = 1.0;
  FluidNetwork grouped({30.0}), single({30.0});
  grouped.add_class(60.0, 3.0, &link, &one, 1);
  grouped.add_class(60.0, 1.0, &link, &one, 1);
  for (int i = 0; i < 4; ++i) single.add_class(60.0, 1.0, &link, &one, 1);
  const auto g = grouped.fair_rates();
  EXPECT_DOUBLE_EQ(g[0], 7.5);  // per flow: 4 flows on 30
  EXPECT_DOUBLE_EQ(g[1], 7.5);
  for (const double r : single.fair_rates()) EXPECT_DOUBLE_EQ(r, 7.5);
  EXPECT_DOUBLE_EQ(grouped.completion_time(), 8.0);
  EXPECT_DOUBLE_EQ(single.completion_time(), 8.0);
  // A class of members 3 with unequal neighbours: 3 x 10-byte flows and a 40-byte one on 40 B/s.
  FluidNetwork mixed({40.0});
  mixed.add_class(10.0, 3.0, &link, &one, 1);
  mixed.add_class(40.0, 1.0, &link, &one, 1);
  // 10 each at 10 B/s: 1 s; the 40-byte flow has 30 left at 40 B/s: 0.75 s.
  EXPECT_DOUBLE_EQ(mixed.completion_time(), 1.75);
}

TEST(NetsimFluid, SprayedClassWithCoefficientOneHalf) {
  // A flow sprayed over two 10 B/s links (coef 1/2 each) behind a 100 B/s host link: 20 B/s.
  FluidNetwork net({100.0, 10.0, 10.0});
  const int32_t links[] = {0, 1, 2};
  const double coefs[] = {1.0, 0.5, 0.5};
  net.add_class(40.0, 1.0, links, coefs, 3);
  EXPECT_DOUBLE_EQ(net.fair_rates()[0], 20.0);
  EXPECT_DOUBLE_EQ(net.completion_time(), 2.0);
  // A second flow on link 1 alone: link 1 fills first (1/2 r + r = 10): both at 20/3.
  const int32_t other = 1;
  const double one = 1.0;
  net.add_class(40.0, 1.0, &other, &one, 1);
  const auto rates = net.fair_rates();
  EXPECT_DOUBLE_EQ(rates[0], 20.0 / 3.0);
  EXPECT_DOUBLE_EQ(rates[1], 20.0 / 3.0);
  // Both finish at 40 / (20/3) = 6 s.
  EXPECT_NEAR(net.completion_time(), 6.0, 1e-12);
}

TEST(NetsimFluid, FrozenClassesLeaveTheirWeightedShare) {
  // A class of 3 flows held to 10 each by link 0 (30) leaves 100 - 3 x 10 = 70 of link 1 to Y.
  {
    FluidNetwork net({30.0, 100.0});
    const int32_t x[] = {0, 1}, y[] = {1};
    const double ones[] = {1.0, 1.0};
    net.add_class(10.0, 3.0, x, ones, 2);
    net.add_class(700.0, 1.0, y, ones, 1);
    const auto rates = net.fair_rates();
    EXPECT_DOUBLE_EQ(rates[0], 10.0);
    EXPECT_DOUBLE_EQ(rates[1], 70.0);
    // X ends at 1 s with Y 630 short; Y alone on link 1: 6.3 s more.
    EXPECT_NEAR(net.completion_time(), 7.3, 1e-12);
  }
  // A flow sprayed over links 1 and 2 (coef 1/2) held to 4 by its host link 0
  // uses 2 of link 1, leaving 8 to W.
  {
    FluidNetwork net({4.0, 10.0, 10.0});
    const int32_t z[] = {0, 1, 2}, w[] = {1};
    const double zc[] = {1.0, 0.5, 0.5}, one[] = {1.0};
    net.add_class(40.0, 1.0, z, zc, 3);
    net.add_class(40.0, 1.0, w, one, 1);
    const auto rates = net.fair_rates();
    EXPECT_DOUBLE_EQ(rates[0], 4.0);
    EXPECT_DOUBLE_EQ(rates[1], 8.0);
  }
}

TEST(NetsimFluid, NearlySimultaneousFinishesKeepTheirBytes) {
  // 100 and 101 bytes on 100 B/s: 2 s together, then the last byte alone: 2.01 s.
  FluidNetwork net({100.0});
  const int32_t link = 0;
  const double one = 1.0;
  net.add_class(100.0, 1.0, &link, &one, 1);
  net.add_class(101.0, 1.0, &link, &one, 1);
  EXPECT_NEAR(net.completion_time(), 2.01, 1e-9);
}

TEST(NetsimFluid, RejectsEmptyClassesAndUnknownLinks) {
  FluidNetwork net({10.0, 0.0});
  const int32_t good = 0, zero_cap = 1, outside = 2;
  const double one = 1.0, none = 0.0;
  EXPECT_THROW(net.add_class(0.0, 1.0, &good, &one, 1), InvalidArgument);
  EXPECT_THROW(net.add_class(1.0, 0.0, &good, &one, 1), InvalidArgument);
  EXPECT_THROW(net.add_class(1.0, 1.0, &zero_cap, &one, 1), InvalidArgument);
  EXPECT_THROW(net.add_class(1.0, 1.0, &outside, &one, 1), InvalidArgument);
  EXPECT_THROW(net.add_class(1.0, 1.0, &good, &none, 1), InvalidArgument);
  EXPECT_DOUBLE_EQ(FluidNetwork({1.0}).completion_time(), 0.0);
}

// One flow of B bytes from host 0 to host 1 over 2 leaves x 1 host.
TEST(NetsimFluid, OneFlowThroughRoutePhase) {
  const int64_t B = 1000000;
  const Phase phase = custom_phase({{0, {{1, B}}}});
  {
    // One spine: the uplink is as fast as the host link; every policy takes B / rate.
    const Topology topo(leafspine(2, 1, 1), {});
    EXPECT_EQ(topo.host_capacity(), kHostRate);
    for (const Policy& p : {kSpray, kEcmp, kFlowSplit, mp(2)}) {
      const PhaseRoute r = route(topo, phase, p, 1, true);
      ASSERT_EQ(r.fluid.size(), 1u) << to_string(p);
      EXPECT_DOUBLE_EQ(r.fluid[0].completion_time(), double(B) / kHostRate) << to_string(p);
      EXPECT_EQ(r.max_links, 4);
      EXPECT_EQ(r.flows, 1);
    }
  }
  {
    // Two spines: each uplink has half the host rate. Spray and flow-split use
    // both (B / rate); ECMP one (2 B / rate).
    const Topology topo(leafspine(2, 1, 2), {});
    EXPECT_EQ(topo.capacity()[leaf_up_link(topo, 2, 0, 0)], kHostRate / 2);
    EXPECT_DOUBLE_EQ(route(topo, phase, kSpray, 1, true).fluid[0].completion_time(), double(B) / kHostRate);
    EXPECT_DOUBLE_EQ(route(topo, phase, kFlowSplit, 1, true).fluid[0].completion_time(), double(B) / kHostRate);
    EXPECT_DOUBLE_EQ(route(topo, phase, kEcmp, 1, true).fluid[0].completion_time(), 2 * double(B) / kHostRate);
    const PhaseRoute fsr = route(topo, phase, kFlowSplit, 1, true);
    EXPECT_EQ(fsr.subflows, 2);
    EXPECT_EQ(fsr.fluid[0].classes(), 2u);
    // The max link load, for comparison: ECMP puts B on one uplink of half rate.
    const PhaseRoute e = route(topo, phase, kEcmp, 1, true);
    EXPECT_DOUBLE_EQ(e.max_time, double(B) / (kHostRate / 2));
    EXPECT_DOUBLE_EQ(e.ideal_time, double(B) / kHostRate);
  }
}

TEST(NetsimFluid, OversubscribedUplinkIsTheBottleneck) {
  // 2 leaves x 2 hosts, 1 spine; hosts 0 and 1 each send B to the other leaf.
  const int64_t B = 3000000;
  const Phase phase = custom_phase({{0, {{2, B}}}, {1, {{3, B}}}});
  for (const double over : {1.0, 2.0, 4.0}) {
    const Topology topo(leafspine(2, 2, 1, over), {});
    const double uplink = 2 * kHostRate / over;
    EXPECT_DOUBLE_EQ(topo.capacity()[leaf_up_link(topo, 1, 0, 0)], uplink);
    EXPECT_DOUBLE_EQ(topo.leaf_up_capacity(0), uplink);
    const double want = 2 * double(B) / std::min(2 * kHostRate, uplink);
    for (const Policy& p : {kSpray, kEcmp, kFlowSplit, mp(2)}) {
      const PhaseRoute r = route(topo, phase, p, 1, true);
      EXPECT_DOUBLE_EQ(r.fluid[0].completion_time(), want) << to_string(p) << ", oversubscription " << over;
      EXPECT_DOUBLE_EQ(r.max_time, 2 * double(B) / uplink);
    }
  }
}

TEST(NetsimFluid, RunNetsimAddsLatencyPerRepeat) {
  // Ring all-reduce of 1 MiB on 2 hosts in 2 leaves under 1 spine: 2 steps of
  // 512 KiB, each over 4 links at 1e9 B/s plus 4 x 1 us.
  NetsimConfig c;
  c.topology = leafspine(2, 1, 1);
  c.topology.latency_us = 1.0;
  c.workload.kinds = {WorkloadKind::Ring};
  c.workload.sizes_mib = {1.0};
  c.netsim.policies = {kSpray, kEcmp, mp(2), kFlowSplit};
  c.netsim.aggregate = Aggregation::None;
  const auto results = run_netsim(c, "custom", nullptr);
  ASSERT_EQ(results.size(), 4u);
  const double want_ms = 1e3 * 2 * (524288.0 / kHostRate + 4 * 1e-6);
  for (const auto& r : results) {
    SCOPED_TRACE(r.policy);
    EXPECT_EQ(r.topology, "custom");
    EXPECT_EQ(r.hosts, 2);
    EXPECT_EQ(r.workload, WorkloadKind::Ring);
    EXPECT_EQ(r.bytes, 1 << 20);
    EXPECT_NEAR(r.completion_ms, want_ms, 1e-12);
    EXPECT_DOUBLE_EQ(r.max_link_load_over_ideal, 1.0);
    EXPECT_DOUBLE_EQ(r.slowdown_vs_spray, 1.0);
    EXPECT_EQ(r.flows, 2 * 2);  // 2 flows per step, 2 steps
    EXPECT_EQ(r.aggregate, Aggregation::None);
  }
  EXPECT_EQ(results[0].policy, "spray");
  EXPECT_EQ(results[2].policy, "mp-2");
  EXPECT_EQ(results[2].subflows, 2 * 2 * 2);
  // analysis = load: no completion time, no slowdown.
  c.netsim.analysis = Analysis::Load;
  for (const auto& r : run_netsim(c, "custom", nullptr)) {
    EXPECT_TRUE(std::isnan(r.completion_ms)) << r.policy;
    EXPECT_TRUE(std::isnan(r.slowdown_vs_spray)) << r.policy;
    EXPECT_DOUBLE_EQ(r.max_link_load_over_ideal, 1.0);
  }
}

// ---- 5. failures ------------------------------------------------------------------

TEST(NetsimFailures, NamedCableLeavesTheOtherPaths) {
  const int S = 4;
  const Topology healthy(leafspine(3, 2, S), {});
  const Topology topo(leafspine(3, 2, S), named_failures("leaf0-spine0"));
  EXPECT_EQ(topo.failed_cables(), 1);
  const int up = leaf_up_link(topo, S, 0, 0), down = spine_down_link(topo, S, 0, 0);
  EXPECT_EQ(topo.link_name(up), "leaf0->spine0");
  EXPECT_EQ(topo.link_name(down), "spine0->leaf0");
  EXPECT_TRUE(topo.failed(up));
  EXPECT_TRUE(topo.failed(down));
  int failed_links = 0;
  for (int l = 0; l < topo.num_links(); ++l) failed_links += topo.failed(l);
  EXPECT_EQ(failed_links, 2);
  std::vector<Path> paths;
  for (const int b : {1, 2}) {
    topo.paths(0, b, paths);
    EXPECT_EQ(paths.size(), size_t(S - 1)) << "0 -> " << b;
    for (const auto& p : paths) EXPECT_NE(p.links[0], up);
    topo.paths(b, 0, paths);
    EXPECT_EQ(paths.size(), size_t(S - 1)) << b << " -> 0";
    for (const auto& p : paths) EXPECT_NE(p.links[1], down);
    EXPECT_EQ(topo.full_paths(0, b), S);
  }
  topo.paths(1, 2, paths);
  EXPECT_EQ(paths.size(), size_t(S));
  const double cable = topo.capacity()[up];
  EXPECT_DOUBLE_EQ(topo.leaf_up_capacity(0), healthy.leaf_up_capacity(0) - cable);
  EXPECT_DOUBLE_EQ(topo.leaf_down_capacity(0), healthy.leaf_down_capacity(0) - cable);
  EXPECT_DOUBLE_EQ(topo.leaf_up_capacity(1), healthy.leaf_up_capacity(1));
  EXPECT_TRUE(contains(topo.describe(), "1 failed cables")) << topo.describe();
  // The other spelling, spaces, and a repeat name the same cable once.
  const Topology same(leafspine(3, 2, S), named_failures(" spine0-leaf0 , leaf0-spine0,,"));
  EXPECT_EQ(same.failed_cables(), 1);
  for (int l = 0; l < topo.num_links(); ++l) EXPECT_EQ(same.failed(l), topo.failed(l)) << topo.link_name(l);
}

TEST(NetsimFailures, FlowSplitStillEqualsSprayAndIdealRises) {
  // 3 leaves x 3 hosts, 4 spines, leaf0-spine0 down: leaf 0's pairs have 3 paths
  // (3 flows whole, one per path), the others 4 (each flow cut in 4): exact with f | 12.
  constexpr int64_t f = 840 * 8;
  const int S = 4;
  const Topology healthy(leafspine(3, 3, S), {});
  const Topology topo(leafspine(3, 3, S), named_failures("leaf0-spine0"));
  const Phase phase = alltoall(9, 9 * f);
  const PhaseRoute sp = route(topo, phase, kSpray), fsr = route(topo, phase, kFlowSplit);
  for (int l = 0; l < topo.num_links(); ++l) {
    EXPECT_EQ(fsr.load[l], sp.load[l]) << topo.link_name(l);
    if (topo.failed(l)) {
      EXPECT_EQ(sp.load[l], 0.0) << topo.link_name(l);
      EXPECT_EQ(fsr.load[l], 0.0) << topo.link_name(l);
    }
  }
  EXPECT_EQ(fsr.max_time, sp.max_time);
  // Leaf 0's uplink to spine 1: 2 pairs x 9 flows over 3 paths.
  EXPECT_EQ(sp.load[leaf_up_link(topo, S, 0, 1)], double(2 * 9 * f / 3));
  // Leaf 1's uplink to spine 0 carries only its flows to leaf 2 (a quarter).
  EXPECT_EQ(sp.load[leaf_up_link(topo, S, 1, 0)], double(9 * f / 4));
  EXPECT_EQ(sp.load[leaf_up_link(topo, S, 1, 1)], double(9 * f / 3 + 9 * f / 4));
  // The lower bound: leaf 0's traffic over s - 1 uplinks.
  const PhaseRoute base = route(healthy, phase, kSpray);
  EXPECT_NEAR(sp.ideal_time / base.ideal_time, double(S) / (S - 1), 1e-12);
  EXPECT_NEAR(fsr.ideal_time / base.ideal_time, double(S) / (S - 1), 1e-12);
}

TEST(NetsimFailures, RandomFractionIsRoundedAndSeeded) {
  const TopologyConfig ls = leafspine(4, 2, 4);  // 16 cables
  const TopologyConfig ft = fattree(2, 2, 2, 2, 2);  // 2 x 2 x 2 leaf cables + 2 x 2 x 2 core cables
  for (const auto& [config, cables] : std::vector<std::pair<TopologyConfig, int>>{{ls, 16}, {ft, 16}}) {
    for (const double fraction : {0.03, 0.1, 0.25, 0.3, 0.5, 0.97}) {
      for (uint64_t seed = 1; seed <= 5; ++seed) {
        FailureConfig fc;
        fc.fraction = fraction;
        fc.seed = seed;
        const Topology a(config, fc), b(config, fc);
        SCOPED_TRACE(::testing::Message() << a.describe() << ", fraction " << fraction << ", seed " << seed);
        EXPECT_EQ(a.failed_cables(), static_cast<int>(std::lround(fraction * cables)));
        int failed = 0;
        for (int l = 0; l < a.num_links(); ++l) {
          EXPECT_EQ(a.failed(l), b.failed(l)) << "not deterministic: " << a.link_name(l);
          if (a.failed(l)) {
            ++failed;
            EXPECT_TRUE(a.is_fabric(l)) << a.link_name(l);
          }
        }
        EXPECT_EQ(failed, 2 * a.failed_cables());
      }
    }
  }
  // Seeds pick different cables.
  std::set<std::vector<bool>> sets;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    FailureConfig fc;
    fc.fraction = 0.25;
    fc.seed = seed;
    const Topology t(ls, fc);
    std::vector<bool> failed;
    for (int l = 0; l < t.num_links(); ++l) failed.push_back(t.failed(l));
    sets.insert(failed);
  }
  EXPECT_GT(sets.size(), 4u);
}

// "Named cables first, then a random share of the rest" (topology.cpp), and
// configs/net/leafspine-256-failures.ini: "13 of 256 plus one named cable".
TEST(NetsimFailures, RandomShareSkipsNamedCables) {
  for (uint64_t seed = 1; seed <= 16; ++seed) {
    FailureConfig fc = named_failures("leaf0-spine0");
    fc.fraction = 0.5;  // 2 of the 4 cables
    fc.seed = seed;
    const Topology t(leafspine(2, 1, 2), fc);
    EXPECT_EQ(t.failed_cables(), 3) << "seed " << seed;
  }
  const NetsimConfig c = load_netsim_config(test::source_dir() + "/configs/net/leafspine-256-failures.ini");
  EXPECT_EQ(Topology(c.topology, c.failures).failed_cables(), 14);
}

TEST(NetsimFailures, NoSurvivingPathThrowsNamingTheLeaves) {
  const Topology topo(leafspine(3, 2, 2), named_failures("leaf0-spine0, leaf0-spine1"));
  EXPECT_DOUBLE_EQ(topo.leaf_up_capacity(0), 0.0);
  const Phase phase = alltoall(6, 6000);
  for (const Policy& p : {kSpray, kEcmp, kFlowSplit, mp(4)})
    expect_config_error([&] { route(topo, phase, p); }, {"no path from leaf 0 to leaf 1"});
  // Leaf 0's downlinks went with its uplinks (a cable is both directions).
  expect_config_error([&] { route(topo, custom_phase({{2, {{0, 100}}}}), kSpray, 1, true); },
                      {"no path from leaf 1 to leaf 0"});
  // Traffic that avoids leaf 0's uplinks still routes.
  const Topology half(leafspine(3, 2, 2), named_failures("leaf0-spine0"));
  EXPECT_NO_THROW(route(half, phase, kFlowSplit));
  EXPECT_NO_THROW(route(topo, custom_phase({{2, {{4, 100}}}, {0, {{1, 100}}}}), kEcmp, 1, true));
}

TEST(NetsimFailures, BadNamesAreConfigErrors) {
  const TopologyConfig ls = leafspine(4, 2, 4);
  const TopologyConfig ft = fattree(2, 2, 2, 2, 2);
  const auto fails = [](const TopologyConfig& c, const std::string& links) {
    return [c, links] { Topology t(c, named_failures(links)); };
  };
  expect_config_error(fails(ls, "leaf99-spine0"), {"failures.links", "'leaf99-spine0'", "leaf 99 does not exist", "0 to 3"});
  expect_config_error(fails(ls, "leaf0-spine4"), {"spine 4 does not exist"});
  expect_config_error(fails(ls, "spine-leaf"), {"'spine-leaf'", "expected leafL-spineJ"});
  expect_config_error(fails(ls, "leaf0-spine0, bogus"), {"'bogus'"});
  expect_config_error(fails(ls, "pod0-leaf0-spine0"), {"a leaf-spine cable has no pod"});
  expect_config_error(fails(ls, "pod0-spine0-core0"), {"a leaf-spine has no core switches"});
  expect_config_error(fails(ft, "leaf0-spine0"), {"a fat-tree cable names its pod"});
  expect_config_error(fails(ft, "pod2-leaf0-spine0"), {"pod 2 does not exist"});
  expect_config_error(fails(ft, "pod0-spine0-core2"), {"core 2 does not exist"});
  // Fat-tree names, both spellings.
  const Topology t(ft, named_failures("pod1-spine1-core0, pod0-core1-spine0, pod1-leaf1-spine0"));
  EXPECT_EQ(t.failed_cables(), 3);
  int named = 0;
  for (int l = 0; l < t.num_links(); ++l)
    if (t.failed(l)) {
      ++named;
      const std::string name = t.link_name(l);
      EXPECT_TRUE(name == "pod1-spine1->core0" || name == "pod1-core0->spine1" || name == "pod0-spine0->core1" ||
                  name == "pod0-core1->spine0" || name == "pod1-leaf1->spine0" || name == "pod1-spine0->leaf1")
          << name;
    }
  EXPECT_EQ(named, 6);
}

// An index too large for a long is still bad user input, not a std::out_of_range.
TEST(NetsimFailures, HugeIndexIsAConfigError) {
  const TopologyConfig ls = leafspine(4, 2, 4);
  expect_config_error([&] { Topology t(ls, named_failures("leaf0-spine99999999999999999999")); },
                      {"failures.links", "spine 99999999999999999999 does not exist"});
  expect_config_error([&] { Topology t(ls, named_failures("leaf99999999999999999999-spine0")); },
                      {"failures.links", "leaf 99999999999999999999 does not exist"});
  expect_config_error([&] { Topology t(ls, named_failures("leaf4294967296-spine0")); }, {"leaf 4294967296 does not exist"});
}

// ---- 6. workloads ----------------------------------------------------------------

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

// ---- 7. config ----------------------------------------------------------------------

TEST(NetsimConfigFile, ShippedConfigsLoad) {
  int files = 0;
  for (const auto& entry : fs::directory_iterator(test::source_dir() + "/configs/net")) {
    if (entry.path().extension() != ".ini") continue;
    SCOPED_TRACE(entry.path().string());
    ++files;
    NetsimConfig c;
    ASSERT_NO_THROW(c = load_netsim_config(entry.path().string()));
    EXPECT_NO_THROW(Topology(c.topology, c.failures));
    // The resolved INI reads back the same.
    const std::string ini = write_file("resolved-" + entry.path().filename().string(), to_ini(c));
    EXPECT_EQ(to_ini(load_netsim_config(ini)), to_ini(c));
    // A shipped routing trace (relative to the repository root) reads and fits the topology.
    if (!c.workload.trace.empty()) {
      RoutingTrace trace;
      ASSERT_NO_THROW(trace = read_routing_trace(test::source_dir() + "/" + c.workload.trace));
      const int hosts = Topology(c.topology, c.failures).hosts();
      std::vector<Phase> phases;
      EXPECT_NO_THROW(phases = workload_phases(WorkloadKind::MoeDispatch, hosts, 1 << 20, c.workload, &trace));
      EXPECT_EQ(phases.size(), trace.blocks.size());
    }
  }
  EXPECT_GE(files, 4);
  const NetsimConfig c = load_netsim_config(test::source_dir() + "/configs/net/leafspine-256.ini");
  EXPECT_EQ(Topology(c.topology, c.failures).hosts(), 256);
  EXPECT_EQ(c.netsim.policies, (std::vector<Policy>{kSpray, kEcmp, mp(4), kFlowSplit}));
  const NetsimConfig ft = load_netsim_config(test::source_dir() + "/configs/net/fattree-512.ini");
  EXPECT_EQ(Topology(ft.topology, ft.failures).hosts(), 512);
}

TEST(NetsimConfigFile, Errors) {
  const auto cli = [](std::vector<std::string> overrides) {
    return [overrides] { load_netsim_config("", overrides); };
  };
  expect_config_error(cli({"--topology.spine=4"}), {"unknown key 'topology.spine'", "did you mean 'topology.spines'"});
  expect_config_error([] { load_netsim_config(write_file("typo.ini", "[netsim]\npolicy = spray\n")); },
                      {"unknown key 'netsim.policy'", "did you mean 'netsim.policies'"});
  expect_config_error(cli({"--netsim.policies=ecmp, mp-1"}),
                      {"netsim.policies", "mp-1", "one of spray, ecmp, flowsplit, mp-K (K >= 2)"});
  expect_config_error([] { load_netsim_config(write_file("mp1.ini", "[netsim]\npolicies = ecmp, mp-1\n")); },
                      {"netsim.policies", "one of spray, ecmp, flowsplit, mp-K (K >= 2)"});
  expect_config_error(cli({"--topology.pods=2"}), {"topology.pods", "needs topology.kind = fattree"});
  // Link and path counts that would overflow the numbering are refused, not run.
  expect_config_error(cli({"--topology.hosts_per_leaf=1", "--topology.leaves=65536", "--topology.spines=40000"}),
                      {"links", "at most"});
  expect_config_error(cli({"--topology.kind=fattree", "--topology.pods=2", "--topology.spines=1000",
                           "--topology.cores_per_spine=1000"}),
                      {"1000000 paths", "at most 65536"});
  expect_config_error(cli({"--topology.kind=fattree", "--topology.pods=1"}), {"topology.pods >= 2"});
  expect_config_error(cli({"--workload.kinds=alltoall, moe"}), {"workload.trace must name a routing trace file"});
  expect_config_error(cli({"--workload.kinds=alltoall, bcast"}), {"workload.kinds"});
  expect_config_error(cli({"--failures.fraction=1"}), {"failures.fraction"});
  expect_config_error(cli({"--workload.sizes_mib=1, 0"}), {"workload.sizes_mib"});
  expect_config_error(cli({"--workload.sizes_mib=2097152"}), {"workload.sizes_mib"});  // 2 TiB: past the model's byte keys
  expect_config_error(cli({"--topology.cores_per_spine=2"}), {"topology.cores_per_spine", "needs topology.kind = fattree"});
  expect_config_error(cli({"--topology.leaves=1", "--topology.hosts_per_leaf=1"}), {"expected 2 to 1048576"});
  // And what parses.
  const NetsimConfig c = load_netsim_config("", {"--netsim.policies=spray, mp-8, flowsplit", "--workload.kinds=moe",
                                                 "--workload.trace=x.txt", "--netsim.aggregate=leaf"});
  EXPECT_EQ(c.netsim.policies, (std::vector<Policy>{kSpray, mp(8), kFlowSplit}));
  EXPECT_EQ(c.workload.kinds, std::vector<WorkloadKind>{WorkloadKind::MoeDispatch});
  EXPECT_EQ(c.netsim.aggregate, Aggregation::Leaf);
  EXPECT_EQ(to_string(mp(8)), "mp-8");
}

// ---- 8. command line -------------------------------------------------------------

test::CommandResult sy_run(const std::string& args) { return test::run_command(test::binary_path() + " " + args); }

// The number after "key": in a JSON line (NaN for null or missing).
double json_number(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\": ");
  if (at == std::string::npos) return std::nan("");
  const std::string rest = line.substr(at + key.size() + 4);
  if (rest.rfind("null", 0) == 0) return std::nan("");
  return std::stod(rest);
}

std::string json_string(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\": \"");
  if (at == std::string::npos) return "";
  const auto from = at + key.size() + 5;
  return line.substr(from, line.find('"', from) - from);
}

TEST(NetsimCli, JsonHasTheNamedFields) {
  const auto r = sy_run("netsim --config " + test::source_dir() +
                        "/configs/net/leafspine-256.ini --workload.kinds=alltoall --workload.sizes_mib=1 --json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream lines(r.output);
  std::string line;
  std::vector<std::string> objects;
  while (std::getline(lines, line)) {
    EXPECT_FALSE(line.empty());
    EXPECT_EQ(line.front(), '{') << "not JSON (--quiet prints nothing else): " << line;
    if (!line.empty() && line.front() == '{') objects.push_back(line);
  }
  ASSERT_EQ(objects.size(), 4u) << r.output;
  std::map<std::string, std::string> by_policy;
  for (const auto& o : objects) {
    for (const char* field : {"\"bench\": \"netsim\"", "\"topology\": \"leafspine-256\"", "\"hosts\": 256",
                              "\"policy\": ", "\"workload\": \"alltoall\"", "\"bytes\": 1048576",
                              "\"max_link_load_over_ideal\": ", "\"completion_ms\": ", "\"slowdown_vs_spray\": ",
                              "\"flows\": 65280", "\"subflows\": "})
      EXPECT_TRUE(contains(o, field)) << field << " missing from " << o;
    by_policy[json_string(o, "policy")] = o;
  }
  ASSERT_EQ(by_policy.size(), 4u) << r.output;
  for (const char* p : {"spray", "ecmp", "mp-4", "flowsplit"}) ASSERT_TRUE(by_policy.count(p)) << p;
  EXPECT_EQ(json_number(by_policy["spray"], "slowdown_vs_spray"), 1.0);
  EXPECT_NEAR(json_number(by_policy["flowsplit"], "slowdown_vs_spray"), 1.0, 1e-5);
  EXPECT_EQ(json_number(by_policy["spray"], "max_link_load_over_ideal"), 1.0);
  EXPECT_EQ(json_number(by_policy["flowsplit"], "max_link_load_over_ideal"), 1.0);
  EXPECT_GT(json_number(by_policy["ecmp"], "max_link_load_over_ideal"), 1.0);
  EXPECT_GE(json_number(by_policy["ecmp"], "slowdown_vs_spray"), 1.0);
  EXPECT_EQ(json_number(by_policy["spray"], "subflows"), 65280);
  EXPECT_EQ(json_number(by_policy["flowsplit"], "subflows"), 65280);  // 16 flows per leaf over 16 paths: none cut
  EXPECT_EQ(json_number(by_policy["mp-4"], "subflows"), 4 * 256 * 240 + 256 * 15);
  EXPECT_GT(json_number(by_policy["spray"], "completion_ms"), 0.0);
}

TEST(NetsimCli, MissingConfigFailsWithOneLine) {
  const auto r = sy_run("netsim");
  EXPECT_NE(r.exit_code, 0);
  std::istringstream lines(r.output);
  std::string line;
  int nonempty = 0;
  while (std::getline(lines, line)) nonempty += !line.empty();
  EXPECT_EQ(nonempty, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "--config")) << r.output;
  const auto typo = sy_run("netsim --config " + test::source_dir() + "/configs/net/leafspine-256.ini --netsim.polices=ecmp");
  EXPECT_NE(typo.exit_code, 0);
  EXPECT_TRUE(contains(typo.output, "did you mean 'netsim.policies'")) << typo.output;
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
