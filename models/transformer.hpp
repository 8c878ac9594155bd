// The decoder-only transformer language model (DESIGN.md section 2).
//
//   x_0 = wte[ids] (+ wpe[position] for model.position = learned; rope rotates q, k instead)
//   for block i = 0..L-1:
//     h_i     = x_i + attention(LN(x_i))                        AttentionBlock (tp-split heads)
//     x_{i+1} = h_i + ffn_i(LN(h_i))                             MoE layer when (i + 1) % moe.every == 0,
//                                                                else the dense FfnBlock
//   logits  = LN_f(x_L) head^T                                   head = wte when model.tie_embeddings
//   loss    = CE(logits, targets) + sum of the MoE layers' auxiliary losses
// Backward runs the blocks in reverse with dloss = 1 for this micro-batch's
// loss; parameter gradients accumulate (+=) until zero_grads(), so gradient
// accumulation over micro-batches needs no extra buffer. The caller scales
// the gradients (1 / (ranks x micro-batches)) when it reduces them.
//
// Parameters. Every layer keeps its parameters and gradients in its own flat
// buffer; tensors() lists them as this rank holds them, each with its global
// name and its mapping to the one-rank (global) tensor, for the optimizer, the
// gradient sync and checkpoints:
//   expert tensors (moe expert_w1 / expert_w2): stored 1/W by the MoE layer
//     over the token group; their gradients are complete (summed over the
//     group) after backward;
//   tp-sharded tensors (attention qkv / out): distinct on each tp rank;
//   every other tensor: replicated on all ranks with the same values.
// The readiness stage of a tensor is the component whose backward completes
// its gradient: stage 0 the embedding (and the tied head), stage 1 + 2i the
// attention of block i, 2 + 2i the FFN / MoE sublayer of block i, 2L + 1 the
// final norm and untied head. backward() reports each stage as it completes.
//
// Activations: one workspace sized at construction for max_rows x seq_len
// tokens; forward and backward allocate nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "models/attention_block.hpp"
#include "models/ffn_block.hpp"
#include "models/moe_layer.hpp"
#include "parallel/communicator.hpp"

namespace sy::models {

// Local elements [local_offset, local_offset + count) are global elements [global_begin, +count).
struct GlobalRun {
  int64_t local_offset, global_begin, count;
};

template <typename T>
struct ParamTensor {
  std::string name;      // global name, e.g. "layers.1.moe.expert_w1"
  T* param;              // (numel) this rank's elements
  T* grad;               // (numel)
  int64_t numel;
  int64_t global_numel;  // elements of the one-rank tensor
  std::vector<GlobalRun> runs;
  int stage;             // readiness stage (see the header comment)
  bool decay;            // AdamW weight decay applies (weight matrices, not norms, biases, embeddings)
  bool expert;           // stored 1/W by an MoE layer
  bool tp_sharded;       // distinct on each tensor-parallel rank
};

// One micro-batch's losses (means over its tokens) and routing figures.
struct LmLosses {
  double loss = 0, lm = 0, balance = 0, z = 0, router = 0;
  double expert_flops = 0;  // executed forward flops of experts
  double dense_flops = 0;   // forward flops of everything else
};

template <typename T>
class TransformerLM {
 public:
  // max_rows: the most sequences of model.seq_len tokens in one forward.
  // tp: the tensor-parallel group (nullptr: none); experts: the MoE layers'
  // collectives over the token group (nullptr: one rank). Both must outlive
  // the model. Every rank uses the same seed.
  TransformerLM(const ModelConfig& model, const MoeConfig& moe, int64_t max_rows, uint64_t seed,
                par::Communicator* tp = nullptr, moe::ExpertComm<T>* experts = nullptr);
  ~TransformerLM();

  // ids, targets (B, T_seq); targets may be nullptr (logits only, loss 0).
  // Rows of targets equal to ops::kIgnoreIndex are excluded from the loss.
  LmLosses forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T_seq);
  // Backward of the last forward (which needs targets); on_stage(s) is
  // called as each readiness stage completes, in decreasing order.
  void backward(const std::function<void(int stage)>& on_stage = {});
  void zero_grads();

  // (B * T_seq, V) logits of the last forward.
  const T* logits() const { return logits_.data(); }
  const ModelConfig& config() const { return model_; }
  int num_stages() const { return 2 * model_.layers + 2; }
  std::vector<ParamTensor<T>>& tensors() { return tensors_; }
  // The MoE layers in block order (nullptr-free), and the block index of each.
  const std::vector<moe::MoeLayer<T>*>& moe_layers() const { return moe_ptrs_; }
  const std::vector<int>& moe_blocks() const { return moe_blocks_; }
  int64_t max_rows() const { return max_rows_; }
  int64_t num_params_global() const;  // one-rank parameter count
  int64_t active_params_per_token() const;  // parameters a token touches (k experts)
  // Of those, the ones outside the routed experts, and the parameters of
  // one routed expert summed over the MoE layers: a token that reaches x
  // experts per layer touches dense + x * per_expert.
  int64_t dense_active_params() const;
  int64_t params_per_expert() const;

 private:
  struct Block;
  void add_tensor(const std::string& name, T* param, T* grad, int64_t numel, int stage, bool decay,
                  std::vector<GlobalRun> runs = {}, int64_t global_numel = -1, bool expert = false,
                  bool tp_sharded = false);
  void add_attention_tensors(int i, AttentionBlock<T>& attn);
  void add_moe_tensors(int i, moe::MoeLayer<T>& moe);

  ModelConfig model_;
  MoeConfig moe_;
  int64_t max_rows_, C_, V_, S_;
  T eps_ = T(1e-5);
  std::vector<std::unique_ptr<Block>> blocks_;
  std::vector<moe::MoeLayer<T>*> moe_ptrs_;
  std::vector<int> moe_blocks_;
  std::vector<ParamTensor<T>> tensors_;

  // Embedding, final norm and head parameters.
  std::vector<T> params_, grads_;  // [wte (V, C) | wpe (S, C) | lnf_w (C) | lnf_b (C) | head (V, C)]
  T *wte_, *wpe_ = nullptr, *lnf_w_, *lnf_b_ = nullptr, *head_;
  T *dwte_, *dwpe_ = nullptr, *dlnf_w_, *dlnf_b_ = nullptr, *dhead_;

  // Activations (N = B * T tokens, at most max_rows * S).
  std::vector<T> xs_;       // (L + 1, N, C)  x_i, the input of block i; x_L the final norm's input
  std::vector<T> hs_;       // (L, N, C)      h_i, after attention
  std::vector<T> lnf_;      // (N, C)         LN_f(x_L)
  std::vector<T> lnf_stats_;  // (2, N)       mean, rstd
  std::vector<T> logits_;   // (N, V)         logits, then their gradient
  std::vector<T> dx_, dh_;  // (N, C) each
  const int32_t* ids_ = nullptr;
  const int32_t* targets_ = nullptr;
  int64_t B_ = 0, T_ = 0;
};

extern template class TransformerLM<float>;
extern template class TransformerLM<double>;

}  // namespace sy::models
