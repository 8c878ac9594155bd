// `switchyard bench moe-layer`: one MoE layer, forward + backward with the
// input gradient, timed after warm-up. Reports the step against the expert
// GEMM flops actually executed, the plain GEMM speed at the same shapes and the
// FMA peak, all measured in this run.
//
// On several ranks every rank stores 1/W of the experts (models/expert_layout.hpp).
// parallel.ep = P exchanges token rows over P ranks by all-to-all (a2a_share)
// and all-gathers the rest of each rank's experts from the W/P others
// (gather_share, with the gradients' reduce-scatter); moe.parallel_mode = r
// picks DESIGN.md's mode instead. Every rank routes bench.tokens tokens of its
// own; tokens_per_s sums the ranks.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <random>
#include <vector>

#include "bench/bench.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "core/mpi_check.hpp"
#include "core/runtime.hpp"
#include "core/thread_pool.hpp"
#include "models/moe_layer.hpp"
#include "parallel/moe_hooks.hpp"
#include "parallel/process_grid.hpp"

namespace sy::bench {

namespace {

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int moe_layer_main(const std::vector<std::string>& args) {
  std::string path;
  bool json = false;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << "usage: switchyard bench moe-layer [--config FILE] [--json] [--section.key=value ...]\n\n"
                   "Times one MoE layer (forward, backward with input gradient) on bench.tokens tokens per\n"
                   "rank with bench.threads threads: bench.warmup untimed steps, then the median of\n"
                   "bench.steps. Shapes from [model] dim and [moe]; see configs/bench/moe-layer.ini.\n"
                   "Fields: fwd_ms bwd_ms step_ms tokens_per_s; expert_gflops = expert GEMM flops executed per\n"
                   "step / step time; gemm_gflops = plain GEMM at the expert shapes; both summed over ranks, as\n"
                   "is fma_peak_gflops (threads x ranks); ratio_to_peak = expert_gflops / fma_peak_gflops; routing_share = share of the step\n"
                   "outside the expert FFNs (router, capacity, dispatch, combine); a2a_share = share in the token\n"
                   "all-to-all; gather_share = share in the expert weights' all-gather and gradient reduce-scatter.\n"
                   "Under mpirun every rank stores 1/ranks of the experts; --parallel.ep=N exchanges tokens over N\n"
                   "ranks and gathers the experts over the other ranks/N (N = 1: each rank gathers every expert);\n"
                   "--moe.parallel_mode=r picks DESIGN.md's mode r instead.\n";
      return 0;
    }
    if (a == "--json") {
      json = true;
    } else if (a == "--config") {
      if (i + 1 >= args.size()) throw ConfigError("command line: --config needs a file");
      path = args[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      path = a.substr(9);
    } else {
      overrides.push_back(a);
    }
  }
  const Config config = load_config(path, overrides);
  const RuntimeInfo& rt = runtime();
  set_num_threads(config.bench.threads);
  const int threads = config.bench.threads;
  const int64_t T = config.bench.tokens, M = config.model.dim;
  const MoeConfig& mc = config.moe;
  SY_CHECK_AS(ConfigError, config.bench.steps >= 1, "bench.steps must be at least 1");
  const int64_t seq_len = mc.balance == BalanceKind::Sequence ? config.model.seq_len : T;
  SY_CHECK_AS(ConfigError, T % seq_len == 0,
              "moe.balance = sequence needs bench.tokens (" << T << ") to be a multiple of model.seq_len ("
                                                            << seq_len << ")");

  ParallelConfig pc = config.parallel;
  if (int64_t(pc.dp) * pc.ep * pc.tp == 1) pc.dp = rt.world_size;  // default: one replica per rank
  SY_CHECK_AS(ConfigError, pc.tp == 1, "bench moe-layer: parallel.tp = " << pc.tp
                                           << ": the MoE layer has no tensor parallelism (use ep and dp)");
  par::ProcessGrid grid(pc);
  // Every rank stores 1/W of the experts; parallel.ep sets the exchange
  // degree (moe.parallel_mode = auto), or moe.parallel_mode fixes r.
  par::CommExpertComm<float> comm(grid.expert_group(),
                                  par::exchange_placement(pc, grid.world_rank(), grid.node_index()));
  moe::MoeLayer<float> layer(mc, M, T, seq_len, config.train.seed, &comm);
  par::connect_moe_layer(layer, grid.token_group(), pc.ep, pc.a2a_algo);
  std::mt19937_64 rng(config.train.seed + rt.rank);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(T * M), dout(T * M), out(T * M), dx(T * M);
  for (auto& v : x) v = normal(rng);
  for (auto& v : dout) v = normal(rng) * 1e-3f;
  std::vector<int32_t> ids(T);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % std::max(1, config.model.vocab_size));

