// Every all-to-all algorithm (parallel/alltoall.hpp) against MPI_Alltoallv
// (Communicator::alltoallv) on the world of this run: the same bytes in the
// whole receive buffer (the gaps between blocks untouched), for random uneven
// counts with zero-length and self messages, float and int64, blocks out of
// rank order in the send buffer, packed and gapped receive layouts, one and
// several emulated nodes (2dh) and leaves (flowsplit, s = 1 .. 4).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "parallel/alltoall.hpp"
#include "tests/support/mpi_support.hpp"

namespace sy::par {
namespace {

struct Case {
  std::string label;
  AllToAllAlgo algo;
  AllToAllTopology topology;
};

// The algorithms and topologies that fit W ranks.
std::vector<Case> cases(int W) {
  std::vector<Case> out;
  out.push_back({"linear", AllToAllAlgo::Linear, {}});
  AllToAllTopology paired;
  paired.linear_paired = true;
  out.push_back({"linear_paired", AllToAllAlgo::Linear, paired});
  out.push_back({"auto", AllToAllAlgo::Auto, {}});
  for (int m : {W, 1, W / 2}) {
    if (m < 1 || W % m != 0) continue;
    AllToAllTopology t;
    t.ranks_per_node = m;
    out.push_back({"2dh m=" + std::to_string(m), AllToAllAlgo::TwoDH, t});
  }
  for (int L : {W / 2, 1, W})
    for (int s : {1, 2, 3, 4}) {
      if (L < 1 || W % L != 0) continue;
      AllToAllTopology t;
      t.ranks_per_leaf = L;
      t.spine_paths = s;
      out.push_back({"flowsplit L=" + std::to_string(L) + " s=" + std::to_string(s), AllToAllAlgo::FlowSplit, t});
    }
  return out;
}

// One exchange's layout, the same on every rank from the seed: counts[src][dst]
// elements, a quarter of them zero (self included at times), max_count large
// enough in some seeds to leave MPI's eager range.
struct Layout {
  std::vector<int64_t> sc, sd, rc, rd;  // (W) this rank's counts and displacements
  int64_t send_elems = 0, recv_elems = 0;
};

Layout make_layout(int W, int r, uint64_t seed, int64_t max_count, bool packed_recv) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> counts(W * W);
  for (auto& c : counts) c = (rng() % 4 == 0) ? 0 : int64_t(rng() % (max_count + 1));
  Layout l;
  l.sc.resize(W);
  l.sd.resize(W);
  l.rc.resize(W);
  l.rd.resize(W);
  for (int p = 0; p < W; ++p) {
    l.sc[p] = counts[r * W + p];
    l.rc[p] = counts[p * W + r];
  }
  // Send blocks in a shuffled order with gaps; receive blocks packed in rank
  // order, or reversed with gaps.
  std::mt19937_64 local(seed * 7919 + r);
  std::vector<int> order(W);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), local);
  int64_t pos = 0;
  for (int p : order) {
    pos += int64_t(local() % 3);
    l.sd[p] = pos;
    pos += l.sc[p];
  }
  l.send_elems = pos + 1;
  pos = 0;
  for (int k = 0; k < W; ++k) {
    const int p = packed_recv ? k : W - 1 - k;
    if (!packed_recv) pos += 1 + int64_t(local() % 3);
    l.rd[p] = pos;
    pos += l.rc[p];
  }
  l.recv_elems = pos + 1;
  return l;
}

template <typename T>
void check_against_mpi(AllToAll& a2a, MpiCommunicator& world, uint64_t seed, int64_t max_count, bool packed_recv,
                       bool poll, const std::string& label) {
  const int W = world.size(), r = world.rank();
  const Layout l = make_layout(W, r, seed, max_count, packed_recv);
  std::vector<T> send(l.send_elems);
  for (size_t i = 0; i < send.size(); ++i) send[i] = static_cast<T>(int64_t(r) * 1000003 + int64_t(i) * 7 + 1);
  const T sentinel = static_cast<T>(-5);
  std::vector<T> want(l.recv_elems, sentinel), got(l.recv_elems, sentinel);
  world.alltoallv(send.data(), l.sc.data(), l.sd.data(), want.data(), l.rc.data(), l.rd.data(), elem_type_of<T>());
  auto req = a2a.start(send.data(), l.sc.data(), l.sd.data(), got.data(), l.rc.data(), l.rd.data(),
                       elem_type_of<T>());
  if (poll) {
    while (!req->test()) {
    }
    EXPECT_TRUE(req->test());
  } else {
    req->wait();
  }
  const bool same = std::memcmp(want.data(), got.data(), want.size() * sizeof(T)) == 0;
  EXPECT_TRUE(same) << label << ", seed " << seed << ", max_count " << max_count
                    << (packed_recv ? ", packed" : ", gapped") << (poll ? ", polled" : ", waited") << " on rank " << r;
  if (!same) {
    for (size_t i = 0; i < want.size(); ++i)
      if (std::memcmp(&want[i], &got[i], sizeof(T)) != 0) {
        ADD_FAILURE() << "first difference at element " << i << ": MPI " << want[i] << ", " << label << " " << got[i];
        break;
      }
  }
}

