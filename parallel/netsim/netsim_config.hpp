// The network simulator's config: [topology], [failures], [workload], [netsim].
//
// Loaded like the trainer's config (core/config_table.hpp): an INI file, then
// --section.key=value overrides, every problem a one-line sy::ConfigError.
// configs/net/*.ini are the shipped topologies.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::net {

enum class TopologyKind : uint8_t { LeafSpine, FatTree };  // leafspine | fattree
enum class PolicyKind : uint8_t { Spray, Ecmp, FlowSplit, MultiPath };
enum class WorkloadKind : uint8_t { AllToAll, Ring, HalvingDoubling, MoeDispatch };  // alltoall | ring | halving_doubling | moe
enum class RingOrder : uint8_t { Topology, Random };  // topology | random
enum class Aggregation : uint8_t { Auto, None, Leaf };  // auto | none | leaf
enum class Analysis : uint8_t { Full, Load };           // full | load

const char* to_string(TopologyKind v);
const char* to_string(WorkloadKind v);
const char* to_string(Aggregation v);

// A load-balancing policy: spray, ecmp, flowsplit, or mp-K (K pieces per flow, each hashed).
struct Policy {
  PolicyKind kind = PolicyKind::Spray;
  int pieces = 1;  // K for mp-K
  bool operator==(const Policy&) const = default;
};
std::string to_string(const Policy& p);

// A two-tier leaf-spine is a fat-tree of one pod without cores. Three tiers:
// `pods` copies of a leaf-spine (leaf = edge switch, spine = aggregation
// switch), and spine j of every pod connects to the same `cores_per_spine`
// core switches (core plane j).
struct TopologyConfig {
  TopologyKind kind = TopologyKind::LeafSpine;
  int hosts_per_leaf = 16;
  int leaves = 16;          // leaves per pod
  int spines = 16;          // spines (aggregation switches) per pod
  int pods = 1;             // fattree only
  int cores_per_spine = 1;  // fattree only
  double link_gbps = 400.0; // host links
  // Host bandwidth into a leaf over its uplink bandwidth; 1 = full bisection.
  // Above the leaves (a fat-tree's spine-to-core tier) the fabric has full bisection.
  double oversubscription = 1.0;
  double latency_us = 1.0;  // per link traversed (propagation and switching)
};

struct FailureConfig {
  std::string links;      // "leaf3-spine5, ..." or "pod0-leaf3-spine5, pod1-spine2-core0" (cables, both directions)
  double fraction = 0.0;  // random share of the switch-to-switch cables failed
  uint64_t seed = 1;
};

struct WorkloadConfig {
  std::vector<WorkloadKind> kinds = {WorkloadKind::AllToAll, WorkloadKind::Ring};
  std::vector<double> sizes_mib = {1, 16, 256};  // M: bytes per host (all-to-all send buffer, all-reduce buffer)
  std::string trace;                             // moe: routing trace file
  RingOrder ring_order = RingOrder::Topology;
  uint64_t seed = 1;  // ring_order = random
};

struct SimConfig {
  std::vector<Policy> policies = {{PolicyKind::Spray, 1}, {PolicyKind::Ecmp, 1}, {PolicyKind::MultiPath, 4},
                                  {PolicyKind::FlowSplit, 1}};
  uint64_t seed = 1;  // ECMP hash seed
  Aggregation aggregate = Aggregation::Auto;
  Analysis analysis = Analysis::Full;
};

struct NetsimConfig {
  TopologyConfig topology;
  FailureConfig failures;
  WorkloadConfig workload;
  SimConfig netsim;
};

// The largest topology simulated: links (hosts, leaf-spine, spine-core, both
// directions) and paths between two leaves.
inline constexpr int64_t kMaxLinks = int64_t(1) << 27;
inline constexpr int64_t kMaxPaths = int64_t(1) << 16;
// Why t is too large to simulate, or "" when it is not.
std::string topology_size_problem(const TopologyConfig& t);

// Defaults, then the file (skipped when empty), then "--section.key=value" overrides.
NetsimConfig load_netsim_config(const std::string& ini_path, const std::vector<std::string>& overrides = {});
std::string netsim_config_help();
std::string to_ini(const NetsimConfig& config);

}  // namespace sy::net