  // One timed series at pipeline degree d: medians over bench.steps after bench.warmup.
  struct Series {
    std::vector<double> fwd, bwd, step, expert_s, outside_s, a2a_s, gather_s, stage_s;
  };
  double flops = 0;
  auto measure = [&](int d) {
    Series r;
    layer.set_pipeline_degree(d);
    for (int it = 0; it < config.bench.warmup + config.bench.steps; ++it) {
      layer.zero_grads();
      layer.times().clear();
      layer.set_timing(true);
      MPI_Barrier(MPI_COMM_WORLD);
      const auto t0 = std::chrono::steady_clock::now();
      layer.forward(x.data(), ids.data(), T, out.data());
      const double f = seconds_since(t0);
      const auto t1 = std::chrono::steady_clock::now();
      layer.backward(dout.data(), dx.data());
      const double b = seconds_since(t1);
      layer.on_optimizer_step();
      if (it < config.bench.warmup) continue;
      r.fwd.push_back(f);
      r.bwd.push_back(b);
      r.step.push_back(f + b);
      const auto& tm = layer.times();
      r.expert_s.push_back(tm.experts_s - tm.a2a_s - tm.gather_s);  // the expert stage without communication
      r.stage_s.push_back(tm.experts_s - tm.gather_s);             // the expert stage with its token exchange
      r.outside_s.push_back(tm.router_s + tm.dispatch_s + tm.combine_s);
      r.a2a_s.push_back(tm.a2a_s);
      r.gather_s.push_back(tm.gather_s);
      const double shared = mc.num_shared_experts > 0
                                ? moe::experts_forward_flops({1, M, mc.num_shared_experts * int64_t(mc.hidden_size),
                                                              mc.activation},
                                                             T)
                                : 0.0;
      flops = 3.0 * (layer.stats().expert_flops_forward + shared);  // backward = 2x forward
    }
    return r;
  };
  // With a fixed moe.pipeline_degree d > 1 the same layer also runs d = 1
  // first, in this run: overlap efficiency = (t_comm + t_compute - t_total)
  // / min(t_comm, t_compute), with t_comm the token exchange and t_compute
  // the experts of d = 1, and t_total the expert stage (exchange included) at d.
  const int d = mc.pipeline_degree > 0 ? mc.pipeline_degree : 1;
  double overlap = 0, d1_step = 0;
  if (d > 1) {
    const Series one = measure(1);
    d1_step = median(one.step);
    const Series piped = measure(d);
    const double t_comm = median(one.a2a_s), t_compute = median(one.expert_s), t_total = median(piped.stage_s);
    overlap = std::min(t_comm, t_compute) > 0 ? (t_comm + t_compute - t_total) / std::min(t_comm, t_compute) : 0.0;
  }
  const Series s_run = measure(d);
  const std::vector<double>&fwd = s_run.fwd, &bwd = s_run.bwd, &step = s_run.step, &expert_s = s_run.expert_s,
                           &outside_s = s_run.outside_s, &a2a_s = s_run.a2a_s, &gather_s = s_run.gather_s;
  const double step_s = median(step);
  const auto& st = layer.stats();
  // Plain GEMM at the expert shapes: rows per expert x M x H1, then x H x M.
  // Each local expert sees the rows of its exchange group's P ranks.
  const int64_t rows = std::max<int64_t>(
      1, int64_t(st.experts_per_token * double(T) * layer.expert_degree()) / mc.num_experts);
  const moe::ExpertShape shape = layer.expert_shape();
  const double g1 = measure_gemm_gflops(rows, M, shape.h1(), threads, 0.3);
  const double g2 = measure_gemm_gflops(rows, shape.hidden, M, threads, 0.3);
  const double f1 = 2.0 * rows * M * shape.h1(), f2 = 2.0 * rows * shape.hidden * M;
  const double gemm_rank = (f1 + f2) / (f1 / g1 + f2 / g2);
  const double peak_rank = measure_fma_peak_gflops(threads);

