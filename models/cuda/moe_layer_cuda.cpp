#include "models/cuda/moe_layer_cuda.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "core/cuda/checks.hpp"
#include "core/cuda/handles.hpp"
#include "core/cuda/ops/convert.hpp"
#include "core/cuda/ops/dispatch.hpp"
#include "core/cuda/ops/experts.hpp"
#include "core/cuda/ops/gemm.hpp"
#include "core/cuda/ops/router.hpp"
#include "core/cuda/storage.hpp"
#include "core/error.hpp"
#include "models/cuda/moe_layer_kernels.hpp"
#include "parallel/nccl/nccl_communicator.hpp"

namespace sy::moe {

namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

template <typename T>
ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return ncclBfloat16;
  if constexpr (std::is_same_v<T, __half>) return ncclFloat16;
}

// Carves named views out of one allocation: a first pass with base == nullptr
// sums the sizes, the second sets the pointers (one function for both, STYLE 4).
class Carver {
 public:
  explicit Carver(char* base) : base_(base) {}
  template <typename U>
  void take(U*& view, int64_t count) {
    view = base_ ? reinterpret_cast<U*>(base_ + used_) : nullptr;
    used_ += align_up(size_t(std::max<int64_t>(count, 1)) * sizeof(U));
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace

template <typename T>
struct CudaMoeLayer<T>::Device {
  cuda::DevicePtr memory;
  cuda::PinnedPtr pinned;
  // Parameters and gradients.
  float* router_w;   // (E, M)
  T* w1;             // (E, H1, M)
  T* w2;             // (E, M, H)
  float* router_dw;  // (E, M)
  T* dw1;            // (E, H1, M)
  T* dw2;            // (E, M, H)
  // Router, fp32.
  float* xf;       // (Tm, M)  x widened (unused when T is float: x itself)
  float* logits;   // (Tm, E)
  float* probs;    // (Tm, E)
  float* dprobs;   // (Tm, E)  then dlogits in place
  float* dxr;      // (Tm, M)  router part of dx (unused when T is float: written into dx)
  int32_t* expert;  // (Tm, K)
  float* weight;    // (Tm, K)
  float* score;     // (Tm, K)
  float* dweight;   // (Tm, K)
  int32_t* slot_row;  // (Tm, K)
  int32_t* routed;    // (E)
  int32_t* tokens;    // (E)
  int32_t* offset;    // (E + 1)
  double* colsum;     // (E)  sum over tokens of probs[:, e]
  float* balance_grad;  // (E)
  void* plan_scratch;
  size_t plan_scratch_bytes;
  // Rows in storage T. Dispatch side (this rank's tokens, expert-major over
  // all E experts): rows = Tm * K. Expert side (the rows this GPU's experts
  // compute): ex_rows, which is rows without expert parallelism (then the
  // expert side is the dispatch side and xr.. are unused).
  T *xd, *y, *dy, *dxd;           // (rows, M)
  T *h1, *act, *dact, *dh1;       // (ex_rows, H1 | H)
  T *xr, *yr, *dyr, *dxr_ex;      // (ex_rows, M) expert parallel only
  int32_t* recv_counts;           // (W, El) rows each peer sends to this rank's experts
  int32_t* host_recv_counts;      // (W, El) pinned
  // Pinned host mirrors of the counts, read after one stream synchronization.
  int32_t* host_routed;  // (E)
  int32_t* host_tokens;  // (E)
  int32_t* host_offset;  // (E + 1)
  double* host_colsum;   // (E)
  float* host_balance_grad;  // (E)

  // Sets every view; returns the device bytes (base == nullptr: sizes only).
  size_t carve(char* base, int64_t Tm, int64_t M, int64_t E, int64_t K, const ExpertShape& s, bool widen, bool ep,
               int W, int64_t ex_rows) {
    Carver c(base);
    const int64_t rows = Tm * K, H1 = s.h1(), H = s.hidden, El = s.num_experts;
    c.take(router_w, E * M);
    c.take(w1, El * H1 * M);
    c.take(w2, El * M * H);
    c.take(router_dw, E * M);
    c.take(dw1, El * H1 * M);
    c.take(dw2, El * M * H);
    c.take(xf, widen ? Tm * M : 0);
    c.take(logits, Tm * E);
    c.take(probs, Tm * E);
    c.take(dprobs, Tm * E);
    c.take(dxr, widen ? Tm * M : 0);
    c.take(expert, Tm * K);
    c.take(weight, Tm * K);
    c.take(score, Tm * K);
    c.take(dweight, Tm * K);
    c.take(slot_row, Tm * K);
    c.take(routed, E);
    c.take(tokens, E);
    c.take(offset, E + 1);
    c.take(colsum, E);
    c.take(balance_grad, E);
    char* scratch = nullptr;
    c.take(scratch, int64_t(plan_scratch_bytes));
    plan_scratch = scratch;
    c.take(xd, rows * M);
    c.take(y, rows * M);
    c.take(dy, rows * M);
    c.take(dxd, rows * M);
    c.take(h1, ex_rows * H1);
    c.take(act, ex_rows * H);
    c.take(dact, ex_rows * H);
    c.take(dh1, ex_rows * H1);
    c.take(xr, ep ? ex_rows * M : 0);
    c.take(yr, ep ? ex_rows * M : 0);
    c.take(dyr, ep ? ex_rows * M : 0);
    c.take(dxr_ex, ep ? ex_rows * M : 0);
    c.take(recv_counts, int64_t(W) * El);
    return c.used();
  }
};

template <typename T>
CudaMoeLayer<T>::CudaMoeLayer(const MoeConfig& config, int64_t model_dim, int64_t max_tokens, cudaStream_t stream,
                              par::NcclCommunicator* ep)
    : config_(config), M_(model_dim), max_tokens_(max_tokens), E_(config.num_experts), stream_(stream), ep_(ep) {
  SY_CHECK_AS(ConfigError, config.router == RouterKind::TopK || config.router == RouterKind::Switch,
              "moe.router: the GPU MoE layer runs topk and switch so far");
  SY_CHECK_AS(ConfigError, config.jitter == 0.0, "moe.jitter: the GPU MoE layer has no router jitter yet; set 0");
  SY_CHECK_AS(ConfigError, config.balance == BalanceKind::Micro || config.balance == BalanceKind::None,
              "moe.balance: the GPU MoE layer computes micro or none so far");
  SY_CHECK_AS(ConfigError, config.z_loss_coeff == 0.0, "moe.z_loss_coeff: the GPU MoE layer has no z-loss yet; set 0");
  SY_CHECK_AS(ConfigError, config.num_shared_experts == 0 && config.num_null_experts == 0,
              "moe.num_shared_experts / moe.num_null_experts: not in the GPU MoE layer yet; set 0");
  SY_CHECK_AS(ConfigError, config.router_dtype == DType::F32, "moe.router_dtype: the GPU router computes in fp32");
  SY_REQUIRE(model_dim > 0 && max_tokens > 0 && config.num_experts > 0 && config.hidden_size > 0,
             "CudaMoeLayer: model_dim, max_tokens, num_experts and hidden_size must be positive");
  // As make_switch: the capacity's nominal k * T / E uses moe.top_k, so switch must say 1.
  SY_CHECK_AS(ConfigError, config.router != RouterKind::Switch || config.top_k == 1,
              "moe.top_k = " << config.top_k << ": router switch sends each token to one expert, set moe.top_k = 1");
  K_ = config.router == RouterKind::Switch ? 1 : config.top_k;
  SY_CHECK_AS(ConfigError, K_ >= 1 && K_ <= E_, "moe.top_k = " << K_ << " must be in [1, " << E_ << "]");
  SY_REQUIRE(max_tokens * K_ < (int64_t(1) << 31), "CudaMoeLayer: max_tokens * top_k must be < 2^31");
  d_ = config.pipeline_degree == MoeConfig::kAutoPipelineDegree ? 1 : config.pipeline_degree;
  SY_CHECK_AS(ConfigError, d_ == 1 || d_ == 2 || d_ == 4 || d_ == 8,
              "moe.pipeline_degree = " << config.pipeline_degree << " must be 1, 2, 4, 8 or auto");
  W_ = ep_ ? ep_->size() : 1;
  SY_CHECK_AS(ConfigError, E_ % W_ == 0,
              "moe.num_experts = " << E_ << " is not a multiple of the " << W_
                                   << " expert-parallel GPUs: the GPU layer holds whole experts");
  El_ = E_ / W_;
  shape_ = ExpertShape{El_, M_, config.hidden_size, config.activation};
  // The expert side: every peer sends at most its Tm * K rows, and at most El * C
  // under a capacity factor.
  ex_rows_ = max_tokens * K_;
  if (ep_) {
    ex_rows_ = int64_t(W_) * max_tokens * K_;
    if (config.capacity_factor > 0) ex_rows_ = std::min(ex_rows_, int64_t(W_) * El_ * capacity_for(max_tokens));
    ep_->set_compute_stream(stream_);
    for (auto& v : a2a_) v.assign(size_t(W_), 0);
  }

  cublas_ = cuda::make_cublas();
  dev_ = std::make_unique<Device>();
  dev_->plan_scratch_bytes = cuda::ops::dispatch_plan_scratch_bytes(max_tokens * K_, E_);
  const bool widen = !std::is_same_v<T, float>;
  const size_t bytes = dev_->carve(nullptr, max_tokens, M_, E_, K_, shape_, widen, ep_ != nullptr, W_, ex_rows_);
  dev_->memory = cuda::device_alloc(bytes);
  char* memory = static_cast<char*>(dev_->memory.get());
  dev_->carve(memory, max_tokens, M_, E_, K_, shape_, widen, ep_ != nullptr, W_, ex_rows_);
  SY_CUDA_CHECK(cudaMemsetAsync(memory, 0, bytes, stream_));

  const size_t host_bytes = sizeof(double) * size_t(E_) + sizeof(int32_t) * size_t(3 * E_ + 1) +
                            sizeof(float) * size_t(E_) + sizeof(int32_t) * size_t(W_ * El_);
  dev_->pinned = cuda::pinned_alloc(host_bytes);
  dev_->host_colsum = static_cast<double*>(dev_->pinned.get());
  dev_->host_routed = reinterpret_cast<int32_t*>(dev_->host_colsum + E_);
  dev_->host_tokens = dev_->host_routed + E_;
  dev_->host_offset = dev_->host_tokens + E_;
  dev_->host_balance_grad = reinterpret_cast<float*>(dev_->host_offset + E_ + 1);
  dev_->host_recv_counts = reinterpret_cast<int32_t*>(dev_->host_balance_grad + E_);
  offset_.assign(size_t(E_), 0);
  count_.assign(size_t(E_), 0);
  balance_grad_.assign(size_t(E_), 0.0f);
  stats_.routed_per_expert.assign(size_t(E_), 0);
  stats_.tokens_per_expert.assign(size_t(E_), 0);
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

template <typename T>
CudaMoeLayer<T>::~CudaMoeLayer() {
  cudaStreamSynchronize(stream_);  // nothing queued may outlive the buffers (the exchanges are waited on by it)
}

template <typename T>
int64_t CudaMoeLayer<T>::capacity_for(int64_t num_tokens) const {
  // As MoeLayer::capacity_for; dropless (c <= 0) passes "no limit" or the cap,
  // and the plan keeps min(largest load, cap) slots, which are those of the cap.
  const double c = config_.capacity_factor;
  const double nominal = double(config_.top_k) * double(num_tokens) / double(E_);
  if (c > 0) return static_cast<int64_t>(std::ceil(nominal * c - 1e-9));
  if (c == 0) return -1;
  return static_cast<int64_t>(std::ceil(nominal * -c - 1e-9));
}

template <typename T>
void CudaMoeLayer<T>::set_params(const float* router_weight, const float* w1, const float* w2) {
  SY_REQUIRE(router_weight && w1 && w2, "CudaMoeLayer::set_params: null buffer");
  const int64_t n1 = shape_.num_experts * shape_.h1() * M_, n2 = shape_.num_experts * M_ * shape_.hidden;
  std::vector<T> staged(size_t(std::max(n1, n2)));
  SY_CUDA_CHECK(cudaMemcpyAsync(dev_->router_w, router_weight, sizeof(float) * size_t(E_ * M_),
                                cudaMemcpyHostToDevice, stream_));
  for (int64_t i = 0; i < n1; ++i) staged[size_t(i)] = cuda::from_float<T>(w1[i]);
  SY_CUDA_CHECK(cudaMemcpyAsync(dev_->w1, staged.data(), sizeof(T) * size_t(n1), cudaMemcpyHostToDevice, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));  // staged is reused
  for (int64_t i = 0; i < n2; ++i) staged[size_t(i)] = cuda::from_float<T>(w2[i]);
  SY_CUDA_CHECK(cudaMemcpyAsync(dev_->w2, staged.data(), sizeof(T) * size_t(n2), cudaMemcpyHostToDevice, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

template <typename T>
void CudaMoeLayer<T>::get_grads(float* router_dweight, float* dw1, float* dw2) const {
  SY_REQUIRE(router_dweight && dw1 && dw2, "CudaMoeLayer::get_grads: null buffer");
  // The stream waits on the last backward's exchanges: bounded wait first (see forward).
  for (const auto& r : pending_) r->wait();
  const int64_t n1 = shape_.num_experts * shape_.h1() * M_, n2 = shape_.num_experts * M_ * shape_.hidden;
  std::vector<T> staged(size_t(std::max(n1, n2)));
  SY_CUDA_CHECK(cudaMemcpyAsync(router_dweight, dev_->router_dw, sizeof(float) * size_t(E_ * M_),
                                cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaMemcpyAsync(staged.data(), dev_->dw1, sizeof(T) * size_t(n1), cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (int64_t i = 0; i < n1; ++i) dw1[i] = cuda::to_float(staged[size_t(i)]);
  SY_CUDA_CHECK(cudaMemcpyAsync(staged.data(), dev_->dw2, sizeof(T) * size_t(n2), cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (int64_t i = 0; i < n2; ++i) dw2[i] = cuda::to_float(staged[size_t(i)]);
}

template <typename T>
void CudaMoeLayer<T>::zero_grads() {
  const int64_t n1 = shape_.num_experts * shape_.h1() * M_, n2 = shape_.num_experts * M_ * shape_.hidden;
  SY_CUDA_CHECK(cudaMemsetAsync(dev_->router_dw, 0, sizeof(float) * size_t(E_ * M_), stream_));
  SY_CUDA_CHECK(cudaMemsetAsync(dev_->dw1, 0, sizeof(T) * size_t(n1), stream_));
  SY_CUDA_CHECK(cudaMemsetAsync(dev_->dw2, 0, sizeof(T) * size_t(n2), stream_));
}

template <typename T>
double CudaMoeLayer<T>::forward(const T* x, int64_t num_tokens, T* out) {
  SY_REQUIRE(x != nullptr && out != nullptr, "CudaMoeLayer::forward: null buffer");
  SY_REQUIRE(num_tokens > 0 && num_tokens <= max_tokens_,
             "CudaMoeLayer::forward: " << num_tokens << " tokens, the layer was sized for 1.." << max_tokens_);
  Device& d = *dev_;
  const int64_t Tn = num_tokens;
  x_ = x;
  num_tokens_ = Tn;

  // Router in fp32: logits (T, E) = x Wr^T.
  const float* xf = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    xf = x;
  } else {
    cuda::ops::convert_to_f32(d.xf, x, Tn * M_, stream_);
    xf = d.xf;
  }
  cuda::ops::gemm<float>(cublas_.get(), Trans::N, Trans::T, Tn, E_, M_, 1.0f, xf, M_, d.router_w, M_, 0.0f, d.logits, E_,
                         stream_);
  if (config_.router == RouterKind::Switch)
    cuda::ops::switch_route(d.logits, Tn, E_, d.probs, d.expert, d.weight, d.score, stream_);
  else
    cuda::ops::topk_route(d.logits, Tn, E_, K_, config_.normalize_weights, d.probs, d.expert, d.weight, d.score,
                          stream_);
  const bool balance = config_.balance == BalanceKind::Micro;
  if (balance) cuda_kernels::column_sums(d.probs, Tn, E_, d.colsum, stream_);

  // Capacity and the rows of every kept slot; the counts come to the host once.
  const int64_t capacity = capacity_for(Tn);
  cuda::ops::dispatch_plan(d.expert, d.score, Tn, K_, E_, capacity, config_.drop_policy, d.slot_row, d.routed,
                           d.tokens, d.offset, d.plan_scratch, d.plan_scratch_bytes, stream_);
  SY_CUDA_CHECK(cudaMemcpyAsync(d.host_routed, d.routed, sizeof(int32_t) * size_t(E_), cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaMemcpyAsync(d.host_tokens, d.tokens, sizeof(int32_t) * size_t(E_), cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(
      cudaMemcpyAsync(d.host_offset, d.offset, sizeof(int32_t) * size_t(E_ + 1), cudaMemcpyDeviceToHost, stream_));
  if (balance)
    SY_CUDA_CHECK(cudaMemcpyAsync(d.host_colsum, d.colsum, sizeof(double) * size_t(E_), cudaMemcpyDeviceToHost, stream_));
  if (ep_) {
    // Several layers (or other users) may share the communicator with streams of
    // their own: order this layer's exchanges after this layer's stream.
    ep_->set_compute_stream(stream_);
    // Every peer's rows for this rank's experts: El counts to and from each peer.
    for (int p = 0; p < W_; ++p) {
      a2a_[0][size_t(p)] = a2a_[2][size_t(p)] = El_;
      a2a_[1][size_t(p)] = a2a_[3][size_t(p)] = int64_t(p) * El_;
    }
    pending_.push_back(ep_->ialltoallv(d.tokens, a2a_[0].data(), a2a_[1].data(), d.recv_counts, a2a_[2].data(),
                                       a2a_[3].data(), par::ElemType::I32));
    ep_->stream_wait(*pending_.back(), stream_);
    SY_CUDA_CHECK(cudaMemcpyAsync(d.host_recv_counts, d.recv_counts, sizeof(int32_t) * size_t(W_ * El_),
                                  cudaMemcpyDeviceToHost, stream_));
  }
  // The dispatch does not need the counts: it overlaps the copy and the wait.
  cuda::ops::dispatch_forward(x, d.slot_row, Tn, K_, M_, d.xd, stream_);
  // The stream waits on every exchange so far (the last pass's and the counts):
  // wait() on them first, bounded by the communicator's timeout, so a peer that
  // failed or never issued its part aborts the communicator and throws CommError
  // here instead of blocking cudaStreamSynchronize forever.
  for (auto& r : pending_) r->wait();
  pending_.clear();
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));

  int64_t routed = 0, kept = 0;
  for (int e = 0; e < E_; ++e) {
    offset_[size_t(e)] = d.host_offset[e];
    count_[size_t(e)] = d.host_tokens[e];
    stats_.routed_per_expert[size_t(e)] = d.host_routed[e];
    stats_.tokens_per_expert[size_t(e)] = d.host_tokens[e];
    routed += d.host_routed[e];
    kept += d.host_tokens[e];
  }
  stats_.num_tokens = Tn;
  // As MoeLayer::capacity_for: dropless reports the largest load, capped dropless min(largest load, cap).
  const int64_t max_load = *std::max_element(stats_.routed_per_expert.begin(), stats_.routed_per_expert.end());
  if (capacity < 0) stats_.capacity = max_load;
  else if (config_.capacity_factor < 0) stats_.capacity = std::min(max_load, capacity);
  else stats_.capacity = capacity;
  stats_.routed_slots = routed;
  stats_.dropped_slots = routed - kept;
  stats_.null_slots = 0;
  stats_.experts_per_token = double(kept) / double(Tn);
  if (ep_) {
    std::vector<int64_t> recv(size_t(W_) * size_t(El_));
    for (size_t i = 0; i < recv.size(); ++i) recv[i] = d.host_recv_counts[i];
    plan_ = plan_expert_parallel(W_, El_, d_, count_.data(), offset_.data(), recv.data());
    SY_CHECK_AS(CommError, plan_.recv_total <= ex_rows_,
                "CudaMoeLayer: the peers sent " << plan_.recv_total << " rows to this rank's experts, sized for "
                                                << ex_rows_ << " (more tokens than max_tokens on a peer?)");
    stats_.expert_flops_forward = experts_forward_flops(shape_, plan_.recv_total);
    run_pipeline(/*backward=*/false);
  } else {
    stats_.expert_flops_forward = experts_forward_flops(shape_, kept);
    cuda::ops::experts_forward(shape_, offset_.data(), count_.data(), d.xd, d.w1, d.w2, d.h1, d.act, d.y, cublas_.get(),
                               stream_);
  }
  cuda::ops::combine_forward(d.y, d.weight, d.slot_row, Tn, K_, M_, /*accumulate=*/false, out, stream_);

  // Balancing loss (micro-batch): f_e = routed_e / all routed slots, P_e = mean probs[:, e];
  // loss = coeff E sum_e f_e P_e, d loss / d probs[t, e] = coeff E f_e / T.
  stats_.balance_loss = 0.0;
  if (balance) {
    // In the CPU Balancer's order of operations (fraction_from, balance_rows), so the
    // float gradient rounds the same.
    const double inv_total = routed > 0 ? 1.0 / double(routed) : 0.0;
    const double inv_rows = 1.0 / double(Tn);
    const double scale = config_.balance_coeff * double(E_) / double(Tn);
    double dot = 0.0;
    for (int e = 0; e < E_; ++e) {
      const double f = double(d.host_routed[e]) * inv_total;
      dot += f * d.host_colsum[e] * inv_rows;
      d.host_balance_grad[e] = float(scale * f);
    }
    stats_.balance_loss = config_.balance_coeff * double(E_) * dot;
    SY_CUDA_CHECK(cudaMemcpyAsync(d.balance_grad, d.host_balance_grad, sizeof(float) * size_t(E_),
                                  cudaMemcpyHostToDevice, stream_));
  }
  return stats_.balance_loss;
}

template <typename T>
void CudaMoeLayer<T>::backward(const T* dout, T* dx) {
  SY_REQUIRE(dout != nullptr && dx != nullptr, "CudaMoeLayer::backward: null buffer");
  SY_REQUIRE(x_ != nullptr, "CudaMoeLayer::backward without a forward");
  SY_REQUIRE(static_cast<const void*>(dx) != static_cast<const void*>(x_), "CudaMoeLayer::backward: dx may not alias x");
  Device& d = *dev_;
  const int64_t Tn = num_tokens_;

  // Combine: dy rows = weight dout, dweight = <dout, y>; then the experts.
  cuda::ops::combine_backward(dout, d.y, d.weight, d.slot_row, Tn, K_, M_, d.dy, d.dweight, stream_);
  if (ep_)
    run_pipeline(/*backward=*/true);
  else
    cuda::ops::experts_backward(shape_, offset_.data(), count_.data(), d.xd, d.w1, d.w2, d.h1, d.act, d.dy, d.dact,
                                d.dh1, d.dxd, d.dw1, d.dw2, cublas_.get(), stream_);

  // Router: dprobs = balance gradient + combine weights' gradient; dlogits in place.
  SY_CUDA_CHECK(cudaMemsetAsync(d.dprobs, 0, sizeof(float) * size_t(Tn * E_), stream_));
  if (config_.balance == BalanceKind::Micro) cuda_kernels::add_row_vector(d.dprobs, d.balance_grad, Tn, E_, stream_);
  const bool renormalized = config_.router == RouterKind::TopK && config_.normalize_weights;
  cuda::ops::weight_backward_rows(d.probs, d.expert, d.weight, d.dweight, Tn, E_, K_, E_, renormalized, d.dprobs,
                                  stream_);
  cuda::ops::softmax_rows_backward(d.probs, d.dprobs, Tn, E_, d.dprobs, stream_);
  const float* xf = std::is_same_v<T, float> ? reinterpret_cast<const float*>(x_) : d.xf;
  // dWr (E, M) += dlogits^T x;  dx_router (T, M) = dlogits Wr.
  cuda::ops::gemm<float>(cublas_.get(), Trans::T, Trans::N, E_, M_, Tn, 1.0f, d.dprobs, E_, xf, M_, 1.0f, d.router_dw, M_,
                         stream_);
  if constexpr (std::is_same_v<T, float>) {
    cuda::ops::gemm<float>(cublas_.get(), Trans::N, Trans::N, Tn, M_, E_, 1.0f, d.dprobs, E_, d.router_w, M_, 0.0f, dx, M_,
                           stream_);
  } else {
    cuda::ops::gemm<float>(cublas_.get(), Trans::N, Trans::N, Tn, M_, E_, 1.0f, d.dprobs, E_, d.router_w, M_, 0.0f, d.dxr,
                           M_, stream_);
    cuda::ops::convert_from_f32(dx, d.dxr, Tn * M_, stream_);
  }
  // The experts' part, added token by token over its slots.
  cuda::ops::dispatch_backward(d.dxd, d.slot_row, Tn, K_, M_, /*accumulate=*/true, dx, stream_);
}

template <typename T>
par::RequestPtr CudaMoeLayer<T>::exchange(int c, bool to_owners, const T* send, T* recv) {
  // Counts and displacements in elements: rows * M.
  const auto& sr = to_owners ? plan_.chunk_send_rows : plan_.chunk_recv_rows;
  const auto& sd = to_owners ? plan_.chunk_send_displs : plan_.chunk_recv_displs;
  const auto& rr = to_owners ? plan_.chunk_recv_rows : plan_.chunk_send_rows;
  const auto& rd = to_owners ? plan_.chunk_recv_displs : plan_.chunk_send_displs;
  for (int p = 0; p < W_; ++p) {
    a2a_[0][size_t(p)] = sr[plan_.at(c, p)] * M_;
    a2a_[1][size_t(p)] = sd[plan_.at(c, p)] * M_;
    a2a_[2][size_t(p)] = rr[plan_.at(c, p)] * M_;
    a2a_[3][size_t(p)] = rd[plan_.at(c, p)] * M_;
  }
  const int64_t packed = max_tokens_ * K_ * M_, expert_side = ex_rows_ * M_;
  return ep_->ialltoallv(send, a2a_[0].data(), a2a_[1].data(), recv, a2a_[2].data(), a2a_[3].data(), nccl_type<T>(),
                         to_owners ? packed : expert_side, to_owners ? expert_side : packed);
}

// Chunk c's rows go to their owners (communication stream), the owners' experts
// wait for them on the device and run, and the results return; all exchanges
// to the owners are issued first, each waiting only for the dispatch, so the
// exchange of chunk c + 1 overlaps the experts of chunk c, and the return of
// chunk c (issued after chunk c's experts) overlaps the experts of c + 1.
template <typename T>
void CudaMoeLayer<T>::run_pipeline(bool backward) {
  Device& d = *dev_;
  ep_->set_compute_stream(stream_);  // as in forward: after this layer's queued work
  const T* send = backward ? d.dy : d.xd;  // dispatch side, expert-major
  T* arrive = backward ? d.dyr : d.xr;     // expert side, peer-major
  T* result = backward ? d.dxr_ex : d.yr;  // expert side
  T* home = backward ? d.dxd : d.y;        // dispatch side
  std::vector<par::RequestPtr> to_owners(static_cast<size_t>(d_)), back(static_cast<size_t>(d_));
  for (int c = 0; c < d_; ++c) to_owners[size_t(c)] = exchange(c, true, send, arrive);
  for (int c = 0; c < d_; ++c) {
    ep_->stream_wait(*to_owners[size_t(c)], stream_);
    for (int q = 0; q < W_; ++q) {
      const int64_t* offset = plan_.chunk_ex_offset.data() + plan_.at(c, q, 0);
      const int64_t* count = plan_.chunk_ex_count.data() + plan_.at(c, q, 0);
      if (backward)
        cuda::ops::experts_backward(shape_, offset, count, d.xr, d.w1, d.w2, d.h1, d.act, d.dyr, d.dact, d.dh1,
                                    d.dxr_ex, d.dw1, d.dw2, cublas_.get(), stream_);
      else
        cuda::ops::experts_forward(shape_, offset, count, d.xr, d.w1, d.w2, d.h1, d.act, d.yr, cublas_.get(), stream_);
    }
    back[size_t(c)] = exchange(c, false, result, home);
  }
  for (int c = 0; c < d_; ++c) ep_->stream_wait(*back[size_t(c)], stream_);
  for (auto& r : to_owners) pending_.push_back(std::move(r));
  for (auto& r : back) pending_.push_back(std::move(r));
}

template class CudaMoeLayer<float>;
template class CudaMoeLayer<__nv_bfloat16>;
template class CudaMoeLayer<__half>;

}  // namespace sy::moe
