#include "parallel/netsim/workload.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <sstream>

#include "core/error.hpp"
#include "parallel/netsim/topology.hpp"

namespace sy::net {

namespace {

[[noreturn]] void bad_trace(const std::string& path, int line, const std::string& what) {
  throw ConfigError(path + ": line " + std::to_string(line) + ": " + what);
}

// All-to-all: M / N to every other host.
Phase alltoall_phase(int hosts, int64_t bytes) {
  const int64_t share = bytes / hosts;  // >= 1: workload_phases checks
  Phase p;
  p.name = "alltoall";
  p.flows_from = [hosts, share](int src, std::vector<Flow>& out) {
    for (int d = 0; d < hosts; ++d)
      if (d != src) out.push_back({d, share});
  };
  return p;
}

// One flow per host: host h sends `bytes` to partner(h) (no flow when partner(h) = h or < 0).
Phase pairwise_phase(std::string name, int64_t repeat, int64_t bytes, std::function<int(int)> partner) {
  Phase p;
  p.name = std::move(name);
  p.repeat = repeat;
  p.flows_from = [bytes, partner = std::move(partner)](int src, std::vector<Flow>& out) {
    const int d = partner(src);
    if (d >= 0 && d != src && bytes > 0) out.push_back({d, bytes});
  };
  return p;
}

std::vector<Phase> ring_phases(int hosts, int64_t bytes, const WorkloadConfig& config) {
  auto order = std::make_shared<std::vector<int>>(hosts);
  std::iota(order->begin(), order->end(), 0);
  if (config.ring_order == RingOrder::Random) {
    uint64_t state = config.seed;
    for (int i = hosts - 1; i > 0; --i) {
      state = mix64(state);
      std::swap((*order)[i], (*order)[state % uint64_t(i + 1)]);
    }
  }
  auto next = std::make_shared<std::vector<int>>(hosts);
  for (int i = 0; i < hosts; ++i) (*next)[(*order)[i]] = (*order)[(i + 1) % hosts];
  const int64_t chunk = (bytes + hosts - 1) / hosts;
  return {pairwise_phase("ring step", 2 * int64_t(hosts - 1), chunk, [next](int h) { return (*next)[h]; })};
}

std::vector<Phase> halving_doubling_phases(int hosts, int64_t bytes) {
  int p = 1;
  while (p * 2 <= hosts) p *= 2;
  const int extra = hosts - p;
  std::vector<Phase> phases;
  if (extra > 0)
    phases.push_back(pairwise_phase("fold in", 1, bytes, [p](int h) { return h >= p ? h - p : -1; }));
  // Reduce-scatter step i and all-gather step i move the same bytes between the same pairs.
  for (int i = 0, dist = 1; dist < p; ++i, dist *= 2) {
    const int64_t b = std::max<int64_t>(1, bytes >> (i + 1));
    phases.push_back(pairwise_phase("exchange at distance " + std::to_string(dist), 2, b,
                                    [p, dist](int h) { return h < p ? h ^ dist : -1; }));
  }
  if (extra > 0)
    phases.push_back(pairwise_phase("fold out", 1, bytes, [p, hosts](int h) { return h < hosts - p ? h + p : -1; }));
  return phases;
}

std::vector<Phase> moe_phases(int hosts, int64_t bytes, const RoutingTrace& trace) {
  const int R = trace.ranks, E = trace.experts;
  if (!(E % hosts == 0 || hosts % E == 0))
    throw ConfigError("moe: the trace's " + std::to_string(E) + " experts and " + std::to_string(hosts) +
                      " hosts: one must divide the other");
  // Bytes per token: a host's dispatch is M on average over hosts and blocks.
  double tokens_total = 0.0;
  for (const auto& block : trace.blocks)
    for (int h = 0; h < hosts; ++h) {
      const int64_t* row = block.data() + int64_t(h % R) * E;
      tokens_total += static_cast<double>(std::accumulate(row, row + E, int64_t(0)));
    }
  if (tokens_total <= 0.0) throw ConfigError("moe: the routing trace holds no tokens");
  const double per_token = static_cast<double>(bytes) * hosts * static_cast<double>(trace.blocks.size()) / tokens_total;
  std::vector<Phase> phases;
  for (size_t b = 0; b < trace.blocks.size(); ++b) {
    auto block = std::make_shared<const std::vector<int64_t>>(trace.blocks[b]);
    Phase p;
    p.name = "moe dispatch " + trace.labels[b];
    p.flows_from = [=](int src, std::vector<Flow>& out) {
      const int64_t* row = block->data() + int64_t(src % R) * E;
      const size_t first = out.size();
      for (int e = 0; e < E; ++e) {
        const int dst = hosts >= E ? e * (hosts / E) + src % (hosts / E) : e / (E / hosts);
        const auto b = static_cast<int64_t>(static_cast<double>(row[e]) * per_token + 0.5);
        if (dst == src || b == 0) continue;
        out.push_back({dst, b});
      }
      // With E > N several experts share a host: one flow per destination.
      std::sort(out.begin() + first, out.end(), [](const Flow& x, const Flow& y) { return x.dst < y.dst; });
      size_t w = first;
      for (size_t i = first; i < out.size(); ++i) {
        if (w > first && out[w - 1].dst == out[i].dst) out[w - 1].bytes += out[i].bytes;
        else out[w++] = out[i];
      }
      out.resize(w);
    };
    phases.push_back(std::move(p));
  }
  return phases;
}

}  // namespace

RoutingTrace read_routing_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError("cannot open routing trace '" + path + "': " + std::strerror(errno));
  RoutingTrace t;
  std::string text;
  int line = 0;
  // Lines that are not comments or blank, with their numbers.
  const auto next_line = [&](std::string& out) {
    while (std::getline(in, text)) {
      ++line;
      if (!text.empty() && text.back() == '\r') text.pop_back();
      const auto first = text.find_first_not_of(" \t");
      if (first == std::string::npos || text[first] == '#') continue;
      out = text;
      return true;
    }
    return false;
  };
  std::string s;
  if (!next_line(s)) bad_trace(path, line, "empty: expected 'ranks R experts E'");
  {
    std::istringstream is(s);
    std::string w1, w2, rest;
    if (!(is >> w1 >> t.ranks >> w2 >> t.experts) || w1 != "ranks" || w2 != "experts" || (is >> rest) ||
        t.ranks < 1 || t.experts < 1)
      bad_trace(path, line, "expected 'ranks R experts E' with R, E >= 1, got '" + s + "'");
    if (int64_t(t.ranks) * t.experts > (int64_t(1) << 24))
      bad_trace(path, line, "ranks x experts = " + std::to_string(int64_t(t.ranks) * t.experts) + ": at most 2^24");
  }
  while (next_line(s)) {
    std::istringstream is(s);
    std::string w;
    is >> w;
    if (w != "step") bad_trace(path, line, "expected 'step S layer L', got '" + s + "'");
    t.labels.push_back(s.substr(s.find_first_not_of(" \t")));
    std::vector<int64_t> block(int64_t(t.ranks) * t.experts);
    for (int r = 0; r < t.ranks; ++r) {
      if (!next_line(s))
        bad_trace(path, line, "block '" + t.labels.back() + "' ends after " + std::to_string(r) + " of " +
                                  std::to_string(t.ranks) + " rows");
      std::istringstream row(s);
      for (int e = 0; e < t.experts; ++e) {
        int64_t v = -1;
        if (!(row >> v) || v < 0)
          bad_trace(path, line, "expected " + std::to_string(t.experts) + " token counts >= 0, got '" + s + "'");
        block[int64_t(r) * t.experts + e] = v;
      }
      std::string extra;
      if (row >> extra) bad_trace(path, line, "more than " + std::to_string(t.experts) + " token counts: '" + s + "'");
    }
    t.blocks.push_back(std::move(block));
  }
  if (t.blocks.empty()) bad_trace(path, line, "no 'step S layer L' block");
  return t;
}

