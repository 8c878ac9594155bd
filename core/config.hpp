// Run configuration: INI files plus --section.key=value overrides -> typed structs.
//
// Every key lives in one table in core/config.cpp (name, field, type, allowed
// values, help); loading, validation, to_ini() and config_help() all read it,
// so a new key is one line there plus its field here. Defaults are the field
// initializers below: a small model that trains on 2 CPU ranks.
//
// Every user-facing problem (missing file, syntax, unknown key, wrong type,
// out of range, bad choice, cross-key conflict) is a sy::ConfigError with one
// line that names the source, the key, the value and what is allowed:
//   configs/demo.ini: moe.top_k = 'abc': expected a positive integer
//   command line: unknown key 'moe.topk' (did you mean 'moe.top_k'?)
// The key names of DESIGN.md section 9 are fixed; others may be added.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.hpp"

namespace sy {

// Choice-valued keys. The config spelling of each value is to_string(value).
enum class PositionKind : uint8_t { Learned, Rope };                        // learned | rope
enum class NormKind : uint8_t { LayerNorm, RMSNorm };                       // layernorm | rmsnorm
enum class ActivationKind : uint8_t { ReLU, GELU, SwiGLU };                 // relu | gelu | swiglu
enum class RouterKind : uint8_t {                                           // DESIGN.md section 7
  TopK,         // topk
  Switch,       // switch
  ExpertChoice, // expert_choice
  TopP,         // topp
  NullExperts,  // null_experts
  SigmoidBias,  // sigmoid_bias
  Hash,         // hash
};
enum class DropPolicy : uint8_t { Position, Score };                        // position | score
enum class BalanceKind : uint8_t { Micro, Global, Sequence, None };         // micro | global | sequence | none
enum class AllToAllAlgo : uint8_t { Linear, TwoDH, FlowSplit, Auto };       // linear | 2dh | flowsplit | auto
enum class TokenizerKind : uint8_t { Byte, BPE };                           // byte | bpe

const char* to_string(PositionKind v);
const char* to_string(NormKind v);
const char* to_string(ActivationKind v);
const char* to_string(RouterKind v);
const char* to_string(DropPolicy v);
const char* to_string(BalanceKind v);
const char* to_string(AllToAllAlgo v);
const char* to_string(TokenizerKind v);

struct ModelConfig {
  int dim = 128;          // residual stream width; divisible by heads
  int layers = 2;
  int heads = 4;
  int vocab_size = 256;   // 256 = the byte tokenizer
  int seq_len = 128;      // tokens per sequence (T)
  PositionKind position = PositionKind::Learned;
  bool tie_embeddings = true;  // output projection shares the token embedding
  NormKind norm = NormKind::LayerNorm;
  int ffn_hidden_size = 0;  // dense FFN hidden width of the non-MoE layers; 0 = 4 * dim
};

struct MoeConfig {
  static constexpr int kAutoParallelMode = -1;   // parallel_mode = auto: the tuner picks r
  static constexpr int kAutoPipelineDegree = 0;  // pipeline_degree = auto: the tuner picks d

