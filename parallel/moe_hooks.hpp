// Plugs the MoE layer's count and capacity hooks into communicators:
//   counts   summed over the token group (every rank holding different tokens),
//            for balance = global and the sigmoid_bias update;
//   capacity the largest per-expert load over the expert-parallel group
//            (dropless capacity must agree across the ranks that exchange tokens).
#pragma once

#include "models/moe_layer.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {

template <typename T>
void connect_moe_layer(moe::MoeLayer<T>& layer, Communicator& token_group, Communicator& ep_group) {
  layer.set_count_reduce_hook(
      [&token_group](double* counts, int n) { token_group.allreduce(counts, counts, n, ElemType::F64, ReduceOp::Sum); });
  layer.set_capacity_reduce_hook(
      [&ep_group](int64_t* value) { ep_group.allreduce(value, value, 1, ElemType::I64, ReduceOp::Max); });
}

}  // namespace sy::par
