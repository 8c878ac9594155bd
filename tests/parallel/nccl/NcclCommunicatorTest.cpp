// The NCCL communicator on one rank and one GPU (no MPI: make_local_nccl_communicator):
// every collective moves device data as the interface says, zero counts are
// no-ops, host buffers and bad arguments are refused, and the ordering against a
// compute stream holds both ways (inputs written on the compute stream are seen;
// the compute stream waits for outputs without a host wait). Multi-rank behaviour
// (peers, timeouts) needs mpirun and is not covered here.
#include "parallel/nccl/nccl_communicator.hpp"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/support/cuda_test_support.hpp"

namespace sy::par {
namespace {

using test::DeviceBuffer;
using test::TestStream;

constexpr double kTimeout = 60.0;

std::unique_ptr<NcclCommunicator> local(const std::string& name = "test_group") {
  int device = 0;
  SY_CUDA_CHECK(cudaGetDevice(&device));
  return make_local_nccl_communicator(device, name, kTimeout);
}

std::vector<float> iota_floats(size_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(NcclCommunicator, OneRankGroupReportsItself) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local("ep_group");
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->name(), "ep_group");
  EXPECT_NE(c->comm_stream(), nullptr);
  EXPECT_FALSE(c->aborted());
}

TEST(NcclCommunicator, AllreduceSumAndMaxInPlaceAndNot) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local();
  const std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f};
  auto send = DeviceBuffer<float>::from_host(v);
  DeviceBuffer<float> recv(v.size());
  c->allreduce(send.get(), recv.get(), 5, ElemType::F32, ReduceOp::Sum);  // one rank: the sum is the value
  EXPECT_EQ(recv.to_float(), v);
  c->allreduce(send.get(), send.get(), 5, ElemType::F32, ReduceOp::Max);  // in place
  EXPECT_EQ(send.to_float(), v);

  auto ints = DeviceBuffer<int64_t>::from_host(std::vector<int64_t>{int64_t(1) << 40, -3});
  auto req = c->iallreduce(ints.get(), ints.get(), 2, ElemType::I64, ReduceOp::Min);
  req->wait();
  EXPECT_TRUE(req->test());
  EXPECT_EQ(ints.raw(), (std::vector<int64_t>{int64_t(1) << 40, -3}));
}

TEST(NcclCommunicator, AllreduceOfBf16) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local();
  const std::vector<float> v = {0.5f, -1.25f, 96.0f};
  auto buf = DeviceBuffer<__nv_bfloat16>::from_host(v);
  c->allreduce(buf.get(), buf.get(), 3, ElemType::BF16, ReduceOp::Sum);
  EXPECT_EQ(buf.to_float(), v);  // exact in bf16
}

TEST(NcclCommunicator, ReduceScatterAndAllGather) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local();
  const std::vector<float> v = iota_floats(6, 1.0f);
  auto send = DeviceBuffer<float>::from_host(v);
  DeviceBuffer<float> block(6), all(6);
  c->reduce_scatter(send.get(), block.get(), 6, ElemType::F32, ReduceOp::Sum);
  EXPECT_EQ(block.to_float(), v);
  c->all_gather(block.get(), all.get(), 6, ElemType::F32);
  EXPECT_EQ(all.to_float(), v);
  // In place: the block is this rank's (the only) block of the full buffer.
  c->all_gather(all.get(), all.get(), 6, ElemType::F32);
  EXPECT_EQ(all.to_float(), v);
}

