// Shared set-up of the network simulator's tests (tests/parallel/netsim/).
#pragma once

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

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "parallel/alltoall.hpp"
#include "parallel/netsim/fluid.hpp"
#include "parallel/netsim/netsim.hpp"
#include "parallel/netsim/netsim_config.hpp"
#include "parallel/netsim/topology.hpp"
#include "parallel/netsim/workload.hpp"
#include "tests/support/test_support.hpp"

namespace sy::net::testing_support {

namespace fs = std::filesystem;
using test::expect_config_error;

inline constexpr Policy kSpray{PolicyKind::Spray, 1};
inline constexpr Policy kEcmp{PolicyKind::Ecmp, 1};
inline constexpr Policy kFlowSplit{PolicyKind::FlowSplit, 1};
inline constexpr Policy mp(int k) { return Policy{PolicyKind::MultiPath, k}; }

// link_gbps = 8: host links carry exactly 1e9 bytes per second.
inline constexpr double kHostRate = 1e9;

inline TopologyConfig leafspine(int leaves, int hosts_per_leaf, int spines, double oversubscription = 1.0) {
  TopologyConfig c;
  c.kind = TopologyKind::LeafSpine;
  c.leaves = leaves;
  c.hosts_per_leaf = hosts_per_leaf;
  c.spines = spines;
  c.link_gbps = 8.0;
  c.oversubscription = oversubscription;
  return c;
}

inline TopologyConfig fattree(int pods, int leaves, int hosts_per_leaf, int spines, int cores) {
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

inline FailureConfig named_failures(const std::string& links) {
  FailureConfig f;
  f.links = links;
  return f;
}

// The links of the header's numbering (topology.hpp), for a topology of `spines` spines per pod.
inline int leaf_up_link(const Topology& t, int spines, int l, int j) { return 2 * t.hosts() + l * spines + j; }
inline int spine_down_link(const Topology& t, int spines, int j, int l) {
  return 2 * t.hosts() + t.leaves() * spines + l * spines + j;
}

inline PhaseRoute route(const Topology& topo, const Phase& phase, const Policy& policy, uint64_t seed = 1, bool fluid = false,
                 Aggregation aggregate = Aggregation::None) {
  return route_phase(topo, phase, policy, RouteOptions{.seed = seed, .aggregate = aggregate, .fluid = fluid});
}

inline Phase alltoall(int hosts, int64_t bytes) {
  auto phases = workload_phases(WorkloadKind::AllToAll, hosts, bytes, WorkloadConfig{}, nullptr);
  EXPECT_EQ(phases.size(), 1u);
  return phases.at(0);
}

// A custom phase from an explicit list of flows per source (sorted by destination here).
inline Phase custom_phase(std::map<int, std::vector<Flow>> flows) {
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
inline Phase random_alltoall(int hosts, uint64_t seed) {
  Phase p;
  p.name = "random alltoall";
  p.flows_from = [hosts, seed](int src, std::vector<Flow>& out) {
    for (int d = 0; d < hosts; ++d)
      if (d != src) out.push_back({d, 1 + static_cast<int64_t>(mix64(seed ^ mix64(uint64_t(src) * 100003 + d)) % 1000000)});
  };
  return p;
}

inline int64_t count_flows(const Phase& phase, int hosts) {
  std::vector<Flow> out;
  for (int h = 0; h < hosts; ++h) phase.flows_from(h, out);
  return static_cast<int64_t>(out.size());
}

inline fs::path temp_dir() {
  const fs::path dir = fs::path(testing::TempDir()) / "switchyard_netsim_test";
  fs::create_directories(dir);
  return dir;
}

inline std::string write_file(const std::string& name, const std::string& text) {
  const fs::path path = temp_dir() / name;
  std::ofstream(path) << text;
  return path.string();
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace sy::net::testing_support
