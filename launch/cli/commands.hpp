// The `switchyard` command line: one entry per subcommand.
#pragma once

#include <string>
#include <vector>

namespace sy::cli {

using Args = std::vector<std::string>;

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Args& args);  // args after the subcommand name
  bool uses_mpi;                 // initialize MPI first (help and checks do not need it)
};

const std::vector<Command>& commands();
std::string usage();
// Dispatches argv (without the program name); returns the exit code.
int dispatch(const Args& args);
// Whether running these arguments needs MPI (a subcommand that communicates).
bool needs_mpi(const Args& args);

int info_main(const Args& args);
int config_main(const Args& args);
int bench_main(const Args& args);
int prepare_main(const Args& args);
int train_main(const Args& args);
int eval_main(const Args& args);
int generate_main(const Args& args);
int netsim_main(const Args& args);

}  // namespace sy::cli
