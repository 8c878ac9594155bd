// Link emulation over real MPI on 1, 2 and 4 ranks: every collective through
// the decorator gives the undecorated communicator's results, the process
// grid hands out decorated groups sharing one NIC, and one coarse lower bound
// on the time of a large send (never an upper bound: speed is for benchmarks).
#include "parallel/link_emulation.hpp"

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <numeric>
#include <vector>

#include "parallel/process_grid.hpp"
#include "tests/support/mpi_support.hpp"

namespace sy::par {
namespace {

// A fast link: the decorated results are checked, not the time they take.
constexpr LinkEmulation kFast{100.0, 1.0};

TEST(LinkEmulationMpi, EveryCollectiveEqualsTheUndecoratedOne) {
  auto plain = test::world_communicator();
  EmulatedLinkCommunicator emu(test::world_communicator(), make_emulated_nic(kFast));
  const int r = plain->rank(), W = plain->size();
  ASSERT_EQ(emu.rank(), r);
  ASSERT_EQ(emu.size(), W);
  EXPECT_EQ(emu.name(), "world");

  const int64_t n = 1000;
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = 0.5 * double(r + 1) * double(i % 17) - double(i);
  auto both = [&](auto&& op) {  // op(comm) -> result vector
    auto a = op(static_cast<Communicator&>(*plain));
    auto b = op(static_cast<Communicator&>(emu));
    EXPECT_EQ(a, b);
  };
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min})
    both([&](Communicator& c) {
      std::vector<double> out(n);
      c.allreduce(v.data(), out.data(), n, ElemType::F64, op);
      return out;
    });
  both([&](Communicator& c) {  // in place
    std::vector<double> io = v;
    c.allreduce(io.data(), io.data(), n, ElemType::F64, ReduceOp::Sum);
    return io;
  });
  both([&](Communicator& c) {
    std::vector<float> send(W * 7), out(7);
    for (int i = 0; i < W * 7; ++i) send[i] = float(r * 100 + i);
    c.reduce_scatter(send.data(), out.data(), 7, ElemType::F32, ReduceOp::Sum);
    return out;
  });
  both([&](Communicator& c) {
    std::vector<int64_t> mine(5, 10 * r + 1), all(5 * W);
    c.all_gather(mine.data(), all.data(), 5, ElemType::I64);
    return all;
  });
  both([&](Communicator& c) {  // uneven, empty and self blocks
    std::vector<int64_t> sc(W), sd(W), rc(W), rd(W);
    for (int p = 0; p < W; ++p) {
      sc[p] = (r + 2 * p) % 3 * 11;
      rc[p] = (p + 2 * r) % 3 * 11;
    }
    std::exclusive_scan(sc.begin(), sc.end(), sd.begin(), int64_t(0));
    std::exclusive_scan(rc.begin(), rc.end(), rd.begin(), int64_t(0));
    std::vector<int32_t> send(sd.back() + sc.back()), recv(rd.back() + rc.back(), -1);
    std::iota(send.begin(), send.end(), 1000 * r);
    c.alltoallv(send.data(), sc.data(), sd.data(), recv.data(), rc.data(), rd.data(), ElemType::I32);
    return recv;
  });
  both([&](Communicator& c) {
    std::vector<uint8_t> buf(33, r == W - 1 ? 7 : 0);
    c.broadcast(buf.data(), 33, ElemType::U8, W - 1);
    return buf;
  });
  both([&](Communicator& c) {  // a ring of non-blocking send / receive
    std::vector<double> out(n, r), in(n, -1);
    auto rq = c.irecv(in.data(), n, ElemType::F64, (r + W - 1) % W, 5);
    auto sq = c.isend(out.data(), n, ElemType::F64, (r + 1) % W, 5);
    sq->wait();
    rq->wait();
    EXPECT_TRUE(rq->test());
    return in;
  });
  emu.barrier();
}

TEST(LinkEmulationMpi, SplitGroupsAreDecoratedAndShareTheNic) {
  auto nic = make_emulated_nic(kFast);
  EmulatedLinkCommunicator emu(test::world_communicator(), nic);
  auto half = emu.split_group(emu.rank() % 2, emu.rank(), "parity");
  auto* dec = dynamic_cast<EmulatedLinkCommunicator*>(half.get());
  ASSERT_NE(dec, nullptr);
  EXPECT_EQ(dec->nic(), nic);
  EXPECT_EQ(half->name(), "parity");
  int64_t one = 1;
  half->allreduce(&one, 1);
  EXPECT_EQ(one, half->size());
}

TEST(LinkEmulationMpi, ProcessGridDecoratesEveryGroupWithOneNic) {
  ParallelConfig pc;
  pc.dp = test::world_size();
  pc.emulate_link = kFast;
  ProcessGrid grid(pc);
  ASSERT_NE(grid.emulated_nic(), nullptr);
  for (Communicator* g : {&grid.world(), &grid.tp_group(), &grid.ep_group(), &grid.dp_group(), &grid.token_group(),
                          &grid.expert_group(), &grid.node_group()}) {
    auto* dec = dynamic_cast<EmulatedLinkCommunicator*>(g);
    ASSERT_NE(dec, nullptr) << g->name();
    EXPECT_EQ(dec->nic(), grid.emulated_nic()) << g->name();
  }
  int64_t v = grid.world_rank();
  grid.dp_group().allreduce(&v, 1);
  EXPECT_EQ(v, int64_t(pc.dp) * (pc.dp - 1) / 2);

  pc.emulate_link = {};  // off: the plain MPI groups
  ProcessGrid off(pc);
  EXPECT_EQ(off.emulated_nic(), nullptr);
  EXPECT_EQ(dynamic_cast<EmulatedLinkCommunicator*>(&off.world()), nullptr);
}

// 10 MB at 1 Gbit/s is 80 ms on the link: a lower bound holds however fast or
// slow the machine is.
TEST(LinkEmulationMpi, LargeSendTakesAtLeastItsTimeOnTheLink) {
  const int W = test::world_size();
  if (W < 2) GTEST_SKIP() << "a send to another rank needs 2 ranks";
  EmulatedLinkCommunicator emu(test::world_communicator(), make_emulated_nic({1.0, 10.0}));
  const int64_t n = 10'000'000;
  std::vector<uint8_t> buf(n, uint8_t(emu.rank()));
  emu.barrier();
  const auto t0 = std::chrono::steady_clock::now();
  if (emu.rank() == 0) emu.send(buf.data(), n, ElemType::U8, 1, 9);
  if (emu.rank() == 1) emu.recv(buf.data(), n, ElemType::U8, 0, 9);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (emu.rank() <= 1) {
    EXPECT_GE(s, 0.080);
  }
  if (emu.rank() == 1) {
    EXPECT_EQ(buf[n - 1], 0);
  }
}

}  // namespace
}  // namespace sy::par
