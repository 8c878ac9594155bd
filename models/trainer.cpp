#include "models/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "bench/bench.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "core/log.hpp"
#include "core/ops/softmax.hpp"
#include "core/thread_pool.hpp"
#include "data/checkpoint.hpp"
#include "models/optimizer.hpp"
#include "parallel/moe_hooks.hpp"
#include "parallel/netsim/workload.hpp"
#include "parallel/tuner.hpp"

namespace sy::models {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A finite number, or null (JSON has no NaN).
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

std::string json_array(const std::vector<double>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    out += json_number(v[i]);
  }
  return out + "]";
}

std::string json_matrix(const std::vector<std::vector<double>>& m) {
  std::string out = "[";
  for (size_t i = 0; i < m.size(); ++i) {
    if (i) out += ',';
    out += json_array(m[i]);
  }
  return out + "]";
}

std::string layout_string(const par::ProcessGrid& g) {
  return "dp=" + std::to_string(g.dp()) + " ep=" + std::to_string(g.ep()) + " tp=" + std::to_string(g.tp());
}

}  // namespace

template <typename T>
Trainer<T>::Trainer(const Config& config, par::ProcessGrid& grid) : config_(config), grid_(grid) {
  validate_config(config_);
  set_num_threads(config_.train.threads);
  par::Communicator& tokens = grid_.token_group();
  W_ = tokens.size();
  w_ = tokens.rank();
  if (W_ > 1)
    expert_comm_ = std::make_unique<par::CommExpertComm<T>>(
        grid_.expert_group(), par::exchange_placement(config_.parallel, grid_.world_rank(), grid_.node_index()));
  model_ = std::make_unique<TransformerLM<T>>(config_.model, config_.moe, config_.train.micro_batch_size,
                                              config_.train.seed, grid_.tp() > 1 ? &grid_.tp_group() : nullptr,
                                              expert_comm_.get());
  const par::TuneDims tune = par::tune_dims(config_.moe, config_.parallel);
  if (W_ > 1 && tune.any() && !model_->moe_layers().empty()) {
    par::TunerOptions options;
    options.samples = config_.parallel.tuning_samples;
    options.file = config_.parallel.tuning_file;
    options.writer = grid_.world_rank() == 0;
    options.fingerprint =
        par::run_fingerprint(config_.moe, config_.model.dim,
                             int64_t(config_.train.micro_batch_size) * config_.model.seq_len, config_.parallel);
    // Agreed over the world: tensor-parallel peers run their MoE layers on
    // the same tokens and must take the same plans.
    tuner_ = std::make_unique<par::Tuner>(grid_.world(), grid_.world_size(), options);
  }
  int moe_index = 0;
  for (auto* layer : model_->moe_layers()) {
    par::connect_moe_layer(*layer, tokens, grid_.ep(), config_.parallel.a2a_algo);
    if (tuner_) layer->set_tuner(tuner_.get(), moe_index, tune);
    ++moe_index;
    layer->set_timing(true);
  }

  auto& tensors = model_->tensors();
  dense_ = std::make_unique<par::ShardedParams<T>>(tokens, std::max<int64_t>(1, int64_t(config_.parallel.bucket_mb * double(1 << 20))));
  stage_tensors_.assign(size_t(model_->num_stages()), {});
  for (int i = 0; i < int(tensors.size()); ++i) {
    if (tensors[size_t(i)].expert) {
      expert_tensors_.push_back(i);
      expert_m_.emplace_back(size_t(tensors[size_t(i)].numel), T(0));
      expert_v_.emplace_back(size_t(tensors[size_t(i)].numel), T(0));
      if (config_.train.dtype == DType::BF16) {
        const auto& t = tensors[size_t(i)];
        expert_master_.emplace_back(t.param, t.param + t.numel);
      }
    } else {
      dense_tensors_.push_back(i);
      dense_->add(tensors[size_t(i)].name, tensors[size_t(i)].numel);
      stage_tensors_[size_t(tensors[size_t(i)].stage)].push_back(i);
    }
  }
  dense_->set_param_dtype(config_.train.dtype);
  dense_->finalize();
  // Every rank built the same dense values from the same seed.
  dense_->init_full([&](const std::string& name, T* dst, int64_t n) {
    for (int i : dense_tensors_)
      if (tensors[size_t(i)].name == name) std::copy(tensors[size_t(i)].param, tensors[size_t(i)].param + n, dst);
  });
  if (config_.train.dtype == DType::BF16) {  // the layers start from the rounded masters
    dense_->gather();
    copy_params_to_layers();
    round_expert_params();
  }
  dense_m_.assign(size_t(dense_->shard_size()), T(0));
  dense_v_.assign(size_t(dense_->shard_size()), T(0));
  build_dense_masks();
}