TEST(NcclCommunicator, AlltoallvMovesTheSelfBlockAndSkipsZeroCounts) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local();
  auto send = DeviceBuffer<int32_t>::from_host(std::vector<int32_t>{-1, 10, 11, 12, -1});
  auto recv = DeviceBuffer<int32_t>::from_host(std::vector<int32_t>{7, 7, 7, 7, 7, 7});
  const int64_t sc = 3, sd = 1, rc = 3, rd = 2;
  c->alltoallv(send.get(), &sc, &sd, recv.get(), &rc, &rd, ElemType::I32);
  EXPECT_EQ(recv.raw(), (std::vector<int32_t>{7, 7, 10, 11, 12, 7}));

  // Nothing to move: a completed request, the buffer untouched.
  const int64_t zero = 0, displ = 4;
  auto req = c->ialltoallv(send.get(), &zero, &displ, recv.get(), &zero, &displ, ElemType::I32);
  EXPECT_TRUE(req->test());
  req->wait();
  EXPECT_EQ(recv.raw(), (std::vector<int32_t>{7, 7, 10, 11, 12, 7}));

  // bf16 rows through the NCCL-type overload, with capacities checked.
  auto rows = DeviceBuffer<__nv_bfloat16>::from_host(std::vector<float>{1, 2, 3, 4});
  DeviceBuffer<__nv_bfloat16> out(4);
  out.zero();
  const int64_t n = 4, at = 0;
  c->ialltoallv(rows.get(), &n, &at, out.get(), &n, &at, ncclBfloat16, 4, 4)->wait();
  EXPECT_EQ(out.to_float(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_THROW(c->ialltoallv(rows.get(), &n, &at, out.get(), &n, &at, ncclBfloat16, 3, 4), InvalidArgument);
}

TEST(NcclCommunicator, BroadcastFromTheOnlyRankAndBadRoot) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local();
  const std::vector<float> v = {3, 1, 4, 1, 5};
  auto buf = DeviceBuffer<float>::from_host(v);
  c->broadcast(buf.get(), 5, ElemType::F32, 0);
  EXPECT_EQ(buf.to_float(), v);
  EXPECT_THROW(c->ibroadcast(buf.get(), 5, ElemType::F32, 1), InvalidArgument);
}

TEST(NcclCommunicator, BarrierCompletes) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local();
  c->barrier();
  auto req = c->ibarrier();
  req->wait();
  EXPECT_TRUE(req->test());
}

TEST(NcclCommunicator, RefusesHostBuffersAndBadPeers) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local("dp_group");
  std::vector<float> host(4, 1.0f);
  try {
    c->allreduce(host.data(), host.data(), 4, ElemType::F32, ReduceOp::Sum);
    ADD_FAILURE() << "a host buffer was accepted";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("allreduce on 'dp_group'"), std::string::npos) << what;
    EXPECT_NE(what.find("not device memory"), std::string::npos) << what;
  }
  DeviceBuffer<float> dev(4);
  EXPECT_THROW(c->isend(dev.get(), 4, ElemType::F32, 1, 0), InvalidArgument);
  EXPECT_THROW(c->irecv(dev.get(), 4, ElemType::F32, -1, 0), InvalidArgument);
  EXPECT_THROW(c->iallreduce(dev.get(), dev.get(), -1, ElemType::F32, ReduceOp::Sum), InvalidArgument);
  EXPECT_FALSE(c->aborted());  // argument errors leave the communicator usable
  c->allreduce(dev.get(), dev.get(), 4, ElemType::F32, ReduceOp::Sum);
}

