// Typed config tables: INI files plus --section.key=value overrides -> a struct.
//
// A config is a struct of sections and one table of keys (name, field, codec,
// help); loading, validation, INI output and help text all read the table. The
// trainer's Config (core/config.hpp) and the network simulator's config
// (parallel/netsim/netsim_config.hpp) are two such tables.
//
// Every problem is a sy::ConfigError of one line naming the source (file or
// "command line"), the key, the value and what is allowed.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.hpp"

namespace sy::cfg {

template <typename E, size_t N>
const char* enum_name(E v, const std::array<const char*, N>& names) {
  const auto i = static_cast<size_t>(v);
  return i < N ? names[i] : "?";
}

inline std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(first, last - first + 1));
}

// Shortest text that parses back to the same double.
inline std::string format_real(double v) {
  std::array<char, 64> buf;
  const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  return std::string(buf.data(), r.ptr);
}

template <typename T>
std::optional<T> parse_number(const std::string& s) {
  T v{};
  const char* end = s.data() + s.size();
  const auto r = std::from_chars(s.data(), end, v);
  if (s.empty() || r.ec != std::errc() || r.ptr != end) return std::nullopt;
  return v;
}

// --- codecs: parse a value (nullopt when not allowed), format it back, describe what is allowed.

template <typename T>
struct IntCodec {
  T min;
  std::string allowed() const {
    if (min == 1) return "a positive integer";
    if (min == 0) return "an integer >= 0";
    return "an integer >= " + std::to_string(min);
  }
  std::optional<T> parse(const std::string& s) const {
    const auto v = parse_number<T>(s);
    if (!v || *v < min) return std::nullopt;
    return v;
  }
  std::string format(T v) const { return std::to_string(v); }
};
template <typename T>
IntCodec<T> positive() {
  return {1};
}
template <typename T>
IntCodec<T> non_negative() {
  return {0};
}

struct RealCodec {
  double lo = -std::numeric_limits<double>::infinity();
  bool lo_open = false;
  double hi = std::numeric_limits<double>::infinity();
  bool hi_open = false;
  std::string allowed() const {
    const bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
    if (!has_lo && !has_hi) return "a number";
    if (!has_hi) return std::string("a number ") + (lo_open ? "> " : ">= ") + format_real(lo);
    if (!has_lo) return std::string("a number ") + (hi_open ? "< " : "<= ") + format_real(hi);
    return std::string("a number in ") + (lo_open ? "(" : "[") + format_real(lo) + ", " + format_real(hi) +
           (hi_open ? ")" : "]");
  }
  std::optional<double> parse(const std::string& s) const {
    const auto v = parse_number<double>(s);
    if (!v || !std::isfinite(*v)) return std::nullopt;
    if (lo_open ? !(*v > lo) : !(*v >= lo)) return std::nullopt;
    if (hi_open ? !(*v < hi) : !(*v <= hi)) return std::nullopt;
    return v;
  }
  std::string format(double v) const { return format_real(v); }
};
inline RealCodec any_real() { return {}; }
inline RealCodec positive_real() { return {.lo = 0.0, .lo_open = true}; }
inline RealCodec non_negative_real() { return {.lo = 0.0}; }

struct BoolCodec {
  std::string allowed() const { return "true or false (also 1/0, yes/no, on/off)"; }
  std::optional<bool> parse(const std::string& s) const {
    std::string l = s;
    std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (l == "true" || l == "1" || l == "yes" || l == "on") return true;
    if (l == "false" || l == "0" || l == "no" || l == "off") return false;
    return std::nullopt;
  }
  std::string format(bool v) const { return v ? "true" : "false"; }
};

template <typename E, size_t N>
struct ChoiceCodec {
  const std::array<const char*, N>* names;
  std::string allowed() const {
    std::string out = "one of ";
    for (size_t i = 0; i < N; ++i) out += (i ? ", " : "") + std::string((*names)[i]);
    return out;
  }
  std::optional<E> parse(const std::string& s) const {
    for (size_t i = 0; i < N; ++i)
      if (s == (*names)[i]) return static_cast<E>(i);
    return std::nullopt;
  }
  std::string format(E v) const { return enum_name(v, *names); }
};
template <typename E, size_t N>
ChoiceCodec<E, N> choice(const std::array<const char*, N>& names) {
  return {&names};
}

// Paths and other free text. '#' starts an INI comment and line breaks end the
// value, so neither could be written back by to_ini.
struct TextCodec {
  std::string allowed() const { return "a path without '#' or control characters (may be empty)"; }
  std::optional<std::string> parse(const std::string& s) const {
    for (unsigned char c : s)
      if (c == '#' || c < 0x20 || c == 0x7f) return std::nullopt;
    return s;
  }
  std::string format(const std::string& v) const { return v; }
};

// A comma-separated list of one codec's values: "1, 16, 256"; never empty.
template <typename Codec>
struct ListCodec {
  Codec elem;
  using Value = typename decltype(std::declval<Codec>().parse(std::string()))::value_type;
  std::string allowed() const { return "a comma-separated list, each item " + elem.allowed(); }
  std::optional<std::vector<Value>> parse(const std::string& s) const {
    std::vector<Value> out;
    size_t begin = 0;
    while (true) {
      const size_t comma = s.find(',', begin);
      const auto item = elem.parse(trim(std::string_view(s).substr(begin, comma == std::string::npos ? std::string::npos : comma - begin)));
      if (!item) return std::nullopt;
      out.push_back(*item);
      if (comma == std::string::npos) break;
      begin = comma + 1;
    }
    return out;
  }
  std::string format(const std::vector<Value>& v) const {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + elem.format(v[i]);
    return out;
  }
};
template <typename Codec>
ListCodec<Codec> list_of(Codec elem) {
  return {elem};
}

