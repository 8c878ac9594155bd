// `switchyard train`, `eval` and `generate` run as a user runs them (one
// process): the run directory and checkpoints they leave, a stop by SIGTERM,
// and bad input, each giving one error line and losing no earlier checkpoint.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "data/synthetic.hpp"
#include "data/tokenizer.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

int count_lines_with(const std::string& text, const std::string& needle) {
  std::istringstream is(text);
  int n = 0;
  for (std::string line; std::getline(is, line);) n += contains(line, needle);
  return n;
}

class TrainCli : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(testing::TempDir()) / ("sy_train_cli_" + std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::vector<std::string> texts;
    std::vector<data::TextDocument> docs;
    for (int d = 0; d < 3; ++d)
      for (int i = 0; i < 4; ++i) texts.push_back(data::synthetic_document(d, i, 2000, 3));
    for (size_t k = 0; k < texts.size(); ++k) docs.push_back({texts[k], int32_t(k / 4)});
    data::write_dataset(dataset(), data::tokenize_documents(data::Tokenizer(), data::synthetic_domain_names(), docs));
    std::ofstream ini(dir_ / "tiny.ini");
    ini << "[model]\ndim = 32\nlayers = 2\nheads = 2\nseq_len = 16\nffn_hidden_size = 64\n"
           "[moe]\nnum_experts = 4\ntop_k = 2\nhidden_size = 32\nevery = 2\n"
           "[train]\nsteps = 6\nmicro_batch_size = 2\nwarmup_steps = 2\neval_every = 3\neval_batches = 2\n"
           "[log]\nevery = 1\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string dataset() const { return (dir_ / "data.h5").string(); }
  std::string ckpt() const { return (dir_ / "ckpt").string(); }
  test::CommandResult sy(const std::string& args) const {
    return test::run_command(test::binary_path() + " " + args + " 2>&1");
  }
  test::CommandResult train(const std::string& extra) const {
    return sy("train --config " + (dir_ / "tiny.ini").string() + " --data.path=" + dataset() + " " + extra);
  }

  fs::path dir_;
};

