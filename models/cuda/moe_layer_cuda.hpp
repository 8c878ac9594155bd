// One MoE layer on one GPU, composed of the core/cuda ops: router (fp32
// logits) -> dispatch plan with capacity and drop policy -> dispatch ->
// expert FFNs (grouped GEMM) -> combine, and the backward of each. The CPU
// MoeLayer on one rank (models/moe_layer.hpp) is the specification: with the
// same parameters and inputs it gives the same outputs, aux loss and
// gradients (tests/models/cuda/MoeLayerCudaTest.cpp).
//
// Forward  out(T, M) = sum over the kept slots s of token t of weight_s * expert_{e_s}(x_t)
// Backward dx (T, M) overwritten (experts' part + router's part); parameter
// gradients += (accumulation over micro-batches needs no extra buffer).
//
// Precision: token rows, expert weights and their gradients in storage T
// (float, __nv_bfloat16, __half) with fp32 accumulation in every GEMM and
// reduction; the router (weight, logits, probabilities, combine weights) is
// fp32 whatever T is, as the CPU layer's default moe.router_dtype = fp32.
//
// Expert parallelism (optional): with an NcclCommunicator of W ranks (one
// GPU each), rank p stores and computes experts [p El, (p + 1) El), El = E / W
// (whole experts; E must be a multiple of W). After the local plan the
// per-expert counts are exchanged, then the token rows travel to their
// owners and back with grouped send/recv, pipelined over d = moe.pipeline_degree
// chunks (DESIGN section 4; auto means 1 here, there is no GPU tuner yet): the
// exchanges run on the communicator's stream, and the experts of chunk c wait
// on the device (events, never the host) for chunk c's arrival, so chunk c's
// experts overlap chunk c + 1's exchange and chunk c - 1's return. The plan
// is models/cuda/ep_plan.hpp. The router and its gradient are replicated: the
// caller sums the router gradient over the W ranks, as for the CPU layer.
//
// Supported now: routers topk and switch (no jitter), moe.balance micro or
// none, no z-loss, no shared or null experts, whole experts only (no sliced
// experts, parallel modes r other than expert parallel). Anything else is
// refused with a ConfigError naming the key.
//
// The host needs the per-expert row counts for the grouped GEMM's problem
// sizes: forward copies them (and the balancing loss's column sums) to pinned
// host memory and synchronizes the stream once. Memory: one device
// allocation made at construction (parameters, gradients, workspace for
// max_tokens); forward and backward allocate nothing.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/config.hpp"
#include "core/cuda/handles.hpp"
#include "models/cuda/ep_plan.hpp"
#include "models/experts.hpp"
#include "models/moe_layer.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {
class NcclCommunicator;
}

namespace sy::moe {

template <typename T>
class CudaMoeLayer {
 public:
  // Work is queued on `stream` (the caller's; not owned). The current CUDA
  // device must stay the same for the layer's lifetime. ep: the expert-parallel
  // group (not owned; its compute stream is set to `stream`), or nullptr for
  // all experts on this GPU.
  CudaMoeLayer(const MoeConfig& config, int64_t model_dim, int64_t max_tokens, cudaStream_t stream,
               par::NcclCommunicator* ep = nullptr);
  ~CudaMoeLayer();
  CudaMoeLayer(const CudaMoeLayer&) = delete;
  CudaMoeLayer& operator=(const CudaMoeLayer&) = delete;

  // Parameters from host fp32 values in the CPU layer's views: router_weight
  // (E, M), expert_w1 (El, H1, M), expert_w2 (El, M, H) of this rank's El
  // experts (all E without ep); the expert weights are rounded to T. Synchronizes.
  void set_params(const float* router_weight, const float* w1, const float* w2);
  // Gradients widened to fp32 into host buffers of the same shapes. Synchronizes.
  void get_grads(float* router_dweight, float* dw1, float* dw2) const;
  void zero_grads();

  // x (T, M), out (T, M) device buffers; T <= max_tokens. Returns the
  // balancing loss (weighted by moe.balance_coeff). x must stay unchanged
  // until backward.
  double forward(const T* x, int64_t num_tokens, T* out);
  // dout (T, M) -> dx (T, M) overwritten; may not alias x.
  void backward(const T* dout, T* dx);

  const MoeLayerStats& stats() const { return stats_; }
  // The experts this GPU computes (El of them).
  const ExpertShape& expert_shape() const { return shape_; }
  int pipeline_degree() const { return d_; }
  int slots_per_token() const { return K_; }
  // GEMM flops of the last forward's experts on this GPU (backward does twice this).
  double expert_flops_forward() const { return stats_.expert_flops_forward; }

 private:
  struct Device;  // the device buffers (moe_layer_cuda.cpp)
  int64_t capacity_for(int64_t num_tokens) const;
  // Expert parallel: chunk c of the rows to the owners (to_owners) or back home.
  par::RequestPtr exchange(int c, bool to_owners, const T* send, T* recv);
  // Expert parallel: the pipelined exchange + experts + return, forward or backward.
  void run_pipeline(bool backward);

  MoeConfig config_;
  int64_t M_, max_tokens_;
  int E_, K_;
  ExpertShape shape_;
  cudaStream_t stream_;
  cuda::CublasPtr cublas_;
  std::unique_ptr<Device> dev_;
  MoeLayerStats stats_;
  // Last forward, for backward.
  const T* x_ = nullptr;
  int64_t num_tokens_ = 0;
  std::vector<int64_t> offset_, count_;  // (E) expert row ranges, host
  std::vector<float> balance_grad_;      // (E) d(balance loss)/d(probs[t, e]), the same for every t
  // Expert parallel (W_ = 1, El_ = E_ without ep).
  par::NcclCommunicator* ep_ = nullptr;
  int W_ = 1, El_ = 1, d_ = 1;
  int64_t ex_rows_ = 0;  // rows the expert side is sized for
  EpPlan plan_;
  std::vector<par::RequestPtr> pending_;  // exchanges of the last pass, checked at the next sync point
  std::vector<int64_t> a2a_[4];           // (W) send counts, send displs, recv counts, recv displs (elements)
};

}  // namespace sy::moe
