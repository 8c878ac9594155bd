// `switchyard bench alltoall`, run as a user runs it: on one rank and under
// mpirun on two, --json prints the named fields for every algorithm and size.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "tests/support/test_support.hpp"

namespace sy {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The JSON lines of `output`, by algorithm: how many each has; every line
// checked for the fields.
std::map<std::string, int> check_json_lines(const std::string& output, int ranks) {
  std::map<std::string, int> per_algo;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    for (const char* field : {"\"bench\": \"alltoall\"", "\"algo\": \"", "\"bytes_per_rank\": ", "\"ms\": ",
                              "\"gbps\": ", "\"ratio_to_mpi\": "})
      EXPECT_TRUE(contains(line, field)) << field << " missing from " << line;
    EXPECT_TRUE(contains(line, "\"ranks\": " + std::to_string(ranks))) << line;
    const size_t at = line.find("\"algo\": \"") + 9;
    ++per_algo[line.substr(at, line.find('"', at) - at)];
  }
  return per_algo;
}

TEST(BenchAlltoall, JsonHasTheNamedFieldsForEveryAlgorithmOnOneRank) {
  const auto r = test::run_command(test::binary_path() +
                                   " bench alltoall --json --min-bytes 4K --max-bytes 64K --reps 2"
                                   " --bench.warmup=1 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto per_algo = check_json_lines(r.output, 1);
  for (const char* algo : {"mpi_alltoall", "linear", "linear_paired", "2dh", "flowsplit"})
    EXPECT_EQ(per_algo.count(algo) ? per_algo.at(algo) : 0, 3) << algo << " (sizes 4K, 16K, 64K)\n" << r.output;
  EXPECT_EQ(per_algo.size(), 5u) << r.output;
}

TEST(BenchAlltoall, JsonOnTwoRanksWithLeavesAndPaths) {
  const auto r = test::run_command(test::source_dir() + "/tests/support/mpirun.sh 2 " + test::binary_path() +
                                   " bench alltoall --json --min-bytes 16K --max-bytes 64K --reps 2"
                                   " --bench.warmup=1 --parallel.ranks_per_leaf=1 --parallel.spine_paths=3"
                                   " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto per_algo = check_json_lines(r.output, 2);
  for (const char* algo : {"mpi_alltoall", "linear", "linear_paired", "2dh", "flowsplit"})
    EXPECT_EQ(per_algo.count(algo) ? per_algo.at(algo) : 0, 2) << algo << " (sizes 16K, 64K)\n" << r.output;
  EXPECT_TRUE(contains(r.output, "\"spine_paths\": 3")) << r.output;
  EXPECT_TRUE(contains(r.output, "\"ranks_per_leaf\": 1")) << r.output;
}

TEST(BenchAlltoall, TableAndHelp) {
  const auto t = test::run_command(test::binary_path() +
                                   " bench alltoall --min-bytes 64K --max-bytes 64K --reps 2 --bench.warmup=1");
  ASSERT_EQ(t.exit_code, 0) << t.output;
  for (const char* word : {"bytes/rank", "64 KiB", "mpi_alltoall", "linear_paired", "2dh", "flowsplit"})
    EXPECT_TRUE(contains(t.output, word)) << word << " missing from\n" << t.output;
  const auto h = test::run_command(test::binary_path() + " bench alltoall --help");
  EXPECT_EQ(h.exit_code, 0) << h.output;
  EXPECT_TRUE(contains(h.output, "usage: switchyard bench alltoall")) << h.output;
}

TEST(BenchAlltoall, RefusesBadSizesAndKeys) {
  const auto a = test::run_command(test::binary_path() + " bench alltoall --max-bytes 0");
  EXPECT_NE(a.exit_code, 0);
  EXPECT_TRUE(contains(a.output, "--max-bytes")) << a.output;
  const auto b = test::run_command(test::binary_path() + " bench alltoall --parallel.spine_paths=abc");
  EXPECT_NE(b.exit_code, 0);
  EXPECT_TRUE(contains(b.output, "parallel.spine_paths")) << b.output;
}

}  // namespace
}  // namespace sy
