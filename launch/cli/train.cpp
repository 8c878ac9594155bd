// `switchyard train`, `switchyard eval` and `switchyard generate`: the
// trainer of models/trainer.hpp driven by an INI config, and the two ways to
// use its checkpoints.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>
#include <sstream>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "core/runtime.hpp"
#include "data/checkpoint.hpp"
#include "data/dataset.hpp"
#include "data/tokenizer.hpp"
#include "launch/cli/commands.hpp"
#include "models/trainer.hpp"
#include "parallel/process_grid.hpp"

namespace sy::cli {

namespace {

bool wants_help(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}

// Splits "--flag VALUE" / "--flag=VALUE" options named in `flags` from the
// --section.key=value overrides.
struct Parsed {
  std::map<std::string, std::string> flags;
  std::vector<std::string> overrides;
};

Parsed parse(const Args& args, const std::vector<std::string>& flags, const std::vector<std::string>& switches = {}) {
  Parsed p;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool matched = false;
    for (const auto& f : switches)
      if (a == f) {
        p.flags[f].assign(1, '1');
        matched = true;
      }
    for (const auto& f : flags) {
      if (matched) break;
      if (a == f) {
        SY_CHECK_AS(ConfigError, i + 1 < args.size(), "command line: " << f << " needs a value");
        p.flags[f] = args[++i];
        matched = true;
      } else if (a.size() > f.size() && a.compare(0, f.size(), f) == 0 && a[f.size()] == '=') {
        p.flags[f] = a.substr(f.size() + 1);
        matched = true;
      }
    }
    if (!matched) p.overrides.push_back(a);
  }
  return p;
}

// Without an explicit layout every rank is a data-parallel replica.
ParallelConfig default_layout(ParallelConfig pc, int world) {
  if (int64_t(pc.dp) * pc.ep * pc.tp == 1) pc.dp = world;
  return pc;
}

data::TokenDataset load_dataset(const Config& c) {
  SY_CHECK_AS(ConfigError, !c.data.path.empty(),
              "data.path is not set: give the dataset built by `switchyard prepare` (or launch/corpus.sh)");
  return data::read_dataset(c.data.path);
}

// The config a checkpoint was trained with, with command-line overrides,
// laid out over this job's ranks unless parallel.* is given.
Config checkpoint_run_config(const std::string& step_dir, const std::vector<std::string>& overrides) {
  bool layout_given = false;
  for (const auto& o : overrides)
    if (o.rfind("--parallel.dp", 0) == 0 || o.rfind("--parallel.ep", 0) == 0 || o.rfind("--parallel.tp", 0) == 0)
      layout_given = true;
  std::vector<std::string> all = overrides;
  if (!layout_given) all.insert(all.begin(), {"--parallel.dp=1", "--parallel.ep=1", "--parallel.tp=1"});
  Config c = load_config((std::filesystem::path(step_dir) / "config.ini").string(), all);
  c.checkpoint.resume = false;
  c.log.dir.clear();
  return c;
}

double entropy_bits(const std::vector<double>& p) {
  double h = 0;
  for (double x : p)
    if (x > 0) h -= x * std::log2(x);
  return h;
}

}  // namespace

int train_main(const Args& args) {
  if (wants_help(args)) {
    std::cout << "usage: switchyard train --config FILE [--section.key=value ...]\n\n"
                 "Trains the model of [model]/[moe] on data.path with the layout parallel.dp x ep x tp\n"
                 "(dp = the number of ranks when none is given). Run it under mpirun or srun for several\n"
                 "ranks: launch/mpirun.sh -n 4 FILE, launch/slurm/train.sbatch.\n\n"
                 "Writes log.dir/metrics.jsonl (one JSON object per step) and log.dir/config.ini, prints a\n"
                 "line every log.every steps, evaluates every train.eval_every steps, checkpoints into\n"
                 "checkpoint.dir every checkpoint.every steps and at the end. SIGTERM or SIGUSR1 (Slurm\n"
                 "preemption) writes a checkpoint and exits 0; --checkpoint.resume=true continues from\n"
                 "checkpoint.dir/latest (or starts afresh when there is none).\n\n"
                 "Keys: `switchyard config --help`.\n";
    return 0;
  }
  const Parsed p = parse(args, {"--config"});
  Config c = load_config(p.flags.count("--config") ? p.flags.at("--config") : "", p.overrides);
  c.parallel = default_layout(c.parallel, runtime().world_size);
  const data::TokenDataset dataset = load_dataset(c);
  par::ProcessGrid grid(c.parallel);
  models::Trainer<float> trainer(c, grid);
  trainer.set_dataset(dataset);
  models::Trainer<float>::install_stop_signals();
  const auto metrics = trainer.train();
  if (!metrics.empty() && runtime().rank == 0)
    std::cout << "done: step " << trainer.step() << ", loss " << metrics.front().loss << " -> " << metrics.back().loss
              << (trainer.stopped() ? " (stopped by a signal)" : "") << "\n";
  return 0;
}

