#include "models/attention_block.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "core/error.hpp"
#include "core/ops/attention.hpp"
#include "core/ops/linear.hpp"
#include "core/ops/norm.hpp"
#include "core/ops/rope.hpp"
#include "core/thread_pool.hpp"

namespace sy::models {

namespace {

// Views start on 64-byte granules (16 elements of float; 128 bytes of double).
constexpr int64_t kGranule = 16;
int64_t round_up(int64_t n) { return (n + kGranule - 1) / kGranule * kGranule; }

}  // namespace

template <typename T>
AttentionBlock<T>::AttentionBlock(const ModelConfig& model, int64_t max_tokens, uint64_t seed,
                                  par::Communicator* tp_group, T eps)
    : C_(model.dim),
      H_(model.heads),
      max_seq_len_(model.seq_len),
      max_tokens_(max_tokens),
      norm_(model.norm),
      rope_(model.position == PositionKind::Rope),
      eps_(eps) {
  SY_CHECK_AS(ConfigError, model.dim > 0 && model.heads > 0 && model.seq_len > 0,
              "AttentionBlock: model.dim, model.heads and model.seq_len must be positive, got model.dim = "
                  << model.dim << ", model.heads = " << model.heads << ", model.seq_len = " << model.seq_len);
  SY_CHECK_AS(ConfigError, model.dim % model.heads == 0,
              "AttentionBlock: model.dim = " << model.dim << " is not divisible by model.heads = " << model.heads);
  SY_REQUIRE(max_tokens > 0, "AttentionBlock: max_tokens must be positive, got " << max_tokens);
  SY_REQUIRE(eps >= T(0), "AttentionBlock: eps must be non-negative, got " << eps);
  if (tp_group != nullptr && tp_group->size() > 1) {
    tp_ = tp_group;
    tp_size_ = tp_group->size();
    tp_rank_ = tp_group->rank();
  }
  SY_CHECK_AS(ConfigError, H_ % tp_size_ == 0,
              "AttentionBlock: model.heads = " << H_ << " is not divisible by the tensor-parallel size "
                                               << tp_size_ << " (group '" << tp_->name()
                                               << "', parallel.tp); heads are split over the tp ranks");
  Hl_ = H_ / tp_size_;
  Cl_ = C_ / tp_size_;
  D_ = C_ / H_;
  SY_CHECK_AS(ConfigError, !rope_ || D_ % 2 == 0,
              "AttentionBlock: model.position = rope needs an even head size (rotations act on pairs), got "
              "model.dim / model.heads = "
                  << C_ << " / " << H_ << " = " << D_);

  const bool has_norm_bias = norm_ == NormKind::LayerNorm;
  const int64_t local_size = plan_views(views_, C_, tp_size_, has_norm_bias);
  full_num_params_ = plan_views(full_views_, C_, 1, has_norm_bias);
  params_.assign(local_size, T(0));
  grads_.assign(local_size, T(0));
  norm_w_ = param("norm_weight");
  norm_b_ = param("norm_bias");
  qkv_w_ = param("qkv_weight");
  qkv_b_ = param("qkv_bias");
  out_w_ = param("out_weight");
  out_b_ = param("out_bias");
  norm_dw_ = grad("norm_weight");
  norm_db_ = grad("norm_bias");
  qkv_dw_ = grad("qkv_weight");
  qkv_db_ = grad("qkv_bias");
  out_dw_ = grad("out_weight");
  out_db_ = grad("out_bias");
  init_params(seed);

  // One function computes every size: the list below (N = max_tokens).
  const int64_t N = max_tokens_, C = C_, Cl = Cl_;
  const int64_t scores = max_tokens_ * Hl_ * max_seq_len_;  // B Hl T T = N Hl T <= N Hl S
  const int64_t rope_angles = rope_ ? max_seq_len_ * D_ / 2 : 0;  // S D/2 per table
  const std::vector<std::pair<T**, int64_t>> plan = {
      {&ln_, N * C},         {&mean_, N},          {&rstd_, N},         {&qkv_, N * 3 * Cl}, {&probs_, scores},
      {&att_, N * Cl},       {&datt_, N * Cl},     {&dqkv_, N * 3 * Cl}, {&dscores_, scores}, {&dln_, N * C},
      {&rope_cos_, rope_angles}, {&rope_sin_, rope_angles}};
  int64_t total = 0;
  for (const auto& entry : plan) total += round_up(entry.second);
  work_.assign(total, T(0));
  int64_t at = 0;
  for (const auto& [ptr, size] : plan) {
    *ptr = work_.data() + at;
    at += round_up(size);
  }
  if (rope_) ops::rope_table(rope_cos_, rope_sin_, max_seq_len_, D_);
}

template <typename T>
int64_t AttentionBlock<T>::plan_views(std::vector<View>& views, int64_t C, int P, bool has_norm_bias) {
  const int64_t Cl = C / P;
  views.clear();
  int64_t offset = 0;
  auto add = [&](const char* name, int64_t size) {
    views.push_back({name, offset, size});
    offset += round_up(size);
  };
  add("norm_weight", C);
  if (has_norm_bias) add("norm_bias", C);
  add("qkv_weight", 3 * Cl * C);
  add("qkv_bias", 3 * Cl);
  add("out_weight", C * Cl);
  add("out_bias", C);
  return offset;
}

template <typename T>
const typename AttentionBlock<T>::View* AttentionBlock<T>::find(const std::vector<View>& views,
                                                                  const std::string& name) {
  for (const auto& v : views)
    if (v.name == name) return &v;
  return nullptr;
}

template <typename T>
T* AttentionBlock<T>::param(const std::string& name) {
  const View* v = find(views_, name);
  return v ? params_.data() + v->offset : nullptr;
}

template <typename T>
T* AttentionBlock<T>::grad(const std::string& name) {
  const View* v = find(views_, name);
  return v ? grads_.data() + v->offset : nullptr;
}

template <typename T>
int64_t AttentionBlock<T>::param_size(const std::string& name) const {
  const View* v = find(views_, name);
  return v ? v->size : 0;
}

template <typename T>
std::vector<std::string> AttentionBlock<T>::param_names() const {
  std::vector<std::string> names;
  for (const auto& v : views_) names.push_back(v.name);
  return names;
}

template <typename T>
void AttentionBlock<T>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
void AttentionBlock<T>::shard_from_full(const T* full, T* local) const {
  SY_REQUIRE(full != nullptr && local != nullptr, "AttentionBlock::shard_from_full: buffers must be non-null");
  std::fill(local, local + params_.size(), T(0));
  const int64_t C = C_, Cl = Cl_, first = tp_rank_ * Cl_;  // this rank's first row (of each of q, k, v) / column
  for (const auto& v : views_) {
    const View* f = find(full_views_, v.name);
    const T* src = full + f->offset;
    T* dst = local + v.offset;
    if (v.name == "qkv_weight" || v.name == "qkv_bias") {
      // Rows [first, first + Cl) of each of the q, k and v parts.
      const int64_t row = v.name == "qkv_weight" ? C : 1;
      for (int part = 0; part < 3; ++part)
        std::copy(src + (part * C + first) * row, src + (part * C + first + Cl) * row, dst + part * Cl * row);
    } else if (v.name == "out_weight") {
      for (int64_t r = 0; r < C; ++r) std::copy(src + r * C + first, src + r * C + first + Cl, dst + r * Cl);
    } else {  // replicated
      std::copy(src, src + v.size, dst);
    }
  }
}

template <typename T>
void AttentionBlock<T>::init_params(uint64_t seed) {
  // Draw the one-rank parameters in full and keep this rank's shard.
  std::vector<T> full(full_num_params_, T(0));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0 / std::sqrt(double(C_)), 1.0 / std::sqrt(double(C_)));
  auto fill = [&](const char* name) {
    const View* v = find(full_views_, name);
    for (int64_t i = 0; i < v->size; ++i) full[v->offset + i] = static_cast<T>(dist(rng));
  };
  fill("qkv_weight");
  fill("out_weight");
  const View* w = find(full_views_, "norm_weight");
  std::fill(full.begin() + w->offset, full.begin() + w->offset + w->size, T(1));
  shard_from_full(full.data(), params_.data());
}

