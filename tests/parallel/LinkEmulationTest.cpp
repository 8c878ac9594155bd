// The link-emulation decorator's deadline arithmetic, with a fake inner
// communicator and a fake clock: no timing, no MPI.
#include "parallel/link_emulation.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "core/error.hpp"

namespace sy::par {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using time_point = LinkClock::time_point;

// Time moves only when a test sets it, or when someone sleeps on it.
class FakeClock final : public LinkClock {
 public:
  time_point now() const override { return now_; }
  void sleep_until(time_point t) const override {
    ++sleeps;
    now_ = std::max(now_, t);
  }
  void advance(nanoseconds d) { now_ += d; }
  mutable int sleeps = 0;

 private:
  mutable time_point now_ = time_point{} + std::chrono::seconds(100);
};

// A request its test decides the completion of.
struct FakeRequest final : Request {
  explicit FakeRequest(bool* done) : done_(done) {}
  bool test() override { return *done_; }
  void wait() override { *done_ = true; }
  bool* done_;
};

// Records the operations it receives; every request completes when `done` is set.
class FakeCommunicator final : public Communicator {
 public:
  FakeCommunicator(int rank, int size, std::string name = "fake") : rank_(rank), size_(size), name_(std::move(name)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  RequestPtr iallreduce(const void*, void*, int64_t, ElemType, ReduceOp) override { return op("allreduce"); }
  RequestPtr ireduce_scatter(const void*, void*, int64_t, ElemType, ReduceOp) override {
    return op("reduce_scatter");
  }
  RequestPtr iall_gather(const void*, void*, int64_t, ElemType) override { return op("all_gather"); }
  RequestPtr ialltoallv(const void*, const int64_t*, const int64_t*, void*, const int64_t*, const int64_t*,
                        ElemType) override {
    return op("alltoallv");
  }
  RequestPtr ibroadcast(void*, int64_t, ElemType, int) override { return op("broadcast"); }
  RequestPtr isend(const void*, int64_t, ElemType, int, int) override { return op("send"); }
  RequestPtr irecv(void*, int64_t, ElemType, int, int) override { return op("recv"); }
  RequestPtr ibarrier() override { return op("barrier"); }
  std::unique_ptr<Communicator> split_group(int color, int, const std::string& name) const override {
    return std::make_unique<FakeCommunicator>(0, color + 1, name);
  }

  std::vector<std::string> ops;
  bool done = true;

 private:
  RequestPtr op(const char* name) {
    ops.emplace_back(name);
    return std::make_unique<FakeRequest>(&done);
  }
  int rank_, size_;
  std::string name_;
};

// 10 Gbit/s moves 1.25 bytes per ns: 1.25 MB in exactly 1 ms. Latency 5 us.
struct Fixture {
  explicit Fixture(int rank = 0, int size = 2) : inner(rank, size) {}
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
  std::shared_ptr<EmulatedNic> nic = std::make_shared<EmulatedNic>(LinkEmulation{10.0, 5.0}, clock);
  FakeCommunicator inner;
  EmulatedLinkCommunicator comm{inner, nic};
  time_point t0 = clock->now();
  int64_t elapsed_ns() const { return (clock->now() - t0).count(); }
};

// Durations as integers, so that a failure prints readable numbers.
int64_t ns(nanoseconds d) { return d.count(); }

constexpr int64_t kMB = 1'250'000;  // 1 ms on the 10 Gbit/s link
std::vector<uint8_t> buffer(int64_t n) { return std::vector<uint8_t>(size_t(n)); }

TEST(LinkEmulation, SerializationAndLatencyInWholeNanoseconds) {
  EmulatedNic nic({10.0, 3.5}, std::make_shared<FakeClock>());
  EXPECT_EQ(ns(nic.serialization(kMB)), ns(milliseconds(1)));
  EXPECT_EQ(ns(nic.serialization(1)), 1);  // 0.8 ns, rounded up: never earlier than the link allows
  EXPECT_EQ(ns(nic.latency()), 3500);
}

TEST(LinkEmulation, SendCompletesAfterLatencyPlusBytesOverBandwidth) {
  Fixture f;
  auto buf = buffer(kMB);
  auto req = f.comm.isend(buf.data(), kMB, ElemType::U8, 1, 0);
  ASSERT_EQ(f.inner.ops, std::vector<std::string>{"send"});  // the inner operation runs as usual
  const time_point deadline = f.t0 + microseconds(5) + milliseconds(1);
  f.clock->advance(milliseconds(1));
  EXPECT_FALSE(req->test());  // inner done, deadline not reached
  f.clock->advance(microseconds(5) - nanoseconds(1));
  EXPECT_FALSE(req->test());
  f.clock->advance(nanoseconds(1));
  EXPECT_TRUE(req->test());
  EXPECT_EQ(ns(f.clock->now() - deadline), 0);
}

TEST(LinkEmulation, TestWaitsForTheInnerRequestToo) {
  Fixture f;
  f.inner.done = false;
  auto req = f.comm.isend(nullptr, 0, ElemType::U8, 1, 0);
  f.clock->advance(milliseconds(10));  // long past the deadline
  EXPECT_FALSE(req->test());
  f.inner.done = true;
  EXPECT_TRUE(req->test());
}

TEST(LinkEmulation, WaitSleepsUntilTheDeadline) {
  Fixture f;
  f.inner.done = false;
  auto buf = buffer(kMB);
  auto req = f.comm.irecv(buf.data(), kMB, ElemType::U8, 1, 3);
  req->wait();
  EXPECT_TRUE(f.inner.done);  // the inner request was waited for
  EXPECT_EQ(f.clock->sleeps, 1);
  EXPECT_EQ(f.elapsed_ns(), ns(microseconds(5) + milliseconds(1)));
  EXPECT_TRUE(req->test());
}

TEST(LinkEmulation, BackToBackSendsSerializeOnTheEgressLink) {
  Fixture f;
  auto buf = buffer(kMB);
  auto a = f.comm.isend(buf.data(), kMB, ElemType::U8, 1, 0);
  auto b = f.comm.isend(buf.data(), kMB / 4, ElemType::F32, 1, 1);  // also 1 MB, as floats
  a->wait();
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(1) + microseconds(5)));
  b->wait();  // starts when the first has left the link
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(2) + microseconds(5)));
  // The link is idle again after both: a later send starts when it is posted.
  f.clock->advance(milliseconds(10));
  const time_point t1 = f.clock->now();
  f.comm.isend(buf.data(), kMB, ElemType::U8, 1, 2)->wait();
  EXPECT_EQ(ns(f.clock->now() - t1), ns(milliseconds(1) + microseconds(5)));
}

