// `switchyard bench gemm`: fp32 GEMM GFLOP/s per shape and thread count,
// against the FMA peak of the same thread count measured in the same run.
// --device=cuda runs the shapes on the GPU instead (bench/cuda/), in --dtype,
// against the same GPU's 8192^3 GEMM rate measured in the run.
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <iostream>
#include <sstream>
#include <vector>

#include "bench/bench.hpp"
#include "core/error.hpp"
#include "core/gemm.hpp"
#include "core/json.hpp"
#include "core/thread_pool.hpp"
#ifdef SWITCHYARD_HAVE_CUDA
#include "bench/cuda/cuda_bench.hpp"
#endif

namespace po = boost::program_options;

namespace sy::bench {

double measure_gemm_gflops(int64_t m, int64_t k, int64_t n, int threads, double min_seconds) {
  ThreadPool pool(threads);
  std::vector<float> a(m * k), b(k * n), c(m * n);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i * 104729) % 1000) * 1e-3f - 0.5f;
  auto once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    gemm<float>(Trans::N, Trans::N, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n, &pool);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  once();  // warm-up: page faults, packing buffers
  std::vector<double> times;
  double total = 0;
  while (times.size() < 3 || (total < min_seconds && times.size() < 200)) {
    times.push_back(once());
    total += times.back();
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return 2.0 * m * n * k / times[times.size() / 2] / 1e9;
}

namespace {

struct GemmShape {
  int64_t m, k, n;
};

std::vector<GemmShape> parse_shapes(const std::string& text) {
  std::vector<GemmShape> shapes;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) {
    GemmShape s{};
    char x1 = 0, x2 = 0;
    std::stringstream one(item);
    if (!(one >> s.m >> x1 >> s.k >> x2 >> s.n) || x1 != 'x' || x2 != 'x' || s.m <= 0 || s.k <= 0 || s.n <= 0 ||
        !one.eof())
      throw ConfigError("--shapes: '" + item + "' is not MxKxN with positive sizes (example: 4096x512x2048)");
    shapes.push_back(s);
  }
  if (shapes.empty()) throw ConfigError("--shapes: no shape given");
  return shapes;
}

std::vector<int> parse_threads(const std::string& text) {
  std::vector<int> threads;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) {
    try {
      size_t used = 0;
      const int t = std::stoi(item, &used);
      if (used != item.size() || t < 1) throw std::invalid_argument(item);
      threads.push_back(t);
    } catch (const std::exception&) {
      throw ConfigError("--threads: '" + item + "' is not a positive integer (example: 1,2)");
    }
  }
  if (threads.empty()) throw ConfigError("--threads: no thread count given");
  return threads;
}

}  // namespace

int gemm_main(const std::vector<std::string>& args) {
  po::options_description desc(
      "switchyard bench gemm: fp32 GEMM throughput against the measured FMA peak\n\nOptions");
  desc.add_options()("help,h", "show this help")("json", "one JSON object per line")(
      "shapes", po::value<std::string>()->default_value("4096x512x2048,8192x512x2048,8192x2048x512"),
      "comma-separated MxKxN shapes (C(M,N) = A(M,K) B(K,N))")(
      "threads", po::value<std::string>()->default_value("1,2"), "comma-separated thread counts")(
      "min-time", po::value<double>()->default_value(0.5), "seconds of timed repetitions per point")(
      "device", po::value<std::string>()->default_value("cpu"), "cpu | cuda (cuBLAS; --threads is ignored)")(
      "dtype", po::value<std::string>()->default_value("bf16"),
      "--device=cuda only: fp32 | bf16 | fp16 storage, fp32 accumulation");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ConfigError(std::string("bench gemm: ") + e.what() + " (see switchyard bench gemm --help)");
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  const bool json = vm.count("json") > 0;
  const auto shapes = parse_shapes(vm["shapes"].as<std::string>());
  const auto thread_counts = parse_threads(vm["threads"].as<std::string>());
  const double min_time = vm["min-time"].as<double>();
  if (!(min_time > 0)) throw ConfigError("--min-time must be positive");
  const std::string device = vm["device"].as<std::string>();
  if (device == "cuda") {
#ifdef SWITCHYARD_HAVE_CUDA
    std::vector<CudaGemmShape> gpu_shapes;
    for (const auto& s : shapes) gpu_shapes.push_back({s.m, s.k, s.n});
    return cuda_gemm_bench(gpu_shapes, vm["dtype"].as<std::string>(), min_time, json);
#else
    throw DeviceError("bench gemm --device=cuda: this switchyard was built without CUDA");
#endif
  }
  if (device != "cpu") throw ConfigError("--device: '" + device + "' is not one of cpu, cuda");

  std::vector<double> peak(thread_counts.size());
  for (size_t i = 0; i < thread_counts.size(); ++i) peak[i] = measure_fma_peak_gflops(thread_counts[i]);
  if (!json) {
    std::cout << "shape (MxKxN)        threads   GFLOP/s   FMA peak   ratio_to_peak   ratio_to_1_thread\n";
  }
  for (const auto& s : shapes) {
    double one_thread = 0;
    for (size_t i = 0; i < thread_counts.size(); ++i) {
      const int t = thread_counts[i];
      const double g = measure_gemm_gflops(s.m, s.k, s.n, t, min_time);
      if (t == 1) one_thread = g;
      if (json) {
        JsonLine line;
        line.add("bench", "gemm").add("m", s.m).add("k", s.k).add("n", s.n).add("threads", t).add("ranks", 1);
        line.add("gflops", g).add("fma_peak_gflops", peak[i]).add("ratio_to_peak", g / peak[i]);
        if (one_thread > 0) line.add("ratio_to_1_thread", g / one_thread);
        std::cout << line.str() << "\n" << std::flush;
      } else {
        std::ostringstream shape;
        shape << s.m << "x" << s.k << "x" << s.n;
        std::printf("%-20s %7d %9.1f %10.1f %15.3f %19s\n", shape.str().c_str(), t, g, peak[i], g / peak[i],
                    one_thread > 0 ? std::to_string(g / one_thread).substr(0, 5).c_str() : "-");
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace sy::bench
