// `switchyard netsim` as a user runs it: the --json fields and one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace sy {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

test::CommandResult sy_run(const std::string& args) { return test::run_command(test::binary_path() + " " + args); }

// The number after "key": in a JSON line (NaN for null or missing).
double json_number(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\": ");
  if (at == std::string::npos) return std::nan("");
  const std::string rest = line.substr(at + key.size() + 4);
  if (rest.rfind("null", 0) == 0) return std::nan("");
  return std::stod(rest);
}

std::string json_string(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\": \"");
  if (at == std::string::npos) return "";
  const auto from = at + key.size() + 5;
  return line.substr(from, line.find('"', from) - from);
}

TEST(NetsimCli, JsonHasTheNamedFields) {
  const auto r = sy_run("netsim --config " + test::source_dir() +
                        "/configs/net/leafspine-256.ini --workload.kinds=alltoall --workload.sizes_mib=1 --json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream lines(r.output);
  std::string line;
  std::vector<std::string> objects;
  while (std::getline(lines, line)) {
    EXPECT_FALSE(line.empty());
    EXPECT_EQ(line.front(), '{') << "not JSON (--quiet prints nothing else): " << line;
    if (!line.empty() && line.front() == '{') objects.push_back(line);
  }
  ASSERT_EQ(objects.size(), 4u) << r.output;
  std::map<std::string, std::string> by_policy;
  for (const auto& o : objects) {
    for (const char* field : {"\"bench\": \"netsim\"", "\"topology\": \"leafspine-256\"", "\"hosts\": 256",
                              "\"policy\": ", "\"workload\": \"alltoall\"", "\"bytes\": 1048576",
                              "\"max_link_load_over_ideal\": ", "\"completion_ms\": ", "\"slowdown_vs_spray\": ",
                              "\"flows\": 65280", "\"subflows\": "})
      EXPECT_TRUE(contains(o, field)) << field << " missing from " << o;
    by_policy[json_string(o, "policy")] = o;
  }
  ASSERT_EQ(by_policy.size(), 4u) << r.output;
  for (const char* p : {"spray", "ecmp", "mp-4", "flowsplit"}) ASSERT_TRUE(by_policy.count(p)) << p;
  EXPECT_EQ(json_number(by_policy["spray"], "slowdown_vs_spray"), 1.0);
  EXPECT_NEAR(json_number(by_policy["flowsplit"], "slowdown_vs_spray"), 1.0, 1e-5);
  EXPECT_EQ(json_number(by_policy["spray"], "max_link_load_over_ideal"), 1.0);
  EXPECT_EQ(json_number(by_policy["flowsplit"], "max_link_load_over_ideal"), 1.0);
  EXPECT_GT(json_number(by_policy["ecmp"], "max_link_load_over_ideal"), 1.0);
  EXPECT_GE(json_number(by_policy["ecmp"], "slowdown_vs_spray"), 1.0);
  EXPECT_EQ(json_number(by_policy["spray"], "subflows"), 65280);
  EXPECT_EQ(json_number(by_policy["flowsplit"], "subflows"), 65280);  // 16 flows per leaf over 16 paths: none cut
  EXPECT_EQ(json_number(by_policy["mp-4"], "subflows"), 4 * 256 * 240 + 256 * 15);
  EXPECT_GT(json_number(by_policy["spray"], "completion_ms"), 0.0);
}

TEST(NetsimCli, MissingConfigFailsWithOneLine) {
  const auto r = sy_run("netsim");
  EXPECT_NE(r.exit_code, 0);
  std::istringstream lines(r.output);
  std::string line;
  int nonempty = 0;
  while (std::getline(lines, line)) nonempty += !line.empty();
  EXPECT_EQ(nonempty, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "--config")) << r.output;
  const auto typo = sy_run("netsim --config " + test::source_dir() + "/configs/net/leafspine-256.ini --netsim.polices=ecmp");
  EXPECT_NE(typo.exit_code, 0);
  EXPECT_TRUE(contains(typo.output, "did you mean 'netsim.policies'")) << typo.output;
}

}  // namespace
}  // namespace sy
