// Leaf-spine and three-tier fat-tree topologies for the flow-level simulator.
//
// Links are directed; a cable is two links. Numbering (H hosts, L leaves in
// all, S spines per pod, P pods, C cores per spine position):
//   host up h (host -> leaf)              h
//   host down h (leaf -> host)            H + h
//   leaf up (leaf l -> its pod's spine j)  2H + l S + j
//   spine down (spine j -> leaf l)        2H + L S + l S + j
//   spine up (pod p spine j -> core c)    2H + 2 L S + (p S + j) C + c
//   core down (core c -> pod p spine j)   2H + 2 L S + P S C + (p S + j) C + c
// Core switch (j, c) connects spine j of every pod. A path between two leaves
// is the list of its switch-to-switch links (2 inside a pod, 4 across pods);
// hosts under one leaf talk through the leaf alone.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/netsim/netsim_config.hpp"

namespace sy::net {

struct Path {
  std::array<int32_t, 4> links{};
  int hops = 0;  // switch-to-switch links used
};

enum class LinkClass : uint8_t { HostUp, HostDown, LeafUp, SpineDown, SpineUp, CoreDown };

class Topology {
 public:
  // Throws ConfigError for a failure name that names no cable.
  Topology(const TopologyConfig& config, const FailureConfig& failures);

  int hosts() const { return hosts_; }
  int hosts_per_leaf() const { return hpl_; }
  int leaves() const { return leaves_; }  // in all pods
  int pods() const { return pods_; }
  int leaf_of(int host) const { return host / hpl_; }
  int pod_of(int leaf) const { return leaf / leaves_per_pod_; }
  int num_links() const { return static_cast<int>(capacity_.size()); }
  int host_up(int h) const { return h; }
  int host_down(int h) const { return hosts_ + h; }
  bool is_fabric(int link) const { return link >= 2 * hosts_; }
  LinkClass link_class(int link) const;
  std::string link_name(int link) const;
  const std::vector<double>& capacity() const { return capacity_; }  // bytes per second
  double host_capacity() const { return capacity_[0]; }
  bool failed(int link) const { return failed_[link] != 0; }
  int failed_cables() const { return failed_cables_; }
  double latency_s() const { return latency_s_; }
  std::string describe() const;  // "leafspine, 256 hosts: 16 leaves x 16 hosts, 16 spines, host links 400 Gbit/s"

  // The surviving paths from leaf a to leaf b != a, in a fixed order (spine
  // major, then core). Empty when failures cut every path.
  void paths(int a, int b, std::vector<Path>& out) const;
  // Paths between two leaves without failures (the s of DESIGN.md section 5).
  int full_paths(int a, int b) const;

  // Capacity (bytes/s) of the surviving links out of leaf l to spines, into leaf l
  // from spines, out of pod p to cores, into pod p from cores.
  double leaf_up_capacity(int l) const { return leaf_up_cap_[l]; }
  double leaf_down_capacity(int l) const { return leaf_down_cap_[l]; }
  double pod_up_capacity(int p) const { return pod_up_cap_[p]; }
  double pod_down_capacity(int p) const { return pod_down_cap_[p]; }

 private:
  int leaf_up(int l, int j) const { return 2 * hosts_ + l * spines_ + j; }
  int spine_down(int j, int l) const { return 2 * hosts_ + leaves_ * spines_ + l * spines_ + j; }
  int spine_up(int p, int j, int c) const { return core_base_ + (p * spines_ + j) * cores_ + c; }
  int core_down(int c, int p, int j) const { return core_base_ + pods_ * spines_ * cores_ + (p * spines_ + j) * cores_ + c; }
  void fail_cable(int up_link, int down_link);
  void fail_named(const std::string& name);

  TopologyKind kind_;
  int hosts_, hpl_, leaves_, leaves_per_pod_, spines_, pods_, cores_;
  int core_base_;
  double latency_s_;
  std::vector<double> capacity_;  // (links,) bytes per second
  std::vector<uint8_t> failed_;   // (links,)
  int failed_cables_ = 0;
  std::vector<double> leaf_up_cap_, leaf_down_cap_;  // (leaves,)
  std::vector<double> pod_up_cap_, pod_down_cap_;    // (pods,)
};

// A 64-bit mix (splitmix64's finalizer): the ECMP hash and the failure sampler.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace sy::net
