// The GPU halves of `switchyard bench gemm` and `bench moe-layer` (built with
// the CUDA backend only; bench/*.cpp call them for --device=cuda). Same fields
// and --json lines as the CPU benchmarks, plus "device" and "dtype"; ratios are
// against a GEMM rate measured in the same run on the same GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::bench {

struct CudaGemmShape {
  int64_t m, k, n;
};

// Median TFLOP/s of a row-major C(m, n) = A(m, k) B(k, n) through
// sy::cuda::ops::gemm in `dtype` ("fp32" | "bf16" | "fp16"), timed with CUDA
// events over repetitions filling at least min_seconds.
double measure_cuda_gemm_tflops(const CudaGemmShape& shape, const std::string& dtype, double min_seconds);

// `switchyard bench gemm --device=cuda`: every shape, plus the reference
// shape (8192^3) whose rate is the run's measured peak (ratio_to_peak).
int cuda_gemm_bench(const std::vector<CudaGemmShape>& shapes, const std::string& dtype, double min_seconds, bool json);

}  // namespace sy::bench

namespace sy {
struct Config;
}

namespace sy::bench {

// `switchyard bench moe-layer --device=cuda`: one CudaMoeLayer on this GPU
// (models/cuda/moe_layer_cuda.hpp), bench.tokens tokens, model.dim, the [moe]
// section, storage train.dtype (fp32 | bf16). Forward + backward timed with CUDA
// events after bench.warmup steps, medians over bench.steps; expert TFLOP/s
// (executed expert GEMM flops, backward counted as twice the forward) against
// this GPU's measured GEMM rate in the same dtype (8192^3), and against a plain
// GEMM at the experts' shape (tokens per expert x M x H).
int cuda_moe_layer_bench(const Config& config, bool json);

}  // namespace sy::bench