template <typename T>
Trainer<T>::~Trainer() = default;

template <typename T>
void Trainer<T>::build_dense_masks() {
  const auto& tensors = model_->tensors();
  std::vector<uint8_t> decay(size_t(dense_->flat_size()), 0), tp(size_t(dense_->flat_size()), 0);
  for (int i : dense_tensors_) {
    const auto& t = tensors[size_t(i)];
    const int64_t f0 = dense_->flat_offset(t.name);
    std::fill(decay.begin() + f0, decay.begin() + f0 + t.numel, uint8_t(t.decay));
    std::fill(tp.begin() + f0, tp.begin() + f0 + t.numel, uint8_t(t.tp_sharded));
  }
  dense_decay_.assign(size_t(dense_->shard_size()), 0);
  dense_tp_.assign(size_t(dense_->shard_size()), 0);
  for (const auto& p : dense_->shard_pieces()) {
    std::copy(decay.begin() + p.flat_begin, decay.begin() + p.flat_begin + p.count, dense_decay_.begin() + p.shard_begin);
    std::copy(tp.begin() + p.flat_begin, tp.begin() + p.flat_begin + p.count, dense_tp_.begin() + p.shard_begin);
  }
}

template <typename T>
void Trainer<T>::copy_params_to_layers() {
  auto& tensors = model_->tensors();
  for (int i : dense_tensors_) {
    auto& t = tensors[size_t(i)];
    const T* src = dense_->param(t.name);
    std::copy(src, src + t.numel, t.param);
  }
}

template <typename T>
T* Trainer<T>::expert_master(size_t j) {
  return expert_master_.empty() ? model_->tensors()[size_t(expert_tensors_[j])].param : expert_master_[j].data();
}

template <typename T>
std::vector<T*> Trainer<T>::expert_masters() {
  std::vector<T*> out;
  for (size_t j = 0; j < expert_tensors_.size(); ++j) out.push_back(expert_master(j));
  return out;
}

template <typename T>
void Trainer<T>::round_expert_params() {
  for (size_t j = 0; j < expert_master_.size(); ++j) {
    auto& t = model_->tensors()[size_t(expert_tensors_[j])];
    for (int64_t k = 0; k < t.numel; ++k) t.param[k] = T(bf16_to_float(float_to_bf16(float(expert_master_[j][size_t(k)]))));
  }
}

template <typename T>
void Trainer<T>::set_dataset(const data::TokenDataset& dataset) {
  SY_CHECK_AS(ConfigError, dataset.vocab_size <= config_.model.vocab_size,
              "the dataset's vocabulary has " << dataset.vocab_size << " tokens but model.vocab_size = "
                                              << config_.model.vocab_size
                                              << ": set model.vocab_size to at least " << dataset.vocab_size);
  dataset_ = &dataset;
  data::SamplerOptions opt;
  opt.seq_len = config_.model.seq_len;
  opt.seed = config_.train.seed;
  opt.val_fraction = config_.data.val_fraction;
  sampler_ = std::make_unique<data::Sampler>(dataset, opt);
}

template <typename T>
double Trainer<T>::grad_norm() {
  const T* g = dense_->grad_shard();
  double rep = 0, sharded = 0;
  for (int64_t k = 0; k < dense_->shard_size(); ++k) {
    const double x = double(g[k]);
    (dense_tp_[size_t(k)] ? sharded : rep) += x * x;
  }
  double experts = 0;
  for (int i : expert_tensors_) {
    const auto& t = model_->tensors()[size_t(i)];
    for (int64_t k = 0; k < t.numel; ++k) experts += double(t.grad[k]) * double(t.grad[k]);
  }
  const int64_t tp = grid_.tp();
  // Replicated dense elements and expert units are held by every tp peer.
  return par::global_grad_norm({{rep, tp}, {sharded, 1}, {experts, tp}}, grid_.world());
}

