#include "parallel/netsim/topology.hpp"

#include <algorithm>
#include <numeric>
#include <regex>
#include <sstream>

#include "core/config_table.hpp"
#include "core/error.hpp"

namespace sy::net {

namespace {

constexpr double kBytesPerGbit = 1e9 / 8.0;

}  // namespace

Topology::Topology(const TopologyConfig& c, const FailureConfig& failures)
    : kind_(c.kind),
      hpl_(c.hosts_per_leaf),
      leaves_per_pod_(c.leaves),
      spines_(c.spines),
      pods_(c.kind == TopologyKind::FatTree ? c.pods : 1),
      cores_(c.kind == TopologyKind::FatTree ? c.cores_per_spine : 0),
      latency_s_(c.latency_us * 1e-6) {
  SY_CHECK_AS(ConfigError, c.hosts_per_leaf >= 1 && c.leaves >= 1 && c.spines >= 1 && pods_ >= 1 &&
                               (c.kind == TopologyKind::LeafSpine || cores_ >= 1),
              "topology: every count must be >= 1");
  SY_CHECK_AS(ConfigError, int64_t(c.hosts_per_leaf) * c.leaves * pods_ <= (int64_t(1) << 20), "topology: more than 2^20 hosts");
  const std::string too_large = topology_size_problem(c);
  SY_CHECK_AS(ConfigError, too_large.empty(), "topology: " << too_large);
  leaves_ = leaves_per_pod_ * pods_;
  hosts_ = hpl_ * leaves_;
  core_base_ = 2 * hosts_ + 2 * leaves_ * spines_;
  const int links = core_base_ + 2 * pods_ * spines_ * cores_;
  const double host_cap = c.link_gbps * kBytesPerGbit;
  // Oversubscription at the leaves only: above them the fabric has full bisection.
  const double leaf_cap = host_cap * hpl_ / (spines_ * c.oversubscription);
  const double core_cap = cores_ > 0 ? leaf_cap * leaves_per_pod_ / cores_ : 0.0;
  capacity_.assign(links, 0.0);
  for (int l = 0; l < links; ++l) {
    switch (link_class(l)) {
      case LinkClass::HostUp:
      case LinkClass::HostDown: capacity_[l] = host_cap; break;
      case LinkClass::LeafUp:
      case LinkClass::SpineDown: capacity_[l] = leaf_cap; break;
      case LinkClass::SpineUp:
      case LinkClass::CoreDown: capacity_[l] = core_cap; break;
    }
  }
  failed_.assign(links, 0);

  // Named cables first, then a random share of the rest.
  std::stringstream names(failures.links);
  for (std::string name; std::getline(names, name, ',');) {
    name = cfg::trim(name);
    if (!name.empty()) fail_named(name);
  }
  if (failures.fraction > 0.0) {
    std::vector<std::pair<int, int>> cables;  // (up link, down link) of the cables not failed by name
    size_t all = 0;
    const auto candidate = [&](int up, int down) {
      ++all;
      if (!failed_[up]) cables.emplace_back(up, down);
    };
    for (int l = 0; l < leaves_; ++l)
      for (int j = 0; j < spines_; ++j) candidate(leaf_up(l, j), spine_down(j, l));
    for (int p = 0; p < pods_; ++p)
      for (int j = 0; j < spines_; ++j)
        for (int k = 0; k < cores_; ++k) candidate(spine_up(p, j, k), core_down(k, p, j));
    // A share of all the cables, drawn from those not failed by name.
    const auto count = static_cast<size_t>(failures.fraction * static_cast<double>(all) + 0.5);
    // A partial Fisher-Yates shuffle with our own generator: the same cables on every platform.
    uint64_t state = failures.seed;
    for (size_t i = 0; i < count && i < cables.size(); ++i) {
      state = mix64(state);
      const size_t pick = i + state % (cables.size() - i);
      std::swap(cables[i], cables[pick]);
      fail_cable(cables[i].first, cables[i].second);
    }
  }

  leaf_up_cap_.assign(leaves_, 0.0);
  leaf_down_cap_.assign(leaves_, 0.0);
  pod_up_cap_.assign(pods_, 0.0);
  pod_down_cap_.assign(pods_, 0.0);
  for (int l = 0; l < leaves_; ++l)
    for (int j = 0; j < spines_; ++j) {
      if (!failed(leaf_up(l, j))) leaf_up_cap_[l] += capacity_[leaf_up(l, j)];
      if (!failed(spine_down(j, l))) leaf_down_cap_[l] += capacity_[spine_down(j, l)];
    }
  for (int p = 0; p < pods_; ++p)
    for (int j = 0; j < spines_; ++j)
      for (int k = 0; k < cores_; ++k) {
        if (!failed(spine_up(p, j, k))) pod_up_cap_[p] += capacity_[spine_up(p, j, k)];
        if (!failed(core_down(k, p, j))) pod_down_cap_[p] += capacity_[core_down(k, p, j)];
      }
}

LinkClass Topology::link_class(int link) const {
  if (link < hosts_) return LinkClass::HostUp;
  if (link < 2 * hosts_) return LinkClass::HostDown;
  if (link < 2 * hosts_ + leaves_ * spines_) return LinkClass::LeafUp;
  if (link < core_base_) return LinkClass::SpineDown;
  if (link < core_base_ + pods_ * spines_ * cores_) return LinkClass::SpineUp;
  return LinkClass::CoreDown;
}

std::string Topology::link_name(int link) const {
  const auto pod_prefix = [&](int p) { return kind_ == TopologyKind::FatTree ? "pod" + std::to_string(p) + "-" : ""; };
  std::ostringstream os;
  switch (link_class(link)) {
    case LinkClass::HostUp: os << "host" << link << "->leaf" << leaf_of(link); break;
    case LinkClass::HostDown: os << "leaf" << leaf_of(link - hosts_) << "->host" << link - hosts_; break;
    case LinkClass::LeafUp: {
      const int i = link - 2 * hosts_, l = i / spines_;
      os << pod_prefix(pod_of(l)) << "leaf" << l % leaves_per_pod_ << "->spine" << i % spines_;
      break;
    }
    case LinkClass::SpineDown: {
      const int i = link - 2 * hosts_ - leaves_ * spines_, l = i / spines_;
      os << pod_prefix(pod_of(l)) << "spine" << i % spines_ << "->leaf" << l % leaves_per_pod_;
      break;
    }
    case LinkClass::SpineUp: {
      const int i = link - core_base_;
      os << "pod" << i / cores_ / spines_ << "-spine" << i / cores_ % spines_ << "->core" << i % cores_;
      break;
    }
    case LinkClass::CoreDown: {
      const int i = link - core_base_ - pods_ * spines_ * cores_;
      os << "pod" << i / cores_ / spines_ << "-core" << i % cores_ << "->spine" << i / cores_ % spines_;
      break;
    }
  }
  return os.str();
}

std::string Topology::describe() const {
  std::ostringstream os;
  if (kind_ == TopologyKind::LeafSpine)
    os << "leafspine, " << hosts_ << " hosts: " << leaves_ << " leaves x " << hpl_ << " hosts, " << spines_ << " spines";
  else
    os << "fattree, " << hosts_ << " hosts: " << pods_ << " pods x " << leaves_per_pod_ << " leaves x " << hpl_
       << " hosts, " << spines_ << " spines per pod, " << spines_ * cores_ << " cores";
  os << ", host links " << capacity_[0] / kBytesPerGbit << " Gbit/s";
  if (failed_cables_ > 0) os << ", " << failed_cables_ << " failed cables";
  return os.str();
}

void Topology::fail_cable(int up_link, int down_link) {
  if (failed_[up_link] && failed_[down_link]) return;
  failed_[up_link] = failed_[down_link] = 1;
  ++failed_cables_;
}

void Topology::fail_named(const std::string& name) {
  static const std::regex leaf_spine(R"((?:pod(\d+)-)?(?:leaf(\d+)-spine(\d+)|spine(\d+)-leaf(\d+)))");
  static const std::regex spine_core(R"(pod(\d+)-(?:spine(\d+)-core(\d+)|core(\d+)-spine(\d+)))");
  const auto bad = [&](const std::string& why) {
    throw ConfigError("failures.links: '" + name + "': " + why);
  };
  const auto index = [&](const std::ssub_match& m, int limit, const char* what) {
    const std::string digits = m.str();
    const long v = digits.size() > 9 ? -1 : std::stol(digits);
    if (v < 0 || v >= limit)
      bad(std::string(what) + " " + m.str() + " does not exist (0 to " + std::to_string(limit - 1) + ")");
    return static_cast<int>(v);
  };
  std::smatch m;
  if (std::regex_match(name, m, leaf_spine)) {
    const bool has_pod = m[1].matched;
    if (has_pod != (kind_ == TopologyKind::FatTree))
      bad(kind_ == TopologyKind::FatTree ? "a fat-tree cable names its pod: podP-leafL-spineJ"
                                         : "a leaf-spine cable has no pod: leafL-spineJ");
    const int p = has_pod ? index(m[1], pods_, "pod") : 0;
    const int l = index(m[2].matched ? m[2] : m[5], leaves_per_pod_, "leaf");
    const int j = index(m[2].matched ? m[3] : m[4], spines_, "spine");
    const int leaf = p * leaves_per_pod_ + l;
    fail_cable(leaf_up(leaf, j), spine_down(j, leaf));
    return;
  }
  if (std::regex_match(name, m, spine_core)) {
    if (kind_ != TopologyKind::FatTree) bad("a leaf-spine has no core switches");
    const int p = index(m[1], pods_, "pod");
    const int j = index(m[2].matched ? m[2] : m[5], spines_, "spine");
    const int c = index(m[2].matched ? m[3] : m[4], cores_, "core");
    fail_cable(spine_up(p, j, c), core_down(c, p, j));
    return;
  }
  bad("expected leafL-spineJ (fattree: podP-leafL-spineJ or podP-spineJ-coreC)");
}

void Topology::paths(int a, int b, std::vector<Path>& out) const {
  out.clear();
  const int pa = pod_of(a), pb = pod_of(b);
  for (int j = 0; j < spines_; ++j) {
    const int up = leaf_up(a, j), down = spine_down(j, b);
    if (failed(up) || failed(down)) continue;
    if (pa == pb) {
      out.push_back(Path{{up, down, 0, 0}, 2});
      continue;
    }
    for (int c = 0; c < cores_; ++c) {
      const int su = spine_up(pa, j, c), cd = core_down(c, pb, j);
      if (failed(su) || failed(cd)) continue;
      out.push_back(Path{{up, su, cd, down}, 4});
    }
  }
}

int Topology::full_paths(int a, int b) const { return pod_of(a) == pod_of(b) ? spines_ : spines_ * cores_; }

}  // namespace sy::net
