// Process start-up and the job-wide failure rule.
//
// run_guarded() is the public edge of every switchyard process: it initializes
// MPI (threads allowed), makes MPI and HDF5 return errors instead of aborting
// or printing on their own, and turns any exception on any rank into one
// message naming the rank, followed by MPI_Abort with a non-zero code, so a
// failing rank ends the whole job instead of leaving the others waiting.
#pragma once

#include <functional>

namespace sy {

struct RuntimeInfo {
  int rank = 0;
  int world_size = 1;
};

// Idempotent; returns this process's place in MPI_COMM_WORLD.
RuntimeInfo init_runtime(int* argc, char*** argv);
const RuntimeInfo& runtime();
bool runtime_initialized();

// Runs body (after init_runtime when use_mpi); returns its exit code after
// MPI_Finalize, or aborts the job (exit code 1) when body throws on any rank.
int run_guarded(int argc, char** argv, const std::function<int()>& body, bool use_mpi = true);

// Prints "switchyard: error on rank R of W: what" (or "switchyard: error: what"
// in a one-process run) and ends the job.
[[noreturn]] void abort_job(const char* what);

}  // namespace sy