// Layout of the per-step vector summed over the token group:
// [loss, lm, balance, z, router, tokens, routed, dropped, real_slots, a2a_s,
//  then per MoE layer: routed per expert (E)].
template <typename T>
StepMetrics Trainer<T>::reduce_metrics(const std::vector<double>& local) {
  std::vector<double> sum(local);
  grid_.token_group().allreduce(sum.data(), int64_t(sum.size()), par::ReduceOp::Sum);
  const double parts = double(W_) * double(config_.train.micro_batches);
  StepMetrics m;
  m.step = step_;
  m.loss = sum[0] / parts;
  m.lm_loss = sum[1] / parts;
  m.balance_loss = sum[2] / parts;
  m.z_loss = sum[3] / parts;
  m.router_loss = sum[4] / parts;
  const double tokens = sum[5];
  m.dropped_fraction = sum[6] > 0 ? sum[7] / sum[6] : 0.0;
  m.experts_per_token = tokens > 0 ? sum[8] / tokens / std::max<size_t>(1, model_->moe_layers().size()) : 0.0;
  m.tokens = tokens;
  m.a2a_s = sum[9] / W_;
  const int64_t E = config_.moe.num_experts;
  size_t at = 10;
  double worst = 0;
  for (size_t j = 0; j < model_->moe_layers().size(); ++j) {
    std::vector<double> share(size_t(E), 0.0);
    double total = 0, mx = 0;
    for (int64_t e = 0; e < E; ++e) total += sum[at + size_t(e)];
    for (int64_t e = 0; e < E; ++e) {
      share[size_t(e)] = total > 0 ? sum[at + size_t(e)] / total : 0.0;
      mx = std::max(mx, share[size_t(e)]);
    }
    worst = std::max(worst, mx * double(E));
    m.expert_load.push_back(std::move(share));
    at += size_t(E);
  }
  m.expert_load_max_over_mean = worst;
  return m;
}

template <typename T>
StepMetrics Trainer<T>::train_step() {
  SY_REQUIRE(sampler_ != nullptr, "Trainer::train_step: no dataset (call set_dataset)");
  const int mb = config_.train.micro_batches, B = config_.train.micro_batch_size, S = config_.model.seq_len;
  const auto& layers = model_->moe_layers();
  const int64_t E = config_.moe.num_experts;
  std::vector<double> local(10 + layers.size() * size_t(E), 0.0);
  auto& tensors = model_->tensors();
  const double t0 = now_s();

  model_->zero_grads();
  for (auto* layer : layers) layer->times().clear();
  dispatched_.assign(layers.size() * size_t(E), 0);
  for (int m = 0; m < mb; ++m) {
    sampler_->train_batch(step_, W_ * mb * B, m * W_ + w_, W_ * mb, batch_);
    // The noise of a micro-batch follows its slice of the global batch, so
    // layouts with the same W x micro_batches draw the same noise.
    const uint64_t slice = uint64_t(step_) * uint64_t(W_) * uint64_t(mb) + uint64_t(m) * uint64_t(W_) + uint64_t(w_);
    for (size_t j = 0; j < layers.size(); ++j) layers[j]->set_noise_stream(slice * layers.size() + j);
    const LmLosses l = model_->forward(batch_.inputs.data(), batch_.targets.data(), B, S);
    local[0] += l.loss;
    local[1] += l.lm;
    local[2] += l.balance;
    local[3] += l.z;
    local[4] += l.router;
    local[5] += double(B) * S;
    const bool last = m == mb - 1;
    if (last) dense_->begin_backward(1.0 / (double(W_) * mb));
    model_->backward([&](int stage) {
      if (!last) return;
      for (int i : stage_tensors_[size_t(stage)]) {
        const auto& t = tensors[size_t(i)];
        std::copy(t.grad, t.grad + t.numel, dense_->grad(t.name));
        dense_->mark_ready(t.name);
      }
    });
    for (size_t j = 0; j < layers.size(); ++j) {
      const moe::MoeLayerStats& st = layers[j]->stats();
      local[6] += double(st.routed_slots);
      local[7] += double(st.dropped_slots);
      local[8] += st.experts_per_token * double(st.num_tokens);
      for (int64_t e = 0; e < E; ++e) {
        local[10 + j * size_t(E) + size_t(e)] += double(st.routed_per_expert[size_t(e)]);
        dispatched_[j * size_t(E) + size_t(e)] += st.tokens_per_expert[size_t(e)];
      }
    }
  }
  dense_->finish();
  for (auto* layer : layers) local[9] += layer->times().a2a_s;
  const T scale = T(1.0 / (double(W_) * mb));
  for (int i : expert_tensors_) {
    auto& t = tensors[size_t(i)];
    for (int64_t k = 0; k < t.numel; ++k) t.grad[k] *= scale;
  }

  // Losses are agreed over the group before anything is updated: a
  // non-finite loss stops every rank here, with the parameters untouched.
  const double norm = grad_norm();
  StepMetrics metrics = reduce_metrics(local);
  if (!std::isfinite(metrics.loss) || !std::isfinite(norm)) {
    std::ostringstream os;
    os << "training diverged at step " << step_ + 1 << ": loss = " << metrics.loss << " (lm " << metrics.lm_loss
       << ", balance " << metrics.balance_loss << ", z " << metrics.z_loss << "), grad norm = " << norm
       << "; nothing was saved for this step: lower train.lr or raise train.warmup_steps, and resume from the last "
          "checkpoint";
    throw NumericError(os.str());
  }
  const double clip = par::clip_scale(norm, config_.train.grad_clip);
  if (clip < 1.0) {
    dense_->clip_grad_shard(clip);
    for (int i : expert_tensors_) {
      auto& t = tensors[size_t(i)];
      for (int64_t k = 0; k < t.numel; ++k) t.grad[k] = T(double(t.grad[k]) * clip);
    }
  }

  const TrainConfig& tc = config_.train;
  AdamWStep s{learning_rate(tc, step_ + 1), tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, step_ + 1};
  int64_t non_finite = adamw_update(dense_->shard(), dense_->grad_shard(), dense_m_.data(), dense_v_.data(),
                                    dense_decay_.data(), dense_->shard_size(), s);
  for (size_t j = 0; j < expert_tensors_.size(); ++j) {
    auto& t = tensors[size_t(expert_tensors_[j])];
    AdamWStep se = s;
    if (!t.decay) se.weight_decay = 0;
    non_finite +=
        adamw_update(expert_master(j), t.grad, expert_m_[j].data(), expert_v_[j].data(), nullptr, t.numel, se);
  }
  // One agreement per step: a parameter the update made non-finite (a finite
  // loss does not rule that out) stops every rank before anything is saved,
  // and a stop signal seen by any rank stops them all after this step.
  int flags[2] = {non_finite > 0 ? 1 : 0, stop_requested() ? 1 : 0};
  grid_.world().allreduce(flags, 2, par::ReduceOp::Max);
  if (flags[0]) {
    std::ostringstream os;
    os << "training diverged at step " << step_ + 1 << ": the update made parameters non-finite (loss "
       << metrics.loss << ", grad norm " << norm << ", lr " << s.lr
       << "); nothing was saved for this step: lower train.lr or raise train.warmup_steps, and resume from the "
          "last checkpoint";
    throw NumericError(os.str());
  }
  stop_agreed_ = flags[1] != 0;
  dense_->gather();
  copy_params_to_layers();
  round_expert_params();
  for (auto* layer : layers) layer->on_optimizer_step();
  ++step_;

  metrics.step = step_;
  metrics.lr = s.lr;
  metrics.grad_norm = norm;
  set_timing(metrics, now_s() - t0);
  return metrics;
}

