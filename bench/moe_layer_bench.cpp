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
#include <functional>
#include <iostream>
#include <memory>
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
#include "parallel/tuner.hpp"
#ifdef SWITCHYARD_HAVE_CUDA
#include "bench/cuda/cuda_bench.hpp"
#endif

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
  bool json = false, sweep = false, cuda = false;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << "usage: switchyard bench moe-layer [--config FILE] [--json] [--sweep] [--device=cpu|cuda]\n"
                   "                                  [--section.key=value ...]\n\n"
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
                   "--moe.parallel_mode=r picks DESIGN.md's mode r instead.\n\n"
                   "Fixed or tuned: with moe.pipeline_degree = d > 1 the same layer also runs d = 1 in this run\n"
                   "(d1_step_ms, speedup_vs_d1, overlap_efficiency = (t_comm + t_compute - t_total) /\n"
                   "min(t_comm, t_compute)). When moe.parallel_mode (with parallel.ep = 1), moe.pipeline_degree or\n"
                   "parallel.a2a_algo is auto, the run-time tuner first decides (tuning_steps; its log line on\n"
                   "stderr; parallel.tuning_file loads and saves its table), then the tuned plan is timed against\n"
                   "d = 1 linear at the same r. --sweep then also times every plan the tuner could have picked\n"
                   "(one line each with --json, bench = \"moe-layer-sweep\") and reports the pick against the best:\n"
                   "pick_over_sweep_best = the pick's sweep time / the fastest sweep time.\n\n"
                   "--device=cuda: the GPU layer (topk or switch router, balance micro or none, no z-loss), storage\n"
                   "train.dtype (fp32 | bf16), timed with CUDA events; under mpirun expert parallel over the ranks,\n"
                   "one GPU each, NCCL, pipelined over moe.pipeline_degree chunks (auto = 1); adds\n"
                   "expert_tflops, measured_peak_tflops (this GPU's 8192^3 GEMM in the same dtype, measured in the\n"
                   "run), ratio_to_peak, gemm_tflops (a GEMM at the expert shape) and ratio_to_gemm.\n";
      return 0;
    }
    if (a == "--json") {
      json = true;
    } else if (a == "--device=cuda" || a == "--device=cpu") {
      cuda = a == "--device=cuda";
    } else if (a == "--sweep") {
      sweep = true;
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
  if (cuda) {
#ifdef SWITCHYARD_HAVE_CUDA
    return cuda_moe_layer_bench(config, json);
#else
    throw DeviceError("bench moe-layer --device=cuda: this switchyard was built without CUDA");
#endif
  }
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

  // One timed series of the layer as it is set: medians over bench.steps after bench.warmup.
  struct Series {
    std::vector<double> fwd, bwd, step, expert_s, outside_s, a2a_s, gather_s, stage_s;
  };
  double flops = 0;
  auto one_step = [&](double& f, double& b) {
    layer.zero_grads();
    layer.times().clear();
    layer.set_timing(true);
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = std::chrono::steady_clock::now();
    layer.forward(x.data(), ids.data(), T, out.data());
    f = seconds_since(t0);
    const auto t1 = std::chrono::steady_clock::now();
    layer.backward(dout.data(), dx.data());
    b = seconds_since(t1);
    layer.on_optimizer_step();
  };
  // Timed series of several ways to run the layer, interleaved step by step
  // (a plan's steps see the same machine as the others'): setups[i]() sets
  // way i up before each of its steps; medians over bench.steps after
  // bench.warmup rounds.
  auto measure_all = [&](const std::vector<std::function<void()>>& setups) {
    std::vector<Series> out(setups.size());
    for (int it = 0; it < config.bench.warmup + config.bench.steps; ++it)
      for (size_t i = 0; i < setups.size(); ++i) {
        setups[i]();
        double f = 0, b = 0;
        one_step(f, b);
        if (it < config.bench.warmup) continue;
        Series& r = out[i];
        r.fwd.push_back(f);
        r.bwd.push_back(b);
        r.step.push_back(f + b);
        const auto& tm = layer.times();
        r.expert_s.push_back(tm.experts_s - tm.a2a_s - tm.gather_s);  // the expert stage without communication
        r.stage_s.push_back(tm.experts_s - tm.gather_s);             // the expert stage with its token exchange
        r.outside_s.push_back(tm.router_s + tm.dispatch_s + tm.combine_s);
        r.a2a_s.push_back(tm.a2a_s);
        r.gather_s.push_back(tm.gather_s);
        const double shared =
            mc.num_shared_experts > 0
                ? moe::experts_forward_flops({1, M, mc.num_shared_experts * int64_t(mc.hidden_size), mc.activation},
                                             T)
                : 0.0;
        flops = 3.0 * (layer.stats().expert_flops_forward + shared);  // backward = 2x forward
      }
    return out;
  };
  auto measure = [&]() { return measure_all({[] {}})[0]; };
  // A fixed plan, the tuner detached.
  auto apply = [&](const par::ExpertPlan& p) {
    layer.set_tuner(nullptr, 0, {});
    layer.set_expert_degree(p.degree);
    layer.set_pipeline_degree(p.pipeline);
    layer.set_alltoall(p.algo);
  };
  // DESIGN.md's r of exchange degree P (models/expert_layout.hpp), or "P=N"
  // for a degree between two r.
  auto mode_of = [&](int degree) {
    const int EW = static_cast<int>(std::min<int64_t>(mc.num_experts, layer.layout().world()));
    if (degree == 1) return std::string("0");
    return degree % EW == 0 ? std::to_string(degree / EW) : "P=" + std::to_string(degree);
  };
  // Overlap efficiency = (t_comm + t_compute - t_total) / min(t_comm, t_compute),
  // with t_comm the token exchange and t_compute the experts of d = 1, and
  // t_total the expert stage (exchange included) of the plan.
  auto overlap_of = [&](const Series& one, const Series& piped) {
    const double t_comm = median(one.a2a_s), t_compute = median(one.expert_s), t_total = median(piped.stage_s);
    return std::min(t_comm, t_compute) > 0 ? (t_comm + t_compute - t_total) / std::min(t_comm, t_compute) : 0.0;
  };

  const par::TuneDims dims = par::tune_dims(mc, pc);
  std::unique_ptr<par::Tuner> tuner;
  if (rt.world_size > 1 && dims.any()) {
    par::TunerOptions options;
    options.samples = pc.tuning_samples;
    options.file = pc.tuning_file;
    options.writer = rt.rank == 0;
    options.fingerprint = par::run_fingerprint(mc, M, T, pc);
    tuner = std::make_unique<par::Tuner>(grid.world(), rt.world_size, options);
    layer.set_tuner(tuner.get(), 0, dims);
  }
  const bool tuned = layer.tuned();  // something to choose
  int d = mc.pipeline_degree > 0 ? mc.pipeline_degree : 1;
  double overlap = 0, d1_step = 0;
  int tuning_steps = 0;
  double tuning_s = 0;
  par::ExpertPlan chosen{layer.expert_degree(), d, layer.alltoall()};
  Series s_run;
  std::vector<std::pair<par::ExpertPlan, double>> swept;
  if (tuned) {
    const auto t0 = std::chrono::steady_clock::now();
    // Steps until the key is decided (none when a loaded table holds it).
    while (tuning_steps < 1000) {
      layer.forward(x.data(), ids.data(), T, out.data());  // a trial while the key is tuned
      const bool trial = tuner->trial_open(0);
      layer.backward(dout.data(), dx.data());
      layer.on_optimizer_step();
      if (!trial) break;
      ++tuning_steps;
    }
    tuning_s = seconds_since(t0);
    SY_CHECK_AS(Error, !tuner->tuning(), "bench moe-layer: the tuner did not decide in 1000 steps");
    const auto decided = tuner->decided(0, layer.stats().capacity);
    SY_CHECK_AS(Error, decided.has_value(), "bench moe-layer: no decision for capacity " << layer.stats().capacity);
    chosen = *decided;
    if (chosen.degree == 1) chosen.pipeline = 1, chosen.algo = AllToAllAlgo::Linear;  // no exchange
    d = chosen.pipeline;
    const par::TuningSpace space = layer.tuning_space();
    // The tuned layer (tuner attached, decided: no trials) against d = 1
    // linear at the same r, interleaved.
    const par::ExpertPlan plain{chosen.degree, 1, AllToAllAlgo::Linear};
    const std::vector<Series> pair =
        measure_all({[&] { apply(chosen), layer.set_tuner(tuner.get(), 0, dims); }, [&] { apply(plain); }});
    s_run = pair[0];
    d1_step = median(pair[1].step);
    overlap = overlap_of(pair[1], s_run);
    if (sweep) {
      // Every plan the tuner could pick, interleaved round by round.
      std::vector<par::ExpertPlan> plans;
      for (size_t i = 0; i < space.degrees.size(); ++i) {
        const int P = space.degrees[i];
        for (const int pd : P == 1 ? std::vector<int>{1} : space.pipelines)
          for (const AllToAllAlgo a : P == 1 ? std::vector<AllToAllAlgo>{AllToAllAlgo::Linear} : space.algos[i])
            plans.push_back({P, pd, a});
      }
      std::vector<std::function<void()>> setups;
      for (const auto& p : plans) setups.push_back([&, p] { apply(p); });
      const std::vector<Series> all = measure_all(setups);
      for (size_t i = 0; i < plans.size(); ++i) {
        const par::ExpertPlan& p = plans[i];
        swept.push_back({p, median(all[i].step)});
        if (rt.rank == 0 && json) {
          JsonLine l;
          l.add("bench", "moe-layer-sweep").add("ranks", rt.world_size).add("parallel_mode", mode_of(p.degree));
          l.add("expert_degree", p.degree).add("pipeline_degree", p.pipeline).add("a2a_algo", to_string(p.algo));
          l.add("step_ms", 1e3 * median(all[i].step));
          std::cout << l.str() << "\n" << std::flush;
        }
      }
    }
    apply(chosen);  // the figures below describe the pick
    double f = 0, b = 0;
    one_step(f, b);
  } else {
    // With a fixed d > 1 the same layer also runs d = 1 first, in this run.
    if (d > 1) {
      const std::vector<Series> pair =
          measure_all({[&] { layer.set_pipeline_degree(d); }, [&] { layer.set_pipeline_degree(1); }});
      s_run = pair[0];
      d1_step = median(pair[1].step);
      overlap = overlap_of(pair[1], s_run);
      layer.set_pipeline_degree(d);
    } else {
      s_run = measure();
    }
  }
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
  line.add("pipeline_degree", d).add("a2a_algo", to_string(tuned ? chosen.algo : pc.a2a_algo));
  line.add("parallel_mode", tuned || mc.parallel_mode >= 0 ? mode_of(layer.expert_degree()) : std::string("auto"));
  line.add("tuned", tuned);
  if (tuned) line.add("tuning_steps", tuning_steps).add("tuning_s", tuning_s);
  line.add("emulate_link", pc.emulate_link.enabled() ? std::to_string(pc.emulate_link.gbit_per_s) + " Gbit/s, " +
                                                            std::to_string(pc.emulate_link.latency_us) + " us"
                                                      : std::string("off"));
  line.add("overlap_efficiency", overlap);
  if (d > 1 || tuned) line.add("d1_step_ms", 1e3 * d1_step).add("speedup_vs_d1", d1_step / step_s);
  // The pick against the exhaustive sweep, both timed the same way.
  double best_ms = 0, pick_ms = 0;
  par::ExpertPlan best_plan;
  for (const auto& [p, sec] : swept) {
    if (best_ms == 0 || 1e3 * sec < best_ms) best_ms = 1e3 * sec, best_plan = p;
    if (p == chosen) pick_ms = 1e3 * sec;
  }
  if (!swept.empty()) {
    line.add("sweep_plans", int64_t(swept.size())).add("sweep_best_ms", best_ms);
    line.add("sweep_best_plan", "r=" + mode_of(best_plan.degree) + " d=" + std::to_string(best_plan.pipeline) + " " +
                                    to_string(best_plan.algo));
    line.add("pick_sweep_ms", pick_ms).add("pick_over_sweep_best", pick_ms / best_ms);
  }
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
    if (tuned)
      std::printf("  tuned in %d steps (%.1f s): r=%s d=%d %s\n", tuning_steps, tuning_s,
                  mode_of(layer.expert_degree()).c_str(), d, to_string(chosen.algo));
    if (d > 1 || tuned)
      std::printf("  pipeline d=%d: step %.1f ms against %.1f ms at d=1 linear (%.2fx); overlap efficiency %.2f\n",
                  d, 1e3 * step_s, 1e3 * d1_step, d1_step / step_s, overlap);
    if (!swept.empty())
      std::printf("  sweep of %zu plans: best %.1f ms (r=%s d=%d %s); the pick %.1f ms there (%.3fx the best)\n",
                  swept.size(), best_ms, mode_of(best_plan.degree).c_str(), best_plan.pipeline,
                  to_string(best_plan.algo), pick_ms, pick_ms / best_ms);
  }
  return 0;
}

}  // namespace sy::bench
