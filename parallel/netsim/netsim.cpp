#include "parallel/netsim/netsim.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <ostream>
#include <unordered_map>

#include "core/error.hpp"
#include "parallel/alltoall.hpp"

namespace sy::net {

namespace {

// The exact fluid model (a class per sub-flow) while its incidences stay below
// this; past it, auto aggregates per leaf pair where that is sound.
constexpr double kExactIncidences = 8e6;
// Hosts of a leaf whose bytes out (and in) differ by at most this share may
// have their links pooled.
constexpr double kPoolSpread = 0.01;

// Routes one phase: loads, counts, and the fluid classes.
class Router {
 public:
  Router(const Topology& topo, const Policy& policy, const RouteOptions& options, Aggregation aggregate)
      : topo_(topo), policy_(policy), options_(options), aggregate_(aggregate) {
    out_.load.assign(topo.num_links(), 0.0);
    out_.aggregate = aggregate;
    if (options.fluid) {
      std::vector<double> capacity = topo.capacity();
      if (aggregate == Aggregation::Leaf) {
        // Pooled host links: a leaf's hosts' uplinks, then their downlinks, as one link each.
        pool_base_ = static_cast<int>(capacity.size());
        capacity.resize(capacity.size() + 2 * size_t(topo.leaves()), topo.host_capacity() * topo.hosts_per_leaf());
      }
      out_.fluid.emplace_back(std::move(capacity));
    }
    sender_range_.resize(topo.hosts_per_leaf());
    egress_.assign(topo.leaves(), 0.0);
    ingress_.assign(topo.leaves(), 0.0);
    pod_egress_.assign(topo.pods(), 0.0);
    pod_ingress_.assign(topo.pods(), 0.0);
  }

  PhaseRoute run(const Phase& phase) {
    const int hpl = topo_.hosts_per_leaf();
    std::vector<Flow> flows;            // the flows of leaf a's hosts, host by host
    std::vector<int64_t> start(hpl + 1), cursor(hpl);
    for (int a = 0; a < topo_.leaves(); ++a) {
      flows.clear();
      for (int i = 0; i < hpl; ++i) {
        start[i] = static_cast<int64_t>(flows.size());
        phase.flows_from(a * hpl + i, flows);
      }
      start[hpl] = static_cast<int64_t>(flows.size());
      out_.flows += start[hpl];
      for (int i = 0; i < hpl; ++i) cursor[i] = start[i];
      // Destination leaves in order, each the nearest any sender still has flows to
      // (a ring has one per leaf: no scan over every leaf pair).
      while (true) {
        int b = topo_.leaves();
        for (int i = 0; i < hpl; ++i)
          if (cursor[i] < start[i + 1]) b = std::min(b, topo_.leaf_of(flows[cursor[i]].dst));
        if (b == topo_.leaves()) break;
        const int32_t end_dst = (b + 1) * hpl;
        for (int i = 0; i < hpl; ++i) {
          sender_range_[i] = {cursor[i], cursor[i]};
          while (sender_range_[i].second < start[i + 1] && flows[sender_range_[i].second].dst < end_dst)
            ++sender_range_[i].second;
          cursor[i] = sender_range_[i].second;
        }
        route_leaf_pair(a, b, flows);
      }
    }
    finish();
    return std::move(out_);
  }