// MFU is the PaLM-style model-flops utilization: 6 x active parameters per
// token x tokens per second, over the measured FMA peak of every rank. The
// active parameters count the experts tokens really reached (dropped slots
// and null experts cost nothing, so they are not counted as useful work).
template <typename T>
void Trainer<T>::set_timing(StepMetrics& m, double step_s) const {
  m.step_s = step_s;
  m.a2a_share = step_s > 0 ? m.a2a_s / step_s : 0.0;
  m.tokens_per_s = step_s > 0 ? m.tokens / step_s : 0.0;
  const double active =
      double(model_->dense_active_params()) + double(model_->params_per_expert()) * m.experts_per_token;
  const double flops = 6.0 * active * m.tokens;
  const double peak = peak_gflops_ * 1e9 * grid_.world_size();
  m.mfu = peak > 0 && step_s > 0 ? flops / step_s / peak : 0.0;
}

// Validation: each domain's batches of W * micro_batch_size windows, every
// rank taking its rows (the last batch may leave a rank with fewer rows, or
// none: then it runs one row with ignored targets, so every rank still takes
// part in the MoE collectives). No router jitter. Per-domain expert
// frequencies count the real tokens' slots on real experts.
template <typename T>
EvalResult Trainer<T>::evaluate() {
  SY_REQUIRE(sampler_ != nullptr, "Trainer::evaluate: no dataset (call set_dataset)");
  const int B = config_.train.micro_batch_size, S = config_.model.seq_len, K = dataset_->num_domains();
  const auto& layers = model_->moe_layers();
  const int64_t E = config_.moe.num_experts, nl = int64_t(layers.size());
  // Per domain: [loss sum, tokens, freq (layers, E)].
  const size_t per = size_t(2 + nl * E);
  std::vector<double> acc(size_t(K) * per, 0.0);
  std::vector<int32_t> ids(size_t(B) * S), targets(size_t(B) * S);
  for (auto* layer : layers) layer->set_training(false);
  for (int d = 0; d < K; ++d) {
    int64_t nb = sampler_->num_val_batches(d, B * W_);
    if (config_.train.eval_batches > 0) nb = std::min(nb, config_.train.eval_batches);
    double* a = acc.data() + size_t(d) * per;
    for (int64_t j = 0; j < nb; ++j) {
      sampler_->val_batch(d, j, B * W_, w_, W_, batch_);
      const int rows = batch_.rows;
      std::copy(batch_.inputs.begin(), batch_.inputs.begin() + int64_t(rows) * S, ids.begin());
      std::copy(batch_.targets.begin(), batch_.targets.begin() + int64_t(rows) * S, targets.begin());
      if (rows == 0) {  // one ignored row keeps this rank in the MoE collectives
        std::fill(ids.begin(), ids.begin() + S, 0);
        std::fill(targets.begin(), targets.begin() + S, ops::kIgnoreIndex);
      }
      const LmLosses l = model_->forward(ids.data(), targets.data(), std::max(rows, 1), S);
      const int64_t real = int64_t(rows) * S;
      a[0] += l.lm * double(real);
      a[1] += double(real);
      for (size_t li = 0; li < layers.size(); ++li) {
        const auto& r = layers[li]->routing();
        double* f = a + 2 + li * size_t(E);
        for (int64_t t = 0; t < real; ++t)
          for (int64_t s = r.token_begin[size_t(t)]; s < r.token_begin[size_t(t) + 1]; ++s)
            if (r.expert[size_t(s)] < E) f[r.expert[size_t(s)]] += 1.0;
      }
    }
  }
  grid_.token_group().allreduce(acc.data(), int64_t(acc.size()), par::ReduceOp::Sum);
  // Evaluation must not leak into the next step's global-batch counts.
  for (auto* layer : layers) {
    layer->balancer().reset();
    layer->set_training(true);
  }

  EvalResult out;
  out.domains = dataset_->domain_names;
  double loss_sum = 0;
  for (int d = 0; d < K; ++d) {
    const double* a = acc.data() + size_t(d) * per;
    out.tokens_by_domain.push_back(int64_t(a[1]));
    out.loss_by_domain.push_back(a[1] > 0 ? a[0] / a[1] : std::numeric_limits<double>::quiet_NaN());
    loss_sum += a[0];
    out.val_tokens += int64_t(a[1]);
    std::vector<std::vector<double>> freq;
    for (int64_t li = 0; li < nl; ++li) {
      const double* f = a + 2 + li * E;
      double total = 0;
      for (int64_t e = 0; e < E; ++e) total += f[e];
      std::vector<double> share(size_t(E), 0.0);
      for (int64_t e = 0; e < E; ++e) share[size_t(e)] = total > 0 ? f[e] / total : 0.0;
      freq.push_back(std::move(share));
    }
    out.expert_freq.push_back(std::move(freq));
  }
  out.val_loss = out.val_tokens > 0 ? loss_sum / double(out.val_tokens) : std::numeric_limits<double>::quiet_NaN();
  return out;
}

