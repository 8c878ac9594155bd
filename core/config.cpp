#include "core/config.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "core/error.hpp"

namespace sy {

namespace po = boost::program_options;

namespace {

// --- choice names, indexed by the enum value ---------------------------------

constexpr std::array<const char*, 2> kPositionNames = {"learned", "rope"};
constexpr std::array<const char*, 2> kNormNames = {"layernorm", "rmsnorm"};
constexpr std::array<const char*, 3> kActivationNames = {"relu", "gelu", "swiglu"};
constexpr std::array<const char*, 7> kRouterNames = {"topk",         "switch",       "expert_choice", "topp",
                                                     "null_experts", "sigmoid_bias", "hash"};
constexpr std::array<const char*, 2> kDropPolicyNames = {"position", "score"};
constexpr std::array<const char*, 4> kBalanceNames = {"micro", "global", "sequence", "none"};
constexpr std::array<const char*, 4> kAllToAllNames = {"linear", "2dh", "flowsplit", "auto"};
constexpr std::array<const char*, 2> kTokenizerNames = {"byte", "bpe"};
constexpr std::array<const char*, 2> kDTypeNames = {"fp32", "bf16"};  // DType::F32, DType::BF16

template <typename E, size_t N>
const char* enum_name(E v, const std::array<const char*, N>& names) {
  const auto i = static_cast<size_t>(v);
  return i < N ? names[i] : "?";
}

}  // namespace

const char* to_string(PositionKind v) { return enum_name(v, kPositionNames); }
const char* to_string(NormKind v) { return enum_name(v, kNormNames); }
const char* to_string(ActivationKind v) { return enum_name(v, kActivationNames); }
const char* to_string(RouterKind v) { return enum_name(v, kRouterNames); }
const char* to_string(DropPolicy v) { return enum_name(v, kDropPolicyNames); }
const char* to_string(BalanceKind v) { return enum_name(v, kBalanceNames); }
const char* to_string(AllToAllAlgo v) { return enum_name(v, kAllToAllNames); }
const char* to_string(TokenizerKind v) { return enum_name(v, kTokenizerNames); }

namespace {

std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(first, last - first + 1));
}

