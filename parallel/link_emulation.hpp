// Link emulation (parallel.emulate_link = "<Gbit/s>,<latency us>"): a
// Communicator decorator that makes every inter-rank transfer complete no
// earlier than an emulated network link would deliver it, so that overlap of
// communication and compute can be measured honestly on one machine, where
// shared memory moves bytes far faster than a real inter-node link.
//
// The wrapped operation runs unchanged; only its completion is held back, and
// the holding back uses no CPU (a NIC moves data by DMA): the returned
// request's test() is false until the inner request is done AND the emulated
// deadline has passed; wait() waits for the inner request, then sleeps until
// the deadline (no spinning).
//
// The model: each rank has one NIC with one link in each direction (egress,
// ingress) of bandwidth B = gbit_per_s (1 Gbit/s = 1 bit/ns) and latency L.
// An operation posted at time `now` that moves `bytes` over a link with k
// latencies (k rounds of messages) reserves the link:
//   start    = max(now, link_free)           (transfers on one link serialize)
//   link_free = start + bytes / B
//   deadline = start + k L + bytes / B
// and completes at the later of its egress and ingress deadlines. A direction
// that carries no message is free (deadline = now, link untouched), and so is
// every self-message: only bytes to or from OTHER ranks count. Per operation on
// a group of P ranks, with S the payload in bytes (count x element size):
//   isend / irecv         egress / ingress: S, k = 1 (a self-peer is free);
//   alltoallv             egress: sum of bytes to other ranks, ingress: sum of
//                         bytes from other ranks, k = 1 each (every message
//                         leaves at once); a direction with no bytes is free;
//   allreduce             ring: both links (2(P-1)/P) S, k = 2(P-1);
//   reduce_scatter        ring: both links (P-1) x recv block, k = P-1;
//   all_gather            ring: both links (P-1) x send block, k = P-1;
//   broadcast             root egress / others' ingress: S once (pipelined),
//                         k = ceil(log2 P);
//   barrier               no bytes, k = ceil(log2 P) on both links.
// On P = 1 every operation is free. Sub-groups (split_group) share the NIC of
// the group they were split from: one NIC per rank, whatever group a transfer
// goes through.
//
// What the model leaves out: a transfer is timed from when THIS rank posts it.
// A peer that posts later still delays completion through the inner
// operation (its data cannot arrive earlier), but the emulated time is not
// added again after it: a late peer costs max(lateness, emulated time), not
// the sum. Ranks in lockstep (collectives in a training step) are modelled to
// within their skew. Every group is treated as crossing the network, including
// the node group: the link is the same for every pair of ranks.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/config.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {

// The clock the emulated links read and sleep on; tests inject a fake one so
// that they check the deadline arithmetic without depending on timing.
class LinkClock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~LinkClock() = default;
  virtual time_point now() const = 0;
  // Returns no earlier than t, blocking without using the CPU.
  virtual void sleep_until(time_point t) const = 0;

  // std::chrono::steady_clock and std::this_thread::sleep_until.
  static std::shared_ptr<const LinkClock> steady();
};

// One rank's NIC: the egress and ingress links and when each is next free.
// Thread-safe (a communication progress thread may post beside the main one).
class EmulatedNic {
 public:
  using time_point = LinkClock::time_point;

  // Use of one link by one operation: bytes over `latencies` message rounds.
  // {0, 0} is no use (the direction is free).
  struct LinkUse {
    int64_t bytes = 0;
    int latencies = 0;
  };

  // Throws ConfigError unless link.enabled() and its latency is >= 0.
  explicit EmulatedNic(const LinkEmulation& link,
                       std::shared_ptr<const LinkClock> clock = LinkClock::steady());

  // Reserves both links for an operation posted now; returns its deadline
  // (the later of the two directions'), as in the model above.
  time_point reserve(LinkUse egress, LinkUse ingress);

  // bytes / B and L, rounded up to whole nanoseconds.
  std::chrono::nanoseconds serialization(int64_t bytes) const;
  std::chrono::nanoseconds latency() const { return latency_; }

  const LinkEmulation& link() const { return link_; }
  const LinkClock& clock() const { return *clock_; }
  const std::shared_ptr<const LinkClock>& clock_ptr() const { return clock_; }

 private:
  time_point reserve_one(time_point now, LinkUse use, time_point& link_free);

  LinkEmulation link_;
  std::chrono::nanoseconds latency_;
  std::shared_ptr<const LinkClock> clock_;
  std::mutex mutex_;
  time_point egress_free_{}, ingress_free_{};
};

// The decorator. Owns the inner communicator (unique_ptr constructor) or
// refers to one that outlives it (reference constructor). name(), rank() and
// size() are the inner communicator's.
class EmulatedLinkCommunicator final : public Communicator {
 public:
  EmulatedLinkCommunicator(std::unique_ptr<Communicator> inner, std::shared_ptr<EmulatedNic> nic);
  EmulatedLinkCommunicator(Communicator& inner, std::shared_ptr<EmulatedNic> nic);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  Communicator& inner() const { return *inner_; }
  const std::shared_ptr<EmulatedNic>& nic() const { return nic_; }

  RequestPtr iallreduce(const void* send, void* recv, int64_t count, ElemType type, ReduceOp op) override;
  RequestPtr ireduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type, ReduceOp op) override;
  RequestPtr iall_gather(const void* send, void* recv, int64_t send_count, ElemType type) override;
  RequestPtr ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                        const int64_t* recv_counts, const int64_t* recv_displs, ElemType type) override;
  RequestPtr ibroadcast(void* buf, int64_t count, ElemType type, int root) override;
  RequestPtr isend(const void* buf, int64_t count, ElemType type, int peer, int tag) override;
  RequestPtr irecv(void* buf, int64_t count, ElemType type, int peer, int tag) override;
  RequestPtr ibarrier() override;

  // The inner communicator's sub-group, decorated with this rank's same NIC.
  std::unique_ptr<Communicator> split_group(int color, int key, const std::string& name) const override;

 private:
  // Reserves the links at post time (before the inner operation starts, so
  // the inner call's own time counts toward the emulated one).
  RequestPtr hold(EmulatedNic::time_point deadline, RequestPtr inner) const;

  std::unique_ptr<Communicator> owned_;
  Communicator* inner_;
  std::shared_ptr<EmulatedNic> nic_;
};

// A NIC for this rank when link emulation is on, else null.
std::shared_ptr<EmulatedNic> make_emulated_nic(const LinkEmulation& link,
                                               std::shared_ptr<const LinkClock> clock = LinkClock::steady());

// comm decorated with nic, or comm itself when nic is null (emulation off).
std::unique_ptr<Communicator> wrap_for_emulation(std::unique_ptr<Communicator> comm, std::shared_ptr<EmulatedNic> nic);

}  // namespace sy::par