  int num_experts = 4;       // E
  int top_k = 2;             // k: experts per token (topk, null_experts, sigmoid_bias; capacity for all)
  double top_p = 0.4;        // p in (0, 1] for router = topp
  int hidden_size = 512;     // expert FFN hidden width
  ActivationKind activation = ActivationKind::GELU;
  RouterKind router = RouterKind::TopK;
  // c > 0: capacity C = ceil(k * T / E * c); c = 0: dropless; c < 0: dropless capped at |c| * k * T / E.
  double capacity_factor = 1.25;
  DropPolicy drop_policy = DropPolicy::Position;
  BalanceKind balance = BalanceKind::Micro;
  double balance_coeff = 0.01;   // alpha of the load-balancing loss
  double z_loss_coeff = 0.001;   // router z-loss weight
  int num_null_experts = 0;      // m, for router = null_experts
  int num_shared_experts = 0;    // always-on experts beside the routed ones
  int every = 1;                 // layer i is MoE when (i + 1) % every == 0
  int parallel_mode = kAutoParallelMode;      // r >= 0 (DESIGN.md section 3), or auto
  int pipeline_degree = kAutoPipelineDegree;  // d in {1, 2, 4, 8}, or auto
  double jitter = 0.0;              // multiplicative router-input noise (switch); 0 = off
  bool normalize_weights = true;    // renormalize the k combine weights to sum to 1
  double bias_update_rate = 0.001;  // aux-loss-free bias step (sigmoid_bias)
  DType router_dtype = DType::F32;  // precision of the router logits and softmax
  double entropy_coeff = 0.0001;    // router entropy loss weight (topp)
};

// Link emulation for parallel.emulate_link = "<Gbit/s>,<latency us>"; empty = off.
struct LinkEmulation {
  double gbit_per_s = 0.0;
  double latency_us = 0.0;
  bool enabled() const { return gbit_per_s > 0.0; }
};

struct ParallelConfig {
  int dp = 1;  // data-parallel degree
  int ep = 1;  // expert-parallel degree
  int tp = 1;  // tensor-parallel degree (attention heads split)
  int ranks_per_node = 0;  // 0 = detect from the MPI shared-memory split
  AllToAllAlgo a2a_algo = AllToAllAlgo::Auto;
  LinkEmulation emulate_link;
  std::string tuning_file;  // tuner table to load and save; empty = tune afresh, keep nothing
  int tuning_samples = 3;   // timed forward + backward passes per plan the tuner tries (the fastest counts)
  double timeout_s = 300.0; // a collective waiting longer than this fails the job
  double bucket_mb = 25.0;  // gradient reduce-scatter bucket of the sharded dense parameters
  int ranks_per_leaf = 0;   // flowsplit topology: ranks under one leaf switch; 0 = ranks_per_node
  int spine_paths = 4;      // flowsplit topology: s, paths from a leaf to any other leaf
};

struct TrainConfig {
  int64_t steps = 200;
  uint64_t seed = 1234;
  int micro_batch_size = 8;  // sequences per micro-batch per data-parallel rank
  int micro_batches = 1;     // gradient accumulation steps per optimizer step
  double lr = 1e-3;          // peak learning rate
  int64_t warmup_steps = 20;
  double weight_decay = 0.1;
  double grad_clip = 1.0;    // global gradient-norm clip; 0 = off
  DType dtype = DType::F32;  // storage type of weights and activations
  int64_t eval_every = 50;   // validation loss every N steps; 0 = never
  int64_t eval_batches = 8;  // validation batches per domain per evaluation; 0 = all
  double min_lr_ratio = 0.1; // the cosine schedule decays to min_lr_ratio * lr
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;  // AdamW
  int threads = 1;           // CPU compute threads per rank
};

struct DataConfig {
  std::string path;  // HDF5 token dataset (switchyard prepare); empty = none given
  TokenizerKind tokenizer = TokenizerKind::Byte;
  double val_fraction = 0.05;  // share of documents held out for validation, in [0, 1)
};

struct CheckpointConfig {
  std::string dir;      // empty = no checkpoints
  int64_t every = 0;    // steps between checkpoints; 0 = only at the end (when dir is set)
  bool resume = false;  // continue from dir/latest
  int keep = 0;         // newest checkpoints kept; 0 = all
};

struct LogConfig {
  std::string dir;            // metrics.jsonl and the resolved config.ini; empty = print only
  int64_t every = 10;         // metrics line every N steps
  std::string routing_trace;  // tokens each rank dispatched to each expert, per logged step (netsim's moe workload); empty = off
};

struct BenchConfig {
  int64_t tokens = 8192;  // tokens per rank per step
  int steps = 10;         // timed steps
  int warmup = 3;         // untimed steps first
  int threads = 1;        // CPU threads per rank
};

struct Config {
  ModelConfig model;
  MoeConfig moe;
  ParallelConfig parallel;
  TrainConfig train;
  DataConfig data;
  CheckpointConfig checkpoint;
  LogConfig log;
  BenchConfig bench;
};

// Defaults, then the INI file at ini_path (skipped when empty), then overrides:
// command-line tokens "--section.key=value" or "--section.key" "value"; a value
// given on the command line wins over the file, and a key repeated on the
// command line takes its last value. Validates every key and the cross-key
// rules; throws ConfigError.
Config load_config(const std::string& ini_path, const std::vector<std::string>& overrides = {});

// Checks a Config built in code with the same rules (source "config"); throws ConfigError.
void validate_config(const Config& config);

// The resolved config as INI text: every key, grouped by section, loadable by
// load_config to an identical Config.
std::string to_ini(const Config& config);

// Writes to_ini(config) to dir/config.ini, creating dir when missing; throws IoError.
void write_resolved_config(const Config& config, const std::string& dir);

// One line per key: name, default, allowed values, meaning (for --help).
std::string config_help();

// Every key as "section.key", in table order.
std::vector<std::string> config_keys();

}  // namespace sy
