// The process grid: data, expert and tensor parallel groups over the world.
//
// World rank = (dp_index * ep + ep_index) * tp + tp_index: tensor-parallel
// peers are neighbours (same node first), then expert-parallel peers.
// Groups (each a Communicator):
//   tp_group     same (dp, ep) index: the ranks that split attention heads;
//   ep_group     same (dp, tp) index: the ranks that exchange tokens for experts;
//   dp_group     same (ep, tp) index: replicas of the same shard;
//   token_group  same tp index: every rank that holds different tokens
//                (the global-batch balance counts are summed over it);
//   expert_group the token group's ranks ordered (ep, dp): the MoE layer's
//                expert layout runs over it, so with exchange degree
//                parallel.ep its token exchange is ep_group and its weight
//                gather dp_group (models/expert_layout.hpp);
//   node_group   ranks on one node (MPI_Comm_split_type SHARED), or blocks of
//                parallel.ranks_per_node ranks to emulate several nodes.
// With parallel.emulate_link every group is returned decorated by
// EmulatedLinkCommunicator (parallel/link_emulation.hpp), all of them sharing
// this rank's one emulated NIC, and so are the groups split from them.
#pragma once

#include <memory>

#include "core/config.hpp"
#include "parallel/link_emulation.hpp"
#include "parallel/mpi/mpi_communicator.hpp"

namespace sy::par {

class ProcessGrid {
 public:
  // Throws ConfigError on every rank when dp * ep * tp != the world size, or
  // ranks_per_node does not divide it.
  explicit ProcessGrid(const ParallelConfig& config, MPI_Comm world = MPI_COMM_WORLD);

  int world_rank() const { return world_.mpi->rank(); }
  int world_size() const { return world_.mpi->size(); }
  int dp() const { return dp_; }
  int ep() const { return ep_; }
  int tp() const { return tp_; }
  int dp_index() const { return dp_index_; }
  int ep_index() const { return ep_index_; }
  int tp_index() const { return tp_index_; }
  int node_index() const { return node_index_; }
  int num_nodes() const { return num_nodes_; }
  int ranks_per_node() const { return node_.mpi->size(); }

  Communicator& world() { return world_.get(); }
  Communicator& tp_group() { return tp_group_.get(); }
  Communicator& ep_group() { return ep_group_.get(); }
  Communicator& dp_group() { return dp_group_.get(); }
  Communicator& token_group() { return token_group_.get(); }
  Communicator& expert_group() { return expert_group_.get(); }
  Communicator& node_group() { return node_.get(); }
  // This rank's emulated NIC (parallel.emulate_link), shared by every group; null when off.
  const std::shared_ptr<EmulatedNic>& emulated_nic() const { return nic_; }

 private:
  // One group: the MPI communicator (owns the MPI_Comm) and, with link
  // emulation, the decorator over it that the accessors return.
  struct Group {
    std::unique_ptr<MpiCommunicator> mpi;
    std::unique_ptr<Communicator> emulated;
    Communicator& get() { return emulated ? *emulated : *mpi; }
  };

  int dp_, ep_, tp_;
  int dp_index_ = 0, ep_index_ = 0, tp_index_ = 0, node_index_ = 0, num_nodes_ = 1;
  std::shared_ptr<EmulatedNic> nic_;
  Group world_, tp_group_, ep_group_, dp_group_, token_group_, expert_group_, node_;
};

}  // namespace sy::par
