// The training loop (DESIGN.md section 2): sampler -> micro-batches ->
// forward / backward -> gradient sync -> sharded AdamW -> metrics,
// evaluation and checkpoints.
//
// Who holds what (W ranks in the token group, tp peers share tokens):
//   dense parameters (embedding, attention, norms, dense FFNs, routers,
//     shared experts) are one ShardedParams set over the token group: each
//     rank keeps 1/W of them with its AdamW state; the layers hold the
//     gathered copy. The last micro-batch's backward copies each component's
//     accumulated gradient into the set and marks it ready as soon as that
//     component's backward is over, so the bucketed reduce-scatter overlaps
//     the rest of the backward.
//   expert units are stored 1/W by the MoE layers; their gradients arrive
//     summed over the group, and each rank updates its own units.
// The loss of a step is the mean over the W ranks and train.micro_batches
// micro-batches of each micro-batch's mean token loss (plus auxiliary
// losses), so every gradient is scaled by 1 / (W * micro_batches). Rank w of
// the group takes micro-batch m as slice m * W + w of the step's global batch:
// a layout with the same W * micro_batches sees the same data.
//
// Mixed precision (train.dtype = bf16): the optimizer keeps fp32 master
// weights (the dense shard, and a master copy of this rank's expert units)
// and the layers compute with the masters rounded to bf16 (nearest even);
// the dense weight all-gather moves bf16. Updates below a bf16 step thus
// accumulate in the master instead of vanishing. On the CPU the layers still
// store and compute activations and gradients in fp32 (the CPU ops compute
// in fp32); checkpoints hold the fp32 masters, so bf16 and fp32 runs load
// each other's checkpoints.
//
// Reproducibility: the state of a run is the step, the parameters, the AdamW
// moments and the sigmoid_bias routers' biases (the sampler and the router
// noise are functions of the step and the slice); a resumed run on the same
// layout continues bitwise, and any layout can load a checkpoint
// (resharding). Layouts with the same W x micro_batches compute the same
// step, except under moe.balance = global: its counts are summed over the
// ranks at each micro-batch and accumulated over micro-batches, so the
// first micro-batch of one rank sees fewer counts than that of W ranks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "data/dataset.hpp"
#include "data/sampler.hpp"
#include "models/transformer.hpp"
#include "parallel/process_grid.hpp"
#include "parallel/sharded_params.hpp"

namespace sy::par {
template <typename T>
class CommExpertComm;
class Tuner;
}

namespace sy::models {

// One optimizer step's figures, averaged over the token group (or summed where said).
struct StepMetrics {
  int64_t step = 0;
  double loss = 0, lm_loss = 0, balance_loss = 0, z_loss = 0, router_loss = 0;
  double lr = 0, grad_norm = 0;
  double step_s = 0, tokens_per_s = 0, mfu = 0, a2a_share = 0;
  double expert_load_max_over_mean = 0, dropped_fraction = 0, experts_per_token = 0;
  std::vector<std::vector<double>> expert_load;  // (MoE layers, E) share of routed slots
  double tokens = 0;  // tokens in the step's global batch
  double a2a_s = 0;   // mean over ranks of the MoE all-to-all time
};

struct EvalResult {
  double val_loss = 0;    // token-weighted over every domain
  int64_t val_tokens = 0;
  std::vector<std::string> domains;
  std::vector<double> loss_by_domain;                         // (K) NaN when a domain has no held-out tokens
  std::vector<int64_t> tokens_by_domain;                      // (K)
  std::vector<std::vector<std::vector<double>>> expert_freq;  // (K, MoE layers, E) share of real slots
};

template <typename T>
class Trainer {
 public:
  // Builds the model and the parameter sets on this process's grid; the
  // grid must outlive the trainer. Collective over the world.
  Trainer(const Config& config, par::ProcessGrid& grid);
  // The MoE layers' run-time tuner; null when nothing is auto or on one rank.
  const par::Tuner* tuner() const { return tuner_.get(); }
  ~Trainer();

  // The data for train() and evaluate(); must outlive the trainer. Checks
  // that the dataset's vocabulary fits model.vocab_size (ConfigError).
  void set_dataset(const data::TokenDataset& dataset);

