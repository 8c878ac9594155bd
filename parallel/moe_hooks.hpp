// Connects the MoE layer to communicators: the expert exchange (expert
// parallelism over the ep group), and the count and capacity hooks:
//   counts   summed over the token group (every rank holding different tokens),
//            for balance = global and the sigmoid_bias update;
//   capacity the largest per-expert load over the expert-parallel group
//            (dropless capacity must agree across the ranks that exchange tokens).
#pragma once

#include <vector>

#include "models/moe_layer.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {

// Expert parallelism over a communicator: counts, then rows, with alltoallv.
template <typename T>
class CommExpertExchange final : public moe::ExpertExchange<T> {
 public:
  explicit CommExpertExchange(Communicator& ep_group)
      : comm_(ep_group), counts_(4 * ep_group.size()), count_displs_(2 * ep_group.size()) {}
  int size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }

  void exchange_counts(const int64_t* send, int64_t* recv, int n) override {
    const int P = comm_.size();
    int64_t* c = counts_.data();
    int64_t* d = count_displs_.data();
    for (int p = 0; p < P; ++p) {
      c[p] = n;
      d[p] = int64_t(p) * n;
    }
    comm_.alltoallv(send, c, d, recv, c, d, ElemType::I64);
  }

  void exchange_rows(const T* send, const int64_t* send_rows, const int64_t* send_displs, T* recv,
                     const int64_t* recv_rows, const int64_t* recv_displs, int64_t width) override {
    const int P = comm_.size();
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
    comm_.alltoallv(send, sc, sd, recv, rc, rd, elem_type_of<T>());
  }

 private:
  Communicator& comm_;
  std::vector<int64_t> counts_, count_displs_;
};

// Sums the layer's gradients over the ranks that hold copies of them: the
// expert weights over the data-parallel group (ranks with the same expert
// shard), the replicated router and shared experts over the token group
// (every rank with different tokens). Blocking, unbucketed: the bucketed,
// overlapped sync comes with the trainer.
template <typename T>
void sync_moe_gradients(moe::MoeLayer<T>& layer, Communicator& token_group, Communicator& dp_group) {
  for (const char* name : {"router_weight", "shared_w1", "shared_w2"})
    if (T* g = layer.grad(name)) token_group.allreduce(g, g, layer.param_size(name), elem_type_of<T>(), ReduceOp::Sum);
  for (const char* name : {"expert_w1", "expert_w2"})
    if (T* g = layer.grad(name)) dp_group.allreduce(g, g, layer.param_size(name), elem_type_of<T>(), ReduceOp::Sum);
}

template <typename T>
void connect_moe_layer(moe::MoeLayer<T>& layer, Communicator& token_group, Communicator& ep_group) {
  layer.set_count_reduce_hook(
      [&token_group](double* counts, int n) { token_group.allreduce(counts, counts, n, ElemType::F64, ReduceOp::Sum); });
  layer.set_capacity_reduce_hook(
      [&ep_group](int64_t* value) { ep_group.allreduce(value, value, 1, ElemType::I64, ReduceOp::Max); });
}

}  // namespace sy::par