// --- checkpoints -------------------------------------------------------------------

namespace {

// The tensors of a trainer as the checkpoint sees them: dense tensors
// through the rank's shard pieces (composed with each tensor's local ->
// global runs), expert units through their own runs.
template <typename T>
std::vector<data::CheckpointTensor<T>> checkpoint_tensors(std::vector<ParamTensor<T>>& tensors,
                                                          const std::vector<int>& dense_ids,
                                                          par::ShardedParams<T>& dense, T* dense_m, T* dense_v,
                                                          const std::vector<int>& expert_ids,
                                                          const std::vector<T*>& expert_params,
                                                          std::vector<std::vector<T>>& expert_m,
                                                          std::vector<std::vector<T>>& expert_v) {
  std::vector<data::CheckpointTensor<T>> out;
  const auto pieces = dense.shard_pieces();
  for (int i : dense_ids) {
    const auto& t = tensors[size_t(i)];
    data::CheckpointTensor<T> c;
    c.name = t.name;
    c.global_numel = t.global_numel;
    c.local_numel = dense.shard_size();
    const int64_t f0 = dense.flat_offset(t.name), f1 = f0 + t.numel;
    for (const auto& p : pieces) {
      const int64_t a = std::max(f0, p.flat_begin), b = std::min(f1, p.flat_begin + p.count);
      if (a >= b) continue;
      // Tensor-local elements [a - f0, b - f0) through the tensor's runs.
      for (const auto& r : t.runs) {
        const int64_t x0 = std::max(a - f0, r.local_offset), x1 = std::min(b - f0, r.local_offset + r.count);
        if (x0 >= x1) continue;
        c.runs.push_back({r.global_begin + (x0 - r.local_offset), x1 - x0, p.shard_begin + (f0 + x0 - p.flat_begin)});
      }
    }
    c.arrays = {{"param", dense.shard()}, {"adam_m", dense_m}, {"adam_v", dense_v}};
    out.push_back(std::move(c));
  }
  for (size_t j = 0; j < expert_ids.size(); ++j) {
    const auto& t = tensors[size_t(expert_ids[j])];
    data::CheckpointTensor<T> c;
    c.name = t.name;
    c.global_numel = t.global_numel;
    c.local_numel = t.numel;
    for (const auto& r : t.runs) c.runs.push_back({r.global_begin, r.count, r.local_offset});
    c.arrays = {{"param", expert_params[j]}, {"adam_m", expert_m[j].data()}, {"adam_v", expert_v[j].data()}};
    out.push_back(std::move(c));
  }
  return out;
}

std::string bias_key(int block, int64_t e) { return "router_bias.layers." + std::to_string(block) + "." + std::to_string(e); }

}  // namespace

