// Connects the MoE layer to communicators: the expert collectives (token
// exchange and unit gather / reduce-scatter of models/expert_layout.hpp over
// the token group), and the count and capacity hooks:
//   counts   summed over the token group (every rank holding different tokens),
//            for balance = global and the sigmoid_bias update;
//   capacity the largest per-expert load over the token group, so capacity
//            (dropless or capped) is the same in every mode.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "models/moe_layer.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {

// The expert layout's groups over W ranks holding different tokens (the
// process grid's expert_group: the token group ordered (ep, dp), so that the
// exchange of degree parallel.ep is the ep_group), split once per
// valid degree P at construction (collective: every rank of the group builds
// it): exchange groups (same g % (W/P)) and gather groups (same g / (W/P)).
template <typename T>
class CommExpertComm final : public moe::ExpertComm<T> {
 public:
  CommExpertComm(Communicator& token_group, const std::vector<int>& degrees) : comm_(token_group) {
    const int W = comm_.size(), g = comm_.rank();
    for (const int P : degrees) {
      SY_REQUIRE(P >= 1 && W % P == 0, "expert-parallel degree " << P << " does not divide " << W << " ranks");
      const int Gs = W / P;
      Groups groups;
      groups.exchange = comm_.split_group(g % Gs, g / Gs, "expert_exchange_P" + std::to_string(P));
      groups.gather = comm_.split_group(g / Gs, g % Gs, "expert_gather_P" + std::to_string(P));
      groups_.emplace(P, std::move(groups));
    }
    counts_.resize(4 * W);
  }
  // Every degree that divides the group size.
  explicit CommExpertComm(Communicator& token_group) : CommExpertComm(token_group, divisors(token_group.size())) {}

  int size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }

  void exchange_counts(int P, const int64_t* send, int64_t* recv, int n) override {
    Communicator& c = exchange_group(P);
    int64_t* cnt = counts_.data();
    int64_t* displs = cnt + P;
    for (int p = 0; p < P; ++p) {
      cnt[p] = n;
      displs[p] = int64_t(p) * n;
    }
    c.alltoallv(send, cnt, displs, recv, cnt, displs, ElemType::I64);
  }

  void exchange_rows(int P, const T* send, const int64_t* send_rows, const int64_t* send_displs, T* recv,
                     const int64_t* recv_rows, const int64_t* recv_displs, int64_t width) override {
    begin_exchange_rows(P, send, send_rows, send_displs, recv, recv_rows, recv_displs, width)->wait();
  }
  RequestPtr begin_exchange_rows(int P, const T* send, const int64_t* send_rows, const int64_t* send_displs, T* recv,
                                 const int64_t* recv_rows, const int64_t* recv_displs, int64_t width) override {
    Communicator& c = exchange_group(P);
    int64_t* sc = counts_.data();
    int64_t* sd = sc + P;
    int64_t* rc = sd + P;
    int64_t* rd = rc + P;
    for (int p = 0; p < P; ++p) {
      sc[p] = send_rows[p] * width;
      sd[p] = send_displs[p] * width;
      rc[p] = recv_rows[p] * width;
      rd[p] = recv_displs[p] * width;
    }
    // The communicator copies the counts into the request: counts_ is free again.
    return c.ialltoallv(send, sc, sd, recv, rc, rd, elem_type_of<T>());
  }
  void gather_units(int P, const T* mine, T* all, int64_t n) override {
    gather_group(P).all_gather(mine, all, n, elem_type_of<T>());
  }
  void begin_reduce_units(int P, const T* all, T* mine, int64_t n) override {
    SY_REQUIRE(!pending_, "a unit reduce-scatter is already in flight");
    pending_ = gather_group(P).ireduce_scatter(all, mine, n, elem_type_of<T>(), ReduceOp::Sum);
  }
  void end_reduce_units() override {
    if (pending_) pending_->wait();
    pending_.reset();
  }

  static std::vector<int> divisors(int W) {
    std::vector<int> out;
    for (int P = 1; P <= W; ++P)
      if (W % P == 0) out.push_back(P);
    return out;
  }

 private:
  struct Groups {
    std::unique_ptr<Communicator> exchange, gather;
  };
  const Groups& groups(int P) const {
    const auto it = groups_.find(P);
    SY_REQUIRE(it != groups_.end(), "no expert groups were built for degree " << P);
    return it->second;
  }
  Communicator& exchange_group(int P) { return *groups(P).exchange; }
  Communicator& gather_group(int P) { return *groups(P).gather; }

  Communicator& comm_;
  std::map<int, Groups> groups_;
  std::vector<int64_t> counts_;
  RequestPtr pending_;
};

// Sums the replicated parameters' gradients (router, shared experts) over
// the token group; the expert units' gradients are already reduced to their
// owners by the layer's backward. Blocking, unbucketed: the trainer puts
// these into its bucketed sync instead.
template <typename T>
void sync_moe_gradients(moe::MoeLayer<T>& layer, Communicator& token_group) {
  for (const char* name : {"router_weight", "shared_w1", "shared_w2"})
    if (T* g = layer.grad(name)) token_group.allreduce(g, g, layer.param_size(name), elem_type_of<T>(), ReduceOp::Sum);
}

// Hooks the layer's counts and capacity to the token group. ep_degree > 0
// sets the exchange degree under moe.parallel_mode = auto (parallel.ep).
template <typename T>
void connect_moe_layer(moe::MoeLayer<T>& layer, Communicator& token_group, int ep_degree = 0) {
  layer.set_count_reduce_hook(
      [&token_group](double* counts, int n) { token_group.allreduce(counts, counts, n, ElemType::F64, ReduceOp::Sum); });
  layer.set_capacity_reduce_hook(
      [&token_group](int64_t* value) { token_group.allreduce(value, value, 1, ElemType::I64, ReduceOp::Max); });
  if (ep_degree > 0 && layer.sized_degrees().size() > 1) layer.set_expert_degree(ep_degree);
}

}  // namespace sy::par
