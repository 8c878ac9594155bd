// Benchmark drivers, reachable as `switchyard bench NAME`. Each prints a
// readable table, or with --json one JSON object per line; ratios are against
// baselines measured in the same run (never against remembered numbers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::bench {

// Peak fp32 FMA throughput of `threads` threads running at once, in GFLOP/s,
// measured with independent vector FMA chains for about `seconds`.
double measure_fma_peak_gflops(int threads, double seconds = 0.3);

// Median GFLOP/s of sy::gemm (fp32, row-major, no transposes) for
// C(m, n) = A(m, k) B(k, n) on a pool of `threads` threads.
double measure_gemm_gflops(int64_t m, int64_t k, int64_t n, int threads, double min_seconds = 0.5);

int gemm_main(const std::vector<std::string>& args);
int moe_layer_main(const std::vector<std::string>& args);
int alltoall_main(const std::vector<std::string>& args);

}  // namespace sy::bench
