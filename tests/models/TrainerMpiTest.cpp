// The trainer end to end on 1, 2 and 4 ranks, against one rank:
//  - 20 optimizer steps give the same loss curve (1e-5 relative) on one rank
//    and in every layout of the world (dp, ep, ep x dp, tp x dp), with the
//    same W x micro_batches (so the same global batches);
//  - a run resumed from a checkpoint equals the uninterrupted run bitwise;
//  - a checkpoint written on 4 ranks loads on 2 and then 1 (resharding) and
//    the loss curve continues;
//  - log.routing_trace writes every rank's dispatch per logged step and resumes;
//  - train.dtype = bf16: rounded working weights, fp32 masters, bitwise resume;
//  - the golden loss curve of a tiny config (tests/models/golden_loss.txt).
#include "models/trainer.hpp"

#include <mpi.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "data/checkpoint.hpp"
#include "data/dataset.hpp"
#include "data/synthetic.hpp"
#include "data/tokenizer.hpp"
#include "parallel/netsim/workload.hpp"
#include "parallel/process_grid.hpp"
#include "tests/support/mpi_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy::models {
namespace {

namespace fs = std::filesystem;

const data::TokenDataset& corpus() {
  static const data::TokenDataset ds = [] {
    std::vector<std::string> texts;
    std::vector<data::TextDocument> docs;
    const auto& names = data::synthetic_domain_names();
    for (int d = 0; d < int(names.size()); ++d)
      for (int i = 0; i < 6; ++i) texts.push_back(data::synthetic_document(d, i, 3000, 7));
    for (size_t k = 0; k < texts.size(); ++k) docs.push_back({texts[k], int32_t(k / 6)});
    return data::tokenize_documents(data::Tokenizer(), names, docs);
  }();
  return ds;
}

// A small MoE model: 2 blocks, the second MoE with 4 experts, top-2, capacity
// factor 1.0 (so slots drop), micro-batch balance.
Config tiny_config() {
  Config c;
  c.model.dim = 32;
  c.model.layers = 2;
  c.model.heads = 4;
  c.model.vocab_size = 256;
  c.model.seq_len = 16;
  c.model.ffn_hidden_size = 64;
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.hidden_size = 48;
  c.moe.every = 2;
  c.moe.capacity_factor = 1.0;
  c.moe.balance = BalanceKind::Micro;
  c.train.steps = 20;
  c.train.seed = 11;
  c.train.micro_batch_size = 2;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 3;
  c.train.eval_every = 0;
  c.log.every = 1000;
  return c;
}

// A second model that exercises more of the trainer: E = 2 experts (sliced
// over 4 ranks), SwiGLU, a shared expert, untied head, RMSNorm, rotary
// positions, the switch router with input jitter, and buckets of 16 KiB so
// the dense gradients travel in many buckets.
Config wide_config() {
  Config c = tiny_config();
  c.model.tie_embeddings = false;
  c.model.norm = NormKind::RMSNorm;
  c.model.position = PositionKind::Rope;
  c.moe.num_experts = 2;
  c.moe.top_k = 1;
  c.moe.router = RouterKind::Switch;
  c.moe.jitter = 0.1;
  c.moe.activation = ActivationKind::SwiGLU;
  c.moe.num_shared_experts = 1;
  c.moe.every = 1;
  c.parallel.bucket_mb = 1.0 / 64;
  return c;
}

std::vector<double> losses(const std::vector<StepMetrics>& m) {
  std::vector<double> out;
  for (const auto& s : m) out.push_back(s.loss);
  return out;
}

std::vector<double> grad_norms(const std::vector<StepMetrics>& m) {
  std::vector<double> out;
  for (const auto& s : m) out.push_back(s.grad_norm);
  return out;
}

// Runs config on the ranks of comm (MPI_COMM_SELF: one rank), until step
// `until` when given.
std::vector<StepMetrics> run_metrics(const Config& config, MPI_Comm comm, int64_t until = -1) {
  par::ProcessGrid grid(config.parallel, comm);
  Trainer<float> trainer(config, grid);
  trainer.set_verbose(false);
  trainer.set_dataset(corpus());
  return trainer.train(until);
}

std::vector<double> run(const Config& config, MPI_Comm comm, int64_t until = -1) {
  return losses(run_metrics(config, comm, until));
}

void expect_close(const std::vector<double>& a, const std::vector<double>& b, double rel, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], rel * std::abs(b[i])) << what << ": step " << i + 1;
}

