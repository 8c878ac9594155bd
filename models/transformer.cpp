#include "models/transformer.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.hpp"
#include "core/ops/embedding.hpp"
#include "core/ops/linear.hpp"
#include "core/ops/norm.hpp"
#include "core/ops/softmax.hpp"
#include "core/rng.hpp"

namespace sy::models {

namespace {

// A seed per component, the same on every rank.
uint64_t component_seed(uint64_t seed, int block, int part) {
  return splitmix64(seed ^ splitmix64(uint64_t(block + 1) * 1000003ull + uint64_t(part)));
}

}  // namespace

template <typename T>
struct TransformerLM<T>::Block {
  std::unique_ptr<AttentionBlock<T>> attn;
  std::unique_ptr<FfnBlock<T>> ffn;          // dense block, or
  std::unique_ptr<moe::MoeLayer<T>> moe;     // MoE block with its pre-norm:
  std::vector<T> norm_p, norm_g;             // (2C) [weight | bias]
  std::vector<T> ln, stats, out, dln;        // (N, C), (2, N), (N, C), (N, C)
};

template <typename T>
TransformerLM<T>::TransformerLM(const ModelConfig& model, const MoeConfig& moe, int64_t max_rows, uint64_t seed,
                                par::Communicator* tp, moe::ExpertComm<T>* experts)
    : model_(model), moe_(moe), max_rows_(max_rows), C_(model.dim), V_(model.vocab_size), S_(model.seq_len) {
  SY_REQUIRE(max_rows > 0, "TransformerLM: max_rows must be positive, got " << max_rows);
  SY_CHECK_AS(ConfigError, model.layers >= 1, "model.layers must be at least 1");
  const int64_t N = max_rows * S_, C = C_, V = V_, L = model.layers;
  const bool learned = model.position == PositionKind::Learned;
  const bool layer_norm = model.norm == NormKind::LayerNorm;

  // Embedding, final norm, head: one buffer.
  const int64_t n_wpe = learned ? S_ * C : 0, n_lnb = layer_norm ? C : 0, n_head = model.tie_embeddings ? 0 : V * C;
  params_.assign(size_t(V * C + n_wpe + C + n_lnb + n_head), T(0));
  grads_.assign(params_.size(), T(0));
  T* p = params_.data();
  T* g = grads_.data();
  auto take = [&](int64_t n, T*& pp, T*& gg) {
    pp = n ? p : nullptr;
    gg = n ? g : nullptr;
    p += n;
    g += n;
  };
  take(V * C, wte_, dwte_);
  take(n_wpe, wpe_, dwpe_);
  take(C, lnf_w_, dlnf_w_);
  take(n_lnb, lnf_b_, dlnf_b_);
  take(n_head, head_, dhead_);
  if (model.tie_embeddings) {
    head_ = wte_;
    dhead_ = dwte_;
  }
  {
    std::mt19937_64 rng(component_seed(seed, -1, 0));
    const double a = 0.02 * std::sqrt(3.0);  // uniform with std 0.02
    std::uniform_real_distribution<double> dist(-a, a);
    for (int64_t i = 0; i < V * C; ++i) wte_[i] = T(dist(rng));
    for (int64_t i = 0; i < n_wpe; ++i) wpe_[i] = T(dist(rng));
    for (int64_t i = 0; i < n_head; ++i) head_[i] = T(dist(rng));
    std::fill(lnf_w_, lnf_w_ + C, T(1));
  }
  add_tensor("embed.wte", wte_, dwte_, V * C, 0, false);
  if (wpe_) add_tensor("embed.wpe", wpe_, dwpe_, n_wpe, 0, false);

  for (int i = 0; i < L; ++i) {
    auto b = std::make_unique<Block>();
    b->attn = std::make_unique<AttentionBlock<T>>(model, N, component_seed(seed, i, 1), tp, eps_);
    add_attention_tensors(i, *b->attn);
    const bool is_moe = (i + 1) % moe.every == 0;
    const std::string prefix = "layers." + std::to_string(i);
    if (is_moe) {
      b->moe = std::make_unique<moe::MoeLayer<T>>(moe, C, N, S_, component_seed(seed, i, 2), experts);
      b->norm_p.assign(size_t(2 * C), T(0));
      b->norm_g.assign(size_t(2 * C), T(0));
      std::fill(b->norm_p.begin(), b->norm_p.begin() + C, T(1));
      b->ln.assign(size_t(N * C), T(0));
      b->stats.assign(size_t(2 * N), T(0));
      b->out.assign(size_t(N * C), T(0));
      b->dln.assign(size_t(N * C), T(0));
      add_tensor(prefix + ".moe.norm_weight", b->norm_p.data(), b->norm_g.data(), C, 2 + 2 * i, false);
      if (layer_norm)
        add_tensor(prefix + ".moe.norm_bias", b->norm_p.data() + C, b->norm_g.data() + C, C, 2 + 2 * i, false);
      add_moe_tensors(i, *b->moe);
      moe_ptrs_.push_back(b->moe.get());
      moe_blocks_.push_back(i);
    } else {
      b->ffn = std::make_unique<FfnBlock<T>>(model, N, component_seed(seed, i, 3), eps_);
      for (const auto& name : b->ffn->param_names())
        add_tensor(prefix + ".ffn." + name, b->ffn->param(name), b->ffn->grad(name), b->ffn->param_size(name),
                   2 + 2 * i, name == "w1" || name == "w2");
    }
    blocks_.push_back(std::move(b));
  }
  const int last = 2 * int(L) + 1;
  add_tensor("final_norm.weight", lnf_w_, dlnf_w_, C, last, false);
  if (lnf_b_) add_tensor("final_norm.bias", lnf_b_, dlnf_b_, C, last, false);
  if (!model.tie_embeddings) add_tensor("head.weight", head_, dhead_, V * C, last, true);

  xs_.assign(size_t((L + 1) * N * C), T(0));
  hs_.assign(size_t(L * N * C), T(0));
  lnf_.assign(size_t(N * C), T(0));
  lnf_stats_.assign(size_t(2 * N), T(0));
  logits_.assign(size_t(N * V), T(0));
  dx_.assign(size_t(N * C), T(0));
  dh_.assign(size_t(N * C), T(0));
}

template <typename T>
TransformerLM<T>::~TransformerLM() = default;

template <typename T>
void TransformerLM<T>::add_tensor(const std::string& name, T* param, T* grad, int64_t numel, int stage, bool decay,
                                  std::vector<GlobalRun> runs, int64_t global_numel, bool expert, bool tp_sharded) {
  SY_REQUIRE(param != nullptr && grad != nullptr && numel > 0, "TransformerLM: empty tensor " << name);
  if (runs.empty()) runs.push_back({0, 0, numel});
  tensors_.push_back({name, param, grad, numel, global_numel < 0 ? numel : global_numel, std::move(runs), stage,
                      decay, expert, tp_sharded});
}

// The attention shard's views map to the one-rank block by the rule of
// models/attention_block.hpp: rows [p Cl, (p+1) Cl) of each of q, k, v, and
// columns [p Cl, (p+1) Cl) of the output projection.
template <typename T>
void TransformerLM<T>::add_attention_tensors(int i, AttentionBlock<T>& attn) {
  const int64_t C = attn.dim(), Cl = attn.local_dim(), first = int64_t(attn.tp_rank()) * Cl;
  const bool sharded = attn.tp_size() > 1;
  const std::string prefix = "layers." + std::to_string(i) + ".attn.";
  for (const auto& name : attn.param_names()) {
    std::vector<GlobalRun> runs;
    int64_t global = attn.param_size(name);
    bool tp_sharded = false;
    if (name == "qkv_weight" || name == "qkv_bias") {
      const int64_t row = name == "qkv_weight" ? C : 1;
      for (int64_t part = 0; part < 3; ++part) runs.push_back({part * Cl * row, (part * C + first) * row, Cl * row});
      global = 3 * C * row;
      tp_sharded = sharded;
    } else if (name == "out_weight") {
      for (int64_t r = 0; r < C; ++r) runs.push_back({r * Cl, r * C + first, Cl});
      global = C * C;
      tp_sharded = sharded;
    }
    add_tensor(prefix + name, attn.param(name), attn.grad(name), attn.param_size(name), 1 + 2 * i,
               name == "qkv_weight" || name == "out_weight", std::move(runs), global, false, tp_sharded);
  }
}

// Expert units map to the one-rank tensors w1 (E, H1, M) and w2 (E, M, H) by
// the rule of models/expert_layout.hpp (slice s of expert e: rows
// [s Hu, (s+1) Hu) of w1's gate and up parts, the same columns of w2).
template <typename T>
void TransformerLM<T>::add_moe_tensors(int i, moe::MoeLayer<T>& layer) {
  const std::string prefix = "layers." + std::to_string(i) + ".moe.";
  const int stage = 2 + 2 * i;
  const int64_t M = C_;
  for (const char* name : {"router_weight", "shared_w1", "shared_w2"})
    if (layer.param(name) != nullptr)
      add_tensor(prefix + name, layer.param(name), layer.grad(name), layer.param_size(name), stage,
                 std::string(name) != "router_weight");
  const moe::ExpertLayout& lay = layer.layout();
  const int64_t E = lay.num_experts(), Hu = lay.unit_hidden(), H = Hu * lay.slices();
  const bool swiglu = moe_.activation == ActivationKind::SwiGLU;
  const int64_t parts = swiglu ? 2 : 1, H1 = parts * H, n_u = lay.units_per_rank();
  std::vector<GlobalRun> r1, r2;
  for (int64_t j = 0; j < n_u; ++j) {
    const int64_t u = lay.first_unit() + j, e = lay.unit_expert(u), s = lay.unit_slice(u);
    const int64_t w1_local = j * lay.unit_w1_size(M), w2_local = j * lay.unit_w2_size(M);
    for (int64_t part = 0; part < parts; ++part)
      r1.push_back({w1_local + part * Hu * M, (e * H1 + part * H + s * Hu) * M, Hu * M});
    for (int64_t m = 0; m < M; ++m) r2.push_back({w2_local + m * Hu, (e * M + m) * H + s * Hu, Hu});
  }
  add_tensor(prefix + "expert_w1", layer.param("expert_w1"), layer.grad("expert_w1"), layer.param_size("expert_w1"),
             stage, true, std::move(r1), E * H1 * M, true);
  add_tensor(prefix + "expert_w2", layer.param("expert_w2"), layer.grad("expert_w2"), layer.param_size("expert_w2"),
             stage, true, std::move(r2), E * M * H, true);
}

template <typename T>
int64_t TransformerLM<T>::num_params_global() const {
  int64_t n = 0;
  for (const auto& t : tensors_) n += t.global_numel;
  return n;
}

template <typename T>
int64_t TransformerLM<T>::dense_active_params() const {
  int64_t n = 0;
  for (const auto& t : tensors_)
    if (!t.expert && t.name != "embed.wte" && t.name != "embed.wpe") n += t.global_numel;  // lookups are not products
  if (model_.tie_embeddings) n += V_ * C_;  // the head's product
  return n;
}

template <typename T>
int64_t TransformerLM<T>::params_per_expert() const {
  int64_t n = 0;
  for (const auto& t : tensors_)
    if (t.expert) n += t.global_numel / std::max(1, moe_.num_experts);
  return n;
}

template <typename T>
int64_t TransformerLM<T>::active_params_per_token() const {
  return dense_active_params() + params_per_expert() * moe_.top_k;
}

template <typename T>
void TransformerLM<T>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), T(0));
  for (auto& b : blocks_) {
    b->attn->zero_grads();
    if (b->ffn) b->ffn->zero_grads();
    if (b->moe) {
      b->moe->zero_grads();
      std::fill(b->norm_g.begin(), b->norm_g.end(), T(0));
    }
  }
}