// A large memset queued on the compute stream, then an all-reduce reading the
// buffer: the communicator must wait for the memset (no host synchronization in
// between). The result is consumed on the compute stream after stream_wait.
TEST(NcclCommunicator, OrderedAfterTheComputeStreamAndBeforeItsConsumers) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local();
  TestStream compute;
  c->set_compute_stream(compute.get());
  const size_t n = size_t(1) << 25;  // 128 MiB of f32: long enough to race if unordered
  DeviceBuffer<float> in(n), out(n);
  SY_CUDA_CHECK(cudaMemset(in.get(), 0, n * sizeof(float)));
  SY_CUDA_CHECK(cudaMemset(out.get(), 0, n * sizeof(float)));
  SY_CUDA_CHECK(cudaDeviceSynchronize());

  // Several passes so the compute stream stays busy well past the all-reduce's launch;
  // the last one leaves 0x3F3F3F3F in every float.
  for (int pass = 0; pass < 8; ++pass)
    SY_CUDA_CHECK(cudaMemsetAsync(in.get(), pass % 2 == 1 ? 0x3F : 0x11, n * sizeof(float), compute.get()));
  auto req = c->iallreduce(in.get(), out.get(), static_cast<int64_t>(n), ElemType::F32, ReduceOp::Sum);
  c->stream_wait(*req, compute.get());
  std::vector<float> host(n, -1.0f);
  SY_CUDA_CHECK(cudaMemcpyAsync(host.data(), out.get(), n * sizeof(float), cudaMemcpyDeviceToHost, compute.get()));
  compute.sync();
  EXPECT_TRUE(req->test());
  float expected = 0;
  const uint32_t bits = 0x3F3F3F3Fu;
  std::memcpy(&expected, &bits, sizeof expected);
  size_t wrong = 0;
  for (float x : host) wrong += x != expected;
  EXPECT_EQ(wrong, 0u) << "elements of the all-reduce that missed the compute stream's memset";

  // stream_wait_all: the compute stream waits for everything queued so far.
  SY_CUDA_CHECK(cudaMemsetAsync(in.get(), 0, n * sizeof(float), compute.get()));
  auto req2 = c->iallreduce(in.get(), out.get(), static_cast<int64_t>(n), ElemType::F32, ReduceOp::Sum);
  c->stream_wait_all(compute.get());
  float last = -1.0f;
  SY_CUDA_CHECK(cudaMemcpyAsync(&last, out.get() + n - 1, sizeof(float), cudaMemcpyDeviceToHost, compute.get()));
  compute.sync();
  EXPECT_EQ(last, 0.0f);
  req2->wait();
}

TEST(NcclCommunicator, RequestOutlivesItsCommunicator) {
  SY_SKIP_WITHOUT_GPU();
  auto buf = DeviceBuffer<float>::from_host(std::vector<float>{2, 4});
  RequestPtr req;
  {
    auto c = local();
    req = c->iallreduce(buf.get(), buf.get(), 2, ElemType::F32, ReduceOp::Sum);
  }
  req->wait();
  EXPECT_EQ(buf.to_float(), (std::vector<float>{2, 4}));
}

TEST(NcclCommunicator, SplitOfOneRankIsOneRank) {
  SY_SKIP_WITHOUT_GPU();
  auto c = local("world");
  auto sub = c->split_group(0, 0, "ep_group");
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->name(), "ep_group");
  auto buf = DeviceBuffer<float>::from_host(std::vector<float>{1, 2, 3});
  sub->allreduce(buf.get(), buf.get(), 3, ElemType::F32, ReduceOp::Sum);
  EXPECT_EQ(buf.to_float(), (std::vector<float>{1, 2, 3}));
}

// The MPI bootstrap over MPI_COMM_SELF, when this executable runs with MPI
// initialized (the unit-test main does not initialize it).
TEST(NcclCommunicator, BootstrapsThroughMpi) {
  SY_SKIP_WITHOUT_GPU();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) GTEST_SKIP() << "MPI is not initialized in this executable";
  int device = 0;
  SY_CUDA_CHECK(cudaGetDevice(&device));
  auto c = make_nccl_communicator(MPI_COMM_SELF, device, "self", kTimeout);
  EXPECT_EQ(c->size(), 1);
  auto buf = DeviceBuffer<float>::from_host(std::vector<float>{1.0f, -1.0f});
  c->allreduce(buf.get(), buf.get(), 2, ElemType::F32, ReduceOp::Sum);
  EXPECT_EQ(buf.to_float(), (std::vector<float>{1.0f, -1.0f}));
  auto sub = c->split_group(0, 0, "self_split");
  EXPECT_EQ(sub->size(), 1);
  sub->barrier();
}

}  // namespace
}  // namespace sy::par
