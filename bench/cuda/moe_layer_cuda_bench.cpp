#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <vector>

#include "bench/cuda/cuda_bench.hpp"
#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/cuda/checks.hpp"
#include "core/cuda/cuda_backend.hpp"
#include "core/cuda/handles.hpp"
#include "core/cuda/storage.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "core/runtime.hpp"
#include "models/cuda/moe_layer_cuda.hpp"
#include "parallel/nccl/nccl_communicator.hpp"

namespace sy::bench {

namespace {

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

template <typename T>
cuda::DevicePtr upload(const std::vector<float>& host) {
  std::vector<T> staged(host.size());
  for (size_t i = 0; i < host.size(); ++i) staged[i] = cuda::from_float<T>(host[i]);
  cuda::DevicePtr owned = cuda::device_alloc(staged.size() * sizeof(T));
  SY_CUDA_CHECK(cudaMemcpy(owned.get(), staged.data(), staged.size() * sizeof(T), cudaMemcpyHostToDevice));
  return owned;
}

template <typename T>
int run(const Config& config, const std::string& dtype, bool json) {
  const int64_t Tn = config.bench.tokens, M = config.model.dim;
  const MoeConfig& mc = config.moe;
  // Under mpirun: expert parallel over the ranks, one GPU each (the node's
  // ranks take its GPUs in turn; MPI_COMM_TYPE_SHARED numbers them).
  const RuntimeInfo& rt = runtime();
  std::unique_ptr<par::NcclCommunicator> ep;
  if (rt.world_size > 1) {
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rt.rank, MPI_INFO_NULL, &node);
    int local = 0;
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
    // NCCL refuses two ranks of one communicator on one GPU: say so instead of wrapping around.
    SY_CHECK_AS(ConfigError, local < cuda_device_count(),
                "bench moe-layer --device=cuda: node-local rank " << local << " has no GPU of its own ("
                                                                 << cuda_device_count() << " on this node)");
    const int device = local;
    SY_CUDA_CHECK(cudaSetDevice(device));
    ep = par::make_nccl_communicator(MPI_COMM_WORLD, device, "ep_group", config.parallel.timeout_s);
  }
  const cuda::StreamPtr stream = cuda::make_stream();
  moe::CudaMoeLayer<T> layer(mc, M, Tn, stream.get(), ep.get());

  // Parameters and inputs: the CPU layer's initial scale (normal / sqrt(fan-in));
  // the router is replicated (the same on every rank), each rank its own experts and tokens.
  std::mt19937_64 rng(config.train.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const moe::ExpertShape& s = layer.expert_shape();
  const auto randn = [&](int64_t n, double scale) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = float(normal(rng) * scale);
    return v;
  };
  const std::vector<float> router = randn(int64_t(mc.num_experts) * M, 1.0 / std::sqrt(double(M)));
  if (rt.rank != 0) {
    rng.seed(config.train.seed + uint64_t(rt.rank));
    normal.reset();
  }
  const std::vector<float> w1 = randn(s.num_experts * s.h1() * M, 1.0 / std::sqrt(double(M)));
  const std::vector<float> w2 = randn(s.num_experts * M * s.hidden, 1.0 / std::sqrt(double(s.hidden)));
  layer.set_params(router.data(), w1.data(), w2.data());
  auto x = upload<T>(randn(Tn * M, 1.0)), dout = upload<T>(randn(Tn * M, 1e-3));
  auto out = upload<T>(std::vector<float>(size_t(Tn * M))), dx = upload<T>(std::vector<float>(size_t(Tn * M)));
  // cudaMemcpy from pageable memory may return before its DMA lands, on the legacy
  // stream, which the layer's non-blocking stream does not wait for.
  SY_CUDA_CHECK(cudaDeviceSynchronize());

