// The network simulator's config (parallel/netsim/netsim_config.hpp): the
// shipped configs/net/*.ini and one-line errors.
#include "parallel/netsim/netsim_config.hpp"

#include <gtest/gtest.h>

#include "tests/parallel/netsim/netsim_test_support.hpp"

namespace sy::net {
namespace {

using namespace testing_support;

TEST(NetsimConfigFile, ShippedConfigsLoad) {
  int files = 0;
  for (const auto& entry : fs::directory_iterator(test::source_dir() + "/configs/net")) {
    if (entry.path().extension() != ".ini") continue;
    SCOPED_TRACE(entry.path().string());
    ++files;
    NetsimConfig c;
    ASSERT_NO_THROW(c = load_netsim_config(entry.path().string()));
    EXPECT_NO_THROW(Topology(c.topology, c.failures));
    // The resolved INI reads back the same.
    const std::string ini = write_file("resolved-" + entry.path().filename().string(), to_ini(c));
    EXPECT_EQ(to_ini(load_netsim_config(ini)), to_ini(c));
    // A shipped routing trace (relative to the repository root) reads and fits the topology.
    if (!c.workload.trace.empty()) {
      RoutingTrace trace;
      ASSERT_NO_THROW(trace = read_routing_trace(test::source_dir() + "/" + c.workload.trace));
      const int hosts = Topology(c.topology, c.failures).hosts();
      std::vector<Phase> phases;
      EXPECT_NO_THROW(phases = workload_phases(WorkloadKind::MoeDispatch, hosts, 1 << 20, c.workload, &trace));
      EXPECT_EQ(phases.size(), trace.blocks.size());
    }
  }
  EXPECT_GE(files, 4);
  const NetsimConfig c = load_netsim_config(test::source_dir() + "/configs/net/leafspine-256.ini");
  EXPECT_EQ(Topology(c.topology, c.failures).hosts(), 256);
  EXPECT_EQ(c.netsim.policies, (std::vector<Policy>{kSpray, kEcmp, mp(4), kFlowSplit}));
  const NetsimConfig ft = load_netsim_config(test::source_dir() + "/configs/net/fattree-512.ini");
  EXPECT_EQ(Topology(ft.topology, ft.failures).hosts(), 512);
}

TEST(NetsimConfigFile, Errors) {
  const auto cli = [](std::vector<std::string> overrides) {
    return [overrides] { load_netsim_config("", overrides); };
  };
  expect_config_error(cli({"--topology.spine=4"}), {"unknown key 'topology.spine'", "did you mean 'topology.spines'"});
  expect_config_error([] { load_netsim_config(write_file("typo.ini", "[netsim]\npolicy = spray\n")); },
                      {"unknown key 'netsim.policy'", "did you mean 'netsim.policies'"});
  expect_config_error(cli({"--netsim.policies=ecmp, mp-1"}),
                      {"netsim.policies", "mp-1", "one of spray, ecmp, flowsplit, mp-K (K >= 2)"});
  expect_config_error([] { load_netsim_config(write_file("mp1.ini", "[netsim]\npolicies = ecmp, mp-1\n")); },
                      {"netsim.policies", "one of spray, ecmp, flowsplit, mp-K (K >= 2)"});
  expect_config_error(cli({"--topology.pods=2"}), {"topology.pods", "needs topology.kind = fattree"});
  // Link and path counts that would overflow the numbering are refused, not run.
  expect_config_error(cli({"--topology.hosts_per_leaf=1", "--topology.leaves=65536", "--topology.spines=40000"}),
                      {"links", "at most"});
  expect_config_error(cli({"--topology.kind=fattree", "--topology.pods=2", "--topology.spines=1000",
                           "--topology.cores_per_spine=1000"}),
                      {"1000000 paths", "at most 65536"});
  expect_config_error(cli({"--topology.kind=fattree", "--topology.pods=1"}), {"topology.pods >= 2"});
  expect_config_error(cli({"--workload.kinds=alltoall, moe"}), {"workload.trace must name a routing trace file"});
  expect_config_error(cli({"--workload.kinds=alltoall, bcast"}), {"workload.kinds"});
  expect_config_error(cli({"--failures.fraction=1"}), {"failures.fraction"});
  expect_config_error(cli({"--workload.sizes_mib=1, 0"}), {"workload.sizes_mib"});
  expect_config_error(cli({"--workload.sizes_mib=2097152"}), {"workload.sizes_mib"});  // 2 TiB: past the model's byte keys
  expect_config_error(cli({"--topology.cores_per_spine=2"}), {"topology.cores_per_spine", "needs topology.kind = fattree"});
  expect_config_error(cli({"--topology.leaves=1", "--topology.hosts_per_leaf=1"}), {"expected 2 to 1048576"});
  // And what parses.
  const NetsimConfig c = load_netsim_config("", {"--netsim.policies=spray, mp-8, flowsplit", "--workload.kinds=moe",
                                                 "--workload.trace=x.txt", "--netsim.aggregate=leaf"});
  EXPECT_EQ(c.netsim.policies, (std::vector<Policy>{kSpray, mp(8), kFlowSplit}));
  EXPECT_EQ(c.workload.kinds, std::vector<WorkloadKind>{WorkloadKind::MoeDispatch});
  EXPECT_EQ(c.netsim.aggregate, Aggregation::Leaf);
  EXPECT_EQ(to_string(mp(8)), "mp-8");
}

}  // namespace
}  // namespace sy::net