int eval_main(const Args& args) {
  if (wants_help(args)) {
    std::cout << "usage: switchyard eval --checkpoint DIR [--json] [--section.key=value ...]\n\n"
                 "Validation loss per domain of a checkpoint (a step directory, or a checkpoint.dir with\n"
                 "`latest`), and each domain's expert usage per MoE layer: the largest expert frequency\n"
                 "and the entropy of the expert distribution (bits; log2(E) is uniform). The config is\n"
                 "the checkpoint's; override data.path, train.eval_batches (0 = all) or the layout.\n";
    return 0;
  }
  const Parsed p = parse(args, {"--checkpoint"}, {"--json"});
  SY_CHECK_AS(ConfigError, p.flags.count("--checkpoint"), "switchyard eval: --checkpoint DIR is required");
  const std::string step_dir = data::resolve_checkpoint(p.flags.at("--checkpoint"));
  Config c = checkpoint_run_config(step_dir, p.overrides);
  c.parallel = default_layout(c.parallel, runtime().world_size);
  const data::TokenDataset dataset = load_dataset(c);
  par::ProcessGrid grid(c.parallel);
  models::Trainer<float> trainer(c, grid);
  trainer.load_checkpoint(step_dir);
  trainer.set_dataset(dataset);
  const models::EvalResult r = trainer.evaluate();
  if (runtime().rank != 0) return 0;
  const auto& blocks = trainer.model().moe_blocks();
  if (p.flags.count("--json")) {
    for (size_t d = 0; d < r.domains.size(); ++d) {
      for (size_t l = 0; l < blocks.size(); ++l) {
        const auto& f = r.expert_freq[d][l];
        JsonLine j;
        j.add("eval", "domain").add("step", trainer.step()).add("domain", r.domains[d]).add("layer", blocks[l]);
        j.add("val_loss", r.loss_by_domain[d]).add("tokens", r.tokens_by_domain[d]);
        j.add("max_expert_freq", *std::max_element(f.begin(), f.end())).add("expert_entropy_bits", entropy_bits(f));
        std::ostringstream fs;
        for (size_t e = 0; e < f.size(); ++e) fs << (e ? "," : "[") << f[e];
        j.add_raw("expert_freq", fs.str() + "]");
        std::cout << j.str() << "\n";
      }
    }
    JsonLine all;
    all.add("eval", "total").add("step", trainer.step()).add("val_loss", r.val_loss).add("tokens", r.val_tokens);
    std::cout << all.str() << "\n";
    return 0;
  }
  std::cout << "checkpoint " << step_dir << " (step " << trainer.step() << "): val_loss " << r.val_loss << " over "
            << r.val_tokens << " tokens\n";
  std::cout << "domain            val_loss   tokens";
  for (int b : blocks) std::cout << "   L" << b << " max_freq  L" << b << " entropy";
  std::cout << "\n";
  for (size_t d = 0; d < r.domains.size(); ++d) {
    char line[128];
    std::snprintf(line, sizeof line, "%-16s %9.4f %8lld", r.domains[d].c_str(), r.loss_by_domain[d],
                  static_cast<long long>(r.tokens_by_domain[d]));
    std::cout << line;
    for (size_t l = 0; l < blocks.size(); ++l) {
      const auto& f = r.expert_freq[d][l];
      std::snprintf(line, sizeof line, "   %11.3f  %10.3f", *std::max_element(f.begin(), f.end()), entropy_bits(f));
      std::cout << line;
    }
    std::cout << "\n";
  }
  return 0;
}

