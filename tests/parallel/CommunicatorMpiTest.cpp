// Every collective of the MPI communicator against values computed by hand,
// on the world of this run (2 or 4 ranks).
#include <gtest/gtest.h>
#include <mpi.h>

#include <numeric>
#include <vector>

#include "core/error.hpp"
#include "parallel/mpi/mpi_communicator.hpp"
#include "tests/support/mpi_support.hpp"

namespace sy::par {
namespace {

TEST(CommunicatorMpi, AllreduceSumMaxMinInPlaceAndNot) {
  auto c = test::world_communicator();
  const int r = c->rank(), W = c->size();
  std::vector<double> v = {double(r), double(10 * r + 1)};
  std::vector<double> out(2);
  c->allreduce(v.data(), out.data(), 2, ElemType::F64, ReduceOp::Sum);
  EXPECT_EQ(out[0], W * (W - 1) / 2.0);
  EXPECT_EQ(out[1], 10.0 * W * (W - 1) / 2.0 + W);
  c->allreduce(v.data(), v.data(), 2, ElemType::F64, ReduceOp::Max);  // in place
  EXPECT_EQ(v[0], W - 1);
  int64_t m = 100 + r;
  c->allreduce(&m, 1, ReduceOp::Min);
  EXPECT_EQ(m, 100);
}

TEST(CommunicatorMpi, ReduceScatterAndAllGather) {
  auto c = test::world_communicator();
  const int r = c->rank(), W = c->size();
  const int64_t block = 3;
  std::vector<float> send(W * block), mine(block);
  for (int i = 0; i < W * block; ++i) send[i] = float(r + i);  // block j, element e: r + j*block + e
  c->reduce_scatter(send.data(), mine.data(), block, ElemType::F32, ReduceOp::Sum);
  for (int e = 0; e < block; ++e) EXPECT_EQ(mine[e], float(W * (W - 1) / 2 + W * (r * block + e)));
  std::vector<float> all(W * block);
  c->all_gather(mine.data(), all.data(), block, ElemType::F32);
  for (int j = 0; j < W; ++j)
    for (int e = 0; e < block; ++e) EXPECT_EQ(all[j * block + e], float(W * (W - 1) / 2 + W * (j * block + e)));
}

// bf16 is a storage type: gathered bit for bit, refused by reductions (MPI has no bf16 arithmetic).
TEST(CommunicatorMpi, Bf16MovesButDoesNotReduce) {
  auto c = test::world_communicator();
  const int r = c->rank(), W = c->size();
  const std::vector<float> values = {1.0f + float(r) / 128.0f, -3.5f, 1e-3f * float(r + 1)};
  std::vector<bf16> mine(values.size());
  for (size_t i = 0; i < values.size(); ++i) mine[i] = float_to_bf16(values[i]);
  std::vector<bf16> all(values.size() * size_t(W));
  c->all_gather(mine.data(), all.data(), int64_t(mine.size()), elem_type_of<bf16>());
  for (int j = 0; j < W; ++j) {
    const std::vector<float> theirs = {1.0f + float(j) / 128.0f, -3.5f, 1e-3f * float(j + 1)};
    for (size_t i = 0; i < theirs.size(); ++i)
      EXPECT_EQ(all[size_t(j) * mine.size() + i].bits, float_to_bf16(theirs[i]).bits) << "rank " << j << " [" << i << "]";
  }
  try {
    c->allreduce(mine.data(), mine.data(), int64_t(mine.size()), ElemType::BF16, ReduceOp::Sum);
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reduce bf16"), std::string::npos) << e.what();
  }
}

// Uneven counts, zero-length messages and the self message.
TEST(CommunicatorMpi, AlltoallvWithUnevenAndEmptyMessages) {
  auto c = test::world_communicator();
  const int r = c->rank(), W = c->size();
  auto count = [](int from, int to) { return int64_t((from + 2 * to) % 3); };  // 0, 1 or 2 elements
  std::vector<int64_t> sc(W), sd(W), rc(W), rd(W);
  for (int p = 0; p < W; ++p) {
    sc[p] = count(r, p);
    rc[p] = count(p, r);
  }
  std::exclusive_scan(sc.begin(), sc.end(), sd.begin(), int64_t(0));
  std::exclusive_scan(rc.begin(), rc.end(), rd.begin(), int64_t(0));
  std::vector<int32_t> send(sd.back() + sc.back() + 1), recv(rd.back() + rc.back() + 1, -1);
  for (int p = 0; p < W; ++p)
    for (int64_t i = 0; i < sc[p]; ++i) send[sd[p] + i] = 1000 * r + 10 * p + int32_t(i);
  c->alltoallv(send.data(), sc.data(), sd.data(), recv.data(), rc.data(), rd.data(), ElemType::I32);
  for (int p = 0; p < W; ++p)
    for (int64_t i = 0; i < rc[p]; ++i) EXPECT_EQ(recv[rd[p] + i], 1000 * p + 10 * r + int32_t(i));
}

TEST(CommunicatorMpi, BroadcastSendRecvBarrierAndNonBlocking) {
  auto c = test::world_communicator();
  const int r = c->rank(), W = c->size();
  int64_t v = r == W - 1 ? 42 : 0;
  c->broadcast(&v, 1, ElemType::I64, W - 1);
  EXPECT_EQ(v, 42);
  // A ring: send to the right, receive from the left, both posted before waiting.
  double out = r, in = -1;
  auto rq = c->irecv(&in, 1, ElemType::F64, (r + W - 1) % W, 7);
  auto sq = c->isend(&out, 1, ElemType::F64, (r + 1) % W, 7);
  sq->wait();
  rq->wait();
  EXPECT_EQ(in, (r + W - 1) % W);
  EXPECT_TRUE(rq->test());
  c->barrier();
}

TEST(CommunicatorMpi, SplitMakesSubgroups) {
  auto c = test::world_communicator();
  auto half = c->split(c->rank() % 2, c->rank(), "parity");
  EXPECT_EQ(half->name(), "parity");
  EXPECT_EQ(half->size(), (c->size() + 1 - c->rank() % 2) / 2);
  int64_t one = 1;
  half->allreduce(&one, 1);
  EXPECT_EQ(one, half->size());
}

// A peer that never arrives becomes an error naming the rank and the operation.
TEST(CommunicatorMpi, WaitTimesOutNamingRankAndOperation) {
  auto c = test::world_communicator(0.3);
  static double sink = 0;  // the stale receive completes into it later
  const int peer = c->size() > 1 ? 1 : 0;  // on one rank, a receive from itself
  if (c->rank() == 0) {
    auto rq = c->irecv(&sink, 1, ElemType::F64, peer, 999);
    try {
      rq->wait();
      FAIL() << "expected a timeout";
    } catch (const CommError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
      EXPECT_NE(msg.find("recv on world"), std::string::npos) << msg;
      EXPECT_NE(msg.find("parallel.timeout_s"), std::string::npos) << msg;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (c->rank() == peer) {
    double one = 1;
    MPI_Send(&one, 1, MPI_DOUBLE, 0, 999, c->comm());  // matches the abandoned receive
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace sy::par
