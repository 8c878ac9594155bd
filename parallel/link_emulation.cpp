#include "parallel/link_emulation.hpp"

#include <algorithm>
#include <cmath>
#include <thread>

#include "core/error.hpp"

namespace sy::par {

namespace {

class SteadyLinkClock final : public LinkClock {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
  // libstdc++ re-sleeps after an early wake-up, so this never returns before t.
  void sleep_until(time_point t) const override { std::this_thread::sleep_until(t); }
};

// Holds an inner request back until the emulated deadline.
class EmulatedRequest final : public Request {
 public:
  EmulatedRequest(RequestPtr inner, LinkClock::time_point deadline, std::shared_ptr<const LinkClock> clock)
      : inner_(std::move(inner)), deadline_(deadline), clock_(std::move(clock)) {}

  bool test() override {
    if (!inner_done_) inner_done_ = inner_->test();
    return inner_done_ && clock_->now() >= deadline_;
  }

  // The inner wait keeps its timeout; the sleep after it is bounded by the deadline.
  void wait() override {
    if (!inner_done_) {
      inner_->wait();
      inner_done_ = true;
    }
    clock_->sleep_until(deadline_);
  }

 private:
  RequestPtr inner_;
  LinkClock::time_point deadline_;
  std::shared_ptr<const LinkClock> clock_;
  bool inner_done_ = false;
};

// Rounds of a tree (broadcast, dissemination barrier) over P ranks.
int ceil_log2(int P) {
  int k = 0;
  while ((int64_t(1) << k) < P) ++k;
  return k;
}

int64_t bytes_of(int64_t count, ElemType type) {
  SY_REQUIRE(count >= 0, "element count must be >= 0, got " << count);
  return count * int64_t(elem_size(type));
}

}  // namespace

std::shared_ptr<const LinkClock> LinkClock::steady() {
  static const auto clock = std::make_shared<const SteadyLinkClock>();
  return clock;
}

EmulatedNic::EmulatedNic(const LinkEmulation& link, std::shared_ptr<const LinkClock> clock)
    : link_(link), clock_(std::move(clock)) {
  SY_CHECK_AS(ConfigError, link.enabled() && std::isfinite(link.gbit_per_s),
              "parallel.emulate_link: the bandwidth must be a positive number of Gbit/s, got " << link.gbit_per_s);
  SY_CHECK_AS(ConfigError, link.latency_us >= 0 && std::isfinite(link.latency_us),
              "parallel.emulate_link: the latency must be >= 0 us, got " << link.latency_us);
  SY_REQUIRE(clock_ != nullptr, "an emulated NIC needs a clock");
  latency_ = std::chrono::nanoseconds(int64_t(std::ceil(link.latency_us * 1e3)));
}

std::chrono::nanoseconds EmulatedNic::serialization(int64_t bytes) const {
  // 1 Gbit/s moves 1 bit per ns.
  return std::chrono::nanoseconds(int64_t(std::ceil(double(bytes) * 8.0 / link_.gbit_per_s)));
}

EmulatedNic::time_point EmulatedNic::reserve_one(time_point now, LinkUse use, time_point& link_free) {
  SY_REQUIRE(use.bytes >= 0 && use.latencies >= 0,
             "link use needs bytes >= 0 and latencies >= 0, got " << use.bytes << ", " << use.latencies);
  if (use.bytes == 0 && use.latencies == 0) return now;  // no message in this direction
  const auto ser = serialization(use.bytes);
  const time_point start = std::max(now, link_free);
  link_free = start + ser;
  return start + use.latencies * latency_ + ser;
}

EmulatedNic::time_point EmulatedNic::reserve(LinkUse egress, LinkUse ingress) {
  std::lock_guard<std::mutex> lock(mutex_);
  const time_point now = clock_->now();
  const time_point out = reserve_one(now, egress, egress_free_);
  const time_point in = reserve_one(now, ingress, ingress_free_);
  return std::max(out, in);
}

EmulatedLinkCommunicator::EmulatedLinkCommunicator(std::unique_ptr<Communicator> inner,
                                                   std::shared_ptr<EmulatedNic> nic)
    : owned_(std::move(inner)), inner_(owned_.get()), nic_(std::move(nic)) {
  SY_REQUIRE(inner_ != nullptr, "an emulated link needs a communicator to wrap");
  SY_REQUIRE(nic_ != nullptr, "an emulated link needs a NIC");
}

EmulatedLinkCommunicator::EmulatedLinkCommunicator(Communicator& inner, std::shared_ptr<EmulatedNic> nic)
    : inner_(&inner), nic_(std::move(nic)) {
  SY_REQUIRE(nic_ != nullptr, "an emulated link needs a NIC");
}

RequestPtr EmulatedLinkCommunicator::hold(EmulatedNic::time_point deadline, RequestPtr inner) const {
  return std::make_unique<EmulatedRequest>(std::move(inner), deadline, nic_->clock_ptr());
}

RequestPtr EmulatedLinkCommunicator::iallreduce(const void* send, void* recv, int64_t count, ElemType type,
                                                ReduceOp op) {
  const int P = size();
  if (P == 1) return inner_->iallreduce(send, recv, count, type, op);
  // Ring: reduce-scatter then all-gather, each P-1 steps of S/P bytes.
  const int64_t S = bytes_of(count, type);
  const EmulatedNic::LinkUse use{(2 * int64_t(P - 1) * S + P - 1) / P, 2 * (P - 1)};
  const auto deadline = nic_->reserve(use, use);
  return hold(deadline, inner_->iallreduce(send, recv, count, type, op));
}

RequestPtr EmulatedLinkCommunicator::ireduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type,
                                                     ReduceOp op) {
  const int P = size();
  if (P == 1) return inner_->ireduce_scatter(send, recv, recv_count, type, op);
  const EmulatedNic::LinkUse use{int64_t(P - 1) * bytes_of(recv_count, type), P - 1};
  const auto deadline = nic_->reserve(use, use);
  return hold(deadline, inner_->ireduce_scatter(send, recv, recv_count, type, op));
}

