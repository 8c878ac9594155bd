// `switchyard bench alltoall`: every all-to-all algorithm (parallel/alltoall.hpp)
// against MPI_Alltoall at the same size, measured in the same run.
//
// Each rank sends bytes_per_rank in all, bytes_per_rank / ranks to every rank
// (itself included), as fp32. Per size: bench.warmup untimed rounds, then
// `reps` rounds; a round runs every algorithm once, each after a barrier, in
// an order shuffled per round, so drift in the machine and the state the
// previous exchange leaves in the caches touch them alike. An exchange's time is
// the slowest rank's; ms is the median over the rounds, gbps =
// bytes_per_rank / time, ratio_to_mpi = MPI_Alltoall's time / this time (> 1:
// faster than MPI_Alltoall).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "core/mpi_check.hpp"
#include "core/runtime.hpp"
#include "parallel/alltoall.hpp"
#include "parallel/mpi/mpi_communicator.hpp"

namespace sy::bench {

namespace {

// "65536", "64K", "64KiB", "16M", "1G" -> bytes.
int64_t parse_bytes(const std::string& flag, const std::string& text) {
  size_t used = 0;
  int64_t v = -1;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = used > 0 ? text.substr(used) : std::string();
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  if (!unit.empty() && unit.back() == 'i') unit.pop_back();
  int shift = 0;
  if (unit == "K" || unit == "k") {
    shift = 10;
  } else if (unit == "M") {
    shift = 20;
  } else if (unit == "G") {
    shift = 30;
  } else if (!unit.empty()) {
    used = 0;
  }
  if (used == 0 || v <= 0 || v > (int64_t(1) << (40 - shift)))
    throw ConfigError(flag + ": '" + text + "' is not a positive size in bytes (examples: 65536, 64K, 16M)");
  return v << shift;
}

std::string human_bytes(int64_t b) {
  char s[32];
  if (b >= (int64_t(1) << 20) && b % (int64_t(1) << 20) == 0) {
    std::snprintf(s, sizeof s, "%lld MiB", static_cast<long long>(b >> 20));
  } else if (b >= 1024 && b % 1024 == 0) {
    std::snprintf(s, sizeof s, "%lld KiB", static_cast<long long>(b >> 10));
  } else {
    std::snprintf(s, sizeof s, "%lld B", static_cast<long long>(b));
  }
  return s;
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace

int alltoall_main(const std::vector<std::string>& args) {
  std::string path;
  bool json = false;
  int64_t min_bytes = 0, max_bytes = int64_t(64) << 20;  // min_bytes 0: 64K, or max_bytes when smaller
  int reps = 0;  // 0: by size
  std::string only = "linear,linear_paired,2dh,flowsplit";
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
      if (i + 1 >= args.size()) throw ConfigError("command line: " + flag + " needs a value");
      return args[++i];
    };
    auto is = [&](const std::string& flag) { return a == flag || a.rfind(flag + "=", 0) == 0; };
    if (a == "--help" || a == "-h") {
      std::cout
          << "usage: switchyard bench alltoall [--config FILE] [--json] [--min-bytes N] [--max-bytes N] [--reps N]\n"
             "                                 [--algos LIST] [--section.key=value ...]\n\n"
             "Times each all-to-all algorithm against MPI_Alltoall at the same size, in the same run:\n"
             "  mpi_alltoall   MPI_Alltoall (the baseline)\n"
             "  linear         MPI_Ialltoallv through parallel/alltoall (what parallel.a2a_algo = linear runs)\n"
             "  linear_paired  paired isend/irecv\n"
             "  2dh            hierarchical, parallel.ranks_per_node ranks per node\n"
             "  flowsplit      leaves of parallel.ranks_per_leaf ranks, parallel.spine_paths paths\n"
             "--algos picks among them (comma-separated; default all; mpi_alltoall always runs).\n"
             "Sizes: bytes sent per rank in all (bytes_per_rank / ranks to each rank), powers of 4 from\n"
             "--min-bytes (default 64K) to --max-bytes (default 64M); each rank holds about 5x the size.\n"
             "Per size bench.warmup untimed rounds, then --reps rounds (default: 30 at <= 8 MiB, fewer above,\n"
             "at least 5) of every algorithm, in a shuffled order; time = the slowest rank's, ms = the median over rounds.\n"
             "With parallel.ranks_per_node = 0 on a single machine, the bench emulates 2 nodes of ranks / 2\n"
             "(with one node 2dh and flowsplit would reduce to one exchange); ranks_per_leaf 0 = ranks_per_node.\n"
             "Fields: bench algo ranks bytes_per_rank ms gbps (bytes_per_rank / time) ratio_to_mpi\n"
             "(MPI_Alltoall's time / this time), ranks_per_node ranks_per_leaf spine_paths reps.\n";
      return 0;
    }
    if (a == "--json") {
      json = true;
    } else if (is("--config")) {
      path = value("--config");
    } else if (is("--min-bytes")) {
      min_bytes = parse_bytes("--min-bytes", value("--min-bytes"));
    } else if (is("--max-bytes")) {
      max_bytes = parse_bytes("--max-bytes", value("--max-bytes"));
    } else if (is("--algos")) {
      only = value("--algos");
    } else if (is("--reps")) {
      const std::string v = value("--reps");
      try {
        size_t used = 0;
        reps = std::stoi(v, &used);
        if (used != v.size() || reps < 1) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        throw ConfigError("--reps: '" + v + "' is not a positive integer");
      }
    } else {
      overrides.push_back(a);
    }
  }
  if (min_bytes == 0) min_bytes = std::min(int64_t(64) << 10, max_bytes);
  SY_CHECK_AS(ConfigError, min_bytes <= max_bytes,
              "--min-bytes " << min_bytes << " is larger than --max-bytes " << max_bytes);
  const Config config = load_config(path, overrides);
  const ParallelConfig& pc = config.parallel;
  SY_CHECK_AS(ConfigError, !pc.emulate_link.enabled(),
              "bench alltoall times the transport itself; parallel.emulate_link applies to bench moe-layer");
  const RuntimeInfo& rt = runtime();
  const int W = rt.world_size;