template <typename T>
LmLosses TransformerLM<T>::forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T_seq) {
  SY_REQUIRE(ids != nullptr, "TransformerLM::forward: ids must be non-null");
  SY_REQUIRE(B >= 1 && B <= max_rows_ && T_seq >= 1 && T_seq <= S_,
             "TransformerLM::forward: batch (" << B << ", " << T_seq << ") exceeds (max_rows " << max_rows_
                                               << ", model.seq_len " << S_ << ")");
  const int64_t N = B * T_seq, C = C_, V = V_, L = model_.layers;
  ids_ = ids;
  targets_ = targets;
  B_ = B;
  T_ = T_seq;
  LmLosses out;

  T* x0 = xs_.data();
  ops::embedding_forward(x0, ids, wte_, N, V, C);
  if (wpe_)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T_seq; ++t) {
        T* row = x0 + (b * T_seq + t) * C;
        const T* pos = wpe_ + t * C;
        for (int64_t c = 0; c < C; ++c) row[c] += pos[c];
      }

  for (int64_t i = 0; i < L; ++i) {
    Block& b = *blocks_[size_t(i)];
    const T* x = xs_.data() + i * N * C;
    T* h = hs_.data() + i * N * C;
    T* next = xs_.data() + (i + 1) * N * C;
    b.attn->forward(x, B, T_seq, h);
    out.dense_flops += b.attn->forward_flops();
    if (b.ffn) {
      b.ffn->forward(h, N, next);
      out.dense_flops += b.ffn->forward_flops();
    } else {
      T* w = b.norm_p.data();
      if (model_.norm == NormKind::LayerNorm)
        ops::layernorm_forward(b.ln.data(), b.stats.data(), b.stats.data() + N, h, w, w + C, N, C, eps_);
      else
        ops::rmsnorm_forward(b.ln.data(), b.stats.data() + N, h, w, N, C, eps_);
      b.moe->forward(b.ln.data(), ids, N, b.out.data());
      const moe::MoeLayerStats& st = b.moe->stats();
      out.balance += st.balance_loss;
      out.z += st.z_loss;
      out.router += st.router_loss;
      out.expert_flops += st.expert_flops_forward;
      out.dense_flops += 2.0 * double(N) * double(C) * double(b.moe->router().num_logits());
      const T* o = b.out.data();
      for (int64_t k = 0; k < N * C; ++k) next[k] = h[k] + o[k];
    }
  }

  const T* xl = xs_.data() + L * N * C;
  if (model_.norm == NormKind::LayerNorm)
    ops::layernorm_forward(lnf_.data(), lnf_stats_.data(), lnf_stats_.data() + N, xl, lnf_w_, lnf_b_, N, C, eps_);
  else
    ops::rmsnorm_forward(lnf_.data(), lnf_stats_.data() + N, xl, lnf_w_, N, C, eps_);
  ops::linear_forward(logits_.data(), lnf_.data(), head_, static_cast<const T*>(nullptr), N, C, V);
  out.dense_flops += 2.0 * double(N) * double(C) * double(V);
  if (targets) out.lm = double(ops::cross_entropy_forward<T>(nullptr, logits_.data(), targets, N, V));
  out.loss = out.lm + out.balance + out.z + out.router;
  return out;
}