TEST_F(TrainCli, TrainsWritesMetricsCheckpointsAndTheirToolsLoadThem) {
  const auto r = train("--log.dir=" + (dir_ / "run").string() + " --checkpoint.dir=" + ckpt() + " --checkpoint.every=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "step     6/6 | loss")) << r.output;
  EXPECT_TRUE(contains(r.output, "eval  step 6 | val_loss")) << r.output;
  std::ifstream m(dir_ / "run" / "metrics.jsonl");
  std::vector<std::string> lines;
  for (std::string l; std::getline(m, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 6u);
  for (const char* key : {"\"step\": 6", "\"loss\"", "\"lm_loss\"", "\"balance_loss\"", "\"z_loss\"", "\"lr\"",
                          "\"grad_norm\"", "\"tokens_per_s\"", "\"mfu\"", "\"expert_load_max_over_mean\"",
                          "\"dropped_fraction\"", "\"experts_per_token\"", "\"expert_load\"", "\"val_loss\"",
                          "\"val_loss_by_domain\"", "\"expert_freq_by_domain\""})
    EXPECT_TRUE(contains(lines.back(), key)) << key << " missing from " << lines.back();
  EXPECT_FALSE(contains(lines[0], "val_loss")) << "step 1 had no evaluation";
  EXPECT_TRUE(fs::exists(dir_ / "run" / "config.ini"));
  EXPECT_TRUE(fs::exists(fs::path(ckpt()) / "step-00000003"));
  EXPECT_TRUE(fs::exists(fs::path(ckpt()) / "step-00000006"));

  const auto e = sy("eval --checkpoint " + ckpt() + " --data.path=" + dataset());
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_TRUE(contains(e.output, "(step 6): val_loss")) << e.output;
  for (const auto& d : data::synthetic_domain_names()) EXPECT_TRUE(contains(e.output, d)) << e.output;
  const auto g = sy("generate --checkpoint " + ckpt() + " --prompt 'int main' --tokens 20 --data.path=" + dataset());
  ASSERT_EQ(g.exit_code, 0) << g.output;
  EXPECT_TRUE(contains(g.output, "int main")) << g.output;
}

// Generation is dropless, except for expert_choice, which needs a capacity.
TEST_F(TrainCli, GenerateFromAnExpertChoiceCheckpoint) {
  const auto r = train("--moe.router=expert_choice --train.steps=2 --train.eval_every=0 --checkpoint.dir=" + ckpt());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto g = sy("generate --checkpoint " + ckpt() + " --prompt abc --tokens 8 --temperature 0");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  EXPECT_TRUE(contains(g.output, "abc")) << g.output;
}

TEST_F(TrainCli, SigtermWritesALoadableCheckpointAndExitsZero) {
  const std::string metrics = (dir_ / "run" / "metrics.jsonl").string();
  // Starts a long run in the background, waits for 3 steps, sends SIGTERM.
  const std::string script =
      test::binary_path() + " train --config " + (dir_ / "tiny.ini").string() + " --data.path=" + dataset() +
      " --train.steps=100000 --train.eval_every=0 --log.dir=" + (dir_ / "run").string() + " --checkpoint.dir=" + ckpt() +
      " > " + (dir_ / "out.txt").string() + " 2>&1 & pid=$!; "
      "for i in $(seq 600); do [ -f " + metrics + " ] && [ $(wc -l < " + metrics + ") -ge 3 ] && break; sleep 0.1; done; "
      "kill -TERM $pid; wait $pid; echo exit=$?";
  const auto r = test::run_command("bash -c '" + script + "'");
  std::ifstream out(dir_ / "out.txt");
  const std::string log((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(contains(r.output, "exit=0")) << r.output << log;
  EXPECT_TRUE(contains(log, "stop signal")) << log;
  ASSERT_TRUE(fs::exists(fs::path(ckpt()) / "latest")) << log;
  const auto e = sy("eval --checkpoint " + ckpt() + " --data.path=" + dataset() + " --json");
  EXPECT_EQ(e.exit_code, 0) << e.output;
  EXPECT_TRUE(contains(e.output, "\"eval\": \"total\"")) << e.output;
  // And training resumes from it.
  const auto resumed = train("--train.steps=100000 --checkpoint.dir=" + ckpt() + " --checkpoint.resume=true --train.eval_every=0 --log.dir= 2>&1 | head -3");
  EXPECT_TRUE(contains(resumed.output, "checkpoint: loaded")) << resumed.output;
}

TEST_F(TrainCli, BadInputGivesOneErrorLine) {
  // Missing dataset.
  auto r = sy("train --config " + (dir_ / "tiny.ini").string() + " --data.path=" + (dir_ / "none.h5").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  EXPECT_TRUE(contains(r.output, "none.h5")) << r.output;
  // No data.path at all.
  r = sy("train --config " + (dir_ / "tiny.ini").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "data.path")) << r.output;
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  // Corrupt dataset.
  {
    std::ofstream junk(dir_ / "junk.h5");
    junk << "this is not HDF5";
  }
  r = sy("train --config " + (dir_ / "tiny.ini").string() + " --data.path=" + (dir_ / "junk.h5").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  EXPECT_TRUE(contains(r.output, "junk.h5")) << r.output;
  // A dataset too short for one training window.
  {
    std::vector<data::TextDocument> docs{{"tiny", 0}};
    data::write_dataset((dir_ / "short.h5").string(), data::tokenize_documents(data::Tokenizer(), {"only"}, docs));
  }
  r = sy("train --config " + (dir_ / "tiny.ini").string() + " --data.path=" + (dir_ / "short.h5").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  // A vocabulary larger than the model's.
  r = train("--model.vocab_size=100");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "model.vocab_size")) << r.output;
}

TEST_F(TrainCli, BadCheckpointsAndDivergenceKeepTheEarlierCheckpoint) {
  ASSERT_EQ(train("--checkpoint.dir=" + ckpt() + " --checkpoint.every=2 --train.steps=4 --train.eval_every=0").exit_code, 0);
  const fs::path step2 = fs::path(ckpt()) / "step-00000002", step4 = fs::path(ckpt()) / "step-00000004";
  ASSERT_TRUE(fs::exists(step2) && fs::exists(step4));

  // Another model config: refused, naming the key.
  auto r = train("--checkpoint.dir=" + ckpt() + " --checkpoint.resume=true --model.dim=64 --train.steps=8");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  EXPECT_TRUE(contains(r.output, "model.dim: 32 -> 64")) << r.output;

  // A truncated rank file: refused, naming the file; nothing removed.
  fs::resize_file(step4 / "rank-00000.h5", fs::file_size(step4 / "rank-00000.h5") / 2);
  r = train("--checkpoint.dir=" + ckpt() + " --checkpoint.resume=true --train.steps=8");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  EXPECT_TRUE(contains(r.output, "rank-00000.h5")) << r.output;
  EXPECT_TRUE(fs::exists(step2));
  // The earlier step still loads.
  r = sy("eval --checkpoint " + step2.string() + " --data.path=" + dataset());
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // Divergence in the loss: a huge learning rate makes the next loss
  // non-finite; the run stops on one line.
  r = train("--checkpoint.dir=" + (dir_ / "ck-loss").string() + " --train.steps=20 --train.warmup_steps=0 "
            "--train.lr=1e30 --train.grad_clip=0 --train.eval_every=0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  EXPECT_TRUE(contains(r.output, "diverged at step 2: loss = ")) << r.output;

  // Divergence in the update (the loss of the step was finite): resumed from
  // a good checkpoint with an overflowing learning rate, the run stops before
  // saving, and `latest` stays the good step, which still evaluates.
  fs::remove_all(ckpt());
  ASSERT_EQ(train("--checkpoint.dir=" + ckpt() + " --train.steps=2 --train.eval_every=0").exit_code, 0);
  r = train("--checkpoint.dir=" + ckpt() + " --checkpoint.resume=true --checkpoint.every=1 --train.steps=20 "
            "--train.lr=1e39 --train.warmup_steps=0 --train.eval_every=0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(count_lines_with(r.output, "error"), 1) << r.output;
  EXPECT_TRUE(contains(r.output, "diverged at step 3: the update made parameters non-finite")) << r.output;
  std::ifstream latest(fs::path(ckpt()) / "latest");
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "step-00000002");
  EXPECT_FALSE(fs::exists(fs::path(ckpt()) / "step-00000003"));
  r = sy("eval --checkpoint " + ckpt() + " --data.path=" + dataset() + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "nan") || contains(r.output, "null")) << r.output;
}

}  // namespace
}  // namespace sy