TEST(LinkEmulation, SendAndReceiveUseSeparateLinks) {
  Fixture f;
  auto out = buffer(kMB), in = buffer(kMB);
  auto s = f.comm.isend(out.data(), kMB, ElemType::U8, 1, 0);
  auto r = f.comm.irecv(in.data(), kMB, ElemType::U8, 1, 0);  // full duplex: not queued behind the send
  r->wait();
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(1) + microseconds(5)));
  EXPECT_TRUE(s->test());
}

TEST(LinkEmulation, SelfMessagesAreFreeAndInstant) {
  Fixture f(1, 2);
  auto buf = buffer(kMB);
  auto s = f.comm.isend(buf.data(), kMB, ElemType::U8, 1, 0);
  auto r = f.comm.irecv(buf.data(), kMB, ElemType::U8, 1, 0);
  EXPECT_TRUE(s->test());
  EXPECT_TRUE(r->test());
  // ... and leave the link free for the next transfer.
  f.comm.isend(buf.data(), kMB, ElemType::U8, 0, 0)->wait();
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(1) + microseconds(5)));
  // A group of one rank: every collective is free.
  FakeCommunicator one_inner(0, 1);
  EmulatedLinkCommunicator one(one_inner, f.nic);
  const time_point t1 = f.clock->now();
  int64_t n = kMB;
  one.alltoallv(buf.data(), &n, &n, buf.data(), &n, &n, ElemType::U8);
  one.allreduce(buf.data(), buf.data(), kMB, ElemType::U8, ReduceOp::Sum);
  one.barrier();
  EXPECT_EQ(ns(f.clock->now() - t1), 0);
  EXPECT_EQ(f.clock->sleeps, 1);  // only the send to rank 0 slept
}

TEST(LinkEmulation, AlltoallvCountsBytesToAndFromOtherRanksOnly) {
  Fixture f(1, 4);
  // Rank 1 of 4 sends 1, 9 (self), 2, 3 MB-units and receives 0, 9 (self), 4, 1: egress 6, ingress 5 units.
  const int64_t u = kMB / 8;  // doubles: one unit of u elements is 1 ms
  std::vector<int64_t> sc = {u, 9 * u, 2 * u, 3 * u}, rc = {0, 9 * u, 4 * u, u}, d(4, 0);
  f.comm.ialltoallv(nullptr, sc.data(), d.data(), nullptr, rc.data(), d.data(), ElemType::F64)->wait();
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(6) + microseconds(5)));  // the later of 6 ms out, 5 ms in
  // Both links are now busy: egress until t0 + 6 ms, ingress until t0 + 5 ms. A receive of
  // 1 unit at t0 + 6 ms + 5 us starts at once: the ingress link is free.
  const time_point t1 = f.clock->now();
  f.comm.irecv(nullptr, u, ElemType::F64, 0, 0)->wait();
  EXPECT_EQ(ns(f.clock->now() - t1), ns(milliseconds(1) + microseconds(5)));
}