template <typename T>
void AttentionBlock<T>::allreduce_tp(T* data, int64_t count) {
  if (tp_ != nullptr) tp_->allreduce(data, count, par::ReduceOp::Sum);
}

template <typename T>
void AttentionBlock<T>::forward(const T* x, int64_t B, int64_t T_seq, T* out) {
  SY_REQUIRE(x != nullptr && out != nullptr, "AttentionBlock::forward: x and out must be non-null");
  SY_REQUIRE(out != x, "AttentionBlock::forward: out must not alias x (x is kept for the residual and backward)");
  SY_REQUIRE(B > 0 && T_seq > 0,
             "AttentionBlock::forward: B and T must be positive, got B = " << B << ", T = " << T_seq);
  SY_REQUIRE(T_seq <= max_seq_len_,
             "AttentionBlock::forward: sequence length T = " << T_seq << " exceeds model.seq_len = " << max_seq_len_);
  SY_REQUIRE(B * T_seq <= max_tokens_, "AttentionBlock::forward: B * T = " << B << " * " << T_seq << " = " << B * T_seq
                                                                           << " tokens exceed max_tokens = "
                                                                           << max_tokens_);
  const int64_t N = B * T_seq, C = C_, Cl = Cl_;
  if (norm_ == NormKind::LayerNorm)
    ops::layernorm_forward(ln_, mean_, rstd_, x, norm_w_, norm_b_, N, C, eps_);
  else
    ops::rmsnorm_forward(ln_, rstd_, x, norm_w_, N, C, eps_);
  ops::linear_forward(qkv_, ln_, qkv_w_, qkv_b_, N, C, 3 * Cl);
  if (rope_) ops::rope_forward(qkv_, rope_cos_, rope_sin_, B, T_seq, Cl, Hl_);
  ops::attention_forward(att_, probs_, qkv_, B, T_seq, Cl, Hl_);
  // Row-parallel: each rank's heads contribute a partial (N, C); the sum is the output.
  ops::linear_forward(out, att_, out_w_, static_cast<const T*>(nullptr), N, Cl, C);
  allreduce_tp(out, N * C);
  const T* bias = out_b_;
  compute_pool().parallel_for(N, std::max<int64_t>(1, 4096 / C), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n)
      for (int64_t c = 0; c < C; ++c) out[n * C + c] += bias[c] + x[n * C + c];
  });
  x_ = x;
  B_ = B;
  T_ = T_seq;
}

