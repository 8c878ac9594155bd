// The host-side logic of the NCCL communicator, checked on the CPU: type and
// reduction mappings, argument validation and its messages, the all-to-all-v
// plan (zero-count peers dropped, ranges checked), error wording, polling.
#include "parallel/nccl/nccl_plan.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace sy {
namespace {

using par::ElemType;
using par::ReduceOp;
namespace nccl = par::nccl;

// Runs fn, expects ErrorT whose message holds every part.
template <typename ErrorT>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const ErrorT& e) {
    const std::string what = e.what();
    for (const std::string& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST(NcclPlan, ElemTypesMapToNcclTypesOfTheSameSize) {
  struct Case {
    ElemType elem;
    ncclDataType_t nccl;
    size_t bytes;
    const char* name;
  };
  const Case cases[] = {{ElemType::F32, ncclFloat32, 4, "f32"}, {ElemType::F64, ncclFloat64, 8, "f64"},
                        {ElemType::I32, ncclInt32, 4, "i32"},   {ElemType::I64, ncclInt64, 8, "i64"},
                        {ElemType::U8, ncclUint8, 1, "u8"},     {ElemType::BF16, ncclBfloat16, 2, "bf16"}};
  for (const Case& c : cases) {
    EXPECT_EQ(nccl::to_nccl(c.elem), c.nccl) << c.name;
    EXPECT_EQ(nccl::type_size(c.nccl), c.bytes) << c.name;
    EXPECT_STREQ(nccl::type_name(c.nccl), c.name);
  }
  EXPECT_EQ(nccl::type_size(ncclFloat16), 2u);
  EXPECT_STREQ(nccl::type_name(ncclFloat16), "f16");
}

TEST(NcclPlan, ReduceOpsMapToNcclOps) {
  EXPECT_EQ(nccl::to_nccl(ReduceOp::Sum), ncclSum);
  EXPECT_EQ(nccl::to_nccl(ReduceOp::Max), ncclMax);
  EXPECT_EQ(nccl::to_nccl(ReduceOp::Min), ncclMin);
}

TEST(NcclPlan, UnknownTypeIsRefused) {
  const auto bogus = static_cast<ncclDataType_t>(99);
  expect_error<InvalidArgument>([&] { nccl::type_size(bogus); }, {"unknown NCCL data type 99"});
  EXPECT_STREQ(nccl::type_name(bogus), "unknown");
}

TEST(NcclPlan, MessagesNameRankGroupDeviceAndOperation) {
  nccl::Where w;
  w.world_rank = 5;
  w.rank = 1;
  w.size = 4;
  w.group = "ep_group";
  w.device = 2;
  EXPECT_EQ(nccl::describe(w, "alltoallv"), "rank 5 (rank 1 of 4 in 'ep_group', NCCL on device 2): alltoallv");
  const std::string t = nccl::timeout_message(w, "alltoallv", 30);
  for (const char* part : {"rank 5 (rank 1 of 4 in 'ep_group'", "alltoallv did not complete within 30 s",
                           "parallel.timeout_s", "aborted"})
    EXPECT_NE(t.find(part), std::string::npos) << part << " not in: " << t;
  const std::string f = nccl::failure_message(w, "allreduce", "ncclAllReduce", "unhandled cuda error");
  EXPECT_EQ(f, "rank 5 (rank 1 of 4 in 'ep_group', NCCL on device 2): allreduce: ncclAllReduce failed: "
               "unhandled cuda error; the NCCL communicator was aborted");
  const std::string a = nccl::aborted_message(w, "barrier");
  EXPECT_NE(a.find("barrier: the NCCL communicator was aborted after an earlier error"), std::string::npos) << a;
}

TEST(NcclPlan, BuffersNeedNonNegativeCountsAndPointers) {
  int x = 0;
  nccl::check_buffer(&x, 1, "send", "allreduce", "dp_group");
  nccl::check_buffer(nullptr, 0, "send", "allreduce", "dp_group");  // nothing to move
  expect_error<InvalidArgument>([] { nccl::check_buffer(nullptr, 3, "recv", "allreduce", "dp_group"); },
                                {"allreduce on 'dp_group'", "recv buffer is null", "count is 3"});
  expect_error<InvalidArgument>([&] { nccl::check_buffer(&x, -1, "send", "all_gather", "tp_group"); },
                                {"all_gather on 'tp_group'", "send count must be >= 0, got -1"});
}

TEST(NcclPlan, PeersAndRootsMustBeInTheGroup) {
  nccl::check_peer(0, 2, "peer", "send", "g");
  nccl::check_peer(1, 2, "peer", "send", "g");
  expect_error<InvalidArgument>([] { nccl::check_peer(2, 2, "peer", "send", "g"); },
                                {"send on 'g'", "peer 2 is outside the group of 2 ranks"});
  expect_error<InvalidArgument>([] { nccl::check_peer(-1, 4, "root", "broadcast", "world"); },
                                {"broadcast on 'world'", "root -1"});
}

TEST(NcclPlan, OnlyDeviceMemoryOfTheCommunicatorsDeviceIsAccepted) {
  nccl::check_memory(cudaMemoryTypeDevice, 1, 1, "send", "allreduce", "g");
  nccl::check_memory(cudaMemoryTypeManaged, 0, 1, "send", "allreduce", "g");
  expect_error<InvalidArgument>(
      [] { nccl::check_memory(cudaMemoryTypeUnregistered, -2, 0, "recv", "alltoallv", "ep_group"); },
      {"alltoallv on 'ep_group'", "recv buffer is not device memory", "use the MPI communicator for host data"});
  expect_error<InvalidArgument>([] { nccl::check_memory(cudaMemoryTypeHost, 0, 0, "send", "allreduce", "g"); },
                                {"send buffer is not device memory"});
  expect_error<InvalidArgument>([] { nccl::check_memory(cudaMemoryTypeDevice, 0, 1, "send", "allreduce", "g"); },
                                {"send buffer is on device 0 but the communicator runs on device 1"});
}

TEST(NcclPlan, BlockBuffersAreApartOrExactlyThisRanksBlock) {
  std::vector<float> whole(4 * 8), other(8);
  const size_t block = 8 * sizeof(float);
  nccl::check_block_overlap(other.data(), whole.data(), block, 2, 4, "all_gather", "g");      // apart
  nccl::check_block_overlap(whole.data() + 16, whole.data(), block, 2, 4, "all_gather", "g");  // in place
  expect_error<InvalidArgument>(
      [&] { nccl::check_block_overlap(whole.data() + 8, whole.data(), block, 2, 4, "reduce_scatter", "dp_group"); },
      {"reduce_scatter on 'dp_group'", "not this rank's block (2)"});
  expect_error<InvalidArgument>(  // half a block off
      [&] { nccl::check_block_overlap(whole.data() + 20, whole.data(), block, 2, 4, "all_gather", "g"); },
      {"overlap"});
  // All-reduce uses size 1, rank 0: in place or apart, never shifted.
  nccl::check_block_overlap(other.data(), other.data(), block, 0, 1, "allreduce", "g");
  expect_error<InvalidArgument>(
      [&] { nccl::check_block_overlap(whole.data() + 1, whole.data(), block, 0, 1, "allreduce", "g"); }, {"overlap"});
  nccl::check_block_overlap(whole.data() + 1, whole.data(), 0, 0, 1, "allreduce", "g");  // empty: nothing to check
}

TEST(NcclPlan, TotalElementsRefusesOverflow) {
  EXPECT_EQ(nccl::total_elements(3, 4, 4, "reduce_scatter", "g"), 12);
  EXPECT_EQ(nccl::total_elements(0, 4, 4, "reduce_scatter", "g"), 0);
  expect_error<InvalidArgument>([] { nccl::total_elements(-1, 4, 4, "all_gather", "g"); }, {"must be >= 0"});
  const int64_t huge = std::numeric_limits<int64_t>::max() / 8;
  expect_error<InvalidArgument>([&] { nccl::total_elements(huge, 4, 4, "all_gather", "g"); }, {"overflow"});
}

struct Counts {
  std::vector<int64_t> sc, sd, rc, rd;
};

std::vector<nccl::PeerTransfer> plan(const Counts& c, int rank, int64_t send_cap = -1, int64_t recv_cap = -1,
                                     size_t elem_bytes = 4) {
  return nccl::plan_alltoallv(rank, static_cast<int>(c.sc.size()), c.sc.data(), c.sd.data(), c.rc.data(),
                              c.rd.data(), elem_bytes, send_cap, recv_cap, "ep_group");
}

TEST(NcclPlan, AlltoallvPlanDropsPeersWithNothingToMove) {
  // Rank 1 of 4: sends 2 to peer 0, nothing to 1 (itself) and 3, 5 to peer 2;
  // receives 4 from peer 3 only.
  Counts c{{2, 0, 5, 0}, {0, 2, 2, 7}, {0, 0, 0, 4}, {0, 0, 0, 0}};
  const auto p = plan(c, 1, 7, 4);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].peer, 0);
  EXPECT_EQ(p[0].send_offset, 0);
  EXPECT_EQ(p[0].send_count, 2);
  EXPECT_EQ(p[0].recv_count, 0);
  EXPECT_EQ(p[1].peer, 2);
  EXPECT_EQ(p[1].send_offset, 2);
  EXPECT_EQ(p[1].send_count, 5);
  EXPECT_EQ(p[2].peer, 3);
  EXPECT_EQ(p[2].send_count, 0);
  EXPECT_EQ(p[2].recv_offset, 0);
  EXPECT_EQ(p[2].recv_count, 4);
}

