// A job where one rank throws while every other rank waits in a collective:
// without run_guarded()'s MPI_Abort the others would wait forever.
//   abort_on_error_helper FAILING_RANK
#include <mpi.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "core/runtime.hpp"

int main(int argc, char** argv) {
  const int failing = argc > 1 ? std::atoi(argv[1]) : 1;
  return sy::run_guarded(argc, argv, [&] {
    if (sy::runtime().rank == failing)
      throw std::runtime_error("injected failure in expert dispatch on rank " + std::to_string(failing));
    MPI_Barrier(MPI_COMM_WORLD);  // never completes: the failing rank does not arrive
    return 0;
  });
}