  // Totals over ranks: GFLOP/s, peaks and tokens/s add up.
  double local[4] = {flops / step_s / 1e9, peak_rank, double(T) / step_s, gemm_rank};
  double total[4];
  SY_MPI_CHECK(MPI_Allreduce(local, total, 4, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
  const double expert_gflops = total[0], fma_peak = total[1], tokens_per_s = total[2], gemm_gflops = total[3];
  const double routing_share = median(outside_s) / step_s;
  const double a2a_share = median(a2a_s) / step_s;
  if (rt.rank != 0) return 0;

  JsonLine line;
  line.add("bench", "moe-layer").add("ranks", rt.world_size).add("threads", threads).add("tokens", T);
  line.add("model_dim", M).add("hidden", int64_t(mc.hidden_size)).add("experts", mc.num_experts);
  line.add("top_k", mc.top_k).add("router", to_string(mc.router)).add("activation", to_string(mc.activation));
  line.add("capacity_factor", mc.capacity_factor);
  line.add("fwd_ms", 1e3 * median(fwd)).add("bwd_ms", 1e3 * median(bwd)).add("step_ms", 1e3 * step_s);
  line.add("tokens_per_s", tokens_per_s).add("expert_gflops", expert_gflops).add("gemm_gflops", gemm_gflops);
  line.add("fma_peak_gflops", fma_peak).add("ratio_to_peak", expert_gflops / fma_peak);
  line.add("ratio_to_gemm", expert_gflops / gemm_gflops);
  line.add("routing_share", routing_share).add("expert_share", median(expert_s) / step_s).add("a2a_share", a2a_share);
  line.add("gather_share", median(gather_s) / step_s);
  line.add("ep", pc.ep).add("dp", pc.dp).add("expert_degree", layer.expert_degree());
  line.add("dropped_fraction", st.dropped_fraction()).add("experts_per_token", st.experts_per_token);
  line.add("expert_load_max_over_mean", st.load_max_over_mean());
  line.add("pipeline_degree", d).add("a2a_algo", to_string(pc.a2a_algo));
  line.add("parallel_mode", mc.parallel_mode >= 0 ? std::to_string(mc.parallel_mode) : std::string("auto"));
  line.add("emulate_link", pc.emulate_link.enabled() ? std::to_string(pc.emulate_link.gbit_per_s) + " Gbit/s, " +
                                                            std::to_string(pc.emulate_link.latency_us) + " us"
                                                      : std::string("off"));
  line.add("overlap_efficiency", overlap);
  if (d > 1) line.add("d1_step_ms", 1e3 * d1_step).add("speedup_vs_d1", d1_step / step_s);
  if (json) {
    std::cout << line.str() << "\n";
  } else {
    std::printf("moe-layer: %d rank(s) x %d thread(s), %lld tokens/rank, M=%lld H=%d E=%d k=%d router=%s\n",
                rt.world_size, threads, static_cast<long long>(T), static_cast<long long>(M), mc.hidden_size,
                mc.num_experts, mc.top_k, to_string(mc.router));
    std::printf("  fwd %.1f ms   bwd %.1f ms   step %.1f ms   %.0f tokens/s\n", 1e3 * median(fwd),
                1e3 * median(bwd), 1e3 * step_s, tokens_per_s);
    std::printf("  expert GEMMs %.1f GFLOP/s over the step = %.1f%% of the FMA peak (%.1f); plain GEMM %.1f\n",
                expert_gflops, 100 * expert_gflops / fma_peak, fma_peak, gemm_gflops);
    std::printf("  outside the expert FFNs (router, dispatch, combine): %.1f%% of the step; dropped %.1f%%\n",
                100 * routing_share, 100 * st.dropped_fraction());
    std::printf("  all-to-all (ep=%d, exchange degree %d): %.1f%% of the step; expert weights' gather and\n"
                "  gradient reduce-scatter: %.1f%%\n",
                pc.ep, layer.expert_degree(), 100 * a2a_share, 100 * median(gather_s) / step_s);
    if (d > 1)
      std::printf("  pipeline d=%d: step %.1f ms against %.1f ms at d=1 (%.2fx); overlap efficiency %.2f\n", d,
                  1e3 * step_s, 1e3 * d1_step, d1_step / step_s, overlap);
  }
  return 0;
}

}  // namespace sy::bench
