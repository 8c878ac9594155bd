// The switchyard command: see launch/cli/commands.cpp for the subcommands.
#include <string>
#include <vector>

#include "core/runtime.hpp"
#include "launch/cli/commands.hpp"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return sy::run_guarded(argc, argv, [&] { return sy::cli::dispatch(args); }, sy::cli::needs_mpi(args));
}