template <typename T>
std::string Trainer<T>::save_checkpoint(const std::string& dir) {
  const auto tensors = checkpoint_tensors(model_->tensors(), dense_tensors_, *dense_, dense_m_.data(),
                                          dense_v_.data(), expert_tensors_, expert_masters(), expert_m_,
                                          expert_v_);
  data::CheckpointMeta meta;
  meta.step = step_;
  meta.layout = layout_string(grid_);
  meta.config_ini = to_ini(config_);
  const auto& layers = model_->moe_layers();
  for (size_t j = 0; j < layers.size(); ++j) {
    const std::vector<double> bias = layers[j]->router().bias();
    for (size_t e = 0; e < bias.size(); ++e) meta.reals[bias_key(model_->moe_blocks()[j], int64_t(e))] = bias[e];
  }
  const std::string path = data::save_checkpoint(dir, meta, tensors, grid_.world(), config_.checkpoint.keep);
  if (verbose_) SY_LOG(log::Level::Info, "checkpoint: step " << step_ << " written to " << path);
  return path;
}

template <typename T>
void Trainer<T>::load_checkpoint(const std::string& path) {
  const std::string step_dir = data::resolve_checkpoint(path);
  const data::CheckpointMeta saved = data::read_checkpoint_meta(step_dir);
  const Config saved_config = data::checkpoint_config(saved);
  const auto diffs = data::model_config_differences(saved_config, config_);
  if (!diffs.empty()) {
    std::ostringstream os;
    for (size_t i = 0; i < diffs.size(); ++i) os << (i ? "; " : "") << diffs[i];
    throw ConfigError("checkpoint " + step_dir + " was written for a different model (" + os.str() +
                      "): use its config, or a new checkpoint.dir");
  }
  const auto tensors = checkpoint_tensors(model_->tensors(), dense_tensors_, *dense_, dense_m_.data(),
                                          dense_v_.data(), expert_tensors_, expert_masters(), expert_m_,
                                          expert_v_);
  const data::CheckpointMeta meta = data::load_checkpoint(step_dir, tensors, grid_.world());
  step_ = meta.step;
  loaded_step_ = step_;
  dense_->gather();
  copy_params_to_layers();
  round_expert_params();
  const auto& layers = model_->moe_layers();
  for (size_t j = 0; j < layers.size(); ++j) {
    std::vector<double> bias = layers[j]->router().bias();
    for (size_t e = 0; e < bias.size(); ++e) {
      const auto it = meta.reals.find(bias_key(model_->moe_blocks()[j], int64_t(e)));
      SY_CHECK_AS(IoError, it != meta.reals.end(),
                  "checkpoint " << step_dir << " has no router bias for layer " << model_->moe_blocks()[j]);
      bias[e] = it->second;
    }
    if (!bias.empty()) layers[j]->router().set_bias(bias);
    layers[j]->balancer().reset();
  }
  if (verbose_) SY_LOG(log::Level::Info, "checkpoint: loaded " << step_dir << " (step " << step_ << ", written by "
                                                       << meta.world_size << " ranks, " << meta.layout << ")");
}

// --- the loop ----------------------------------------------------------------------------

template <typename T>
void Trainer<T>::install_stop_signals() {
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
}

template <typename T>
bool Trainer<T>::stop_requested() {
  return g_stop_signal != 0;
}