TEST(AllToAllMpi, EveryAlgorithmEqualsMpiAlltoallv) {
  auto world = test::world_communicator();
  for (const Case& c : cases(world->size())) {
    // One object per case, reused over every exchange: small, large, small.
    auto a2a = make_alltoall(c.algo, *world, c.topology);
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      const int64_t max_count = seed % 3 == 0 ? 20000 : 17;  // 80 KB+ blocks leave MPI's eager sends
      const bool packed = seed % 2 == 0, poll = seed % 4 == 1;
      check_against_mpi<float>(*a2a, *world, seed, max_count, packed, poll, c.label);
      check_against_mpi<int64_t>(*a2a, *world, 100 + seed, max_count, !packed, !poll, c.label);
    }
  }
}

TEST(AllToAllMpi, AllZeroAndOnlySelf) {
  auto world = test::world_communicator();
  const int W = world->size(), r = world->rank();
  for (const Case& c : cases(W)) {
    auto a2a = make_alltoall(c.algo, *world, c.topology);
    std::vector<int64_t> zero(W, 0), self(W, 0), displs(W, 0);
    self[r] = 5;
    std::vector<float> send = {1, 2, 3, 4, 5}, recv(5, -1.0f);
    a2a->run(send.data(), zero.data(), displs.data(), recv.data(), zero.data(), displs.data(), ElemType::F32);
    EXPECT_EQ(recv, std::vector<float>(5, -1.0f)) << c.label;
    a2a->run(send.data(), self.data(), displs.data(), recv.data(), self.data(), displs.data(), ElemType::F32);
    EXPECT_EQ(recv, send) << c.label;
  }
}

// From the config keys: 2 emulated nodes and leaves of W/2 ranks (one rank: 1).
TEST(AllToAllMpi, FromParallelConfig) {
  auto world = test::world_communicator();
  const int W = world->size(), half = std::max(1, W / 2);
  ParallelConfig pc;
  pc.ranks_per_node = half;
  pc.spine_paths = 3;
  const AllToAllTopology t = alltoall_topology(pc);
  EXPECT_EQ(t.ranks_per_node, half);
  EXPECT_EQ(t.ranks_per_leaf, half);  // 0 = ranks_per_node
  EXPECT_EQ(t.spine_paths, 3);
  for (AllToAllAlgo algo : {AllToAllAlgo::Linear, AllToAllAlgo::TwoDH, AllToAllAlgo::FlowSplit, AllToAllAlgo::Auto}) {
    auto a2a = make_alltoall(algo, *world, pc);
    check_against_mpi<float>(*a2a, *world, 77, 300, true, false, a2a->name());
  }
  EXPECT_STREQ(make_alltoall(AllToAllAlgo::Auto, *world, pc)->name(), "linear");
}

TEST(AllToAllMpi, RefusesNodesAndLeavesThatDoNotDivideTheGroup) {
  auto world = test::world_communicator();
  const int W = world->size();
  AllToAllTopology t;
  t.ranks_per_node = W + 1;
  EXPECT_THROW(make_alltoall(AllToAllAlgo::TwoDH, *world, t), ConfigError);
  t.ranks_per_leaf = W + 1;
  EXPECT_THROW(make_alltoall(AllToAllAlgo::FlowSplit, *world, t), ConfigError);
  t.ranks_per_leaf = 1;
  t.spine_paths = 0;
  EXPECT_THROW(make_alltoall(AllToAllAlgo::FlowSplit, *world, t), ConfigError);
}

TEST(AllToAllMpi, OneExchangeAtATimePerObject) {
  auto world = test::world_communicator();
  const int W = world->size();
  for (const Case& c : cases(W)) {
    auto a2a = make_alltoall(c.algo, *world, c.topology);
    std::vector<int64_t> ones(W, 1), displs(W);
    std::iota(displs.begin(), displs.end(), int64_t(0));
    std::vector<int32_t> send(W, world->rank()), recv(W, -1);
    auto req = a2a->start(send.data(), ones.data(), displs.data(), recv.data(), ones.data(), displs.data(),
                          ElemType::I32);
    EXPECT_THROW(a2a->start(send.data(), ones.data(), displs.data(), recv.data(), ones.data(), displs.data(),
                            ElemType::I32),
                 InvalidArgument)
        << c.label;
    req->wait();
    for (int p = 0; p < W; ++p) EXPECT_EQ(recv[p], p) << c.label;
    a2a->run(send.data(), ones.data(), displs.data(), recv.data(), ones.data(), displs.data(), ElemType::I32);
  }
}

}  // namespace
}  // namespace sy::par