TEST(NcclPlan, AlltoallvPlanIsEmptyWhenEveryCountIsZero) {
  Counts c{{0, 0}, {5, 9}, {0, 0}, {3, 100}};  // displacements of empty blocks are not range-checked
  EXPECT_TRUE(plan(c, 0, 0, 0).empty());
}

TEST(NcclPlan, AlltoallvPlanKeepsTheSelfMessage) {
  Counts c{{3}, {1}, {3}, {2}};
  const auto p = plan(c, 0, 4, 5);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].peer, 0);
  EXPECT_EQ(p[0].send_offset, 1);
  EXPECT_EQ(p[0].recv_offset, 2);
  EXPECT_EQ(p[0].recv_count, 3);
}

TEST(NcclPlan, AlltoallvPlanChecksRanges) {
  Counts ok{{2, 2}, {0, 2}, {2, 2}, {0, 2}};
  EXPECT_EQ(plan(ok, 0, 4, 4).size(), 2u);
  EXPECT_EQ(plan(ok, 0).size(), 2u);  // capacities unknown
  expect_error<InvalidArgument>([&] { plan(ok, 0, 3, 4); },
                                {"alltoallv on 'ep_group'", "send block for peer 1 is elements [2, 4)",
                                 "send buffer holds 3"});
  expect_error<InvalidArgument>([&] { plan(ok, 0, 4, 3); }, {"recv block for peer 1", "recv buffer holds 3"});

  Counts negative{{2, -1}, {0, 2}, {2, 2}, {0, 2}};
  expect_error<InvalidArgument>([&] { plan(negative, 0); }, {"send count -1", "for peer 1", ">= 0"});
  Counts negative_displ{{2, 2}, {0, 2}, {2, 2}, {-4, 2}};
  expect_error<InvalidArgument>([&] { plan(negative_displ, 0); }, {"recv count 2 and displacement -4 for peer 0"});

  const int64_t big = std::numeric_limits<int64_t>::max() / 4;
  Counts overflow{{2, 2}, {0, big}, {2, 2}, {0, 2}};
  expect_error<InvalidArgument>([&] { plan(overflow, 0); }, {"send block for peer 1", "overflows"});
}