  MPI_Comm dup = MPI_COMM_NULL;
  SY_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  par::MpiCommunicator world(dup, true, "world", pc.timeout_s);

  // The topology: nodes and leaves are blocks of consecutive ranks.
  par::AllToAllTopology topo;
  if (pc.ranks_per_node > 0) {
    topo.ranks_per_node = pc.ranks_per_node;
  } else {
    MPI_Comm shared = MPI_COMM_NULL;
    SY_MPI_CHECK(MPI_Comm_split_type(dup, MPI_COMM_TYPE_SHARED, rt.rank, MPI_INFO_NULL, &shared));
    int local = 1;
    MPI_Comm_size(shared, &local);
    MPI_Comm_free(&shared);
    topo.ranks_per_node = (local == W && W % 2 == 0) ? W / 2 : local;  // one machine: emulate 2 nodes
  }
  topo.ranks_per_leaf = pc.ranks_per_leaf > 0 ? pc.ranks_per_leaf : topo.ranks_per_node;
  topo.spine_paths = pc.spine_paths;

  struct Algo {
    std::string name;
    std::unique_ptr<par::AllToAll> a2a;  // null: MPI_Alltoall
  };
  std::vector<Algo> algos;
  algos.push_back({"mpi_alltoall", nullptr});  // the baseline, always first
  std::stringstream list(only);
  std::string item;
  while (std::getline(list, item, ',')) {
    par::AllToAllTopology t = topo;
    AllToAllAlgo algo = AllToAllAlgo::Linear;
    if (item == "linear_paired") {
      t.linear_paired = true;
    } else if (item == "2dh") {
      algo = AllToAllAlgo::TwoDH;
    } else if (item == "flowsplit") {
      algo = AllToAllAlgo::FlowSplit;
    } else if (item != "linear") {
      throw ConfigError("--algos: '" + item + "' is not one of linear, linear_paired, 2dh, flowsplit");
    }
    algos.push_back({item, par::make_alltoall(algo, world, t)});
  }
  const int A = static_cast<int>(algos.size());
  auto index_of = [&](const char* name) {
    for (int a = 0; a < A; ++a)
      if (algos[a].name == name) return a;
    return -1;
  };
  const int i_linear = index_of("linear"), i_flowsplit = index_of("flowsplit");

  std::vector<int64_t> sizes;
  for (int64_t s = min_bytes; s <= max_bytes; s *= 4) sizes.push_back(s);