 private:
  // Every flow from leaf a's hosts to leaf b's.
  void route_leaf_pair(int a, int b, const std::vector<Flow>& flows) {
    const int hpl = topo_.hosts_per_leaf();
    a_ = a, b_ = b;
    members_.clear();
    if (a == b) {
      for (int i = 0; i < hpl; ++i)
        for (int64_t k = sender_range_[i].first; k < sender_range_[i].second; ++k)
          direct(a * hpl + i, flows[k].dst, flows[k].bytes);
      flush_members();
      return;
    }
    topo_.paths(a, b, paths_);
    if (paths_.empty())
      throw ConfigError("netsim: the failed links leave no path from leaf " + std::to_string(a) + " to leaf " +
                        std::to_string(b) + " (failures.links / failures.fraction)");
    out_.max_links = std::max(out_.max_links, paths_[0].hops + 2);
    const int p = static_cast<int>(paths_.size());
    if (policy_.kind == PolicyKind::Spray) prepare_spray();
    double leaf_bytes = 0.0;
    for (int i = 0; i < hpl; ++i) {
      const int src = a * hpl + i;
      const auto [lo, hi] = sender_range_[i];
      for (int64_t k = lo; k < hi; ++k) leaf_bytes += static_cast<double>(flows[k].bytes);
      switch (policy_.kind) {
        case PolicyKind::Spray:
          for (int64_t k = lo; k < hi; ++k) spray(src, flows[k].dst, flows[k].bytes);
          break;
        case PolicyKind::Ecmp:
          for (int64_t k = lo; k < hi; ++k) single(src, flows[k].dst, flows[k].bytes, hash_path(src, flows[k].dst, 0, p));
          break;
        case PolicyKind::MultiPath:
          for (int64_t k = lo; k < hi; ++k) {
            const int64_t bytes = flows[k].bytes;
            for (int j = 0; j < policy_.pieces; ++j) {
              const int64_t piece = bytes / policy_.pieces + (j < bytes % policy_.pieces ? 1 : 0);
              if (piece > 0) single(src, flows[k].dst, piece, hash_path(src, flows[k].dst, j + 1, p));
            }
          }
          break;
        case PolicyKind::FlowSplit: flowsplit(src, flows.data() + lo, static_cast<int>(hi - lo)); break;
      }
    }
    if (policy_.kind == PolicyKind::Spray) {
      // Spraying is linear in bytes: the leaf pair's total spreads like each flow.
      for (const auto& [link, share] : spray_links_) out_.load[link] += leaf_bytes * share;
    }
    egress_[a] += leaf_bytes;
    ingress_[b] += leaf_bytes;
    if (topo_.pod_of(a) != topo_.pod_of(b)) {
      pod_egress_[topo_.pod_of(a)] += leaf_bytes;
      pod_ingress_[topo_.pod_of(b)] += leaf_bytes;
    }
    out_.fabric_bytes += leaf_bytes;
    flush_members();
  }

  int hash_path(int src, int dst, int piece, int p) const {
    const uint64_t key = (uint64_t(uint32_t(src)) << 32) | uint32_t(dst);
    return static_cast<int>(mix64(mix64(options_.seed) ^ mix64(key) ^ (uint64_t(piece) * 0x9e3779b97f4a7c15ull)) %
                            uint64_t(p));
  }

  // DESIGN.md section 5 for n equal flows; plan_flowsplit's fill for unequal
  // ones. Each sender starts its round-robin at path (src mod s): its own split
  // is the same, but the senders of a leaf no longer all send their flow to a
  // leaf's host i over path i, which ties each spine's downlink to one host's
  // link: with 14 failed cables, max-min sharing then finished a 256-host
  // all-to-all 13% after spray, against 1.5% with the rotation.
  void flowsplit(int src, const Flow* f, int n) {
    if (n == 0) return;
    const int s = static_cast<int>(paths_.size());
    const int first = src % s;
    const bool equal = std::all_of(f, f + n, [&](const Flow& x) { return x.bytes == f[0].bytes; });
    if (equal) {
      const int q = n % s, whole = n - q;
      for (int i = 0; i < whole; ++i) single(src, f[i].dst, f[i].bytes, (first + i) % s);
      if (q == 0) return;
      const int pieces = s / std::gcd(q, s);
      int path = first;  // whole flows end where they began: whole is a multiple of s
      for (int i = whole; i < n; ++i)
        for (int j = 0; j < pieces; ++j) {
          const int64_t size = par::flowsplit_boundary(f[i].bytes, pieces, j + 1) - par::flowsplit_boundary(f[i].bytes, pieces, j);
          if (size > 0) single(src, f[i].dst, size, path);
          path = (path + 1) % s;
        }
      return;
    }
    counts_.resize(n);
    for (int i = 0; i < n; ++i) counts_[i] = f[i].bytes;
    par::plan_flowsplit(counts_.data(), n, s, plan_);
    for (const auto& sf : plan_) single(src, f[sf.dest].dst, sf.count, (first + sf.path) % s);
  }

