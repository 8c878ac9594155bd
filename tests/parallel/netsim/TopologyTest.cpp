// Topologies and link failures (parallel/netsim/topology.hpp): named and
// seeded failures, the paths and capacities left, and bad names.
#include "parallel/netsim/topology.hpp"

#include <gtest/gtest.h>

#include "tests/parallel/netsim/netsim_test_support.hpp"

namespace sy::net {
namespace {

using namespace testing_support;

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

}  // namespace
}  // namespace sy::net