template <typename T>
void TransformerLM<T>::backward(const std::function<void(int stage)>& on_stage) {
  SY_REQUIRE(ids_ != nullptr && targets_ != nullptr, "TransformerLM::backward needs a forward with targets");
  const int64_t N = B_ * T_, C = C_, V = V_, L = model_.layers;
  auto done = [&](int stage) {
    if (on_stage) on_stage(stage);
  };
  // logits_ becomes dlogits (the forward logits are not needed again).
  ops::cross_entropy_backward(logits_.data(), logits_.data(), targets_, T(1), N, V);
  ops::linear_backward(dh_.data(), dhead_, static_cast<T*>(nullptr), logits_.data(), lnf_.data(), head_, N, C, V);
  const T* xl = xs_.data() + L * N * C;
  if (model_.norm == NormKind::LayerNorm)
    ops::layernorm_backward(dx_.data(), dlnf_w_, dlnf_b_, dh_.data(), xl, lnf_w_, lnf_stats_.data(),
                            lnf_stats_.data() + N, N, C);
  else
    ops::rmsnorm_backward(dx_.data(), dlnf_w_, dh_.data(), xl, lnf_w_, lnf_stats_.data() + N, N, C);
  done(2 * int(L) + 1);

  // dx_ holds dL/dx_{i+1}; each block turns it into dL/dx_i.
  for (int64_t i = L - 1; i >= 0; --i) {
    Block& b = *blocks_[size_t(i)];
    const T* h = hs_.data() + i * N * C;
    if (b.ffn) {
      b.ffn->backward(dx_.data(), dh_.data());
    } else {
      b.moe->backward(dx_.data(), b.dln.data());
      T* w = b.norm_p.data();
      T* dw = b.norm_g.data();
      if (model_.norm == NormKind::LayerNorm)
        ops::layernorm_backward(dh_.data(), dw, dw + C, b.dln.data(), h, w, b.stats.data(), b.stats.data() + N, N, C);
      else
        ops::rmsnorm_backward(dh_.data(), dw, b.dln.data(), h, w, b.stats.data() + N, N, C);
      const T* dy = dx_.data();
      T* dh = dh_.data();
      for (int64_t k = 0; k < N * C; ++k) dh[k] += dy[k];
    }
    done(2 + 2 * int(i));
    b.attn->backward(dh_.data(), dx_.data());
    done(1 + 2 * int(i));
  }

  const T* dx0 = dx_.data();
  ops::embedding_backward(dwte_, ids_, dx0, N, V, C);
  if (dwpe_)
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t t = 0; t < T_; ++t) {
        const T* row = dx0 + (b * T_ + t) * C;
        T* pos = dwpe_ + t * C;
        for (int64_t c = 0; c < C; ++c) pos[c] += row[c];
      }
  done(0);
}

template class TransformerLM<float>;
template class TransformerLM<double>;

}  // namespace sy::models
