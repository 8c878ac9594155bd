// The switchyard command line, run as a user would run it.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "tests/support/test_support.hpp"

namespace sy {
namespace {

test::CommandResult sy_run(const std::string& args) { return test::run_command(test::binary_path() + " " + args); }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(Cli, HelpListsEverySubcommand) {
  const auto r = sy_run("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* sub : {"train", "prepare", "eval", "generate", "bench", "netsim", "info", "config"})
    EXPECT_TRUE(contains(r.output, std::string("  ") + sub)) << sub << " missing from\n" << r.output;
}

TEST(Cli, NoArgumentsPrintsUsageAndFails) {
  const auto r = sy_run("");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "usage: switchyard")) << r.output;
}

TEST(Cli, UnknownSubcommandIsNamed) {
  const auto r = sy_run("trian");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "unknown subcommand 'trian'")) << r.output;
}

TEST(Cli, SubcommandHelp) {
  for (const char* sub : {"info", "bench", "bench gemm", "bench moe-layer", "config", "train", "eval", "generate", "netsim"}) {
    const auto r = sy_run(std::string(sub) + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub << ": " << r.output;
    EXPECT_TRUE(contains(r.output, "usage") || contains(r.output, "Options")) << sub << ": " << r.output;
  }
}

TEST(Cli, InfoReportsBuildFacts) {
  const auto r = sy_run("info --no-bench");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* field : {"switchyard 0.", "MPI", "Open MPI", "Eigen      3.4", "HDF5", "CUDA", "threads"})
    EXPECT_TRUE(contains(r.output, field)) << field << " missing from\n" << r.output;
}

TEST(Cli, BenchGemmJsonHasTheNamedFields) {
  const auto r = sy_run("bench gemm --json --shapes 96x64x80 --threads 1,2 --min-time 0.01 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream lines(r.output);
  std::string line;
  int objects = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    ++objects;
    for (const char* field : {"\"bench\": \"gemm\"", "\"m\": 96", "\"k\": 64", "\"n\": 80", "\"threads\": ",
                              "\"ranks\": 1", "\"gflops\": ", "\"fma_peak_gflops\": ", "\"ratio_to_peak\": "})
      EXPECT_TRUE(contains(line, field)) << field << " missing from " << line;
  }
  EXPECT_EQ(objects, 2) << r.output;
}

TEST(Cli, BenchGemmRejectsBadShape) {
  const auto r = sy_run("bench gemm --shapes 12x0x4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "12x0x4")) << r.output;
}

TEST(Cli, BenchMoeLayerJsonHasTheNamedFields) {
  const auto r = sy_run("bench moe-layer --json --config " + test::source_dir() +
                        "/configs/bench/moe-layer.ini --bench.tokens=256 --model.dim=64 --moe.hidden_size=128"
                        " --bench.steps=2 --bench.warmup=1 --bench.threads=1 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* field :
       {"\"bench\": \"moe-layer\"", "\"ranks\": 1", "\"threads\": 1", "\"tokens\": 256", "\"model_dim\": 64",
        "\"hidden\": 128", "\"experts\": 4", "\"top_k\": 2", "\"router\": \"topk\"", "\"fwd_ms\": ", "\"bwd_ms\": ",
        "\"step_ms\": ", "\"tokens_per_s\": ", "\"expert_gflops\": ", "\"gemm_gflops\": ", "\"fma_peak_gflops\": ",
        "\"ratio_to_peak\": ", "\"routing_share\": ", "\"a2a_share\": "})
    EXPECT_TRUE(contains(r.output, field)) << field << " missing from " << r.output;
}

TEST(Cli, BenchMoeLayerRefusesABadKey) {
  const auto r = sy_run("bench moe-layer --moe.router=top2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "moe.router = 'top2'")) << r.output;
}

TEST(Cli, ConfigPrintsTheResolvedConfigWithOverrides) {
  const auto r = sy_run("config --config " + test::source_dir() + "/configs/demo.ini --moe.top_k=1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "[moe]")) << r.output;
  EXPECT_TRUE(contains(r.output, "top_k = 1")) << r.output;
}

TEST(Cli, ConfigRefusesUnknownKeyAndBadValueNamingThem) {
  const auto unknown = sy_run("config --config " + test::source_dir() + "/configs/demo.ini --moe.topk=2");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_TRUE(contains(unknown.output, "command line: unknown key 'moe.topk'")) << unknown.output;
  const auto bad = sy_run("config --moe.router=topq");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(contains(bad.output, "moe.router = 'topq'")) << bad.output;
  EXPECT_TRUE(contains(bad.output, "expert_choice")) << bad.output;  // lists what is allowed
}

TEST(Cli, ConfigFileErrorsNameTheFile) {
  const std::string dir = testing::TempDir() + "/sy_cli_config";
  test::run_command("mkdir -p " + dir + " && printf '[moe]\\nnum_experts = many\\n' > " + dir + "/bad.ini");
  const auto r = sy_run("config --config " + dir + "/bad.ini");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, dir + "/bad.ini")) << r.output;
  EXPECT_TRUE(contains(r.output, "moe.num_experts")) << r.output;
  EXPECT_TRUE(contains(r.output, "many")) << r.output;
}

TEST(Cli, ConfigOutWritesALoadableFile) {
  const std::string dir = testing::TempDir() + "/sy_cli_config_out";
  const auto r = sy_run("config --moe.num_experts=8 --out " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto again = sy_run("config --config " + dir + "/config.ini");
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "num_experts = 8")) << again.output;
}

}  // namespace
}  // namespace sy