std::string routing_trace_header(int ranks, int experts) {
  return "# switchyard routing trace: tokens each rank dispatches to each expert\nranks " + std::to_string(ranks) +
         " experts " + std::to_string(experts) + "\n";
}

std::string routing_trace_block(int64_t step, int layer, const int64_t* tokens, int ranks, int experts) {
  std::ostringstream os;
  os << "step " << step << " layer " << layer << "\n";
  for (int r = 0; r < ranks; ++r) {
    for (int e = 0; e < experts; ++e) os << (e ? " " : "") << tokens[int64_t(r) * experts + e];
    os << "\n";
  }
  return os.str();
}

std::vector<Phase> workload_phases(WorkloadKind kind, int hosts, int64_t bytes, const WorkloadConfig& config,
                                   const RoutingTrace* trace) {
  if (bytes < hosts)
    throw ConfigError(std::string(to_string(kind)) + " of " + std::to_string(bytes) + " bytes over " +
                      std::to_string(hosts) + " hosts: less than one byte per host (raise workload.sizes_mib)");
  switch (kind) {
    case WorkloadKind::AllToAll: return {alltoall_phase(hosts, bytes)};
    case WorkloadKind::Ring: return ring_phases(hosts, bytes, config);
    case WorkloadKind::HalvingDoubling: return halving_doubling_phases(hosts, bytes);
    case WorkloadKind::MoeDispatch:
      if (!trace) throw ConfigError("workload moe needs workload.trace");
      return moe_phases(hosts, bytes, *trace);
  }
  return {};
}

}  // namespace sy::net
