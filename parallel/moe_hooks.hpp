// Connects the MoE layer to communicators: the expert collectives (token
// exchange and unit gather / reduce-scatter of models/expert_layout.hpp over
// the token group), and the count and capacity hooks:
//   counts   summed over the token group (every rank holding different tokens),
//            for balance = global and the sigmoid_bias update;
//   capacity the largest per-expert load over the token group, so capacity
//            (dropless or capped) is the same in every mode.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "models/moe_layer.hpp"
#include "parallel/alltoall.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {

// Where this rank sits, for the all-to-all algorithms: its node (2dh) and
// leaf switch (flowsplit), as indices comparable across ranks, and the spine
// paths between two leaves. The default puts every rank on one node and one
// leaf, where 2dh and flowsplit are single exchanges.
struct ExchangePlacement {
  int node = 0;
  int leaf = 0;
  int spine_paths = 4;
};

// The placement of parallel.* keys on a process grid: node = the grid's node
// (real, or emulated by parallel.ranks_per_node), leaf = world rank /
// parallel.ranks_per_leaf (0 = the node).
inline ExchangePlacement exchange_placement(const ParallelConfig& config, int world_rank, int node_index) {
  ExchangePlacement p;
  p.node = node_index;
  p.leaf = config.ranks_per_leaf > 0 ? world_rank / config.ranks_per_leaf : node_index;
  p.spine_paths = config.spine_paths;
  return p;
}

// The expert layout's groups over W ranks holding different tokens (the
// process grid's expert_group: the token group ordered (ep, dp), so that the
// exchange of degree parallel.ep is the ep_group), split once per
// valid degree P at construction (collective: every rank of the group builds
// it): exchange groups (same g % (W/P)) and gather groups (same g / (W/P)).
// The row exchange runs the route's all-to-all algorithm (parallel/alltoall.hpp),
// one object per (degree, algorithm, slot), made by prepare() or on first use
// (every rank starts exchanges in the same order, so the collective
// construction of 2dh lines up) and reused after.
template <typename T>
class CommExpertComm final : public moe::ExpertComm<T> {
 public:
  CommExpertComm(Communicator& token_group, const std::vector<int>& degrees, const ExchangePlacement& placement = {})
      : comm_(token_group), spine_paths_(placement.spine_paths) {
    const int W = comm_.size(), g = comm_.rank();
    // Every member's node and leaf, to find the nodes and leaves of each exchange group.
    std::vector<int64_t> mine = {placement.node, placement.leaf}, all(2 * size_t(W));
    comm_.all_gather(mine.data(), all.data(), 2, ElemType::I64);
    for (const int P : degrees) {
      SY_REQUIRE(P >= 1 && W % P == 0, "expert-parallel degree " << P << " does not divide " << W << " ranks");
      const int Gs = W / P;
      Groups groups;
      groups.exchange = comm_.split_group(g % Gs, g / Gs, "expert_exchange_P" + std::to_string(P));
      groups.gather = comm_.split_group(g / Gs, g % Gs, "expert_gather_P" + std::to_string(P));
      // Exchange member k is group rank g % Gs + k Gs.
      std::vector<int64_t> nodes(P), leaves(P);
      for (int k = 0; k < P; ++k) {
        nodes[k] = all[2 * size_t(g % Gs + k * Gs)];
        leaves[k] = all[2 * size_t(g % Gs + k * Gs) + 1];
      }
      groups.ranks_per_node = block_size(nodes);
      groups.ranks_per_leaf = block_size(leaves);
      groups_.emplace(P, std::move(groups));
    }
    // The exchange groups of one degree may sit differently (one inside a
    // node, another across two): an algorithm counts as supported at P only
    // when it is on every rank, so that every rank sees the same choices.
    std::vector<int64_t> ok;
    for (const auto& [P, gr] : groups_) {
      ok.push_back(gr.ranks_per_node > 0);
      ok.push_back(gr.ranks_per_leaf > 0);
      ok.push_back(gr.ranks_per_node > 1 && gr.ranks_per_node < P);  // 2dh with two levels
    }
    comm_.allreduce(ok.data(), ok.data(), int64_t(ok.size()), ElemType::I64, ReduceOp::Min);
    size_t i = 0;
    for (auto& [P, gr] : groups_) {
      gr.two_dh = ok[i++] != 0;
      gr.flowsplit = ok[i++] != 0;
      gr.two_level = ok[i++] != 0;
    }
    counts_.resize(4 * W);
  }
  // Every degree that divides the group size.
  explicit CommExpertComm(Communicator& token_group, const ExchangePlacement& placement = {})
      : CommExpertComm(token_group, divisors(token_group.size()), placement) {}