  void prepare_spray() {
    spray_links_.clear();
    const double share = 1.0 / static_cast<double>(paths_.size());
    for (const auto& path : paths_)
      for (int h = 0; h < path.hops; ++h) spray_links_.emplace_back(path.links[h], share);
    std::sort(spray_links_.begin(), spray_links_.end());
    size_t w = 0;  // merge links shared by several paths (a fat-tree's first and last hop)
    for (size_t i = 0; i < spray_links_.size(); ++i) {
      if (w > 0 && spray_links_[w - 1].first == spray_links_[i].first) spray_links_[w - 1].second += share;
      else spray_links_[w++] = spray_links_[i];
    }
    spray_links_.resize(w);
  }

  void host_loads(int src, int dst, int64_t bytes) {
    out_.load[topo_.host_up(src)] += static_cast<double>(bytes);
    out_.load[topo_.host_down(dst)] += static_cast<double>(bytes);
  }

  void direct(int src, int dst, int64_t bytes) {
    host_loads(src, dst, bytes);
    out_.max_links = std::max(out_.max_links, 2);
    ++out_.subflows;
    add_fluid(src, dst, bytes, kDirect);
  }

  void single(int src, int dst, int64_t bytes, int path) {
    host_loads(src, dst, bytes);
    const Path& pa = paths_[path];
    for (int h = 0; h < pa.hops; ++h) out_.load[pa.links[h]] += static_cast<double>(bytes);
    ++out_.subflows;
    add_fluid(src, dst, bytes, path);
  }

  void spray(int src, int dst, int64_t bytes) {
    host_loads(src, dst, bytes);  // the fabric load is added per leaf pair
    ++out_.subflows;
    add_fluid(src, dst, bytes, kSprayed);
  }

  static constexpr int kDirect = -1, kSprayed = -2;

  // The fluid class of one sub-flow: exact, or counted into its leaf pair's class.
  void add_fluid(int src, int dst, int64_t bytes, int path) {
    if (!options_.fluid) return;
    if (aggregate_ == Aggregation::Leaf) {
      members_[{path, bytes}] += 1.0;
      return;
    }
    links_.clear();
    coefs_.clear();
    links_.push_back(topo_.host_up(src));
    coefs_.push_back(1.0);
    append_fabric(path);
    links_.push_back(topo_.host_down(dst));
    coefs_.push_back(1.0);
    out_.fluid[0].add_class(static_cast<double>(bytes), 1.0, links_.data(), coefs_.data(), static_cast<int>(links_.size()));
  }

  void append_fabric(int path) {
    if (path == kDirect) return;
    if (path == kSprayed) {
      for (const auto& [link, share] : spray_links_) links_.push_back(link), coefs_.push_back(share);
      return;
    }
    const Path& pa = paths_[path];
    for (int h = 0; h < pa.hops; ++h) links_.push_back(pa.links[h]), coefs_.push_back(1.0);
  }

  // The leaf pair's aggregated classes, over the pooled host links.
  void flush_members() {
    if (members_.empty()) return;
    for (const auto& [key, count] : members_) {
      const auto [path, size] = key;
      const auto bytes = static_cast<double>(size);
      links_.clear();
      coefs_.clear();
      links_.push_back(pool_base_ + a_);
      coefs_.push_back(1.0);
      append_fabric(path);
      links_.push_back(pool_base_ + topo_.leaves() + b_);
      coefs_.push_back(1.0);
      out_.fluid[0].add_class(bytes, count, links_.data(), coefs_.data(), static_cast<int>(links_.size()));
    }
    members_.clear();
  }