template <typename T>
void Trainer<T>::write_routing_trace() {
  const std::string& path = config_.log.routing_trace;
  if (path.empty() || model_->moe_layers().empty()) return;
  const int world = grid_.world_size();
  const int64_t E = config_.moe.num_experts, layers = int64_t(model_->moe_layers().size());
  std::vector<int64_t> all(size_t(world) * dispatched_.size());  // (ranks, layers, E)
  grid_.world().all_gather(dispatched_.data(), all.data(), int64_t(dispatched_.size()), par::ElemType::I64);
  if (grid_.world_rank() != 0) return;
  std::ofstream out(path, std::ios::app);
  std::vector<int64_t> block(size_t(world) * size_t(E));  // (ranks, E)
  for (int64_t j = 0; j < layers; ++j) {
    for (int r = 0; r < world; ++r)
      std::copy_n(all.begin() + (int64_t(r) * layers + j) * E, E, block.begin() + int64_t(r) * E);
    out << net::routing_trace_block(step_, int(j), block.data(), world, int(E));
  }
  out.flush();
  SY_CHECK_AS(IoError, out.good(), "cannot append to the routing trace " << path);
}

// Starts log.routing_trace: a fresh file with its header, or on resume the
// blocks up to the resumed step (a trace of another shape is moved aside).
template <typename T>
void Trainer<T>::start_routing_trace() {
  const std::string& path = config_.log.routing_trace;
  if (path.empty() || grid_.world_rank() != 0) return;
  const std::string header = net::routing_trace_header(grid_.world_size(), config_.moe.num_experts);
  std::string kept = header;
  if (step_ > 0 && std::filesystem::exists(path)) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.compare(0, header.size(), header) == 0) {
      std::istringstream lines(text.substr(header.size()));
      bool keep = false;
      for (std::string l; std::getline(lines, l);) {
        if (l.rfind("step ", 0) == 0) keep = std::atoll(l.c_str() + 5) <= step_;
        if (keep) kept += l + "\n";
      }
    } else {
      std::filesystem::rename(path, path + ".old");
      SY_LOG(log::Level::Warn, "train: " << path << " holds a trace of another world size or expert count; moved to "
                                         << path << ".old");
    }
  }
  if (const auto dir = std::filesystem::path(path).parent_path(); !dir.empty()) std::filesystem::create_directories(dir);
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  SY_CHECK_AS(IoError, out.good(), "cannot write the routing trace " << path);
}

template <typename T>
void Trainer<T>::write_metrics(const StepMetrics& m, const EvalResult* eval) {
  if (metrics_path_.empty() || grid_.world_rank() != 0) return;
  JsonLine j;
  j.add("step", m.step).add("loss", m.loss).add("lm_loss", m.lm_loss).add("balance_loss", m.balance_loss);
  j.add("z_loss", m.z_loss).add("router_loss", m.router_loss).add("lr", m.lr).add("grad_norm", m.grad_norm);
  j.add("tokens_per_s", m.tokens_per_s).add("mfu", m.mfu).add("expert_load_max_over_mean", m.expert_load_max_over_mean);
  j.add("dropped_fraction", m.dropped_fraction).add("experts_per_token", m.experts_per_token);
  j.add("a2a_share", m.a2a_share).add("step_s", m.step_s).add_raw("expert_load", json_matrix(m.expert_load));
  if (eval) {
    j.add("val_loss", eval->val_loss);
    std::string by = "{", freq = "{";
    for (size_t d = 0; d < eval->domains.size(); ++d) {
      if (d) {
        by += ',';
        freq += ',';
      }
      by += JsonLine::quote(eval->domains[d]) + ":" + json_number(eval->loss_by_domain[d]);
      freq += JsonLine::quote(eval->domains[d]) + ":" + json_matrix(eval->expert_freq[d]);
    }
    j.add_raw("val_loss_by_domain", by + "}").add_raw("expert_freq_by_domain", freq + "}");
  }
  std::ofstream f(metrics_path_, std::ios::app);
  f << j.str() << "\n";
  SY_CHECK_AS(IoError, f.good(), "cannot append to " << metrics_path_);
}

template <typename T>
void Trainer<T>::print_line(const StepMetrics& m) {
  if (grid_.world_rank() != 0 || !verbose_) return;
  char line[512];
  std::snprintf(line, sizeof line,
                "step %5lld/%lld | loss %.4f (lm %.4f bal %.4f z %.4f) | lr %.2e | gnorm %.3f | %.0f tok/s | MFU "
                "%.1f%% | load max/mean %.2f | dropped %.1f%% | experts/tok %.2f | a2a %.1f%%",
                static_cast<long long>(m.step), static_cast<long long>(config_.train.steps), m.loss, m.lm_loss,
                m.balance_loss, m.z_loss, m.lr, m.grad_norm, m.tokens_per_s, 100 * m.mfu, m.expert_load_max_over_mean,
                100 * m.dropped_fraction, m.experts_per_token, 100 * m.a2a_share);
  if (log::stdout_is_watched()) std::printf("\r\033[K");
  std::printf("%s\n", line);
  if (log::stdout_is_watched()) {
    const int width = 30, done = int(width * m.step / std::max<int64_t>(1, config_.train.steps));
    std::printf("[%s%s] %lld/%lld", std::string(size_t(done), '#').c_str(), std::string(size_t(width - done), ' ').c_str(),
                static_cast<long long>(m.step), static_cast<long long>(config_.train.steps));
  }
  std::fflush(stdout);
}