// Shortest text that parses back to the same double.
std::string format_real(double v) {
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
RealCodec any_real() { return {}; }
RealCodec positive_real() { return {.lo = 0.0, .lo_open = true}; }
RealCodec non_negative_real() { return {.lo = 0.0}; }

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

// moe.parallel_mode: "auto" (stored as -1) or r >= 0.
struct ParallelModeCodec {
  std::string allowed() const { return "auto or an integer >= 0"; }
  std::optional<int> parse(const std::string& s) const {
    if (s == "auto") return MoeConfig::kAutoParallelMode;
    const auto v = parse_number<int>(s);
    if (!v || *v < 0) return std::nullopt;
    return v;
  }
  std::string format(int v) const { return v == MoeConfig::kAutoParallelMode ? "auto" : std::to_string(v); }
};

// moe.pipeline_degree: "auto" (stored as 0) or d in {1, 2, 4, 8}.
struct PipelineDegreeCodec {
  std::string allowed() const { return "one of auto, 1, 2, 4, 8"; }
  std::optional<int> parse(const std::string& s) const {
    if (s == "auto") return MoeConfig::kAutoPipelineDegree;
    const auto v = parse_number<int>(s);
    if (!v || (*v != 1 && *v != 2 && *v != 4 && *v != 8)) return std::nullopt;
    return v;
  }
  std::string format(int v) const { return v == MoeConfig::kAutoPipelineDegree ? "auto" : std::to_string(v); }
};

// parallel.emulate_link: empty (off) or "<Gbit/s>,<latency us>", both > 0.
struct LinkCodec {
  std::string allowed() const { return "empty (off) or '<Gbit/s>,<latency us>' with both numbers > 0"; }
  std::optional<LinkEmulation> parse(const std::string& s) const {
    if (s.empty()) return LinkEmulation{};
    const auto comma = s.find(',');
    if (comma == std::string::npos) return std::nullopt;
    const auto rate = positive_real().parse(trim(std::string_view(s).substr(0, comma)));
    const auto latency = positive_real().parse(trim(std::string_view(s).substr(comma + 1)));
    if (!rate || !latency) return std::nullopt;
    return LinkEmulation{*rate, *latency};
  }
  std::string format(const LinkEmulation& v) const {
    return v.enabled() ? format_real(v.gbit_per_s) + "," + format_real(v.latency_us) : "";
  }
};

// --- the key table --------------------------------------------------------------

struct KeySpec {
  std::string name;     // "section.key"
  std::string allowed;  // "a positive integer", "one of a, b, c"
  std::string help;
  std::function<bool(Config&, const std::string&)> set;  // false: value not allowed
  std::function<std::string(const Config&)> get;
};

template <typename Section, typename T, typename Codec>
KeySpec key(const char* name, Section Config::*section, T Section::*field, Codec codec, const char* help) {
  KeySpec k;
  k.name = name;
  k.allowed = codec.allowed();
  k.help = help;
  k.set = [=](Config& c, const std::string& value) {
    const auto parsed = codec.parse(value);
    if (!parsed) return false;
    (c.*section).*field = *parsed;
    return true;
  };
  k.get = [=](const Config& c) { return codec.format((c.*section).*field); };
  return k;
}

// One line per key, grouped by section in this order; to_ini and config_help follow it.
const std::vector<KeySpec>& key_table() {
  using C = Config;
  using M = ModelConfig;
  using E = MoeConfig;
  using P = ParallelConfig;
  using T = TrainConfig;
  using D = DataConfig;
  using K = CheckpointConfig;
  using L = LogConfig;
  using B = BenchConfig;
  static const std::vector<KeySpec> table = {
      key("model.dim", &C::model, &M::dim, positive<int>(), "residual stream width, divisible by model.heads"),
      key("model.layers", &C::model, &M::layers, positive<int>(), "transformer blocks"),
      key("model.heads", &C::model, &M::heads, positive<int>(), "attention heads"),
      key("model.vocab_size", &C::model, &M::vocab_size, positive<int>(), "token vocabulary (256 for the byte tokenizer)"),
      key("model.seq_len", &C::model, &M::seq_len, positive<int>(), "tokens per sequence"),
      key("model.position", &C::model, &M::position, choice<PositionKind>(kPositionNames), "position encoding"),
      key("model.tie_embeddings", &C::model, &M::tie_embeddings, BoolCodec{}, "output projection shares the token embedding"),
      key("model.norm", &C::model, &M::norm, choice<NormKind>(kNormNames), "normalization layer"),
      key("model.ffn_hidden_size", &C::model, &M::ffn_hidden_size, non_negative<int>(), "dense FFN hidden width of non-MoE layers (0 = 4 * model.dim)"),

      key("moe.num_experts", &C::moe, &E::num_experts, positive<int>(), "routed experts per MoE layer"),
      key("moe.top_k", &C::moe, &E::top_k, positive<int>(), "experts per token (1 for switch and hash)"),
      key("moe.top_p", &C::moe, &E::top_p, RealCodec{.lo = 0.0, .lo_open = true, .hi = 1.0}, "probability mass to cover (router topp)"),
      key("moe.hidden_size", &C::moe, &E::hidden_size, positive<int>(), "expert FFN hidden width"),
      key("moe.activation", &C::moe, &E::activation, choice<ActivationKind>(kActivationNames), "expert activation"),
      key("moe.router", &C::moe, &E::router, choice<RouterKind>(kRouterNames), "routing algorithm"),
      key("moe.capacity_factor", &C::moe, &E::capacity_factor, any_real(), "> 0 capacity factor, 0 dropless, < 0 dropless capped at |c|"),
      key("moe.drop_policy", &C::moe, &E::drop_policy, choice<DropPolicy>(kDropPolicyNames), "which tokens drop when an expert is full"),
      key("moe.balance", &C::moe, &E::balance, choice<BalanceKind>(kBalanceNames), "load-balancing loss scope"),
      key("moe.balance_coeff", &C::moe, &E::balance_coeff, non_negative_real(), "load-balancing loss weight"),
      key("moe.z_loss_coeff", &C::moe, &E::z_loss_coeff, non_negative_real(), "router z-loss weight"),
      key("moe.num_null_experts", &C::moe, &E::num_null_experts, non_negative<int>(), "zero-output experts (router null_experts)"),
      key("moe.num_shared_experts", &C::moe, &E::num_shared_experts, non_negative<int>(), "always-active experts beside the routed ones"),
      key("moe.every", &C::moe, &E::every, positive<int>(), "every N-th layer is an MoE layer"),
      key("moe.parallel_mode", &C::moe, &E::parallel_mode, ParallelModeCodec{}, "expert parallel mode r: 0 = data parallel, 1 = expert + data, S = expert + tensor (DESIGN.md 3); auto = the exchange degree parallel.ep when > 1, else the tuner picks r"),
      key("moe.pipeline_degree", &C::moe, &E::pipeline_degree, PipelineDegreeCodec{}, "chunks d of the token exchange, overlapping all-to-all and experts (auto: the tuner picks)"),
      key("moe.jitter", &C::moe, &E::jitter, non_negative_real(), "multiplicative router-input noise (0 = off)"),
      key("moe.normalize_weights", &C::moe, &E::normalize_weights, BoolCodec{}, "renormalize the chosen experts' weights"),
      key("moe.bias_update_rate", &C::moe, &E::bias_update_rate, non_negative_real(), "aux-loss-free bias step (router sigmoid_bias)"),
      key("moe.router_dtype", &C::moe, &E::router_dtype, choice<DType>(kDTypeNames), "router logits precision"),
      key("moe.entropy_coeff", &C::moe, &E::entropy_coeff, non_negative_real(), "router entropy loss weight (router topp)"),

      key("parallel.dp", &C::parallel, &P::dp, positive<int>(), "data-parallel degree"),
      key("parallel.ep", &C::parallel, &P::ep, positive<int>(), "expert-parallel degree: tokens are exchanged over ep ranks (experts are stored 1/(dp*ep) per rank)"),
      key("parallel.tp", &C::parallel, &P::tp, positive<int>(), "tensor-parallel degree"),
      key("parallel.ranks_per_node", &C::parallel, &P::ranks_per_node, non_negative<int>(), "ranks per node (0 = detect)"),
      key("parallel.a2a_algo", &C::parallel, &P::a2a_algo, choice<AllToAllAlgo>(kAllToAllNames), "all-to-all algorithm of the MoE token exchange: linear, 2dh, flowsplit, or auto (the tuner picks)"),
      key("parallel.emulate_link", &C::parallel, &P::emulate_link, LinkCodec{}, "emulated inter-node link"),
      key("parallel.tuning_file", &C::parallel, &P::tuning_file, TextCodec{}, "tuner table to load at start and save after each decision (empty = tune afresh, keep nothing)"),
      key("parallel.tuning_samples", &C::parallel, &P::tuning_samples, positive<int>(), "timed forward+backward passes per plan the tuner tries; the fastest counts"),
      key("parallel.timeout_s", &C::parallel, &P::timeout_s, positive_real(), "collective timeout in seconds"),
      key("parallel.ranks_per_leaf", &C::parallel, &P::ranks_per_leaf, non_negative<int>(), "flowsplit: ranks under one leaf switch (0 = ranks_per_node)"),
      key("parallel.spine_paths", &C::parallel, &P::spine_paths, positive<int>(), "flowsplit: spine paths s between two leaves"),
      key("parallel.bucket_mb", &C::parallel, &P::bucket_mb, positive_real(), "MiB per gradient reduce-scatter bucket of the dense parameters"),

      key("train.steps", &C::train, &T::steps, positive<int64_t>(), "optimizer steps"),
      key("train.seed", &C::train, &T::seed, non_negative<uint64_t>(), "random seed"),
      key("train.micro_batch_size", &C::train, &T::micro_batch_size, positive<int>(), "sequences per micro-batch per data-parallel rank"),
      key("train.micro_batches", &C::train, &T::micro_batches, positive<int>(), "micro-batches per optimizer step"),
      key("train.lr", &C::train, &T::lr, positive_real(), "peak learning rate"),
      key("train.warmup_steps", &C::train, &T::warmup_steps, non_negative<int64_t>(), "linear warmup steps"),
      key("train.weight_decay", &C::train, &T::weight_decay, non_negative_real(), "AdamW weight decay"),
      key("train.grad_clip", &C::train, &T::grad_clip, non_negative_real(), "gradient-norm clip (0 = off)"),
      key("train.dtype", &C::train, &T::dtype, choice<DType>(kDTypeNames), "weights and activations storage type"),
      key("train.eval_every", &C::train, &T::eval_every, non_negative<int64_t>(), "validation every N steps (0 = never)"),
      key("train.eval_batches", &C::train, &T::eval_batches, non_negative<int64_t>(), "validation batches per domain per evaluation (0 = all)"),
      key("train.min_lr_ratio", &C::train, &T::min_lr_ratio, RealCodec{.lo = 0.0, .hi = 1.0}, "cosine decay floor as a fraction of train.lr"),
      key("train.beta1", &C::train, &T::beta1, RealCodec{.lo = 0.0, .hi = 1.0, .hi_open = true}, "AdamW first-moment decay"),
      key("train.beta2", &C::train, &T::beta2, RealCodec{.lo = 0.0, .hi = 1.0, .hi_open = true}, "AdamW second-moment decay"),
      key("train.adam_eps", &C::train, &T::adam_eps, positive_real(), "AdamW epsilon"),
      key("train.threads", &C::train, &T::threads, positive<int>(), "CPU compute threads per rank"),

      key("data.path", &C::data, &D::path, TextCodec{}, "HDF5 token dataset"),
      key("data.tokenizer", &C::data, &D::tokenizer, choice<TokenizerKind>(kTokenizerNames), "tokenizer"),
      key("data.val_fraction", &C::data, &D::val_fraction, RealCodec{.lo = 0.0, .hi = 1.0, .hi_open = true}, "share of documents held out"),

      key("checkpoint.dir", &C::checkpoint, &K::dir, TextCodec{}, "checkpoint directory (empty = none)"),
      key("checkpoint.every", &C::checkpoint, &K::every, non_negative<int64_t>(), "steps between checkpoints (0 = at the end)"),
      key("checkpoint.resume", &C::checkpoint, &K::resume, BoolCodec{}, "continue from checkpoint.dir/latest"),
      key("checkpoint.keep", &C::checkpoint, &K::keep, non_negative<int>(), "newest checkpoints kept (0 = all)"),

      key("log.dir", &C::log, &L::dir, TextCodec{}, "metrics JSONL and resolved config (empty = print only)"),
      key("log.every", &C::log, &L::every, positive<int64_t>(), "metrics line every N steps"),
      key("log.routing_trace", &C::log, &L::routing_trace, TextCodec{}, "routing trace file (empty = off)"),

      key("bench.tokens", &C::bench, &B::tokens, positive<int64_t>(), "tokens per rank per step"),
      key("bench.steps", &C::bench, &B::steps, positive<int>(), "timed steps"),
      key("bench.warmup", &C::bench, &B::warmup, non_negative<int>(), "untimed steps before timing"),
      key("bench.threads", &C::bench, &B::threads, positive<int>(), "CPU threads per rank"),
  };
  return table;
}

const KeySpec& spec(const std::string& name) {
  for (const auto& k : key_table())
    if (k.name == name) return k;
  throw std::logic_error("config: no key " + name);  // a typo in this file, not user input
}

// --- errors ---------------------------------------------------------------------

constexpr const char* kCommandLine = "command line";

[[noreturn]] void fail(const std::string& source, const std::string& what) { throw ConfigError(source + ": " + what); }

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
std::optional<std::string> suggest_key(const std::string& unknown) {
  const std::string leaf = after_dot(unknown);
  const size_t limit = std::clamp<size_t>(unknown.size() / 3, 2, 4);
  size_t best = limit + 1;
  std::optional<std::string> best_name;
  for (const auto& k : key_table()) {
    size_t d = edit_distance(unknown, k.name);
    const std::string k_leaf = after_dot(k.name);
    if (leaf == k_leaf) d = std::min<size_t>(d, 1);
    else if (leaf.size() >= 4 && k_leaf.find(leaf) != std::string::npos) d = std::min<size_t>(d, 2);
    if (d < best) best = d, best_name = k.name;
  }
  return best_name;
}

[[noreturn]] void fail_unknown_key(const std::string& source, const std::string& name) {
  std::string msg = "unknown key '" + name + "'";
  if (const auto near = suggest_key(name)) msg += " (did you mean '" + *near + "'?)";
  fail(source, msg);
}

// "--moe.topk=3" -> "moe.topk"
std::string option_key(std::string s) {
  s.erase(0, s.find_first_not_of('-') == std::string::npos ? s.size() : s.find_first_not_of('-'));
  return s.substr(0, s.find('='));
}

// --- reading ----------------------------------------------------------------------

struct Setting {
  std::string value;
  std::string source;  // file path or "command line"
};
using Settings = std::map<std::string, Setting>;

po::options_description key_options() {
  po::options_description desc;
  for (const auto& k : key_table()) desc.add_options()(k.name.c_str(), po::value<std::string>(), k.help.c_str());
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

void read_file(const std::string& path, const po::options_description& desc, Settings& settings) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, "cannot read config file: it is a directory");
  std::ifstream in(path);
  if (!in) fail(path, std::string("cannot open config file") + (errno ? std::string(": ") + std::strerror(errno) : ""));
  po::parsed_options parsed(&desc);
  try {
    parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/false);
  } catch (const po::unknown_option& e) {
    fail_unknown_key(path, option_key(e.get_option_name()));
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
                    Settings& settings) {
  // Boost rejects "--key=" with nothing after '='; as two tokens it reads an empty value.
  std::vector<std::string> tokens;
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string& t = overrides[i];
    // "--log.dir --moe.top_k=3" would set log.dir to "--moe.top_k=3": a value never starts with "--".
    if (t.size() > 2 && t.compare(0, 2, "--") == 0 && t.find('=') == std::string::npos && i + 1 < overrides.size() &&
        overrides[i + 1].compare(0, 2, "--") == 0) {
      const std::string name = option_key(t);
      const auto& keys = key_table();
      if (std::none_of(keys.begin(), keys.end(), [&](const KeySpec& k) { return k.name == name; }))
        fail_unknown_key(kCommandLine, name);
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
    fail_unknown_key(kCommandLine, option_key(e.get_option_name()));
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

// --- cross-key rules -----------------------------------------------------------

class CrossCheck {
 public:
  CrossCheck(const Config& config, std::map<std::string, std::string> sources, std::string fallback_source)
      : config_(config), sources_(std::move(sources)), fallback_(std::move(fallback_source)) {}

  // "moe.top_k = 3"
  std::string show(const std::string& name) const { return name + " = " + spec(name).get(config_); }

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
  const Config& config_;
  std::map<std::string, std::string> sources_;
  std::string fallback_;
};

void check_cross_keys(const Config& c, const CrossCheck& x) {
  const ModelConfig& m = c.model;
  const MoeConfig& e = c.moe;

  x.require(m.dim % m.heads == 0, {"model.dim", "model.heads"},
            x.show("model.dim") + " is not divisible by " + x.show("model.heads"));
  x.require(m.position != PositionKind::Rope || (m.dim / m.heads) % 2 == 0, {"model.position", "model.dim", "model.heads"},
            x.show("model.position") + " needs an even head size, got model.dim / model.heads = " +
                std::to_string(m.dim / m.heads));
  x.require(c.data.tokenizer != TokenizerKind::Byte || m.vocab_size >= 256, {"data.tokenizer", "model.vocab_size"},
            x.show("data.tokenizer") + " needs model.vocab_size >= 256, got " + x.show("model.vocab_size"));
  x.require(m.heads % c.parallel.tp == 0, {"model.heads", "parallel.tp"},
            x.show("model.heads") + " is not divisible by " + x.show("parallel.tp") + " (heads are split over tp ranks)");

  if (e.router == RouterKind::NullExperts) {
    x.require(e.num_null_experts >= 1, {"moe.router", "moe.num_null_experts"},
              x.show("moe.router") + " needs moe.num_null_experts >= 1, got " + x.show("moe.num_null_experts"));
    x.require(e.top_k <= e.num_experts + e.num_null_experts, {"moe.top_k", "moe.num_experts", "moe.num_null_experts"},
              x.show("moe.top_k") + " exceeds moe.num_experts + moe.num_null_experts = " +
                  std::to_string(e.num_experts) + " + " + std::to_string(e.num_null_experts));
  } else {
    x.require(e.num_null_experts == 0, {"moe.num_null_experts", "moe.router"},
              x.show("moe.num_null_experts") + " is used only by moe.router = null_experts, got " + x.show("moe.router"));
    x.require(e.top_k <= e.num_experts, {"moe.top_k", "moe.num_experts"},
              x.show("moe.top_k") + " exceeds " + x.show("moe.num_experts"));
  }
  for (RouterKind one : {RouterKind::Switch, RouterKind::Hash})
    x.require(e.router != one || e.top_k == 1, {"moe.router", "moe.top_k"},
              x.show("moe.router") + " sends each token to one expert: moe.top_k must be 1, got " + x.show("moe.top_k"));
  x.require(e.router != RouterKind::ExpertChoice || e.capacity_factor > 0, {"moe.router", "moe.capacity_factor"},
            x.show("moe.router") + " needs a fixed capacity: moe.capacity_factor must be > 0, got " +
                x.show("moe.capacity_factor"));
  x.require(e.every <= m.layers, {"moe.every", "model.layers"},
            x.show("moe.every") + " exceeds " + x.show("model.layers") + ": no layer would be an MoE layer");
  const int ep = c.parallel.ep;
  x.require(e.num_experts % ep == 0 || ep % e.num_experts == 0, {"parallel.ep", "moe.num_experts"},
            x.show("parallel.ep") + " must divide " + x.show("moe.num_experts") + " or be a multiple of it");

  x.require(!c.checkpoint.resume || !c.checkpoint.dir.empty(), {"checkpoint.resume", "checkpoint.dir"},
            "checkpoint.resume = true needs checkpoint.dir");
  x.require(c.checkpoint.every == 0 || !c.checkpoint.dir.empty(), {"checkpoint.every", "checkpoint.dir"},
            x.show("checkpoint.every") + " needs checkpoint.dir");
}

}  // namespace

// --- public -------------------------------------------------------------------------

Config load_config(const std::string& ini_path, const std::vector<std::string>& overrides) {
  const po::options_description desc = key_options();
  Settings settings;
  if (!ini_path.empty()) read_file(ini_path, desc, settings);
  read_overrides(overrides, desc, settings);

  Config config;
  std::map<std::string, std::string> sources;
  for (const auto& k : key_table()) {  // table order: the first bad key in reading order fails
    const auto it = settings.find(k.name);
    if (it == settings.end()) continue;
    const Setting& s = it->second;
    if (!k.set(config, s.value)) fail(s.source, k.name + " = '" + s.value + "': expected " + k.allowed);
    sources[k.name] = s.source;
  }
  check_cross_keys(config, CrossCheck(config, std::move(sources), "defaults"));
  return config;
}

void validate_config(const Config& config) {
  for (const auto& k : key_table()) {
    const std::string value = k.get(config);
    Config scratch;
    if (!k.set(scratch, value)) fail("config", k.name + " = '" + value + "': expected " + k.allowed);
  }
  check_cross_keys(config, CrossCheck(config, {}, "config"));
}

std::string to_ini(const Config& config) {
  std::ostringstream os;
  os << "# switchyard config, resolved (defaults, file, command line)\n";
  std::string section;
  for (const auto& k : key_table()) {
    const auto dot = k.name.find('.');
    const std::string sec = k.name.substr(0, dot);
    if (sec != section) {
      os << (section.empty() ? "" : "\n") << "[" << sec << "]\n";
      section = sec;
    }
    const std::string value = k.get(config);
    os << k.name.substr(dot + 1) << " =" << (value.empty() ? "" : " " + value) << "\n";
  }
  return os.str();
}

void write_resolved_config(const Config& config, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError("cannot create directory '" + dir + "': " + ec.message());
  const fs::path path = fs::path(dir) / "config.ini";
  std::ofstream out(path);
  if (!out) throw IoError("cannot open '" + path.string() + "' for writing: " + std::strerror(errno));
  out << to_ini(config);
  out.close();
  if (!out) throw IoError("cannot write '" + path.string() + "'");
}

std::string config_help() {
  const Config defaults;
  std::ostringstream os;
  os << "Config keys: in an INI file as 'key = value' under '[section]', or as --section.key=value\n";
  for (const auto& k : key_table()) {
    const std::string value = k.get(defaults);
    os << "  " << std::left << std::setw(26) << k.name << " " << std::setw(10)
       << (value.empty() ? "\"\"" : value) << " " << k.help << "; " << k.allowed << "\n";
  }
  return os.str();
}

std::vector<std::string> config_keys() {
  std::vector<std::string> names;
  for (const auto& k : key_table()) names.push_back(k.name);
  return names;
}

}  // namespace sy