// --- the key table --------------------------------------------------------------

template <typename Cfg>
struct KeySpec {
  std::string name;     // "section.key"
  std::string allowed;  // "a positive integer", "one of a, b, c"
  std::string help;
  std::function<bool(Cfg&, const std::string&)> set;  // false: value not allowed
  std::function<std::string(const Cfg&)> get;
};

template <typename Cfg, typename Section, typename T, typename Codec>
KeySpec<Cfg> key(const char* name, Section Cfg::*section, T Section::*field, Codec codec, const char* help) {
  KeySpec<Cfg> k;
  k.name = name;
  k.allowed = codec.allowed();
  k.help = help;
  k.set = [=](Cfg& c, const std::string& value) {
    const auto parsed = codec.parse(value);
    if (!parsed) return false;
    (c.*section).*field = *parsed;
    return true;
  };
  k.get = [=](const Cfg& c) { return codec.format((c.*section).*field); };
  return k;
}

template <typename Cfg>
using KeyTable = std::vector<KeySpec<Cfg>>;

template <typename Cfg>
const KeySpec<Cfg>& find_key(const KeyTable<Cfg>& table, const std::string& name) {
  for (const auto& k : table)
    if (k.name == name) return k;
  throw std::logic_error("config: no key " + name);  // a typo in a table, not user input
}

template <typename Cfg>
std::vector<std::string> key_names(const KeyTable<Cfg>& table) {
  std::vector<std::string> names;
  for (const auto& k : table) names.push_back(k.name);
  return names;
}

// --- reading ----------------------------------------------------------------------

inline constexpr const char* kCommandLine = "command line";

[[noreturn]] inline void fail(const std::string& source, const std::string& what) {
  throw ConfigError(source + ": " + what);
}

struct Setting {
  std::string value;
  std::string source;  // file path or "command line"
};
using Settings = std::map<std::string, Setting>;

// The INI file at ini_path (skipped when empty), then the overrides ("--section.key=value"
// or "--section.key" "value"; the command line wins, a repeated override's last value
// wins). Keys outside `names` fail with the nearest name suggested.
Settings read_settings(const std::string& ini_path, const std::vector<std::string>& overrides,
                       const std::vector<std::string>& names);

// Sets cfg's fields from settings in table order (the first bad key in reading
// order fails); returns the source of each key set.
template <typename Cfg>
std::map<std::string, std::string> apply_settings(const KeyTable<Cfg>& table, const Settings& settings, Cfg& cfg) {
  std::map<std::string, std::string> sources;
  for (const auto& k : table) {
    const auto it = settings.find(k.name);
    if (it == settings.end()) continue;
    const Setting& s = it->second;
    if (!k.set(cfg, s.value)) fail(s.source, k.name + " = '" + s.value + "': expected " + k.allowed);
    sources[k.name] = s.source;
  }
  return sources;
}

// Checks every field of a struct built in code against its codec (source "config").
template <typename Cfg>
void check_fields(const KeyTable<Cfg>& table, const Cfg& cfg) {
  for (const auto& k : table) {
    const std::string value = k.get(cfg);
    Cfg scratch;
    if (!k.set(scratch, value)) fail("config", k.name + " = '" + value + "': expected " + k.allowed);
  }
}

// Every key as INI text, grouped by section in table order, loadable back to an equal struct.
template <typename Cfg>
std::string table_ini(const KeyTable<Cfg>& table, const Cfg& cfg, const std::string& title) {
  std::ostringstream os;
  os << "# " << title << "\n";
  std::string section;
  for (const auto& k : table) {
    const auto dot = k.name.find('.');
    const std::string sec = k.name.substr(0, dot);
    if (sec != section) {
      os << (section.empty() ? "" : "\n") << "[" << sec << "]\n";
      section = sec;
    }
    const std::string value = k.get(cfg);
    os << k.name.substr(dot + 1) << " =" << (value.empty() ? "" : " " + value) << "\n";
  }
  return os.str();
}

// One line per key: name, default, meaning, allowed values.
std::string help_line(const std::string& name, const std::string& default_value, const std::string& help,
                      const std::string& allowed);
template <typename Cfg>
std::string table_help(const KeyTable<Cfg>& table) {
  const Cfg defaults;
  std::string out = "Config keys: in an INI file as 'key = value' under '[section]', or as --section.key=value\n";
  for (const auto& k : table) out += help_line(k.name, k.get(defaults), k.help, k.allowed);
  return out;
}

// --- cross-key rules -----------------------------------------------------------

template <typename Cfg>
class CrossCheck {
 public:
  CrossCheck(const KeyTable<Cfg>& table, const Cfg& config, std::map<std::string, std::string> sources, std::string fallback_source)
      : table_(table), config_(config), sources_(std::move(sources)), fallback_(std::move(fallback_source)) {}

  // "moe.top_k = 3"
  std::string show(const std::string& name) const { return name + " = " + find_key(table_, name).get(config_); }

  // Fails naming the sources of the keys involved (or the fallback when all are defaults).
  void require(bool ok, std::initializer_list<const char*> keys, const std::string& message) const {
    if (ok) return;
    std::vector<std::string> names;
    for (const char* k : keys) {
      const auto it = sources_.find(k);
      if (it != sources_.end() && std::find(names.begin(), names.end(), it->second) == names.end())
        names.push_back(it->second);
    }
    std::string source;
    for (const auto& n : names) source += (source.empty() ? "" : ", ") + n;
    fail(source.empty() ? fallback_ : source, message);
  }

 private:
  const KeyTable<Cfg>& table_;
  const Cfg& config_;
  std::map<std::string, std::string> sources_;
  std::string fallback_;
};

}  // namespace sy::cfg
