// The run-time tuner (parallel/tuner.hpp): the search on synthetic costs, the
// agreement across ranks, the saved table, and an MoE layer driven by it.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/moe_layer.hpp"
#include "parallel/moe_hooks.hpp"
#include "parallel/process_grid.hpp"
#include "parallel/tuner.hpp"
#include "tests/support/mpi_support.hpp"
#include "tests/support/test_support.hpp"

namespace fs = std::filesystem;

namespace sy::par {
namespace {

using Cost = std::function<double(const ExpertPlan&)>;

const std::vector<AllToAllAlgo> kAlgos = {AllToAllAlgo::Linear, AllToAllAlgo::TwoDH, AllToAllAlgo::FlowSplit};

TuningSpace space_of(const std::vector<int>& degrees, const std::vector<int>& pipelines = {1, 2, 4, 8}) {
  TuningSpace s;
  s.degrees = degrees;
  for (size_t i = 0; i < degrees.size(); ++i) {
    s.modes.push_back(int(i));
    s.algos.push_back(kAlgos);
  }
  s.pipelines = pipelines;
  return s;
}

// Runs the search to its decision; returns the plans asked for, in order.
std::vector<ExpertPlan> drive(PlanSearch& search, const Cost& cost) {
  std::vector<ExpertPlan> asked;
  while (const auto p = search.next()) {
    asked.push_back(*p);
    search.record(*p, cost(*p));
    EXPECT_LT(asked.size(), 1000u) << "the search does not end";
    if (asked.size() >= 1000) break;
  }
  return asked;
}

double algo_cost(AllToAllAlgo a) { return a == AllToAllAlgo::FlowSplit ? 0.0 : a == AllToAllAlgo::TwoDH ? 0.3 : 0.2; }

// Unimodal in the degree (best at 16), then a (d, algorithm) landscape with
// its best at d = 4 flowsplit.
double landscape(const ExpertPlan& p) {
  const double r = std::abs(std::log2(double(p.degree)) - 4.0);
  const double d = std::abs(std::log2(double(p.pipeline)) - 2.0) * 0.25;
  return 10.0 + r + d + algo_cost(p.algo);
}

TEST(TunerSearch, TernarySearchOverDegreesThenEveryPipelineAndAlgorithm) {
  PlanSearch search(space_of({1, 2, 4, 8, 16, 32, 64}), 1);
  const std::vector<ExpertPlan> asked = drive(search, landscape);
  const ExpertPlan want{16, 4, AllToAllAlgo::FlowSplit};
  EXPECT_EQ(search.best(), want);
  // The exhaustive argmin over the whole space is the same plan.
  double best = std::numeric_limits<double>::infinity();
  ExpertPlan arg;
  for (int P : {1, 2, 4, 8, 16, 32, 64})
    for (int d : {1, 2, 4, 8})
      for (AllToAllAlgo a : kAlgos)
        if (landscape({P, d, a}) < best) best = landscape({P, d, a}), arg = {P, d, a};
  EXPECT_EQ(arg, want);
  // Fewer degree trials than degrees (ternary), then the 12 (d, algorithm)
  // pairs at the best degree, one of which the first stage timed.
  int stage1 = 0;
  for (const ExpertPlan& p : asked) stage1 += p.pipeline == 1 && p.algo == AllToAllAlgo::Linear;
  EXPECT_LT(stage1 - 1, 7);
  EXPECT_EQ(int(asked.size()), (stage1 - 1) + 12) << "each plan timed once with samples = 1";
  EXPECT_EQ(search.plans_timed(), int(asked.size()));
}

TEST(TunerSearch, EachPlanIsTimedSamplesTimesAndTheFastestSampleCounts) {
  PlanSearch search(space_of({2}, {1, 2}), 3);
  // The first sample of each plan pays a one-off cost; d = 2 flowsplit is
  // best only by its fastest sample.
  std::map<std::pair<int, int>, int> seen;
  const std::vector<ExpertPlan> asked = drive(search, [&](const ExpertPlan& p) {
    const int n = seen[{p.pipeline, int(p.algo)}]++;
    const double base = p.pipeline == 2 && p.algo == AllToAllAlgo::FlowSplit ? 1.0 : 1.5;
    return n == 0 ? base + 5.0 : base + 0.1 * n;
  });
  EXPECT_EQ(asked.size(), 3u + 6u * 3u);
  // The degree's plain plan first (stage 1: only one degree), then the 6
  // plans of stage 2, the plain one again among them, in turn: once each,
  // then again, then a third time.
  const ExpertPlan plain{2, 1, AllToAllAlgo::Linear};
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(asked[i], plain);
  for (size_t i = 3; i < 9; ++i) {
    EXPECT_EQ(asked[i], asked[i + 6]);
    EXPECT_EQ(asked[i], asked[i + 12]);
    for (size_t j = 3; j < i; ++j) EXPECT_FALSE(asked[i] == asked[j]) << "plan " << i << " twice in a round";
  }
  EXPECT_EQ(search.best(), (ExpertPlan{2, 2, AllToAllAlgo::FlowSplit}));
  EXPECT_DOUBLE_EQ(search.seconds(search.best()), 1.1);
  EXPECT_EQ(search.trials(), 21);
}

// Noise-sized wins do not count: a plan 3% faster than d = 1 linear at the
// same degree loses to it; 10% faster wins.
TEST(TunerSearch, PlainPlanWinsNearTies) {
  for (const double gain : {0.03, 0.10}) {
    PlanSearch search(space_of({4}, {1, 2}), 1);
    drive(search, [&](const ExpertPlan& p) {
      return p.pipeline == 2 && p.algo == AllToAllAlgo::TwoDH ? 1.0 - gain : 1.0 + 0.01 * int(p.algo);
    });
    const ExpertPlan want = gain < PlanSearch::kPlainMargin ? ExpertPlan{4, 1, AllToAllAlgo::Linear}
                                                            : ExpertPlan{4, 2, AllToAllAlgo::TwoDH};
    EXPECT_EQ(search.best(), want) << "gain " << gain;
  }
}

// Warm-up trials run the first plan and are not recorded: a first step 10x
// slower than the rest does not make its plan look slow.
TEST(TunerSearch, WarmUpTrialsAreNotCounted) {
  PlanSearch search(space_of({2}, {1, 2}), 1, 2);
  int calls = 0;
  const auto asked = drive(search, [&](const ExpertPlan& p) {
    const double cold = calls++ < 2 ? 10.0 : 1.0;
    return cold * (p.pipeline == 1 && p.algo == AllToAllAlgo::Linear ? 1.0 : 1.2);
  });
  ASSERT_EQ(asked.size(), 2u + 1u + 6u) << "warm-up, the degree, then every (d, algorithm)";
  EXPECT_EQ(asked[0], asked[2]) << "the warm-up runs the first plan";
  EXPECT_EQ(search.best(), (ExpertPlan{2, 1, AllToAllAlgo::Linear}));
  EXPECT_DOUBLE_EQ(search.seconds(search.best()), 1.0);
  EXPECT_EQ(search.trials(), 7);
}

TEST(TunerSearch, NoExchangeNeedsNoPipelineOrAlgorithmTrials) {
  PlanSearch search(space_of({1, 2, 4}), 1);
  const auto asked = drive(search, [](const ExpertPlan& p) { return double(p.degree) + 0.01 * p.pipeline; });
  EXPECT_EQ(search.best(), (ExpertPlan{1, 1, AllToAllAlgo::Linear}));
  EXPECT_EQ(asked.size(), 3u) << "three degrees, and nothing more at P = 1";
}

TEST(TunerSearch, FixedDimensionsAreNotSearched) {
  TuningSpace s;
  s.degrees = {4};
  s.modes = {1};
  s.pipelines = {2};
  s.algos = {{AllToAllAlgo::TwoDH}};
  PlanSearch search(s, 2);
  const auto asked = drive(search, [](const ExpertPlan&) { return 1.0; });
  ASSERT_EQ(asked.size(), 4u) << "the one plan in each stage, 2 samples each";
  EXPECT_EQ(asked[0], (ExpertPlan{4, 2, AllToAllAlgo::TwoDH}));
  EXPECT_TRUE(s.contains({4, 2, AllToAllAlgo::TwoDH}));
  EXPECT_FALSE(s.contains({4, 1, AllToAllAlgo::TwoDH}));
  EXPECT_FALSE(s.contains({2, 2, AllToAllAlgo::TwoDH}));
}

// ---- the tuner over ranks ----

// A file path every rank agrees on.
std::string shared_path(const std::string& tag) {
  int pid = int(getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::string path =
      (fs::temp_directory_path() / ("sy-tuner-" + tag + "-" + std::to_string(pid) + ".txt")).string();
  MPI_Barrier(MPI_COMM_WORLD);
  if (test::world_rank() == 0) fs::remove(path);
  MPI_Barrier(MPI_COMM_WORLD);
  return path;
}

// Drives every key of `keys` (layer, capacity) to its decision with `cost`
// as this rank's time; returns the decided plans.
std::vector<ExpertPlan> tune_all(Tuner& tuner, const std::vector<std::pair<int, int64_t>>& keys,
                                 const TuningSpace& space, const Cost& cost) {
  std::vector<ExpertPlan> out;
  for (const auto& [layer, capacity] : keys) {
    for (int guard = 0; guard < 200; ++guard) {
      const ExpertPlan p = tuner.plan(layer, capacity, space, true);
      if (!tuner.trial_open(layer)) break;
      tuner.finish_trial(layer, cost(p));
    }
    EXPECT_FALSE(tuner.trial_open(layer));
    out.push_back(tuner.decided(layer, capacity).value_or(ExpertPlan{-1, -1, AllToAllAlgo::Auto}));
  }
  return out;
}

TEST(TunerMpi, RanksAgreeOnTheLastArrivalsTimes) {
  auto world = test::world_communicator();
  const int W = world->size(), rank = world->rank();
  Tuner tuner(*world, W, TunerOptions{});
  // Rank r reached the layer 10 r before rank 0 and waited that long at its
  // first exchange: its times carry skew from outside the layer. The
  // shortest time over ranks is the one without it (rank 0's, the last to
  // arrive), and it makes d = 4 fastest, while every other rank's own times
  // would pick d = 8.
  const auto cost = [&](const ExpertPlan& p) {
    const double own = rank == 0 ? (p.pipeline == 4 ? 1.0 : 2.0) : (p.pipeline == 8 ? 1.0 : 2.0);
    return 10.0 * rank + own;
  };
  TuningSpace space = space_of({2 * W}, {1, 2, 4, 8});  // P > 1: d matters
  space.algos = {{AllToAllAlgo::Linear}};
  const ExpertPlan got = tune_all(tuner, {{0, 512}}, space, cost)[0];
  // Every rank holds the same plan.
  std::vector<int> all(size_t(2 * W));
  const int mine[2] = {got.degree, got.pipeline};
  MPI_Allgather(mine, 2, MPI_INT, all.data(), 2, MPI_INT, MPI_COMM_WORLD);
  for (int r = 0; r < W; ++r) EXPECT_EQ(all[2 * r + 1], got.pipeline) << "rank " << r;
  EXPECT_EQ(got.pipeline, 4);
  EXPECT_EQ(tuner.decisions().size(), 1u);
  EXPECT_NE(tuner.decisions()[0].find("d=" + std::to_string(got.pipeline)), std::string::npos)
      << tuner.decisions()[0];
}

TEST(TunerMpi, KeysAreLayerAndCapacityBucket) {
  auto world = test::world_communicator();
  const int W = world->size();
  Tuner tuner(*world, W, TunerOptions{1, "", false, ""});
  TuningSpace space = space_of({W}, {1, 2});
  space.algos = {{AllToAllAlgo::Linear}};
  tune_all(tuner, {{3, 130}}, space, [](const ExpertPlan& p) { return double(p.pipeline); });
  EXPECT_TRUE(tuner.decided(3, 128).has_value());
  EXPECT_TRUE(tuner.decided(3, 255).has_value());
  EXPECT_FALSE(tuner.decided(3, 127).has_value()) << "capacity 127 is bucket 0";
  EXPECT_FALSE(tuner.decided(3, 256).has_value()) << "capacity 256 is bucket 2";
  EXPECT_FALSE(tuner.decided(2, 128).has_value()) << "another layer is another key";
  EXPECT_FALSE(tuner.tuning());
}

TEST(TunerMpi, SavedTableReloadsToTheSameChoices) {
  auto world = test::world_communicator();
  const int W = world->size(), rank = world->rank();
  const std::string path = shared_path("reload");
  const std::vector<std::pair<int, int64_t>> keys = {{0, 100}, {0, 300}, {1, 100}, {1, 1000}};
  TuningSpace space = space_of({1, 2 * W, 4 * W});
  // A different best per key, so that a table mixing them up would show.
  const auto cost = [&](int layer, int64_t cap) {
    return [=](const ExpertPlan& p) {
      const int want_d = 1 << ((layer + cap / 128) % 4);
      return double(p.degree == 2 * W ? 0 : 5) + (p.pipeline == want_d ? 0.0 : 1.0) + algo_cost(p.algo) +
             0.001 * rank;
    };
  };
  std::vector<ExpertPlan> first;
  std::string table;
  {
    Tuner tuner(*world, W, TunerOptions{2, path, rank == 0, ""});
    for (const auto& key : keys) first.push_back(tune_all(tuner, {key}, space, cost(key.first, key.second))[0]);
    table = tuner.table();
    EXPECT_EQ(tuner.decisions().size(), keys.size());
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(first[i].degree, 2 * W) << "key " << i;
    EXPECT_EQ(first[i].pipeline, 1 << ((keys[i].first + keys[i].second / 128) % 4)) << "key " << i;
    EXPECT_EQ(first[i].algo, AllToAllAlgo::FlowSplit) << "key " << i;
  }
  ASSERT_TRUE(fs::exists(path));
  MPI_Barrier(MPI_COMM_WORLD);
  // A second run loads the table: every key decided at once, no trial, the same plans.
  Tuner again(*world, W, TunerOptions{2, path, rank == 0, ""});
  for (size_t i = 0; i < keys.size(); ++i) {
    const ExpertPlan p = again.plan(keys[i].first, keys[i].second, space, true);
    EXPECT_FALSE(again.trial_open(keys[i].first)) << "key " << i << " should start tuned";
    EXPECT_EQ(p, first[i]) << "key " << i;
  }
  EXPECT_EQ(again.table(), table);
  EXPECT_TRUE(again.decisions().empty());
  EXPECT_FALSE(again.tuning());
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) fs::remove(path);
}

TEST(TunerMpi, TablesThatDoNotFitAreRetunedOrRefused) {
  auto world = test::world_communicator();
  const int W = world->size(), rank = world->rank();
  const std::string path = shared_path("misfit");
  TuningSpace space = space_of({2 * W}, {1, 2});  // P > 1: d and the algorithm matter
  auto write = [&](const std::string& text) {
    if (rank == 0) std::ofstream(path) << text;
    MPI_Barrier(MPI_COMM_WORLD);
  };
  // Another world size: ignored, tuned afresh.
  write("world " + std::to_string(W + 7) + "\nlayer 0 bucket 0 degree " + std::to_string(2 * W) +
        " d 2 a2a linear ms 1\n");
  {
    Tuner t(*world, W, TunerOptions{1, path, false, ""});
    t.plan(0, 10, space, true);
    EXPECT_TRUE(t.trial_open(0));
  }
  // A saved plan outside this run's space (d = 8 is not a candidate): retuned.
  write("world " + std::to_string(W) + "\nlayer 0 bucket 0 degree " + std::to_string(2 * W) + " d 8 a2a linear ms 1\n");
  {
    Tuner t(*world, W, TunerOptions{1, path, false, ""});
    t.plan(0, 10, space, true);
    EXPECT_TRUE(t.trial_open(0));
  }
  // Malformed: a ConfigError naming the file and line, on every rank.
  write("world " + std::to_string(W) + "\nlayer 0 bucket 0 degree 1 d 3 a2a linear ms 1\n");
  try {
    Tuner t(*world, W, TunerOptions{1, path, false, ""});
    ADD_FAILURE() << "d = 3 should be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(path + " line 2"), std::string::npos) << e.what();
  }
  write("world " + std::to_string(W) + "\nlayer 0 bucket 0 degree 1 d 1 a2a magic ms 1\n");
  EXPECT_THROW(Tuner(*world, W, TunerOptions{1, path, false, ""}), ConfigError);
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) fs::remove(path);
}

// A model runs every layer's forward before the backwards: each layer has its
// own open trial. A forward that no backward follows leaves nothing behind,
// and evaluation (trial = false) neither opens a trial nor makes a key.
TEST(TunerMpi, LayersInterleaveAndEvaluationMakesNoKey) {
  auto world = test::world_communicator();
  const int W = world->size();
  Tuner tuner(*world, W, TunerOptions{1, "", false, ""});
  TuningSpace space = space_of({2 * W}, {1, 2});
  space.algos = {{AllToAllAlgo::Linear, AllToAllAlgo::FlowSplit}};
  const auto cost = [](int layer, const ExpertPlan& p) {
    const bool fast = layer == 0 ? p.pipeline == 2 && p.algo == AllToAllAlgo::FlowSplit : p.pipeline == 1;
    return fast ? 1.0 : 2.0;
  };
  int step = 0;
  do {
    const ExpertPlan p0 = tuner.plan(0, 300, space, true);
    const ExpertPlan p1 = tuner.plan(1, 300, space, true);
    ASSERT_TRUE(tuner.trial_open(0) && tuner.trial_open(1)) << "step " << step;
    tuner.finish_trial(1, cost(1, p1));
    tuner.finish_trial(0, cost(0, p0));
    // An evaluation between steps: the plans so far, no trial, no key for its capacity.
    tuner.plan(0, 5000, space, false);
    EXPECT_FALSE(tuner.trial_open(0));
    EXPECT_FALSE(tuner.decided(0, 5000).has_value());
  } while (tuner.tuning() && ++step < 20);
  EXPECT_FALSE(tuner.tuning()) << "a key only evaluation saw would keep tuning() true";
  EXPECT_EQ(*tuner.decided(0, 300), (ExpertPlan{2 * W, 2, AllToAllAlgo::FlowSplit}));
  EXPECT_EQ(*tuner.decided(1, 300), (ExpertPlan{2 * W, 1, AllToAllAlgo::Linear}));
  // Evaluation while the degree search is still on (several degrees).
  TuningSpace degrees = space_of({W, 2 * W, 4 * W}, {1, 2});
  degrees.algos.assign(3, {AllToAllAlgo::Linear});
  for (int i = 0; i < 2; ++i) {
    const ExpertPlan p = tuner.plan(7, 300, degrees, true);
    tuner.finish_trial(7, double(p.degree));
    const ExpertPlan e = tuner.plan(7, 300, degrees, false);
    EXPECT_TRUE(degrees.contains(e)) << "evaluation gets a plan of the space";
  }
  EXPECT_FALSE(tuner.decided(7, 300).has_value());
  // A forward whose backward never comes: the next plan() drops its trial.
  tuner.plan(2, 300, space, true);
  EXPECT_TRUE(tuner.trial_open(2));
  tuner.plan(2, 300, space, false);
  EXPECT_FALSE(tuner.trial_open(2));
}

TEST(TunerMpi, TableParsingIsStrict) {
  auto world = test::world_communicator();
  const int W = world->size(), rank = world->rank();
  const std::string path = shared_path("parse");
  const std::string w = "world " + std::to_string(W) + "\n";
  const std::string good = "layer 0 bucket 1 degree 2 d 4 a2a flowsplit ms 3.5\n";
  auto load = [&](const std::string& text, const std::string& fingerprint = "") {
    if (rank == 0) std::ofstream(path, std::ios::binary) << text;
    MPI_Barrier(MPI_COMM_WORLD);
    return Tuner(*world, W, TunerOptions{1, path, false, fingerprint});
  };
  // Accepted: CRLF, blank and whitespace-only lines, indented comments.
  {
    Tuner t = load("# table\r\n\r\n   \n  # indented\n" + w + "run \r\n" + good);
    EXPECT_EQ(*t.decided(0, 128), (ExpertPlan{2, 4, AllToAllAlgo::FlowSplit}));
  }
  for (const std::string& bad :
       {w + "layer 0 bucket 1 degree 2 d 4 a2a flowsplit ms 3.5 junk\n", w + "world 4 x\n" + good,
        w + w + good, w + good + good, w + "layer 0 bucket 1 degree 2 d 4 a2a linear ms -1\n",
        w + "layer 0 bucket 1 degree 1 d 8 a2a 2dh ms 1\n", w + "layer 0 bucket 1 degree 2 d 4 a2a linear\n"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(load(bad), ConfigError);
  }
  // Another run's table (fingerprint) is ignored, not an error.
  {
    Tuner t = load(w + "run experts=4 dim=512\n" + good, "experts=8 dim=512");
    EXPECT_FALSE(t.decided(0, 128).has_value());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) fs::remove(path);
}

// ---- an MoE layer driven by the tuner ----

// Every plan the tuner tries computes the same layer: each trial step equals
// the fixed d = 1 linear reference, and the layer ends on the decided plan.
TEST(TunerMpi, TunedLayerComputesTheSameAndEndsOnItsDecision) {
  const int W = test::world_size();
  if (W == 1) GTEST_SKIP() << "one rank has nothing to tune";
  ParallelConfig pc;
  pc.ep = W;
  ProcessGrid grid(pc);
  Communicator& tokens = grid.token_group();
  MoeConfig mc;
  mc.num_experts = 4;
  mc.top_k = 2;
  mc.hidden_size = 8;
  mc.capacity_factor = 1.0;
  mc.balance = BalanceKind::None;
  mc.z_loss_coeff = 0;
  // Ranks of different batch sizes whose own capacities (T / 2) fall in
  // different buckets, 125 and 135: the layer keys every rank on the
  // largest batch's (bucket 1), so they tune one key together.
  const int64_t Tmax = 270, M = 8;
  const int g = tokens.rank();
  const int64_t T = g % 2 == 0 ? 250 : Tmax;
  const auto x = test::random_vector<double>(Tmax * W * M, 5, -2, 2);
  const auto dout = test::random_vector<double>(Tmax * W * M, 6);
  ExchangePlacement placement;
  placement.node = grid.world_rank() / std::min(W, 2);
  placement.leaf = grid.world_rank();
  CommExpertComm<double> comm(grid.expert_group(), placement);

  // The reference: d = 1, linear, exchange over all ranks.
  moe::MoeLayer<double> fixed(mc, M, Tmax, Tmax, 3, &comm);
  connect_moe_layer(fixed, tokens, W, AllToAllAlgo::Linear);
  std::vector<double> out1(T * M), dx1(T * M);
  fixed.forward(x.data() + g * Tmax * M, nullptr, T, out1.data());
  fixed.backward(dout.data() + g * Tmax * M, dx1.data());

  moe::MoeLayer<double> layer(mc, M, Tmax, Tmax, 3, &comm);
  connect_moe_layer(layer, tokens, 0, AllToAllAlgo::Auto);
  Tuner tuner(tokens, W, TunerOptions{1, "", false, ""});
  TuneDims dims;
  dims.degree = dims.pipeline = dims.algo = true;
  layer.set_tuner(&tuner, 0, dims);
  EXPECT_EQ(layer.tuning_space().degrees, layer.sized_degrees());
  int steps = 0;
  for (; steps < 100; ++steps) {
    std::vector<double> out(T * M), dx(T * M);
    layer.zero_grads();
    layer.forward(x.data() + g * Tmax * M, nullptr, T, out.data());
    layer.backward(dout.data() + g * Tmax * M, dx.data());
    EXPECT_LT(test::max_rel_diff(out.data(), out1.data(), out.size()), 1e-12) << "step " << steps;
    EXPECT_LT(test::max_rel_diff(dx.data(), dx1.data(), dx.size()), 1e-12) << "step " << steps;
    if (!tuner.tuning()) break;
  }
  ASSERT_FALSE(tuner.tuning()) << "undecided after " << steps << " steps";
  ASSERT_EQ(tuner.decisions().size(), 1u);
  ASSERT_TRUE(tuner.decided(0, 135).has_value()) << "the key is the largest batch's capacity bucket";
  EXPECT_FALSE(tuner.decided(0, 125).has_value());
  const ExpertPlan chosen = *tuner.decided(0, 135);
  int mine[3] = {chosen.degree, chosen.pipeline, int(chosen.algo)}, lo[3], hi[3];
  MPI_Allreduce(mine, lo, 3, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(mine, hi, 3, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lo[i], hi[i]) << "every rank holds the same plan";
  // The next forward runs the decision and opens no trial.
  std::vector<double> out(T * M), dx(T * M);
  layer.forward(x.data() + g * Tmax * M, nullptr, T, out.data());
  EXPECT_FALSE(tuner.trial_open(0));
  EXPECT_EQ(layer.expert_degree(), chosen.degree);
  if (chosen.degree > 1) {
    EXPECT_EQ(layer.pipeline_degree(), chosen.pipeline);
    EXPECT_EQ(layer.alltoall(), chosen.algo);
  }
  layer.backward(dout.data() + g * Tmax * M, dx.data());
  EXPECT_LT(test::max_rel_diff(out.data(), out1.data(), out.size()), 1e-12);
}

}  // namespace
}  // namespace sy::par
