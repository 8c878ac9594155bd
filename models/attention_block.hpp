// The causal self-attention sublayer of a pre-norm decoder block, optionally
// tensor-parallel over a tp group (Megatron style: heads split, the QKV
// projection column-parallel, the output projection row-parallel).
//
// Sizes: N = B * T tokens (B sequences of T tokens), width C = H * D (H heads
// of size D). With a tp group of P ranks, rank p computes heads
// [p H/P, (p + 1) H/P): Hl = H / P heads, Cl = C / P columns.
//
// Forward   (one rank)             y = x + attn(rope(LN(x) Wqkv^T + bqkv)) Wo^T + bo
//   a   = LN(x)                             (N, C)   replicated on the tp peers
//   qkv = a Wqkv_p^T + bqkv_p               (N, 3Cl) column-parallel: this rank's q, k, v rows
//   qkv = rope(qkv)  (model.position = rope) q and k of each head rotated by its position, in place
//   o   = attention(qkv) over Hl heads      (N, Cl)
//   y   = x + allreduce_tp(o Wo_p^T) + bo   (N, C)   row-parallel: this rank's Cl columns of Wo
// Backward (dy -> dx)
//   dbo += sum_n dy,  dWo_p += dy^T o,  do = dy Wo_p
//   dqkv = attention_backward(do)           gradient w.r.t. the rotated q, k
//   dqkv = rope_backward(dqkv)  (rope)      dq, dk rotated back (R^T): w.r.t. the projection's output
//   dWqkv_p += dqkv^T a,  dbqkv_p += sum_n dqkv
//   da = allreduce_tp(dqkv Wqkv_p)          each rank holds only its heads' share of dLN
//   dx = LN_backward(da) + dy               (overwritten; the + dy is the residual)
// Parameter gradients accumulate with +=, dx is overwritten.
//
// Positions. model.position = learned: the positions are the embedding's and
// this block sees none. model.position = rope: rotary embeddings (see
// core/ops/rope.hpp: interleaved pairs, base 10000, position t = row % T) on q
// and k after the bias, so the scores depend on the offset between query and
// key only; v is not rotated. A rank's heads are whole heads and all ranks
// hold the same tokens, so rope needs no communication under tp. Needs an even
// head size D. The (S, D/2) cos/sin tables are built once, at construction.
//
// Gradient rule for tensor parallelism. The sharded parameters (qkv_weight,
// qkv_bias, out_weight) are distinct per tp rank: their gradients are complete
// after backward and must NOT be reduced over the tp group. The replicated
// parameters (norm_weight, norm_bias, out_bias) get identical, complete
// gradients on every tp rank (same tokens, full dLN after the all-reduce):
// they must NOT be summed over the tp group either (a sum over P peers would
// scale them by P). Every gradient is summed over the data-parallel group as
// usual. A tp group's ranks must be built with the same config and seed and
// must be given the same x (the same tokens).
//
// Parameters live in one flat buffer with named views (params(), grads()),
// here for this rank's shard (P = 1: the whole layer):
//   norm_weight  (C)        replicated; ones at init
//   norm_bias    (C)        replicated; zeros at init; absent for RMSNorm
//   qkv_weight   (3Cl, C)   rows [q_p | k_p | v_p]: rows [p Cl, (p + 1) Cl) of
//                           each of the full Wq, Wk, Wv (full Wqkv is (3C, C))
//   qkv_bias     (3Cl)      the same rows of the full bqkv (3C); zeros at init
//   out_weight   (C, Cl)    columns [p Cl, (p + 1) Cl) of the full Wo (C, C)
//   out_bias     (C)        replicated, added once after the all-reduce; zeros at init
// Initialisation: every rank draws the full Wqkv then the full Wo from
// mt19937_64(seed), uniform(+-1/sqrt(C)), and keeps its rows / columns, so the
// shards of a tp group are exactly the parameters of a one-rank block with the
// same seed; shard_from_full() / load_full() map one-rank buffers to a shard.
//
// Activations, scratch and the rope tables are one workspace sized at
// construction for max_tokens (and T <= model.seq_len): a forward/backward
// pair allocates nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "parallel/communicator.hpp"

namespace sy::models {

template <typename T>
class AttentionBlock {
 public:
  // model: dim (C), heads (H), seq_len (the longest T), norm. max_tokens bounds
  // B * T of every forward. tp_group: the ranks that split the heads (nullptr
  // or a group of size 1: no tensor parallelism); it must outlive the block.
  // model.position = rope applies rotary embeddings to q and k (see above).
  // Throws ConfigError when C % H != 0, H % tp != 0, or model.position = rope
  // with an odd head size C / H; InvalidArgument for non-positive sizes.
  AttentionBlock(const ModelConfig& model, int64_t max_tokens, uint64_t seed, par::Communicator* tp_group = nullptr,
                 T eps = T(1e-5));

