#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <vector>

#include "bench/cuda/cuda_bench.hpp"
#include "core/backend.hpp"
#include "core/cuda/checks.hpp"
#include "core/cuda/handles.hpp"
#include "core/cuda/ops/gemm.hpp"
#include "core/cuda/storage.hpp"
#include "core/error.hpp"
#include "core/json.hpp"

namespace sy::bench {

namespace {

// n values of T in [-0.5, 0.5), deterministic, uploaded once.
template <typename T>
cuda::DevicePtr device_values(int64_t n, uint64_t salt) {
  std::vector<T> host(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    host[size_t(i)] = cuda::from_float<T>(float((uint64_t(i) * 7919u + salt) % 1000u) * 1e-3f - 0.5f);
  cuda::DevicePtr owned = cuda::device_alloc(size_t(n) * sizeof(T));
  SY_CUDA_CHECK(cudaMemcpy(owned.get(), host.data(), size_t(n) * sizeof(T), cudaMemcpyHostToDevice));
  // A pageable cudaMemcpy may return before its DMA lands, on the legacy stream,
  // which the non-blocking stream of the GEMMs does not wait for.
  SY_CUDA_CHECK(cudaDeviceSynchronize());
  return owned;
}

template <typename T>
double measure(const CudaGemmShape& s, double min_seconds) {
  const cuda::StreamPtr stream = cuda::make_stream();
  const cuda::CublasPtr handle = cuda::make_cublas();
  auto a = device_values<T>(s.m * s.k, 1), b = device_values<T>(s.k * s.n, 2), c = device_values<T>(s.m * s.n, 3);
  auto once = [&] {
    cuda::ops::gemm<T>(handle.get(), Trans::N, Trans::N, s.m, s.n, s.k, 1.0f, static_cast<const T*>(a.get()), s.k,
                       static_cast<const T*>(b.get()), s.n, 0.0f, static_cast<T*>(c.get()), s.n, stream.get());
  };
  once();  // warm-up: cuBLAS heuristics, clocks
  SY_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  const cuda::EventPtr start = cuda::make_event(), stop = cuda::make_event();
  std::vector<double> times;
  double total = 0;
  while (times.size() < 5 || (total < min_seconds && times.size() < 1000)) {
    SY_CUDA_CHECK(cudaEventRecord(start.get(), stream.get()));
    once();
    SY_CUDA_CHECK(cudaEventRecord(stop.get(), stream.get()));
    SY_CUDA_CHECK(cudaEventSynchronize(stop.get()));
    float ms = 0;
    SY_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    times.push_back(ms * 1e-3);
    total += times.back();
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return 2.0 * double(s.m) * double(s.n) * double(s.k) / times[times.size() / 2] / 1e12;
}

std::string device_label() {
  int dev = 0;
  SY_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  SY_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return prop.name;
}

}  // namespace

double measure_cuda_gemm_tflops(const CudaGemmShape& shape, const std::string& dtype, double min_seconds) {
  SY_CHECK_AS(DeviceError, cuda_available(), "bench on --device=cuda: no CUDA device is usable on this machine");
  if (dtype == "fp32") return measure<float>(shape, min_seconds);
  if (dtype == "bf16") return measure<__nv_bfloat16>(shape, min_seconds);
  if (dtype == "fp16") return measure<__half>(shape, min_seconds);
  throw ConfigError("--dtype: '" + dtype + "' is not one of fp32, bf16, fp16");
}

int cuda_gemm_bench(const std::vector<CudaGemmShape>& shapes, const std::string& dtype, double min_seconds,
                    bool json) {
  const CudaGemmShape reference{8192, 8192, 8192};
  const double peak = measure_cuda_gemm_tflops(reference, dtype, min_seconds);
  const std::string device = device_label();
  if (!json) {
    std::cout << "device: " << device << ", dtype " << dtype << ", measured peak (8192^3) " << peak << " TFLOP/s\n";
    std::cout << "shape (MxKxN)          TFLOP/s   ratio_to_peak\n";
  }
  for (const auto& s : shapes) {
    const double t = measure_cuda_gemm_tflops(s, dtype, min_seconds);
    if (json) {
      JsonLine line;
      line.add("bench", "gemm").add("device", "cuda").add("gpu", device).add("dtype", dtype);
      line.add("m", s.m).add("k", s.k).add("n", s.n).add("ranks", 1);
      line.add("gflops", t * 1e3).add("tflops", t).add("measured_peak_tflops", peak).add("ratio_to_peak", t / peak);
      std::cout << line.str() << "\n" << std::flush;
    } else {
      std::ostringstream shape;
      shape << s.m << "x" << s.k << "x" << s.n;
      std::printf("%-20s %9.1f %15.3f\n", shape.str().c_str(), t, t / peak);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace sy::bench