int generate_main(const Args& args) {
  if (wants_help(args)) {
    std::cout << "usage: switchyard generate --checkpoint DIR --prompt TEXT [--tokens N] [--temperature X]\n"
                 "                           [--top-k K] [--seed S] [--section.key=value ...]\n\n"
                 "Samples N tokens (default 200) after the prompt from a checkpoint, with the tokenizer of\n"
                 "its dataset (data.path; the byte tokenizer needs none). temperature 0 is greedy\n"
                 "(default 0.8); top-k 0 samples from every token (default 40). The context is the last\n"
                 "model.seq_len tokens. Routing is dropless while generating (expert_choice keeps its\n"
                 "capacity).\n";
    return 0;
  }
  const Parsed p = parse(args, {"--checkpoint", "--prompt", "--tokens", "--temperature", "--top-k", "--seed"});
  SY_CHECK_AS(ConfigError, p.flags.count("--checkpoint"), "switchyard generate: --checkpoint DIR is required");
  SY_CHECK_AS(ConfigError, p.flags.count("--prompt"), "switchyard generate: --prompt TEXT is required");
  auto number = [&](const char* flag, double fallback) {
    if (!p.flags.count(flag)) return fallback;
    try {
      return std::stod(p.flags.at(flag));
    } catch (const std::exception&) {
      throw ConfigError(std::string("command line: ") + flag + " = '" + p.flags.at(flag) + "' is not a number");
    }
  };
  const int64_t n_tokens = int64_t(number("--tokens", 200));
  const double temperature = number("--temperature", 0.8);
  const int top_k = int(number("--top-k", 40));
  const uint64_t seed = uint64_t(number("--seed", 1));
  SY_CHECK_AS(ConfigError, n_tokens >= 1 && temperature >= 0 && top_k >= 0,
              "switchyard generate: --tokens must be >= 1, --temperature and --top-k >= 0");

  const std::string step_dir = data::resolve_checkpoint(p.flags.at("--checkpoint"));
  Config c = checkpoint_run_config(step_dir, p.overrides);
  c.parallel = default_layout(c.parallel, runtime().world_size);
  // Dropless, so every token reaches its experts (expert_choice needs a
  // capacity: experts pick tokens; it keeps the trained one).
  if (c.moe.router != RouterKind::ExpertChoice) c.moe.capacity_factor = 0.0;
  c.moe.jitter = 0.0;
  c.moe.balance = BalanceKind::None;
  c.train.micro_batch_size = 1;
  data::Tokenizer tokenizer;
  if (c.data.tokenizer == TokenizerKind::BPE) tokenizer = data::dataset_tokenizer(load_dataset(c));
  par::ProcessGrid grid(c.parallel);
  models::Trainer<float> trainer(c, grid);
  trainer.load_checkpoint(step_dir);
  for (auto* layer : trainer.model().moe_layers()) layer->set_training(false);  // no jitter, no tuner trials

  std::vector<int32_t> ids = tokenizer.encode(p.flags.at("--prompt"));
  SY_CHECK_AS(ConfigError, !ids.empty(), "switchyard generate: the prompt is empty");
  const size_t prompt_len = ids.size();
  const int64_t S = c.model.seq_len, V = c.model.vocab_size;
  const int vocab = tokenizer.vocab_size();
  std::mt19937_64 rng(seed);  // the same on every rank: every rank samples the same token
  std::vector<double> prob(static_cast<size_t>(V));
  for (int64_t n = 0; n < n_tokens; ++n) {
    const int64_t len = std::min<int64_t>(S, int64_t(ids.size()));
    const int32_t* ctx = ids.data() + ids.size() - size_t(len);
    trainer.model().forward(ctx, nullptr, 1, len);
    const float* row = trainer.model().logits() + (len - 1) * V;
    int32_t next = 0;
    if (temperature == 0) {
      next = int32_t(std::max_element(row, row + vocab) - row);
    } else {
      // Top-k of the tokenizer's ids, softmax at the temperature, then one draw.
      std::vector<int32_t> order(static_cast<size_t>(vocab));
      for (int32_t v = 0; v < vocab; ++v) order[size_t(v)] = v;
      const int k = top_k > 0 ? std::min(top_k, vocab) : vocab;
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      double total = 0;
      for (int i = 0; i < k; ++i) {
        prob[size_t(i)] = std::exp((double(row[order[size_t(i)]]) - double(row[order[0]])) / temperature);
        total += prob[size_t(i)];
      }
      double u = std::uniform_real_distribution<double>(0.0, total)(rng);
      next = order[size_t(k - 1)];
      for (int i = 0; i < k; ++i) {
        u -= prob[size_t(i)];
        if (u <= 0) {
          next = order[size_t(i)];
          break;
        }
      }
    }
    ids.push_back(next);
  }
  if (runtime().rank == 0) {
    const std::span<const int32_t> all(ids);
    const bool tty = log::stdout_is_watched();  // the generated part in bold on a terminal
    std::cout << tokenizer.decode(all.first(prompt_len)) << (tty ? "\033[1m" : "")
              << tokenizer.decode(all.subspan(prompt_len)) << (tty ? "\033[0m" : "") << "\n";
  }
  return 0;
}

}  // namespace sy::cli
