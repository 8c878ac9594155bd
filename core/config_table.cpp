#include "core/config_table.hpp"

#include <boost/program_options.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <set>

namespace sy::cfg {

namespace po = boost::program_options;

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string after_dot(const std::string& s) {
  const auto dot = s.rfind('.');
  return dot == std::string::npos ? s : s.substr(dot + 1);
}

// The nearest key by edit distance; a key that only sits in the wrong section counts as near.
std::optional<std::string> suggest_key(const std::string& unknown, const std::vector<std::string>& names) {
  const std::string leaf = after_dot(unknown);
  const size_t limit = std::clamp<size_t>(unknown.size() / 3, 2, 4);
  size_t best = limit + 1;
  std::optional<std::string> best_name;
  for (const auto& name : names) {
    size_t d = edit_distance(unknown, name);
    const std::string k_leaf = after_dot(name);
    if (leaf == k_leaf) d = std::min<size_t>(d, 1);
    else if (leaf.size() >= 4 && k_leaf.find(leaf) != std::string::npos) d = std::min<size_t>(d, 2);
    if (d < best) best = d, best_name = name;
  }
  return best_name;
}

[[noreturn]] void fail_unknown_key(const std::string& source, const std::string& name,
                                   const std::vector<std::string>& names) {
  std::string msg = "unknown key '" + name + "'";
  if (const auto near = suggest_key(name, names)) msg += " (did you mean '" + *near + "'?)";
  fail(source, msg);
}

// "--moe.topk=3" -> "moe.topk"
std::string option_key(std::string s) {
  s.erase(0, s.find_first_not_of('-') == std::string::npos ? s.size() : s.find_first_not_of('-'));
  return s.substr(0, s.find('='));
}

// --- reading ----------------------------------------------------------------------

po::options_description key_options(const std::vector<std::string>& names) {
  po::options_description desc;
  for (const auto& name : names) desc.add_options()(name.c_str(), po::value<std::string>());
  return desc;
}

// The value of one parsed option, trimmed; "quoted" values lose their quotes.
std::string single_value(const po::option& opt) {
  std::string v = opt.value.empty() ? "" : trim(opt.value.front());
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return v;
}

// 1-based number of the first line whose text (comment stripped) is `line`, or 0.
int find_line(const std::string& path, const std::string& line) {
  std::ifstream in(path);
  std::string text;
  for (int n = 1; std::getline(in, text); ++n) {
    const auto hash = text.find('#');
    if (trim(text.substr(0, hash)) == trim(line)) return n;
  }
  return 0;
}

void read_file(const std::string& path, const po::options_description& desc, Settings& settings,
               const std::vector<std::string>& names) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, "cannot read config file: it is a directory");
  std::ifstream in(path);
  if (!in) fail(path, std::string("cannot open config file") + (errno ? std::string(": ") + std::strerror(errno) : ""));
  po::parsed_options parsed(&desc);
  try {
    parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/false);
  } catch (const po::unknown_option& e) {
    fail_unknown_key(path, option_key(e.get_option_name()), names);
  } catch (const po::invalid_config_file_syntax& e) {
    const int line = find_line(path, e.tokens());
    fail(path, (line > 0 ? "line " + std::to_string(line) + ": " : std::string()) + "cannot parse '" + e.tokens() +
                   "': expected 'key = value' under a '[section]' line");
  } catch (const po::error&) {
    fail(path, "not a valid INI file: expected '[section]' lines and 'key = value' lines");
  }
  std::set<std::string> seen;
  for (const auto& opt : parsed.options) {
    if (!seen.insert(opt.string_key).second) fail(path, "key '" + opt.string_key + "' is given more than once");
    settings[opt.string_key] = {single_value(opt), path};
  }
}

void read_overrides(const std::vector<std::string>& overrides, const po::options_description& desc,
                    Settings& settings, const std::vector<std::string>& names) {
  // Boost rejects "--key=" with nothing after '='; as two tokens it reads an empty value.
  std::vector<std::string> tokens;
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string& t = overrides[i];
    // "--log.dir --moe.top_k=3" would set log.dir to "--moe.top_k=3": a value never starts with "--".
    if (t.size() > 2 && t.compare(0, 2, "--") == 0 && t.find('=') == std::string::npos && i + 1 < overrides.size() &&
        overrides[i + 1].compare(0, 2, "--") == 0) {
      const std::string name = option_key(t);
      if (std::find(names.begin(), names.end(), name) == names.end()) fail_unknown_key(kCommandLine, name, names);
      fail(kCommandLine, "missing value for '" + name + "' (write --" + name + "=VALUE)");
    }
    if (t.size() > 2 && t.compare(0, 2, "--") == 0 && t.find('=') == t.size() - 1) {
      tokens.push_back(t.substr(0, t.size() - 1));
      tokens.emplace_back();
    } else {
      tokens.push_back(t);
    }
  }
  namespace style = po::command_line_style;
  po::parsed_options parsed(&desc);
  try {
    // No guessing: "--moe.top" must not silently mean "--moe.top_k".
    parsed = po::command_line_parser(tokens)
                 .options(desc)
                 .style(style::allow_long | style::long_allow_adjacent | style::long_allow_next)
                 .run();
  } catch (const po::unknown_option& e) {
    fail_unknown_key(kCommandLine, option_key(e.get_option_name()), names);
  } catch (const po::invalid_command_line_syntax& e) {
    const std::string name = option_key(e.get_option_name());
    if (e.kind() == po::invalid_syntax::missing_parameter)
      fail(kCommandLine, "missing value for '" + name + "' (write --" + name + "=VALUE)");
    fail(kCommandLine, "cannot parse the option '" + name + "' (write --" + name + "=VALUE)");
  } catch (const po::error&) {
    fail(kCommandLine, "cannot parse the overrides: expected --section.key=value tokens");
  }
  for (const auto& opt : parsed.options) {
    if (opt.string_key.empty()) {
      const std::string token = opt.original_tokens.empty() ? single_value(opt) : opt.original_tokens.front();
      fail(kCommandLine, "unexpected argument '" + token + "': overrides are --section.key=value");
    }
    settings[opt.string_key] = {single_value(opt), kCommandLine};  // a repeated key: the last one wins
  }
}

}  // namespace

Settings read_settings(const std::string& ini_path, const std::vector<std::string>& overrides,
                       const std::vector<std::string>& names) {
  const po::options_description desc = key_options(names);
  Settings settings;
  if (!ini_path.empty()) read_file(ini_path, desc, settings, names);
  read_overrides(overrides, desc, settings, names);
  return settings;
}

std::string help_line(const std::string& name, const std::string& default_value, const std::string& help,
                      const std::string& allowed) {
  std::ostringstream os;
  os << "  " << std::left << std::setw(26) << name << " " << std::setw(10)
     << (default_value.empty() ? "\"\"" : default_value) << " " << help << "; " << allowed << "\n";
  return os.str();
}

}  // namespace sy::cfg