  if (!json && rt.rank == 0) {
    std::printf("alltoall: %d rank(s); 2dh: %d rank(s) per node; flowsplit: %d rank(s) per leaf, %d spine paths\n",
                W, topo.ranks_per_node, topo.ranks_per_leaf, topo.spine_paths);
    std::printf("%-12s %-14s %10s %9s %13s\n", "bytes/rank", "algo", "ms", "GB/s", "ratio_to_mpi");
  }
  double worst_linear = 1e300, worst_flowsplit = 0;  // over sizes >= 1 MiB
  std::vector<float> send, recv;
  std::vector<int64_t> counts(W), displs(W);
  for (const int64_t requested : sizes) {
    const int64_t per_peer = std::max<int64_t>(1, requested / (int64_t(W) * int64_t(sizeof(float))));
    const int64_t bytes = per_peer * W * int64_t(sizeof(float));  // what each rank really sends
    send.assign(per_peer * W, 1.0f);
    recv.assign(per_peer * W, 0.0f);
    for (int p = 0; p < W; ++p) {
      counts[p] = per_peer;
      displs[p] = p * per_peer;
    }
    auto once = [&](int a) {
      SY_MPI_CHECK(MPI_Barrier(dup));
      const auto t0 = std::chrono::steady_clock::now();
      if (algos[a].a2a) {
        algos[a].a2a->run(send.data(), counts.data(), displs.data(), recv.data(), counts.data(), displs.data(),
                          par::ElemType::F32);
      } else {
        SY_MPI_CHECK(MPI_Alltoall(send.data(), static_cast<int>(per_peer), MPI_FLOAT, recv.data(),
                                  static_cast<int>(per_peer), MPI_FLOAT, dup));
      }
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    const int rounds = reps > 0 ? reps : static_cast<int>(std::clamp<int64_t>((int64_t(256) << 20) / bytes, 5, 30));
    for (int w = 0; w < std::max(1, config.bench.warmup); ++w)
      for (int a = 0; a < A; ++a) once(a);
    std::vector<double> local(size_t(rounds) * A), slowest(local.size());
    // Each round in its own order, the same on every rank (a fixed seed): a
    // predecessor's staging copies leave the caches cold for the next
    // exchange, and the medians should not depend on who runs after whom.
    std::vector<int> order(A);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937 shuffle_rng(static_cast<uint32_t>(requested));
    for (int r = 0; r < rounds; ++r) {
      std::shuffle(order.begin(), order.end(), shuffle_rng);
      for (const int a : order) local[size_t(r) * A + a] = once(a);
    }
    SY_MPI_CHECK(MPI_Allreduce(local.data(), slowest.data(), static_cast<int>(local.size()), MPI_DOUBLE, MPI_MAX,
                               dup));
    std::vector<double> t(A);
    for (int a = 0; a < A; ++a) {
      std::vector<double> series(rounds);
      for (int r = 0; r < rounds; ++r) series[r] = slowest[size_t(r) * A + a];
      t[a] = median(series);
    }
    if (bytes >= (int64_t(1) << 20) && i_linear > 0) {
      worst_linear = std::min(worst_linear, t[0] / t[i_linear]);
      if (i_flowsplit > 0) worst_flowsplit = std::max(worst_flowsplit, t[i_flowsplit] / t[i_linear]);
    }
    if (rt.rank != 0) continue;
    for (int a = 0; a < A; ++a) {
      const double gbps = double(bytes) / t[a] / 1e9, ratio = t[0] / t[a];
      if (json) {
        JsonLine line;
        line.add("bench", "alltoall").add("algo", algos[a].name).add("ranks", W).add("bytes_per_rank", bytes);
        line.add("ms", 1e3 * t[a]).add("gbps", gbps).add("ratio_to_mpi", ratio);
        line.add("ranks_per_node", topo.ranks_per_node).add("ranks_per_leaf", topo.ranks_per_leaf);
        line.add("spine_paths", topo.spine_paths).add("reps", rounds);
        std::cout << line.str() << "\n" << std::flush;
      } else {
        std::printf("%-12s %-14s %10.3f %9.2f %13.3f\n", human_bytes(bytes).c_str(), algos[a].name.c_str(),
                    1e3 * t[a], gbps, ratio);
        std::fflush(stdout);
      }
    }
  }
  if (!json && rt.rank == 0 && worst_linear < 1e300) {
    std::printf("at >= 1 MiB per rank: linear >= %.3fx MPI_Alltoall", worst_linear);
    if (worst_flowsplit > 0) std::printf("; flowsplit time <= %.3fx linear", worst_flowsplit);
    std::printf("\n");
  }
  return 0;
}

}  // namespace sy::bench