RequestPtr EmulatedLinkCommunicator::iall_gather(const void* send, void* recv, int64_t send_count, ElemType type) {
  const int P = size();
  if (P == 1) return inner_->iall_gather(send, recv, send_count, type);
  const EmulatedNic::LinkUse use{int64_t(P - 1) * bytes_of(send_count, type), P - 1};
  const auto deadline = nic_->reserve(use, use);
  return hold(deadline, inner_->iall_gather(send, recv, send_count, type));
}

RequestPtr EmulatedLinkCommunicator::ialltoallv(const void* send, const int64_t* send_counts,
                                                const int64_t* send_displs, void* recv, const int64_t* recv_counts,
                                                const int64_t* recv_displs, ElemType type) {
  const int P = size(), me = rank();
  if (P == 1) return inner_->ialltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs, type);
  int64_t out = 0, in = 0;
  for (int p = 0; p < P; ++p) {
    if (p == me) continue;  // the self block is a local copy
    out += bytes_of(send_counts[p], type);
    in += bytes_of(recv_counts[p], type);
  }
  // Every message leaves at once: one latency per direction that carries bytes.
  const auto deadline = nic_->reserve({out, out > 0 ? 1 : 0}, {in, in > 0 ? 1 : 0});
  return hold(deadline, inner_->ialltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs, type));
}

RequestPtr EmulatedLinkCommunicator::ibroadcast(void* buf, int64_t count, ElemType type, int root) {
  const int P = size();
  if (P == 1) return inner_->ibroadcast(buf, count, type, root);
  const EmulatedNic::LinkUse use{bytes_of(count, type), ceil_log2(P)};
  const bool is_root = rank() == root;
  const auto deadline = nic_->reserve(is_root ? use : EmulatedNic::LinkUse{}, is_root ? EmulatedNic::LinkUse{} : use);
  return hold(deadline, inner_->ibroadcast(buf, count, type, root));
}

RequestPtr EmulatedLinkCommunicator::isend(const void* buf, int64_t count, ElemType type, int peer, int tag) {
  if (peer == rank()) return inner_->isend(buf, count, type, peer, tag);
  const auto deadline = nic_->reserve({bytes_of(count, type), 1}, {});
  return hold(deadline, inner_->isend(buf, count, type, peer, tag));
}

RequestPtr EmulatedLinkCommunicator::irecv(void* buf, int64_t count, ElemType type, int peer, int tag) {
  if (peer == rank()) return inner_->irecv(buf, count, type, peer, tag);
  const auto deadline = nic_->reserve({}, {bytes_of(count, type), 1});
  return hold(deadline, inner_->irecv(buf, count, type, peer, tag));
}

RequestPtr EmulatedLinkCommunicator::ibarrier() {
  const int P = size();
  if (P == 1) return inner_->ibarrier();
  const EmulatedNic::LinkUse use{0, ceil_log2(P)};
  const auto deadline = nic_->reserve(use, use);
  return hold(deadline, inner_->ibarrier());
}

std::unique_ptr<Communicator> EmulatedLinkCommunicator::split_group(int color, int key,
                                                                    const std::string& name) const {
  return std::make_unique<EmulatedLinkCommunicator>(inner_->split_group(color, key, name), nic_);
}

std::shared_ptr<EmulatedNic> make_emulated_nic(const LinkEmulation& link, std::shared_ptr<const LinkClock> clock) {
  if (!link.enabled()) return nullptr;
  return std::make_shared<EmulatedNic>(link, std::move(clock));
}

std::unique_ptr<Communicator> wrap_for_emulation(std::unique_ptr<Communicator> comm,
                                                 std::shared_ptr<EmulatedNic> nic) {
  if (!nic) return comm;
  return std::make_unique<EmulatedLinkCommunicator>(std::move(comm), std::move(nic));
}

}  // namespace sy::par