template <typename T>
void AttentionBlock<T>::backward(const T* dout, T* dx) {
  SY_REQUIRE(x_ != nullptr, "AttentionBlock::backward: called before forward");
  SY_REQUIRE(dout != nullptr && dx != nullptr, "AttentionBlock::backward: dout and dx must be non-null");
  SY_REQUIRE(dx != dout, "AttentionBlock::backward: dx must not alias dout (dout is needed for the residual)");
  const int64_t N = B_ * T_, C = C_, Cl = Cl_;
  // dbo is the same on every tp rank: the output bias is replicated (see the header).
  ops::linear_backward(datt_, out_dw_, out_db_, dout, att_, out_w_, N, Cl, C);
  ops::attention_backward(dqkv_, dscores_, datt_, qkv_, probs_, B_, T_, Cl, Hl_);
  if (rope_) ops::rope_backward(dqkv_, rope_cos_, rope_sin_, B_, T_, Cl, Hl_);
  ops::linear_backward(dln_, qkv_dw_, qkv_db_, dqkv_, ln_, qkv_w_, N, C, 3 * Cl);
  // Column-parallel input: each rank's dLN covers only its heads' paths.
  allreduce_tp(dln_, N * C);
  if (norm_ == NormKind::LayerNorm)
    ops::layernorm_backward(dx, norm_dw_, norm_db_, dln_, x_, norm_w_, mean_, rstd_, N, C);
  else
    ops::rmsnorm_backward(dx, norm_dw_, dln_, x_, norm_w_, rstd_, N, C);
  compute_pool().parallel_for(N, std::max<int64_t>(1, 4096 / C), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0 * C; i < r1 * C; ++i) dx[i] += dout[i];
  });
}

template <typename T>
double AttentionBlock<T>::forward_flops() const {
  const double N = double(B_ * T_), C = double(C_), Cl = double(Cl_);
  const double core = 2.0 * 2.0 * double(B_) * double(Hl_) * double(T_) * double(T_) * double(D_);  // QK^T, PV
  return 2.0 * N * C * 3.0 * Cl + core + 2.0 * N * Cl * C;
}

template class AttentionBlock<float>;
template class AttentionBlock<double>;

}  // namespace sy::models