  int size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }

  bool supports(int P, AllToAllAlgo algo) const override {
    const Groups& gr = groups(P);
    switch (algo) {
      case AllToAllAlgo::Linear: return true;
      case AllToAllAlgo::TwoDH: return gr.two_dh;
      case AllToAllAlgo::FlowSplit: return gr.flowsplit;
      case AllToAllAlgo::Auto: return false;
    }
    return false;
  }
  // 2dh inside one node, or over nodes of one rank, is linear's one
  // exchange; flowsplit is always its own (point-to-point messages).
  bool distinct(int P, AllToAllAlgo algo) const override {
    if (algo == AllToAllAlgo::TwoDH) return groups(P).two_level;
    return supports(P, algo);
  }
  void prepare(int P, AllToAllAlgo algo, int slots) override {
    for (int k = 0; k < slots; ++k) alltoall(P, {algo, k});
  }

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

  RequestPtr begin_exchange_rows(int P, moe::ExchangeRoute route, const T* send, const int64_t* send_rows,
                                 const int64_t* send_displs, T* recv, const int64_t* recv_rows,
                                 const int64_t* recv_displs, int64_t width) override {
    AllToAll& a2a = alltoall(P, route);
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
    // The algorithm copies the counts into its own state: counts_ is free again.
    return a2a.start(send, sc, sd, recv, rc, rd, elem_type_of<T>());
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
  // Point-to-point tags of slot k: kTagBase + k (spine_paths + 2) onwards.
  static constexpr int kTagBase = 0x1000;
  static constexpr int kMaxSlots = 16;  // 2 x the largest pipeline degree

  struct Groups {
    std::unique_ptr<Communicator> exchange, gather;
    int ranks_per_node = 0, ranks_per_leaf = 0;  // in this rank's exchange group; 0 = not whole blocks
    bool two_dh = false, flowsplit = false, two_level = false;  // agreed over every rank (MIN)
    std::map<std::pair<int, int>, std::unique_ptr<AllToAll>> alltoall;  // (algorithm, slot)
  };
  // m when ids (one per member, in order) form consecutive blocks of m equal
  // ids, each id in one block only; 0 otherwise.
  static int block_size(const std::vector<int64_t>& ids) {
    const int n = static_cast<int>(ids.size());
    int m = 1;
    while (m < n && ids[m] == ids[0]) ++m;
    if (n % m != 0) return 0;
    for (int k = 0; k < n; ++k) {
      if (ids[k] != ids[k - k % m]) return 0;
      if (k % m == 0 && k > 0 && std::find(ids.begin(), ids.begin() + k, ids[k]) != ids.begin() + k) return 0;
    }
    return m;
  }
  const Groups& groups(int P) const {
    const auto it = groups_.find(P);
    SY_REQUIRE(it != groups_.end(), "no expert groups were built for degree " << P);
    return it->second;
  }
  Groups& groups(int P) { return const_cast<Groups&>(std::as_const(*this).groups(P)); }
  Communicator& exchange_group(int P) { return *groups(P).exchange; }
  Communicator& gather_group(int P) { return *groups(P).gather; }
  AllToAll& alltoall(int P, moe::ExchangeRoute route) {
    SY_REQUIRE(route.slot >= 0 && route.slot < kMaxSlots,
               "exchange slot " << route.slot << " outside 0.." << kMaxSlots - 1);
    Groups& gr = groups(P);
    auto& a2a = gr.alltoall[{static_cast<int>(route.algo), route.slot}];
    if (!a2a) {
      SY_CHECK_AS(ConfigError, supports(P, route.algo),
                  "parallel.a2a_algo = " << to_string(route.algo) << ": the exchange group of " << P
                                         << " ranks does not split into whole "
                                         << (route.algo == AllToAllAlgo::TwoDH ? "nodes" : "leaves"));
      AllToAllTopology topology;
      topology.ranks_per_node = gr.ranks_per_node;
      topology.ranks_per_leaf = gr.ranks_per_leaf;
      topology.spine_paths = spine_paths_;
      topology.tag = kTagBase + route.slot * (spine_paths_ + 2);
      a2a = make_alltoall(route.algo, *gr.exchange, topology);
    }
    return *a2a;
  }

  Communicator& comm_;
  int spine_paths_;
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
// sets the exchange degree under moe.parallel_mode = auto (parallel.ep);
// algo is parallel.a2a_algo (auto: linear until the tuner picks).
template <typename T>
void connect_moe_layer(moe::MoeLayer<T>& layer, Communicator& token_group, int ep_degree = 0,
                       AllToAllAlgo algo = AllToAllAlgo::Auto) {
  layer.set_count_reduce_hook(
      [&token_group](double* counts, int n) { token_group.allreduce(counts, counts, n, ElemType::F64, ReduceOp::Sum); });
  layer.set_capacity_reduce_hook(
      [&token_group](int64_t* values, int n) { token_group.allreduce(values, values, n, ElemType::I64, ReduceOp::Max); });
  if (ep_degree > 0 && layer.sized_degrees().size() > 1) layer.set_expert_degree(ep_degree);
  layer.set_alltoall(algo);
}

}  // namespace sy::par