template <typename T>
std::vector<StepMetrics> Trainer<T>::train(int64_t until) {
  SY_REQUIRE(sampler_ != nullptr, "Trainer::train: no dataset (call set_dataset)");
  const CheckpointConfig& ck = config_.checkpoint;
  if (ck.resume) {
    SY_CHECK_AS(ConfigError, !ck.dir.empty(), "checkpoint.resume = true needs checkpoint.dir");
    if (std::filesystem::exists(std::filesystem::path(ck.dir) / "latest"))
      load_checkpoint(ck.dir);
    else
      SY_LOG(log::Level::Info, "checkpoint: nothing to resume in " << ck.dir << ", starting at step 0");
  }
  if (!config_.log.dir.empty() && grid_.world_rank() == 0) {
    write_resolved_config(config_, config_.log.dir);
    metrics_path_ = (std::filesystem::path(config_.log.dir) / "metrics.jsonl").string();
    // Keep the records up to the resumed step so the curve stays one curve.
    std::vector<std::string> keep;
    if (step_ > 0) {
      std::ifstream in(metrics_path_);
      for (std::string l; std::getline(in, l);) {
        const auto at = l.find("\"step\":");
        if (at != std::string::npos && std::atoll(l.c_str() + at + 7) <= step_) keep.push_back(l);
      }
    }
    std::ofstream out(metrics_path_, std::ios::trunc);
    for (const auto& l : keep) out << l << "\n";
    SY_CHECK_AS(IoError, out.good(), "cannot write " << metrics_path_);
  }
  start_routing_trace();
  peak_gflops_ = bench::measure_fma_peak_gflops(config_.train.threads, 0.2);
  if (verbose_) SY_LOG(log::Level::Info, "train: " << model_->num_params_global() << " parameters ("
                                     << model_->active_params_per_token() << " active per token), "
                                     << grid_.world_size() << " ranks (" << layout_string(grid_) << "), global batch "
                                     << int64_t(W_) * config_.train.micro_batches * config_.train.micro_batch_size
                                     << " x " << config_.model.seq_len << " tokens, steps " << step_ << " -> "
                                     << config_.train.steps);

  std::vector<StepMetrics> out;
  int64_t saved_step = loaded_step_;  // a resumed step is on disk already
  while (step_ < config_.train.steps && !(until >= 0 && step_ >= until)) {
    StepMetrics m = train_step();
    const bool last = step_ == config_.train.steps;
    EvalResult eval;
    const bool do_eval = config_.train.eval_every > 0 && (step_ % config_.train.eval_every == 0 || last);
    if (do_eval) eval = evaluate();
    write_metrics(m, do_eval ? &eval : nullptr);
    if (step_ % config_.log.every == 0 || step_ == 1 || last) {
      print_line(m);
      write_routing_trace();
    }
    if (do_eval && grid_.world_rank() == 0 && verbose_) {
      std::ostringstream os;
      os << "eval  step " << step_ << " | val_loss " << eval.val_loss;
      for (size_t d = 0; d < eval.domains.size(); ++d) os << " | " << eval.domains[d] << " " << eval.loss_by_domain[d];
      if (log::stdout_is_watched()) std::printf("\r\033[K");
      std::printf("%s\n", os.str().c_str());
      std::fflush(stdout);
    }
    out.push_back(std::move(m));
    if (!ck.dir.empty() && ck.every > 0 && step_ % ck.every == 0) {
      save_checkpoint(ck.dir);
      saved_step = step_;
    }
    const bool stop = stop_agreed_;
    if (stop || (until >= 0 && step_ >= until)) {
      stopped_ = stop != 0;
      if (!ck.dir.empty()) {
        if (saved_step != step_) save_checkpoint(ck.dir);
        saved_step = step_;
        if (stop) SY_LOG(log::Level::Info, "train: stop signal at step " << step_ << ": checkpoint written, exiting");
      } else if (stop) {
        SY_LOG(log::Level::Warn, "train: stop signal at step " << step_ << ": checkpoint.dir is not set, nothing saved");
      }
      break;
    }
  }
  if (!ck.dir.empty() && saved_step != step_) save_checkpoint(ck.dir);
  if (grid_.world_rank() == 0 && log::stdout_is_watched()) std::printf("\n");
  return out;
}

template class Trainer<float>;
template class Trainer<double>;

}  // namespace sy::models
