// `switchyard netsim --config FILE [--json] [--section.key=value ...]`: the
// flow-level network simulator (parallel/netsim/netsim.hpp). Prints a table,
// or with --json one object per (policy, workload, size); progress goes to stderr.
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "core/error.hpp"
#include "core/json.hpp"
#include "launch/cli/commands.hpp"
#include "parallel/netsim/netsim.hpp"

namespace sy::cli {

namespace {

constexpr const char* kUsage =
    "usage: switchyard netsim --config FILE [--json] [--quiet] [--section.key=value ...]\n\n"
    "Flow-level network simulator: ECMP, multipath (mp-K), ideal packet spraying and\n"
    "single-path flow-split (DESIGN.md section 5) on leaf-spine and fat-tree\n"
    "topologies, for all-to-all, ring and halving-doubling all-reduce and MoE dispatch\n"
    "traces. Per (policy, workload, size): the busiest switch-to-switch link's load\n"
    "over the ideal, the completion time from a max-min fair fluid model, and the\n"
    "slowdown against spray. Shipped topologies: configs/net/*.ini.\n"
    "  --config FILE   INI file with [topology], [failures], [workload], [netsim]\n"
    "  --json          one JSON object per line instead of the table\n"
    "  --quiet         no progress lines on stderr\n\n";

std::string fixed(double v, int digits) {
  if (std::isnan(v)) return "-";
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

std::string size_label(int64_t bytes) {
  std::ostringstream os;
  os << static_cast<double>(bytes) / (1024.0 * 1024.0);
  return os.str();
}

}  // namespace

int netsim_main(const Args& args) {
  std::string path;
  bool json = false, quiet = false;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage << net::netsim_config_help();
      return 0;
    }
    if (a == "--json") {
      json = true;
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "--config") {
      if (i + 1 >= args.size()) throw ConfigError("command line: --config needs a value");
      path = args[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      path = a.substr(9);
    } else {
      overrides.push_back(a);
    }
  }
  if (path.empty()) throw ConfigError("command line: netsim needs --config FILE (see configs/net/)");
  const net::NetsimConfig config = net::load_netsim_config(path, overrides);
  const std::string name = std::filesystem::path(path).stem().string();
  const auto results = net::run_netsim(config, name, quiet ? nullptr : &std::cerr);

  if (json) {
    for (const auto& r : results) {
      JsonLine line;
      line.add("bench", "netsim")
          .add("topology", r.topology)
          .add("hosts", r.hosts)
          .add("policy", r.policy)
          .add("workload", net::to_string(r.workload))
          .add("bytes", r.bytes)
          .add("max_link_load_over_ideal", r.max_link_load_over_ideal)
          .add("completion_ms", r.completion_ms)
          .add("slowdown_vs_spray", r.slowdown_vs_spray)
          .add("flows", r.flows)
          .add("subflows", r.subflows)
          .add("aggregate", net::to_string(r.aggregate))
          .add("wall_s", r.wall_s);
      std::cout << line.str() << "\n";
    }
    return 0;
  }
  std::cout << std::left << std::setw(18) << "workload" << std::right << std::setw(8) << "MiB" << "  " << std::left
            << std::setw(10) << "policy" << std::right << std::setw(11) << "load/ideal" << std::setw(15)
            << "completion_ms" << std::setw(10) << "vs_spray" << std::setw(14) << "flows" << std::setw(14)
            << "subflows" << "  model\n";
  for (const auto& r : results)
    std::cout << std::left << std::setw(18) << net::to_string(r.workload) << std::right << std::setw(8)
              << size_label(r.bytes) << "  " << std::left << std::setw(10) << r.policy << std::right << std::setw(11)
              << fixed(r.max_link_load_over_ideal, 3) << std::setw(15) << fixed(r.completion_ms, 4) << std::setw(10)
              << fixed(r.slowdown_vs_spray, 3) << std::setw(14) << r.flows << std::setw(14) << r.subflows << "  "
              << (std::isnan(r.completion_ms) ? "loads only"
                  : r.aggregate == net::Aggregation::Leaf ? "fluid per leaf pair"
                                                          : "fluid per flow")
              << "\n";
  return 0;
}

}  // namespace sy::cli
