// Helpers shared by the multi-rank tests (*MpiTest.cpp).
#pragma once

#include <mpi.h>

#include <memory>

#include "parallel/mpi/mpi_communicator.hpp"

namespace sy::test {

inline int world_size() {
  int w = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// A communicator over a duplicate of MPI_COMM_WORLD (owned), named "world".
inline std::unique_ptr<par::MpiCommunicator> world_communicator(double timeout_s = 60) {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  return std::make_unique<par::MpiCommunicator>(dup, true, "world", timeout_s);
}

}  // namespace sy::test
