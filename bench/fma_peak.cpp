// FMA peak: 16 independent accumulators of the widest FMA vector this build
// targets, enough to cover FMA latency x issue width on current x86 cores.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include "bench/bench.hpp"
#include "core/thread_pool.hpp"

namespace sy::bench {

namespace {

constexpr int kChains = 16;
volatile float g_sink = 0;  // keeps the kernels' results observable

// Runs `iters` rounds of kChains FMAs; returns flops done (and a value the
// compiler cannot drop).
#if defined(__AVX512F__)
double fma_kernel(int64_t iters, float* sink) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 0.001f * i);
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];  // not _mm512_reduce_add_ps: GCC 12 warns falsely inside it
  _mm512_store_ps(lanes, s);
  *sink = lanes[0] + lanes[15];
  return 2.0 * 16 * kChains * static_cast<double>(iters);
}
#elif defined(__AVX2__) && defined(__FMA__)
double fma_kernel(int64_t iters, float* sink) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 0.001f * i);
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
  float out[8];
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_storeu_ps(out, s);
  *sink = out[0];
  return 2.0 * 8 * kChains * static_cast<double>(iters);
}
#else
double fma_kernel(int64_t iters, float* sink) {
  float acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = 1.0f + 0.001f * i;
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  *sink = acc[0];
  return 2.0 * kChains * static_cast<double>(iters);
}
#endif

}  // namespace

double measure_fma_peak_gflops(int threads, double seconds) {
  ThreadPool pool(threads);
  using clock = std::chrono::steady_clock;
  // Calibrate on one thread, then run every thread together for `seconds`.
  float sink = 0;
  int64_t iters = 1 << 16;
  for (;;) {
    const auto t0 = clock::now();
    fma_kernel(iters, &sink);
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.02) {
      iters = static_cast<int64_t>(iters * (seconds / 3) / dt) + 1;
      break;
    }
    iters *= 4;
  }
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::atomic<double> flops{0};
    std::atomic<int> started{0};
    const auto t0 = clock::now();
    pool.run(threads, [&](int64_t) {
      // Every task waits for all to start, so each runs on its own thread
      // (otherwise one thread may take two tasks in turn and halve the peak).
      started.fetch_add(1);
      while (started.load() < threads) {
      }
      float local_sink = 0;
      const double f = fma_kernel(iters, &local_sink);
      double cur = flops.load();
      while (!flops.compare_exchange_weak(cur, cur + f)) {
      }
      if (local_sink == 12345.0f) sink += local_sink;  // keeps the result alive
    });
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    best = std::max(best, flops.load() / dt / 1e9);
  }
  g_sink = sink;
  return best;
}

}  // namespace sy::bench
