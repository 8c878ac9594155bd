#include "parallel/process_grid.hpp"

#include <string>

#include "core/error.hpp"
#include "core/mpi_check.hpp"

namespace sy::par {

ProcessGrid::ProcessGrid(const ParallelConfig& config, MPI_Comm world)
    : dp_(config.dp), ep_(config.ep), tp_(config.tp) {
  // A duplicate keeps our traffic apart from anything else on the world.
  MPI_Comm dup = MPI_COMM_NULL;
  SY_MPI_CHECK(MPI_Comm_dup(world, &dup));
  world_.mpi = std::make_unique<MpiCommunicator>(dup, true, "world", config.timeout_s);
  const int W = world_.mpi->size(), r = world_.mpi->rank();
  SY_CHECK_AS(ConfigError, int64_t(dp_) * ep_ * tp_ == W,
              "parallel.dp * parallel.ep * parallel.tp = " << dp_ << " * " << ep_ << " * " << tp_ << " = "
                                                           << int64_t(dp_) * ep_ * tp_ << ", but the job has " << W
                                                           << " rank" << (W == 1 ? "" : "s")
                                                           << ": set them so the product is " << W);
  tp_index_ = r % tp_;
  ep_index_ = (r / tp_) % ep_;
  dp_index_ = r / (tp_ * ep_);
  tp_group_.mpi = world_.mpi->split(dp_index_ * ep_ + ep_index_, tp_index_, "tp_group");
  ep_group_.mpi = world_.mpi->split(dp_index_ * tp_ + tp_index_, ep_index_, "ep_group");
  dp_group_.mpi = world_.mpi->split(ep_index_ * tp_ + tp_index_, dp_index_, "dp_group");
  token_group_.mpi = world_.mpi->split(tp_index_, r, "token_group");
  expert_group_.mpi = world_.mpi->split(tp_index_, ep_index_ * dp_ + dp_index_, "expert_group");

  if (config.ranks_per_node > 0) {
    const int m = config.ranks_per_node;
    SY_CHECK_AS(ConfigError, W % m == 0,
                "parallel.ranks_per_node = " << m << " does not divide the " << W << " ranks of the job");
    node_.mpi = world_.mpi->split(r / m, r, "node_group");
  } else {
    MPI_Comm shared = MPI_COMM_NULL;
    SY_MPI_CHECK(MPI_Comm_split_type(world_.mpi->comm(), MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &shared));
    node_.mpi = std::make_unique<MpiCommunicator>(shared, true, "node_group", config.timeout_s);
  }
  // Nodes are numbered by their lowest world rank, in order.
  int leader = node_.mpi->rank() == 0 ? 1 : 0, before = 0;
  SY_MPI_CHECK(MPI_Exscan(&leader, &before, 1, MPI_INT, MPI_SUM, world_.mpi->comm()));
  if (r == 0) before = 0;  // MPI_Exscan leaves rank 0's result undefined
  int my_node = leader ? before : 0;
  SY_MPI_CHECK(MPI_Bcast(&my_node, 1, MPI_INT, 0, node_.mpi->comm()));
  node_index_ = my_node;
  SY_MPI_CHECK(MPI_Allreduce(&leader, &num_nodes_, 1, MPI_INT, MPI_SUM, world_.mpi->comm()));

  // One NIC per rank: every group's transfers share its links.
  nic_ = make_emulated_nic(config.emulate_link);
  if (nic_)
    for (Group* g : {&world_, &tp_group_, &ep_group_, &dp_group_, &token_group_, &expert_group_, &node_})
      g->emulated = std::make_unique<EmulatedLinkCommunicator>(*g->mpi, nic_);
}

}  // namespace sy::par
