#include "parallel/netsim/netsim_config.hpp"

#include <array>

#include "core/config_table.hpp"

namespace sy::net {

using namespace cfg;

namespace {

constexpr std::array<const char*, 2> kTopologyNames = {"leafspine", "fattree"};
constexpr std::array<const char*, 4> kWorkloadNames = {"alltoall", "ring", "halving_doubling", "moe"};
constexpr std::array<const char*, 2> kRingOrderNames = {"topology", "random"};
constexpr std::array<const char*, 3> kAggregationNames = {"auto", "none", "leaf"};
constexpr std::array<const char*, 2> kAnalysisNames = {"full", "load"};

// "spray", "ecmp", "flowsplit" or "mp-K" with K >= 2.
struct PolicyCodec {
  std::string allowed() const { return "one of spray, ecmp, flowsplit, mp-K (K >= 2)"; }
  std::optional<Policy> parse(const std::string& s) const {
    if (s == "spray") return Policy{PolicyKind::Spray, 1};
    if (s == "ecmp") return Policy{PolicyKind::Ecmp, 1};
    if (s == "flowsplit") return Policy{PolicyKind::FlowSplit, 1};
    if (s.rfind("mp-", 0) == 0) {
      const auto k = parse_number<int>(s.substr(3));
      if (k && *k >= 2 && *k <= 1024) return Policy{PolicyKind::MultiPath, *k};
    }
    return std::nullopt;
  }
  std::string format(const Policy& p) const { return to_string(p); }
};

const KeyTable<NetsimConfig>& key_table() {
  using C = NetsimConfig;
  using T = TopologyConfig;
  using F = FailureConfig;
  using W = WorkloadConfig;
  using S = SimConfig;
  static const KeyTable<NetsimConfig> table = {
      key("topology.kind", &C::topology, &T::kind, choice<TopologyKind>(kTopologyNames),
          "leafspine (two tiers) or fattree (three tiers: pods of leaf-spine under core switches)"),
      key("topology.hosts_per_leaf", &C::topology, &T::hosts_per_leaf, positive<int>(), "hosts under one leaf"),
      key("topology.leaves", &C::topology, &T::leaves, positive<int>(), "leaves (per pod in a fat-tree)"),
      key("topology.spines", &C::topology, &T::spines, positive<int>(), "spines (aggregation switches per pod in a fat-tree)"),
      key("topology.pods", &C::topology, &T::pods, positive<int>(), "fattree: pods"),
      key("topology.cores_per_spine", &C::topology, &T::cores_per_spine, positive<int>(),
          "fattree: core switches above each spine position"),
      key("topology.link_gbps", &C::topology, &T::link_gbps, positive_real(), "host link rate, Gbit/s"),
      key("topology.oversubscription", &C::topology, &T::oversubscription, positive_real(),
          "host bandwidth into a leaf over its uplink bandwidth (1 = full bisection)"),
      key("topology.latency_us", &C::topology, &T::latency_us, non_negative_real(), "latency per link traversed, us"),
      key("failures.links", &C::failures, &F::links, TextCodec{},
          "failed cables, e.g. 'leaf3-spine5, leaf0-spine1' (fattree: pod0-leaf3-spine5, pod1-spine1-core2)"),
      key("failures.fraction", &C::failures, &F::fraction, RealCodec{.lo = 0.0, .hi = 1.0, .hi_open = true},
          "share of all switch-to-switch cables failed at random, besides failures.links"),
      key("failures.seed", &C::failures, &F::seed, non_negative<uint64_t>(), "seed of the random failures"),
      key("workload.kinds", &C::workload, &W::kinds, list_of(choice<WorkloadKind>(kWorkloadNames)),
          "collectives simulated"),
      key("workload.sizes_mib", &C::workload, &W::sizes_mib, list_of(RealCodec{.lo = 0.0, .lo_open = true, .hi = 1048576.0}),
          "M, MiB per host: the all-to-all send buffer, the all-reduce buffer, the mean MoE dispatch (own experts included)"),
      key("workload.trace", &C::workload, &W::trace, TextCodec{}, "moe: routing trace (switchyard train log.routing_trace), relative to the working directory"),
      key("workload.ring_order", &C::workload, &W::ring_order, choice<RingOrder>(kRingOrderNames),
          "ring all-reduce order: topology (hosts in leaf order) or random (a seeded shuffle)"),
      key("workload.seed", &C::workload, &W::seed, non_negative<uint64_t>(), "seed of ring_order = random"),
      key("netsim.policies", &C::netsim, &S::policies, list_of(PolicyCodec{}), "load-balancing policies compared"),
      key("netsim.seed", &C::netsim, &S::seed, non_negative<uint64_t>(), "ECMP hash seed"),
      key("netsim.aggregate", &C::netsim, &S::aggregate, choice<Aggregation>(kAggregationNames),
          "fluid model: none (every sub-flow), leaf (flows of one leaf pair and path, host links pooled per leaf), auto"),
      key("netsim.analysis", &C::netsim, &S::analysis, choice<Analysis>(kAnalysisNames),
          "full (link loads and completion time) or load (link loads only)"),
  };
  return table;
}

void check_cross_keys(const NetsimConfig& c, const CrossCheck<NetsimConfig>& x) {
  const TopologyConfig& t = c.topology;
  if (t.kind == TopologyKind::LeafSpine) {
    x.require(t.pods == 1, {"topology.pods", "topology.kind"}, x.show("topology.pods") + " needs topology.kind = fattree");
    x.require(t.cores_per_spine == 1, {"topology.cores_per_spine", "topology.kind"},
              x.show("topology.cores_per_spine") + " needs topology.kind = fattree");
  } else {
    x.require(t.pods >= 2, {"topology.pods", "topology.kind"},
              "topology.kind = fattree needs topology.pods >= 2, got " + x.show("topology.pods"));
  }
  const int64_t hosts = int64_t(t.hosts_per_leaf) * t.leaves * t.pods;
  x.require(hosts >= 2 && hosts <= (int64_t(1) << 20), {"topology.hosts_per_leaf", "topology.leaves", "topology.pods"},
            "hosts = hosts_per_leaf * leaves * pods = " + std::to_string(hosts) + ": expected 2 to 1048576");
  const std::string why = topology_size_problem(t);
  x.require(why.empty(), {"topology.leaves", "topology.spines", "topology.pods", "topology.cores_per_spine"}, why);
  bool moe = false;
  for (auto k : c.workload.kinds) moe |= k == WorkloadKind::MoeDispatch;
  x.require(!moe || !c.workload.trace.empty(), {"workload.kinds", "workload.trace"},
            "workload.kinds includes moe: workload.trace must name a routing trace file");
}

}  // namespace

std::string topology_size_problem(const TopologyConfig& t) {
  const bool fat = t.kind == TopologyKind::FatTree;
  const int64_t pods = fat ? t.pods : 1, cores = fat ? t.cores_per_spine : 0;
  const int64_t hosts = int64_t(t.hosts_per_leaf) * t.leaves * pods;
  const int64_t links = 2 * hosts + 2 * int64_t(t.leaves) * pods * t.spines + 2 * pods * t.spines * cores;
  if (links > kMaxLinks)
    return "the topology has " + std::to_string(links) + " links (2 hosts + 2 leaves x spines + 2 pods x spines x cores); at most " +
           std::to_string(kMaxLinks) + " are simulated";
  const int64_t paths = fat ? int64_t(t.spines) * cores : t.spines;
  if (paths > kMaxPaths)
    return "leaves are joined by " + std::to_string(paths) + " paths (spines x cores_per_spine); at most " +
           std::to_string(kMaxPaths) + " are simulated";
  return "";
}

const char* to_string(TopologyKind v) { return enum_name(v, kTopologyNames); }
const char* to_string(WorkloadKind v) { return enum_name(v, kWorkloadNames); }
const char* to_string(Aggregation v) { return enum_name(v, kAggregationNames); }

std::string to_string(const Policy& p) {
  switch (p.kind) {
    case PolicyKind::Spray: return "spray";
    case PolicyKind::Ecmp: return "ecmp";
    case PolicyKind::FlowSplit: return "flowsplit";
    case PolicyKind::MultiPath: return "mp-" + std::to_string(p.pieces);
  }
  return "?";
}

NetsimConfig load_netsim_config(const std::string& ini_path, const std::vector<std::string>& overrides) {
  const Settings settings = read_settings(ini_path, overrides, key_names(key_table()));
  NetsimConfig config;
  auto sources = apply_settings(key_table(), settings, config);
  check_cross_keys(config, CrossCheck<NetsimConfig>(key_table(), config, std::move(sources), "defaults"));
  return config;
}

std::string netsim_config_help() { return table_help(key_table()); }

std::string to_ini(const NetsimConfig& config) {
  return table_ini(key_table(), config, "switchyard netsim config, resolved (defaults, file, command line)");
}

}  // namespace sy::net
