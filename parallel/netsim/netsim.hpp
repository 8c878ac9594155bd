// The flow-level network simulator behind `switchyard netsim` (DESIGN.md section 5).
//
// For each (policy, workload, size) it routes every flow of the collective's
// phases over the topology and reports:
//   max_link_load_over_ideal  the busiest switch-to-switch link's load over its
//                             capacity, divided by the lower bound that any
//                             routing must meet (each leaf's and pod's traffic
//                             out of and into it over its surviving links);
//                             the largest over the phases; 1 where a phase
//                             crosses no switch-to-switch link
//   completion_ms             the fluid model's time (parallel/netsim/fluid.hpp)
//                             summed over the phases, each repeat paying the
//                             longest path's latency once
//   slowdown_vs_spray         completion over spray's in the same run
//   flows, subflows           messages sent in the collective, before and after
//                             the policy splits them (spray splits packets,
//                             not messages: subflows = flows)
// Policies (over the surviving paths between two leaves; inside a leaf every
// flow goes direct):
//   spray      every flow spread evenly over all paths (ideal packet spraying)
//   ecmp       a seeded hash of (source, destination) picks one path per flow
//   mp-K       each flow cut in K near-equal pieces, each hashed like ecmp
//   flowsplit  DESIGN.md section 5 per (sender, destination leaf): equal flows
//              go whole round-robin and the last n mod s are cut in s/g pieces;
//              unequal flows fill the paths in order, each to within one byte
//              of its share (par::plan_flowsplit)
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "parallel/netsim/fluid.hpp"
#include "parallel/netsim/netsim_config.hpp"
#include "parallel/netsim/topology.hpp"
#include "parallel/netsim/workload.hpp"

namespace sy::net {

// One phase routed by one policy.
struct PhaseRoute {
  std::vector<double> load;  // (links,) bytes
  int64_t flows = 0;
  int64_t subflows = 0;
  int max_links = 0;          // longest path in links, host links included
  double fabric_bytes = 0.0;  // bytes that cross a switch-to-switch link
  double ideal_time = 0.0;    // lower bound on the busiest fabric link's load / capacity, seconds
  double max_time = 0.0;      // the busiest fabric link's load / capacity, seconds
  Aggregation aggregate = Aggregation::None;
  std::vector<FluidNetwork> fluid;  // empty, or one network when the fluid model is asked for
};

struct RouteOptions {
  uint64_t seed = 1;
  Aggregation aggregate = Aggregation::Auto;
  bool fluid = true;
};

// Throws ConfigError when a flow has no surviving path.
PhaseRoute route_phase(const Topology& topo, const Phase& phase, const Policy& policy, const RouteOptions& options);

// The auto rule: the exact model (none) while it stays small or while some
// leaf's hosts send or receive unequal bytes; per leaf pair otherwise.
Aggregation choose_aggregation(const Topology& topo, const Phase& phase, Aggregation asked);

struct Result {
  std::string topology;  // the config's name (file stem) or "custom"
  int hosts = 0;
  std::string policy;
  WorkloadKind workload = WorkloadKind::AllToAll;
  int64_t bytes = 0;
  double max_link_load_over_ideal = 0.0;
  double completion_ms = 0.0;       // NaN with analysis = load
  double slowdown_vs_spray = 0.0;   // NaN without spray in the run
  int64_t flows = 0, subflows = 0;
  Aggregation aggregate = Aggregation::None;
  double wall_s = 0.0;  // simulator time spent on this result
};

// Every (workload, size, policy) of the config. `progress` (may be null) gets
// the topology's description, then a line per result as it is done.
std::vector<Result> run_netsim(const NetsimConfig& config, const std::string& topology_name, std::ostream* progress);

}  // namespace sy::net