  void finish() {
    const auto& cap = topo_.capacity();
    for (int l = 0; l < topo_.num_links(); ++l)
      if (topo_.is_fabric(l) && out_.load[l] > 0.0) out_.max_time = std::max(out_.max_time, out_.load[l] / cap[l]);
    double ideal = 0.0;
    for (int l = 0; l < topo_.leaves(); ++l) {
      if (egress_[l] > 0.0) ideal = std::max(ideal, egress_[l] / topo_.leaf_up_capacity(l));
      if (ingress_[l] > 0.0) ideal = std::max(ideal, ingress_[l] / topo_.leaf_down_capacity(l));
    }
    for (int p = 0; p < topo_.pods(); ++p) {
      if (pod_egress_[p] > 0.0) ideal = std::max(ideal, pod_egress_[p] / topo_.pod_up_capacity(p));
      if (pod_ingress_[p] > 0.0) ideal = std::max(ideal, pod_ingress_[p] / topo_.pod_down_capacity(p));
    }
    out_.ideal_time = ideal;
  }

  const Topology& topo_;
  const Policy policy_;
  const RouteOptions options_;
  const Aggregation aggregate_;
  PhaseRoute out_;
  int pool_base_ = 0;
  int a_ = 0, b_ = 0;
  std::vector<std::pair<int64_t, int64_t>> sender_range_;  // (hosts per leaf,) each sender's flows to leaf b
  std::vector<Path> paths_;
  std::vector<std::pair<int32_t, double>> spray_links_;  // (link, share of a sprayed flow)
  std::vector<int64_t> counts_;
  std::vector<par::SubFlow> plan_;
  std::vector<int32_t> links_;
  std::vector<double> coefs_;
  struct KeyHash {
    size_t operator()(const std::pair<int, int64_t>& k) const {
      return static_cast<size_t>(mix64(uint64_t(k.second) ^ (uint64_t(uint32_t(k.first)) << 48)));
    }
  };
  std::unordered_map<std::pair<int, int64_t>, double, KeyHash> members_;  // (path, bytes) -> flows
  std::vector<double> egress_, ingress_, pod_egress_, pod_ingress_;
};

constexpr double kMiB = 1024.0 * 1024.0;

}  // namespace

Aggregation choose_aggregation(const Topology& topo, const Phase& phase, Aggregation asked) {
  if (asked != Aggregation::Auto) return asked;
  // A sprayed flow touches every path: the exact model's size is flows x paths.
  double incidences = 0.0;
  std::vector<double> out_bytes(topo.hosts(), 0.0), in_bytes(topo.hosts(), 0.0);
  std::vector<Flow> flows;
  for (int h = 0; h < topo.hosts(); ++h) {
    flows.clear();
    phase.flows_from(h, flows);
    for (const auto& f : flows) {
      const int a = topo.leaf_of(h), b = topo.leaf_of(f.dst);
      incidences += a == b ? 2.0 : 2.0 + 2.0 * topo.full_paths(a, b);
      out_bytes[h] += static_cast<double>(f.bytes);
      in_bytes[f.dst] += static_cast<double>(f.bytes);
    }
  }
  if (incidences <= kExactIncidences) return Aggregation::None;
  // Pooling a leaf's host links is sound only while its hosts carry equal
  // bytes: a host that receives more than the others (an incast, a hot
  // expert) would borrow its neighbours' links. Such phases stay exact.
  const int hpl = topo.hosts_per_leaf();
  for (const auto* bytes : {&out_bytes, &in_bytes})
    for (int l = 0; l < topo.leaves(); ++l) {
      const auto first = bytes->begin() + int64_t(l) * hpl;
      const auto [lo, hi] = std::minmax_element(first, first + hpl);
      if (*hi > *lo * (1.0 + kPoolSpread)) return Aggregation::None;
    }
  return Aggregation::Leaf;
}

PhaseRoute route_phase(const Topology& topo, const Phase& phase, const Policy& policy, const RouteOptions& options) {
  const Aggregation aggregate = options.fluid ? choose_aggregation(topo, phase, options.aggregate) : Aggregation::None;
  Router router(topo, policy, options, aggregate);
  return router.run(phase);
}

std::vector<Result> run_netsim(const NetsimConfig& config, const std::string& topology_name, std::ostream* progress) {
  using Clock = std::chrono::steady_clock;
  const Topology topo(config.topology, config.failures);
  if (progress) *progress << "netsim: " << topology_name << ": " << topo.describe() << "\n";
  RoutingTrace trace;
  const bool moe = std::find(config.workload.kinds.begin(), config.workload.kinds.end(), WorkloadKind::MoeDispatch) !=
                   config.workload.kinds.end();
  if (moe) trace = read_routing_trace(config.workload.trace);
  const bool fluid = config.netsim.analysis == Analysis::Full;
  const double nan = std::numeric_limits<double>::quiet_NaN();

  std::vector<Result> results;
  for (const WorkloadKind kind : config.workload.kinds) {
    for (const double mib : config.workload.sizes_mib) {
      const auto bytes = static_cast<int64_t>(std::llround(mib * kMiB));
      const std::vector<Phase> phases = workload_phases(kind, topo.hosts(), bytes, config.workload, moe ? &trace : nullptr);
      std::vector<Aggregation> aggregation;  // per phase, the same for every policy
      for (const auto& ph : phases)
        aggregation.push_back(fluid ? choose_aggregation(topo, ph, config.netsim.aggregate) : Aggregation::None);
      const size_t first = results.size();
      for (const Policy& policy : config.netsim.policies) {
        const auto t0 = Clock::now();
        Result r;
        r.topology = topology_name;
        r.hosts = topo.hosts();
        r.policy = to_string(policy);
        r.workload = kind;
        r.bytes = bytes;
        r.max_link_load_over_ideal = 1.0;
        r.completion_ms = fluid ? 0.0 : nan;
        r.slowdown_vs_spray = nan;
        for (size_t i = 0; i < phases.size(); ++i) {
          const PhaseRoute route = route_phase(topo, phases[i], policy, {config.netsim.seed, aggregation[i], fluid});
          const auto repeat = phases[i].repeat;
          r.flows += route.flows * repeat;
          r.subflows += route.subflows * repeat;
          if (route.fabric_bytes > 0.0)
            r.max_link_load_over_ideal = std::max(r.max_link_load_over_ideal, route.max_time / route.ideal_time);
          if (route.aggregate == Aggregation::Leaf) r.aggregate = Aggregation::Leaf;
          if (fluid && route.flows > 0) {
            const double t = route.fluid[0].completion_time();
            r.completion_ms += 1e3 * static_cast<double>(repeat) * (t + route.max_links * topo.latency_s());
          }
        }
        if (policy.kind == PolicyKind::Spray) r.subflows = r.flows;
        r.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
        results.push_back(r);
        if (progress)
          *progress << "netsim: " << to_string(kind) << " " << mib << " MiB, " << r.policy << ": load "
                    << r.max_link_load_over_ideal << "x ideal" << (fluid ? ", " + std::to_string(r.completion_ms) + " ms" : "")
                    << " (" << r.wall_s << " s)\n"
                    << std::flush;
      }
      // Slowdowns against spray in the same group.
      for (size_t i = first; i < results.size(); ++i)
        if (results[i].policy == "spray" && fluid)
          for (size_t j = first; j < results.size(); ++j)
            results[j].slowdown_vs_spray = results[j].completion_ms / results[i].completion_ms;
    }
  }
  return results;
}

}  // namespace sy::net