  // Runs optimizer steps until train.steps (or a stop signal), with
  // evaluation, metrics and checkpoints as configured. Returns the metrics
  // of the steps run. Throws NumericError on a non-finite loss (nothing is
  // saved then).
  // until >= 0: stop after that step instead (the schedule still spans
  // train.steps), with a checkpoint as for a stop signal.
  std::vector<StepMetrics> train(int64_t until = -1);
  // One optimizer step (step() + 1); public for tests.
  StepMetrics train_step();
  EvalResult evaluate();

  // Collective. Writes a checkpoint of the current step into dir.
  std::string save_checkpoint(const std::string& dir);
  // Collective. Loads a checkpoint (a step directory or a directory with
  // `latest`) written by any layout; refuses a different model config
  // (ConfigError naming the keys).
  void load_checkpoint(const std::string& path);

  int64_t step() const { return step_; }
  // Step and evaluation lines on stdout, and the info log (on by default).
  void set_verbose(bool on) { verbose_ = on; }
  TransformerLM<T>& model() { return *model_; }
  // The dense parameter set: its shard() is this rank's master copy.
  par::ShardedParams<T>& dense_params() { return *dense_; }
  // Indices into model().tensors() of this rank's expert units, and their
  // master weights (the layers' buffers themselves unless train.dtype = bf16).
  const std::vector<int>& expert_tensor_ids() const { return expert_tensors_; }
  T* expert_master(size_t j);
  const Config& config() const { return config_; }
  // Set by SIGTERM / SIGUSR1 when install_stop_signals() was called.
  static void install_stop_signals();
  static bool stop_requested();
  // A stop observed by train() (it saved a checkpoint and returned early).
  bool stopped() const { return stopped_; }

 private:
  void copy_params_to_layers();
  std::vector<T*> expert_masters();
  // bf16: the layers' expert buffers = their masters rounded (no-op for fp32).
  void round_expert_params();
  void build_dense_masks();
  double grad_norm();
  StepMetrics reduce_metrics(const std::vector<double>& local);
  void set_timing(StepMetrics& m, double step_s) const;
  void write_metrics(const StepMetrics& m, const EvalResult* eval);
  void print_line(const StepMetrics& m);

  Config config_;
  par::ProcessGrid& grid_;
  int W_ = 1;         // ranks in the token group
  int w_ = 0;         // this rank in it
  std::unique_ptr<par::CommExpertComm<T>> expert_comm_;
  std::unique_ptr<par::Tuner> tuner_;  // when a choice of the MoE layers is auto (parallel/tuner.hpp)
  std::unique_ptr<TransformerLM<T>> model_;
  std::unique_ptr<par::ShardedParams<T>> dense_;
  std::vector<int> dense_tensors_, expert_tensors_;  // indices into model_->tensors()
  std::vector<std::vector<int>> stage_tensors_;      // (stages) dense tensors completed by each stage

  // AdamW state: dense shard (S) and each expert tensor (numel).
  std::vector<T> dense_m_, dense_v_;
  std::vector<uint8_t> dense_decay_;    // (S) 1 where weight decay applies
  std::vector<uint8_t> dense_tp_;       // (S) 1 for tp-sharded elements (counted once per tp rank in norms)
  std::vector<std::vector<T>> expert_m_, expert_v_;
  // fp32 masters of the expert units under train.dtype = bf16 (empty otherwise);
  // the layers' own buffers then hold the bf16-rounded working copies.
  std::vector<std::vector<T>> expert_master_;

  const data::TokenDataset* dataset_ = nullptr;
  std::unique_ptr<data::Sampler> sampler_;
  data::TokenBatch batch_;
  int64_t step_ = 0;
  double peak_gflops_ = 0;  // measured FMA peak per rank
  bool stopped_ = false;
  bool stop_agreed_ = false;  // the last step's agreed stop signal
  int64_t loaded_step_ = -1;  // the step of the checkpoint loaded, if any
  bool verbose_ = true;
  std::string metrics_path_;
  // log.routing_trace: tokens this rank dispatched to each expert in the last step
  // (kept slots, summed over micro-batches), appended for every logged step.
  std::vector<int64_t> dispatched_;  // (MoE layers, E)
  void start_routing_trace();
  void write_routing_trace();
};

extern template class Trainer<float>;
extern template class Trainer<double>;

}  // namespace sy::models