  const cuda::EventPtr e0 = cuda::make_event(), e1 = cuda::make_event(), e2 = cuda::make_event();
  std::vector<double> fwd, bwd, step;
  double flops = 0;
  for (int i = 0; i < config.bench.warmup + config.bench.steps; ++i) {
    if (ep) MPI_Barrier(MPI_COMM_WORLD);
    layer.zero_grads();
    SY_CUDA_CHECK(cudaEventRecord(e0.get(), stream.get()));
    layer.forward(static_cast<const T*>(x.get()), Tn, static_cast<T*>(out.get()));
    SY_CUDA_CHECK(cudaEventRecord(e1.get(), stream.get()));
    layer.backward(static_cast<const T*>(dout.get()), static_cast<T*>(dx.get()));
    SY_CUDA_CHECK(cudaEventRecord(e2.get(), stream.get()));
    SY_CUDA_CHECK(cudaEventSynchronize(e2.get()));
    float f_ms = 0, b_ms = 0;
    SY_CUDA_CHECK(cudaEventElapsedTime(&f_ms, e0.get(), e1.get()));
    SY_CUDA_CHECK(cudaEventElapsedTime(&b_ms, e1.get(), e2.get()));
    if (i < config.bench.warmup) continue;
    fwd.push_back(f_ms * 1e-3);
    bwd.push_back(b_ms * 1e-3);
    step.push_back((f_ms + b_ms) * 1e-3);
    flops = 3.0 * layer.expert_flops_forward();
  }
  const double step_s = median(step);
  const double expert_tflops = flops / step_s / 1e12;
  const double peak = measure_cuda_gemm_tflops({8192, 8192, 8192}, dtype, 0.3);
  const auto& st = layer.stats();
  int64_t mean_rows = 0;
  for (int64_t c : st.tokens_per_expert) mean_rows += c;
  // This rank's kept rows per expert; an expert-parallel GPU's experts take every
  // rank's rows for them, about world_size times as many.
  mean_rows = std::max<int64_t>(
      1, mean_rows * rt.world_size / std::max<int64_t>(1, int64_t(st.tokens_per_expert.size())));
  const double gemm_at_shape = measure_cuda_gemm_tflops({mean_rows, M, s.hidden}, dtype, 0.3);
  if (rt.rank != 0) return 0;  // rank 0 reports its GPU (tokens_per_s sums the ranks)
  if (json) {
    JsonLine line;
    line.add("bench", "moe-layer").add("device", "cuda").add("dtype", dtype).add("ranks", rt.world_size);
    line.add("tokens", Tn).add("dim", M).add("hidden", int64_t(mc.hidden_size)).add("experts", int64_t(mc.num_experts));
    line.add("top_k", int64_t(layer.slots_per_token()));
    line.add("fwd_ms", median(fwd) * 1e3).add("bwd_ms", median(bwd) * 1e3).add("step_ms", step_s * 1e3);
    line.add("tokens_per_s", double(Tn) * rt.world_size / step_s).add("expert_gflops", expert_tflops * 1e3);
    line.add("pipeline_degree", int64_t(layer.pipeline_degree()));
    line.add("expert_tflops", expert_tflops).add("gemm_tflops", gemm_at_shape).add("measured_peak_tflops", peak);
    line.add("ratio_to_peak", expert_tflops / peak).add("ratio_to_gemm", expert_tflops / gemm_at_shape);
    line.add("dropped_fraction", st.dropped_fraction());
    std::cout << line.str() << "\n" << std::flush;
  } else {
    std::printf("moe-layer on cuda (%s): %lld tokens, M %lld, H %d, %d experts, top-%d\n", dtype.c_str(),
                static_cast<long long>(Tn), static_cast<long long>(M), mc.hidden_size, mc.num_experts,
                layer.slots_per_token());
    std::printf("fwd %.3f ms  bwd %.3f ms  step %.3f ms  %.0f tokens/s on %d GPU(s), pipeline degree %d\n",
                median(fwd) * 1e3, median(bwd) * 1e3, step_s * 1e3, double(Tn) * rt.world_size / step_s,
                rt.world_size, layer.pipeline_degree());
    std::printf("experts %.1f TFLOP/s = %.3f of the measured %s GEMM peak (%.1f), %.3f of a GEMM at the expert shape "
                "(%.1f)\n",
                expert_tflops, expert_tflops / peak, dtype.c_str(), peak, expert_tflops / gemm_at_shape, gemm_at_shape);
  }
  return 0;
}

}  // namespace

int cuda_moe_layer_bench(const Config& config, bool json) {
  SY_CHECK_AS(DeviceError, cuda_available(), "bench moe-layer --device=cuda: no CUDA device is usable on this machine");
  SY_CHECK_AS(ConfigError, config.bench.steps >= 1, "bench.steps must be at least 1");
  if (config.train.dtype == DType::BF16) return run<__nv_bfloat16>(config, "bf16", json);
  return run<float>(config, "fp32", json);
}

}  // namespace sy::bench