  // x (B*T, C), rows sequence-major; out (B*T, C) overwritten and must not
  // alias x. Needs B * T <= max_tokens and T <= model.seq_len. Collective over
  // the tp group.
  void forward(const T* x, int64_t B, int64_t T_seq, T* out);
  // dout (B*T, C) -> dx (B*T, C) overwritten (must not alias dout); parameter
  // gradients +=. Needs the x given to the last forward to be unchanged.
  // Collective over the tp group.
  void backward(const T* dout, T* dx);

  T* params() { return params_.data(); }
  const T* params() const { return params_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  int64_t num_params() const { return static_cast<int64_t>(params_.size()); }
  void zero_grads();
  // A named parameter view (see the header comment); nullptr when absent.
  T* param(const std::string& name);
  T* grad(const std::string& name);
  int64_t param_size(const std::string& name) const;
  // The names of the views present, in buffer order.
  std::vector<std::string> param_names() const;

  // Size of the flat buffer of a one-rank block with this config.
  int64_t full_num_params() const { return full_num_params_; }
  // Copies this rank's shard of a one-rank buffer (parameters or gradients in
  // the layout of the one-rank block, full_num_params() elements) into local
  // (num_params() elements, this rank's layout; padding set to zero).
  void shard_from_full(const T* full, T* local) const;
  // params() = this rank's shard of a one-rank block's parameters.
  void load_full(const T* full_params) { shard_from_full(full_params, params_.data()); }

  int64_t dim() const { return C_; }
  int64_t heads() const { return H_; }
  int64_t local_heads() const { return Hl_; }
  int64_t local_dim() const { return Cl_; }
  int tp_size() const { return tp_size_; }
  int tp_rank() const { return tp_rank_; }
  int64_t max_tokens() const { return max_tokens_; }
  // Forward flops of the last forward on this rank (GEMMs and attention core).
  double forward_flops() const;

 private:
  struct View {
    std::string name;
    int64_t offset, size;
  };
  // The views of a shard for tp size P (P = 1: the one-rank layout); returns the buffer size.
  static int64_t plan_views(std::vector<View>& views, int64_t C, int P, bool has_norm_bias);
  static const View* find(const std::vector<View>& views, const std::string& name);
  void init_params(uint64_t seed);
  void allreduce_tp(T* data, int64_t count);

  int64_t C_, H_, Hl_, Cl_, D_;
  int64_t max_seq_len_, max_tokens_;
  NormKind norm_;
  bool rope_;  // model.position == rope
  T eps_;
  par::Communicator* tp_ = nullptr;  // nullptr when tp_size_ == 1
  int tp_size_ = 1, tp_rank_ = 0;

  std::vector<T> params_, grads_;
  std::vector<View> views_, full_views_;
  int64_t full_num_params_ = 0;
  T *norm_w_, *norm_b_, *qkv_w_, *qkv_b_, *out_w_, *out_b_;         // parameter views (norm_b_ null for RMSNorm)
  T *norm_dw_, *norm_db_, *qkv_dw_, *qkv_db_, *out_dw_, *out_db_;  // gradient views

  // Workspace: one allocation; views set in the constructor for max_tokens.
  // N = B*T this call, S = model.seq_len.
  std::vector<T> work_;
  T* ln_;       // (N, C)       LN(x), the QKV projection's input
  T* mean_;     // (N)          LayerNorm statistics (unused for RMSNorm)
  T* rstd_;     // (N)
  T* qkv_;      // (N, 3Cl)     per row [q | k | v] of this rank's heads
  T* probs_;    // (B, Hl, T, T)  <= max_tokens * Hl * S elements
  T* att_;      // (N, Cl)      attention output of this rank's heads
  T* datt_;     // (N, Cl)
  T* dqkv_;     // (N, 3Cl)
  T* dscores_;  // (B, Hl, T, T)  scratch of attention_backward
  T* dln_;      // (N, C)       this rank's share of dLN, then (after the all-reduce) all of it
  T* rope_cos_;  // (S, D/2)    rotary tables, filled at construction; empty unless rope_
  T* rope_sin_;  // (S, D/2)

  const T* x_ = nullptr;  // the last forward's input
  int64_t B_ = 0, T_ = 0;  // the last forward's batch and sequence length
};

}  // namespace sy::models