// A directory every rank agrees on.
std::string shared_dir(const std::string& tag) {
  int pid = int(getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::string dir = (fs::temp_directory_path() / ("sy-trainer-" + tag + "-" + std::to_string(pid))).string();
  MPI_Barrier(MPI_COMM_WORLD);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) fs::remove_all(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

TEST(TrainerMpiTest, EveryLayoutGivesTheOneRankLossCurve) {
  const int W = test::world_size();
  if (W == 1) GTEST_SKIP() << "layouts need more than one rank (this test runs on 2 and 4)";
  struct Layout {
    int dp, ep, tp;
  };
  std::vector<Layout> layouts;
  for (const Layout l : {Layout{W, 1, 1}, Layout{1, W, 1}, Layout{2, 2, 1}, Layout{W / 2, 1, 2}})
    if (l.dp * l.ep * l.tp == W && l.dp >= 1) layouts.push_back(l);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (const bool wide : {false, true}) {
    // The reference: one rank, world-size micro-batches.
    Config one = wide ? wide_config() : tiny_config();
    one.train.micro_batches = W;
    const std::vector<StepMetrics> want = run_metrics(one, MPI_COMM_SELF);
    for (const Layout& l : layouts) {
      Config c = wide ? wide_config() : tiny_config();
      c.parallel.dp = l.dp;
      c.parallel.ep = l.ep;
      c.parallel.tp = l.tp;
      const int token_ranks = l.dp * l.ep;
      c.train.micro_batches = W / token_ranks;  // the same W x micro_batches = world size
      const std::vector<StepMetrics> got = run_metrics(c, MPI_COMM_WORLD);
      std::ostringstream what;
      what << (wide ? "wide" : "tiny") << " dp=" << l.dp << " ep=" << l.ep << " tp=" << l.tp << " rank " << rank;
      expect_close(losses(got), losses(want), 1e-5, what.str() + " loss");
      // The gradient norm sees every scale factor (AdamW alone would hide a constant one).
      expect_close(grad_norms(got), grad_norms(want), 1e-4, what.str() + " grad norm");
      EXPECT_LT(got.back().loss, got.front().loss - 0.5) << what.str() << ": the loss should fall";
    }
  }
}

// moe.parallel_mode, moe.pipeline_degree and parallel.a2a_algo auto: the
// tuner decides in the first steps, saves its table, and a second run that
// loads it starts tuned (no trials, the same plans).
TEST(TrainerMpiTest, TunerDecidesInTheFirstStepsAndItsTableStartsTheNextRunTuned) {
  const int W = test::world_size();
  if (W == 1) GTEST_SKIP() << "one rank has nothing to tune";
  const std::string dir = shared_dir("tuning");
  if (test::world_rank() == 0) fs::create_directories(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  Config c = tiny_config();
  c.parallel.dp = W;
  c.parallel.tuning_samples = 1;
  c.parallel.tuning_file = dir + "/tuning.txt";
  c.train.steps = 20;  // 1 warm-up, at most 3 degrees, then at most 12 (d, algorithm) pairs
  std::string table;
  {
    par::ProcessGrid grid(c.parallel, MPI_COMM_WORLD);
    Trainer<float> trainer(c, grid);
    trainer.set_verbose(false);
    trainer.set_dataset(corpus());
    ASSERT_NE(trainer.tuner(), nullptr);
    const std::vector<double> l = losses(trainer.train());
    EXPECT_LT(l.back(), l.front());
    EXPECT_FALSE(trainer.tuner()->tuning());
    EXPECT_EQ(trainer.tuner()->decisions().size(), 1u) << "one MoE layer, one capacity";
    table = trainer.tuner()->table();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  c.train.steps = 2;
  par::ProcessGrid grid(c.parallel, MPI_COMM_WORLD);
  Trainer<float> again(c, grid);
  again.set_verbose(false);
  again.set_dataset(corpus());
  again.train();
  EXPECT_TRUE(again.tuner()->decisions().empty()) << "the loaded table decided every key";
  EXPECT_EQ(again.tuner()->table(), table);
  MPI_Barrier(MPI_COMM_WORLD);
  if (test::world_rank() == 0) fs::remove_all(dir);
}

TEST(TrainerMpiTest, ResumeEqualsTheUninterruptedRunBitwise) {
  const std::string dir = shared_dir("resume");
  Config c = tiny_config();
  c.train.steps = 8;
  c.parallel.dp = test::world_size();
  c.moe.router = RouterKind::SigmoidBias;  // state beyond the parameters: the selection bias
  c.moe.balance = BalanceKind::Global;     // counts summed over ranks each micro-batch
  c.train.micro_batches = 2;
  // A fixed plan: the tuner's trials would run other plans in the two runs'
  // first steps, equal only to rounding.
  c.moe.parallel_mode = 1;
  c.moe.pipeline_degree = 1;
  c.parallel.a2a_algo = AllToAllAlgo::Linear;
  const std::vector<double> straight = run(c, MPI_COMM_WORLD);

  c.checkpoint.dir = dir;
  run(c, MPI_COMM_WORLD, 4);  // stops at step 4 with a checkpoint
  c.checkpoint.resume = true;
  par::ProcessGrid grid(c.parallel, MPI_COMM_WORLD);
  Trainer<float> resumed(c, grid);
  resumed.set_verbose(false);
  resumed.set_dataset(corpus());
  const std::vector<double> tail = losses(resumed.train());
  EXPECT_EQ(resumed.step(), 8);
  ASSERT_EQ(tail.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(tail[i], straight[4 + i]) << "step " << 5 + i;  // bitwise
  MPI_Barrier(MPI_COMM_WORLD);
  if (test::world_rank() == 0) fs::remove_all(dir);
}

float bf16_round(float x) { return bf16_to_float(float_to_bf16(x)); }

// A fixed plan (no tuner trials), data parallel over the world.
Config bf16_config() {
  Config c = tiny_config();
  c.train.dtype = DType::BF16;
  c.parallel.dp = test::world_size();
  c.moe.parallel_mode = 1;
  c.moe.pipeline_degree = 1;
  c.parallel.a2a_algo = AllToAllAlgo::Linear;
  return c;
}

// train.dtype = bf16: the layers compute with the masters rounded to bf16 and
// the masters stay fp32; the loss curve follows the fp32 one closely but not
// bitwise (the rounding is real).
TEST(TrainerMpiTest, Bf16ComputesWithRoundedMastersAndFollowsFp32) {
  Config c = bf16_config();
  c.train.steps = 10;
  Config c32 = c;
  c32.train.dtype = DType::F32;
  const std::vector<double> fp32 = run(c32, MPI_COMM_WORLD);

  par::ProcessGrid grid(c.parallel, MPI_COMM_WORLD);
  Trainer<float> trainer(c, grid);
  trainer.set_verbose(false);
  trainer.set_dataset(corpus());
  const std::vector<double> bf16 = losses(trainer.train());
  expect_close(bf16, fp32, 0.02, "bf16 against fp32");
  double largest = 0;
  for (size_t i = 0; i < bf16.size(); ++i) largest = std::max(largest, std::abs(bf16[i] - fp32[i]) / fp32[i]);
  EXPECT_GT(largest, 1e-6) << "bf16 gave the fp32 curve: no rounding happened";
  EXPECT_LT(bf16.back(), bf16.front());

  // Dense: every working weight is its master rounded; the masters are not bf16 values.
  auto& dense = trainer.dense_params();
  int64_t masters_inexact = 0;
  for (int64_t k = 0; k < dense.shard_size(); ++k) {
    const float m = dense.shard()[k];
    ASSERT_EQ(dense.full_params()[dense.shard_to_flat(k)], bf16_round(m)) << "dense shard element " << k;
    masters_inexact += bf16_round(m) != m;
  }
  EXPECT_GT(masters_inexact, dense.shard_size() / 4);
  for (const auto& t : trainer.model().tensors())
    if (!t.expert)
      for (int64_t k = 0; k < t.numel; ++k) ASSERT_EQ(t.param[k], bf16_round(t.param[k])) << t.name << "[" << k << "]";
  // Experts: the layers' buffers are the masters rounded.
  const auto& ids = trainer.expert_tensor_ids();
  ASSERT_FALSE(ids.empty());
  for (size_t j = 0; j < ids.size(); ++j) {
    const auto& t = trainer.model().tensors()[size_t(ids[j])];
    const float* master = trainer.expert_master(j);
    ASSERT_NE(master, t.param);
    for (int64_t k = 0; k < t.numel; ++k) ASSERT_EQ(t.param[k], bf16_round(master[k])) << t.name << "[" << k << "]";
  }
}

// The point of fp32 masters: updates far below a bf16 step (lr 1e-6 on weights
// near 0.02, whose bf16 step is ~1e-4) accumulate in the masters although they
// rarely change the rounded working copy.
TEST(TrainerMpiTest, Bf16MastersKeepUpdatesBelowABf16Step) {
  Config c = bf16_config();
  c.train.steps = 3;
  c.train.lr = 1e-6;
  c.train.warmup_steps = 0;
  par::ProcessGrid grid(c.parallel, MPI_COMM_WORLD);
  Trainer<float> trainer(c, grid);
  trainer.set_verbose(false);
  trainer.set_dataset(corpus());
  auto& dense = trainer.dense_params();
  const std::vector<float> master0(dense.shard(), dense.shard() + dense.shard_size());
  std::vector<float> working0(size_t(dense.shard_size()));
  for (int64_t k = 0; k < dense.shard_size(); ++k) working0[size_t(k)] = dense.full_params()[dense.shard_to_flat(k)];
  trainer.train();
  int64_t master_moved = 0, working_moved = 0;
  for (int64_t k = 0; k < dense.shard_size(); ++k) {
    master_moved += dense.shard()[k] != master0[size_t(k)];
    working_moved += dense.full_params()[dense.shard_to_flat(k)] != working0[size_t(k)];
  }
  int64_t totals[2] = {master_moved, working_moved};
  MPI_Allreduce(MPI_IN_PLACE, totals, 2, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_GT(totals[0], 1000);
  EXPECT_LT(totals[1] * 4, totals[0]) << "master moved " << totals[0] << ", working copies " << totals[1];
}

// A bf16 run resumed from its checkpoint (which holds the fp32 masters)
// equals the uninterrupted bf16 run bitwise.
TEST(TrainerMpiTest, Bf16ResumeEqualsTheUninterruptedRunBitwise) {
  const std::string dir = shared_dir("resume-bf16");
  Config c = bf16_config();
  c.train.steps = 6;
  const std::vector<double> straight = run(c, MPI_COMM_WORLD);
  c.checkpoint.dir = dir;
  run(c, MPI_COMM_WORLD, 3);
  c.checkpoint.resume = true;
  const std::vector<double> tail = run(c, MPI_COMM_WORLD);
  ASSERT_EQ(tail.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(tail[i], straight[3 + i]) << "step " << 4 + i;
  MPI_Barrier(MPI_COMM_WORLD);
  if (test::world_rank() == 0) fs::remove_all(dir);
}

// log.routing_trace: one block per MoE layer and logged step, every rank's
// dispatched tokens per expert; a resumed run drops the blocks after its
// checkpoint (a crashed run may have logged past it) and goes on appending.
TEST(TrainerMpiTest, RoutingTraceHoldsEveryRanksDispatchAndResumes) {
  const int W = test::world_size();
  const std::string dir = shared_dir("trace");
  Config c = tiny_config();
  c.train.steps = 6;
  c.parallel.dp = W;
  c.log.every = 2;
  c.log.routing_trace = dir + "/trace.txt";
  c.checkpoint.dir = dir + "/ckpt";
  run(c, MPI_COMM_WORLD, 4);  // logs steps 1, 2, 4 and stops with a checkpoint at 4
  if (test::world_rank() == 0) {
    const net::RoutingTrace t = net::read_routing_trace(c.log.routing_trace);
    EXPECT_EQ(t.ranks, W);
    EXPECT_EQ(t.experts, 4);
    ASSERT_EQ(t.labels, (std::vector<std::string>{"step 1 layer 0", "step 2 layer 0", "step 4 layer 0"}));
    const int64_t slots = int64_t(c.train.micro_batch_size) * c.model.seq_len * c.moe.top_k;  // per rank
    for (const auto& block : t.blocks)
      for (int r = 0; r < W; ++r) {
        int64_t sum = 0;
        for (int e = 0; e < 4; ++e) sum += block[size_t(r * 4 + e)];
        EXPECT_GT(sum, slots / 2) << "rank " << r << ": most slots are kept at capacity factor 1";
        EXPECT_LE(sum, slots) << "rank " << r;
      }
    std::ofstream(c.log.routing_trace, std::ios::app) << "step 5 layer 0\n" << std::string(size_t(W), '\n');
  }
  MPI_Barrier(MPI_COMM_WORLD);
  c.checkpoint.resume = true;
  run(c, MPI_COMM_WORLD);
  if (test::world_rank() == 0) {
    const net::RoutingTrace t = net::read_routing_trace(c.log.routing_trace);
    EXPECT_EQ(t.labels, (std::vector<std::string>{"step 1 layer 0", "step 2 layer 0", "step 4 layer 0", "step 6 layer 0"}));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (test::world_rank() == 0) fs::remove_all(dir);
}

// 4 ranks (ep=4, sliced experts) -> 2 ranks (ep=2) -> 1 rank, each
// continuing the curve of the 4-rank run.
TEST(TrainerMpiTest, CheckpointReshardsFourToTwoToOne) {
  if (test::world_size() != 4) GTEST_SKIP() << "resharding 4 -> 2 -> 1 runs on 4 ranks";
  const std::string dir = shared_dir("reshard");
  const int rank = test::world_rank();
  // The wide model: its 2 experts are sliced in 2 on 4 ranks, whole on 2.
  Config c = wide_config();
  c.train.steps = 9;
  c.parallel.ep = 4;
  const std::vector<double> full = run(c, MPI_COMM_WORLD);

  c.checkpoint.dir = dir;
  run(c, MPI_COMM_WORLD, 3);  // checkpoint at step 3 by 4 ranks

  MPI_Comm two;
  MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : MPI_UNDEFINED, rank, &two);
  if (rank < 2) {
    Config c2 = wide_config();
    c2.train.steps = 9;
    c2.parallel.ep = 2;
    c2.train.micro_batches = 2;
    c2.checkpoint.dir = dir;
    c2.checkpoint.resume = true;
    const std::vector<double> got = run(c2, two, 6);  // resumes at 3, saves 6 into dir
    std::vector<double> want(full.begin() + 3, full.begin() + 6);
    expect_close(got, want, 1e-5, "2 ranks after 4");
    MPI_Comm_free(&two);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    Config c1 = wide_config();
    c1.train.steps = 9;
    c1.train.micro_batches = 4;
    c1.checkpoint.dir = dir;
    c1.checkpoint.resume = true;
    const std::vector<double> got = run(c1, MPI_COMM_SELF);  // resumes at 6
    std::vector<double> want(full.begin() + 6, full.end());
    expect_close(got, want, 1e-5, "1 rank after 2");
    EXPECT_EQ(data::read_checkpoint_meta(dir).step, 9);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) fs::remove_all(dir);
}

// The loss curve of the tiny config on one rank, committed. Regenerate with
// SWITCHYARD_UPDATE_GOLDEN=1 after a change that is meant to move it.
TEST(TrainerMpiTest, GoldenLossCurve) {
  if (test::world_rank() != 0) return;
  Config c = tiny_config();
  c.train.steps = 12;
  const std::vector<StepMetrics> got = run_metrics(c, MPI_COMM_SELF);
  const std::string path = test::source_dir() + "/tests/models/golden_loss.txt";
  if (const char* u = std::getenv("SWITCHYARD_UPDATE_GOLDEN"); u && std::string(u) == "1") {
    std::ofstream out(path);
    out.precision(9);
    out << "# step lm_loss balance_loss z_loss: tests/models/TrainerMpiTest.cpp GoldenLossCurve (tiny_config, 12 "
           "steps, 1 rank)\n";
    for (const auto& m : got) out << m.step << " " << m.lm_loss << " " << m.balance_loss << " " << m.z_loss << "\n";
    GTEST_SKIP() << "wrote " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << "missing " << path << " (SWITCHYARD_UPDATE_GOLDEN=1 writes it)";
  std::vector<double> lm, balance, z;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    int step = 0;
    double a = 0, b = 0, zz = 0;
    is >> step >> a >> b >> zz;
    lm.push_back(a);
    balance.push_back(b);
    z.push_back(zz);
  }
  // Float GEMM kernels differ between CPUs (AVX-512 vs AVX2 summation
  // order): a relative 1e-3 tolerates that, and each part is checked on its
  // own so a change in a small term (balance, z) is not hidden in the total.
  std::vector<double> got_lm, got_balance, got_z;
  for (const auto& m : got) {
    got_lm.push_back(m.lm_loss);
    got_balance.push_back(m.balance_loss);
    got_z.push_back(m.z_loss);
  }
  expect_close(got_lm, lm, 1e-3, "golden lm_loss");
  expect_close(got_balance, balance, 1e-3, "golden balance_loss");
  expect_close(got_z, z, 1e-3, "golden z_loss");
}

}  // namespace
}  // namespace sy::models
