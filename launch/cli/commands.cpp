#include "launch/cli/commands.hpp"

#include <iostream>
#include <sstream>

#include "bench/bench.hpp"
#include "core/error.hpp"

namespace sy::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"train", "train a model from an INI config (mpirun/srun for several ranks)", train_main, true},
      {"prepare", "build an HDF5 token dataset from text files", prepare_main, false},
      {"eval", "validation loss and per-domain expert usage of a checkpoint", eval_main, true},
      {"generate", "sample text from a checkpoint", generate_main, true},
      {"bench", "benchmarks: gemm, moe-layer, alltoall; --json for machine-readable lines", bench_main, true},
      {"netsim", "flow-level network simulator: ECMP vs spraying vs flow-split", netsim_main, false},
      {"config", "check an INI config and print it resolved, with --section.key=value overrides", config_main, false},
      {"info", "version, build options, and the GEMM speed of this machine", info_main, false},
  };
  return table;
}

std::string usage() {
  std::ostringstream os;
  os << "usage: switchyard SUBCOMMAND [options]\n\n"
        "switchyard trains sparse Mixture-of-Experts models across MPI ranks.\n\nsubcommands:\n";
  for (const auto& c : commands()) {
    os << "  " << c.name << std::string(10 - std::string(c.name).size(), ' ') << c.summary << "\n";
  }
  os << "\n'switchyard SUBCOMMAND --help' describes one subcommand.\n"
        "Config keys can be given as --section.key=value after --config FILE.\n";
  return os.str();
}

int dispatch(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << usage();
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    Args info_args{"--version"};
    return info_main(info_args);
  }
  for (const auto& c : commands()) {
    if (args[0] == c.name) return c.run(Args(args.begin() + 1, args.end()));
  }
  std::cerr << "switchyard: unknown subcommand '" << args[0] << "'\n\n" << usage();
  return 2;
}

bool needs_mpi(const Args& args) {
  if (args.empty()) return false;
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return false;
  for (const auto& c : commands())
    if (args[0] == c.name) return c.uses_mpi;
  return false;
}

int bench_main(const Args& args) {
  static const char* kHelp =
      "usage: switchyard bench NAME [options]\n\n"
      "benchmarks:\n"
      "  gemm        fp32 GEMM GFLOP/s per shape and thread count, ratio to the measured FMA peak\n"
      "  moe-layer   one MoE layer fwd+bwd: ms, tokens/s, expert GEMM GFLOP/s vs GEMM and FMA peak\n"
      "  alltoall    all-to-all algorithms x message sizes: ms, GB/s, ratio to MPI_Alltoall\n\n"
      "'switchyard bench NAME --help' for its options; --json prints one JSON object per line.\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kHelp;
    return args.empty() ? 2 : 0;
  }
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "gemm") return bench::gemm_main(rest);
  if (args[0] == "moe-layer") return bench::moe_layer_main(rest);
  if (args[0] == "alltoall") return bench::alltoall_main(rest);
  std::cerr << "switchyard bench: unknown benchmark '" << args[0] << "'\n\n" << kHelp;
  return 2;
}

}  // namespace sy::cli
