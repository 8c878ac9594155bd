// The max-min fair fluid model (parallel/netsim/fluid.hpp) on hand-computed
// cases, directly and through route_phase / run_netsim.
#include "parallel/netsim/fluid.hpp"

#include <gtest/gtest.h>

#include "tests/parallel/netsim/netsim_test_support.hpp"

namespace sy::net {
namespace {

using namespace testing_support;

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

}  // namespace
}  // namespace sy::net
