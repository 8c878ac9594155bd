#include "core/config.hpp"

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string_view>

#include "core/config_table.hpp"
#include "core/error.hpp"

namespace sy {

using cfg::enum_name;

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

using namespace cfg;

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

// One line per key, grouped by section in this order; to_ini and config_help follow it.
const KeyTable<Config>& key_table() {
  using C = Config;
  using M = ModelConfig;
  using E = MoeConfig;
  using P = ParallelConfig;
  using T = TrainConfig;
  using D = DataConfig;
  using K = CheckpointConfig;
  using L = LogConfig;
  using B = BenchConfig;
  static const KeyTable<Config> table = {
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
      key("train.dtype", &C::train, &T::dtype, choice<DType>(kDTypeNames), "working weights: fp32, or bf16 rounded from fp32 masters (mixed precision)"),
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
      key("log.routing_trace", &C::log, &L::routing_trace, TextCodec{}, "tokens each rank dispatched to each expert at every logged step, for switchyard netsim (empty = off)"),

      key("bench.tokens", &C::bench, &B::tokens, positive<int64_t>(), "tokens per rank per step"),
      key("bench.steps", &C::bench, &B::steps, positive<int>(), "timed steps"),
      key("bench.warmup", &C::bench, &B::warmup, non_negative<int>(), "untimed steps before timing"),
      key("bench.threads", &C::bench, &B::threads, positive<int>(), "CPU threads per rank"),
  };
  return table;
}


// --- cross-key rules -----------------------------------------------------------


void check_cross_keys(const Config& c, const CrossCheck<Config>& x) {
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
  const Settings settings = read_settings(ini_path, overrides, key_names(key_table()));
  Config config;
  auto sources = apply_settings(key_table(), settings, config);
  check_cross_keys(config, CrossCheck<Config>(key_table(), config, std::move(sources), "defaults"));
  return config;
}

void validate_config(const Config& config) {
  check_fields(key_table(), config);
  check_cross_keys(config, CrossCheck<Config>(key_table(), config, {}, "config"));
}

std::string to_ini(const Config& config) {
  return table_ini(key_table(), config, "switchyard config, resolved (defaults, file, command line)");
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

std::string config_help() { return table_help(key_table()); }

std::vector<std::string> config_keys() { return key_names(key_table()); }

}  // namespace sy
