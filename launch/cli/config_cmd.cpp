// `switchyard config --config FILE [--section.key=value ...]`: validates a
// config exactly as train will, prints it resolved (every key), and with
// --out DIR writes DIR/config.ini.
#include <iostream>

#include "core/config.hpp"
#include "core/error.hpp"
#include "launch/cli/commands.hpp"

namespace sy::cli {

int config_main(const Args& args) {
  std::string path, out_dir;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << "usage: switchyard config [--config FILE] [--out DIR] [--section.key=value ...]\n\n"
                   "Checks a config as `switchyard train` will and prints it resolved, every key\n"
                   "with its value; exits non-zero with one line naming the problem otherwise.\n"
                   "  --config FILE   INI file (omit for the defaults)\n"
                   "  --out DIR       also write DIR/config.ini\n\n"
                   "Keys:\n"
                << config_help();
      return 0;
    }
    auto take_value = [&](const std::string& flag) -> std::string {
      if (a.size() > flag.size() && a.compare(0, flag.size() + 1, flag + "=") == 0) return a.substr(flag.size() + 1);
      if (i + 1 >= args.size()) throw ConfigError("command line: " + flag + " needs a value");
      return args[++i];
    };
    if (a == "--config" || a.rfind("--config=", 0) == 0) {
      path = take_value("--config");
    } else if (a == "--out" || a.rfind("--out=", 0) == 0) {
      out_dir = take_value("--out");
    } else {
      overrides.push_back(a);
    }
  }
  const Config config = load_config(path, overrides);
  std::cout << to_ini(config);
  if (!out_dir.empty()) write_resolved_config(config, out_dir);
  return 0;
}

}  // namespace sy::cli