TEST(NcclPlan, AlltoallvPlanRefusesOverlappingReceives) {
  Counts c{{1, 1, 1}, {0, 1, 2}, {2, 2, 1}, {0, 1, 4}};  // peers 0 [0,2) and 1 [1,3) overlap
  expect_error<InvalidArgument>([&] { plan(c, 2); }, {"receive blocks of peers 0 [0, 2) and 1 [1, 3) overlap"});
  Counts touching{{1, 1, 1}, {0, 1, 2}, {2, 2, 1}, {2, 0, 4}};  // [2,4), [0,2), [4,5): adjacent is fine
  EXPECT_EQ(plan(touching, 2).size(), 3u);
}

TEST(NcclPlan, AlltoallvSelfCountsMustAgree) {
  Counts c{{1, 3}, {0, 1}, {1, 2}, {0, 1}};  // rank 1 sends itself 3, expects 2
  expect_error<InvalidArgument>([&] { plan(c, 1); }, {"rank 1 sends 3 elements to itself but expects to receive 2"});
}

TEST(NcclPlan, AlltoallvRefusesNullArraysAndBadRanks) {
  std::vector<int64_t> z(2, 0);
  expect_error<InvalidArgument>(
      [&] { nccl::plan_alltoallv(0, 2, nullptr, z.data(), z.data(), z.data(), 4, -1, -1, "g"); },
      {"must not be null"});
  expect_error<InvalidArgument>(
      [&] { nccl::plan_alltoallv(2, 2, z.data(), z.data(), z.data(), z.data(), 4, -1, -1, "g"); },
      {"rank 2 outside a group of 2"});
}

TEST(NcclPlan, PollingSpinsThenYieldsThenSleeps) {
  EXPECT_EQ(nccl::poll_phase(0.0), nccl::PollPhase::Spin);
  EXPECT_EQ(nccl::poll_phase(50e-6), nccl::PollPhase::Spin);
  EXPECT_EQ(nccl::poll_phase(1e-3), nccl::PollPhase::Yield);
  EXPECT_EQ(nccl::poll_phase(0.5), nccl::PollPhase::Sleep);
}

}  // namespace
}  // namespace sy
