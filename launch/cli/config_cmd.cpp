#include <iostream>

#include "launch/cli/commands.hpp"

namespace sy::cli {
int config_main(const Args&) {
  std::cerr << "switchyard config: not built yet\n";
  return 2;
}
}  // namespace sy::cli