TEST(LinkEmulation, AlltoallvQueuesBehindEarlierTrafficOnEachLink) {
  Fixture f(0, 2);
  const int64_t u = kMB / 8;
  std::vector<int64_t> sc = {0, 2 * u}, rc = {0, 0}, d(2, 0);
  auto first = f.comm.ialltoallv(nullptr, sc.data(), d.data(), nullptr, rc.data(), d.data(), ElemType::F64);
  // Only sends: the ingress direction carries nothing and is free.
  std::vector<int64_t> sc2 = {0, 0}, rc2 = {7 * u, u};  // the self block (7 units) is free
  auto second = f.comm.ialltoallv(nullptr, sc2.data(), d.data(), nullptr, rc2.data(), d.data(), ElemType::F64);
  second->wait();
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(1) + microseconds(5)));
  first->wait();
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(2) + microseconds(5)));
  // Nothing to or from other ranks: no delay at all.
  std::vector<int64_t> self_only = {5 * u, 0};
  const time_point t1 = f.clock->now();
  auto third = f.comm.ialltoallv(nullptr, self_only.data(), d.data(), nullptr, self_only.data(), d.data(), ElemType::F64);
  EXPECT_TRUE(third->test());
  EXPECT_EQ(ns(f.clock->now() - t1), 0);
}

TEST(LinkEmulation, RingCollectivesMoveTheRingsBytesWithOneLatencyPerStep) {
  const int64_t u = kMB / 4;  // floats: u elements are 1 ms
  {
    Fixture f(0, 4);  // allreduce of 4u floats = 4 ms: 2 (P-1)/P = 1.5 of it, 6 steps
    f.comm.allreduce(nullptr, nullptr, 4 * u, ElemType::F32, ReduceOp::Sum);
    EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(6) + 6 * microseconds(5)));
  }
  {
    Fixture f(2, 4);  // reduce_scatter to blocks of u: 3 blocks over the ring, 3 steps
    f.comm.reduce_scatter(nullptr, nullptr, u, ElemType::F32, ReduceOp::Sum);
    EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(3) + 3 * microseconds(5)));
  }
  {
    Fixture f(3, 4);
    f.comm.all_gather(nullptr, nullptr, 2 * u, ElemType::F32);
    EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(6) + 3 * microseconds(5)));
  }
}

TEST(LinkEmulation, BroadcastAndBarrierPayTreeLatencies) {
  const int64_t u = kMB / 4;
  {
    Fixture f(0, 4);  // root: the buffer leaves once, ceil(log2 4) = 2 rounds
    f.comm.broadcast(nullptr, u, ElemType::F32, 0);
    EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(1) + 2 * microseconds(5)));
  }
  {
    Fixture f(1, 5);  // a receiver: ceil(log2 5) = 3 rounds
    f.comm.broadcast(nullptr, u, ElemType::F32, 0);
    EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(1) + 3 * microseconds(5)));
  }
  {
    Fixture f(1, 4);
    f.comm.barrier();
    EXPECT_EQ(f.elapsed_ns(), ns(2 * microseconds(5)));
  }
}

TEST(LinkEmulation, SubGroupsShareTheNic) {
  Fixture f(0, 2);
  auto sub = f.comm.split_group(1, 0, "pair");  // the fake makes a group of 2, rank 0
  auto* dec = dynamic_cast<EmulatedLinkCommunicator*>(sub.get());
  ASSERT_NE(dec, nullptr);
  EXPECT_EQ(dec->nic(), f.nic);
  EXPECT_EQ(sub->name(), "pair");
  auto buf = buffer(kMB);
  auto a = f.comm.isend(buf.data(), kMB, ElemType::U8, 1, 0);
  sub->isend(buf.data(), kMB, ElemType::U8, 1, 0)->wait();  // queued behind the parent group's send
  EXPECT_EQ(f.elapsed_ns(), ns(milliseconds(2) + microseconds(5)));
}

TEST(LinkEmulation, OffMeansNoWrappingAndBadLinksAreRefused) {
  EXPECT_EQ(make_emulated_nic(LinkEmulation{}), nullptr);
  auto inner = std::make_unique<FakeCommunicator>(0, 2);
  Communicator* raw = inner.get();
  EXPECT_EQ(wrap_for_emulation(std::move(inner), nullptr).get(), raw);
  auto nic = make_emulated_nic(LinkEmulation{25, 1});
  ASSERT_NE(nic, nullptr);
  auto wrapped = wrap_for_emulation(std::make_unique<FakeCommunicator>(0, 2, "world"), nic);
  EXPECT_NE(dynamic_cast<EmulatedLinkCommunicator*>(wrapped.get()), nullptr);
  EXPECT_EQ(wrapped->name(), "world");
  EXPECT_THROW(EmulatedNic(LinkEmulation{0, 1}), ConfigError);
  EXPECT_THROW(EmulatedNic(LinkEmulation{10, -1}), ConfigError);
}

}  // namespace
}  // namespace sy::par
