#include "core/runtime.hpp"

#include <hdf5.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/mpi_check.hpp"

namespace sy {

namespace {
RuntimeInfo g_info;
bool g_initialized = false;

void on_terminate() {
  // An exception escaped a thread (or noexcept code): same rule as run_guarded.
  const char* what = "terminate called without an active exception";
  if (auto e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      abort_job(ex.what());
    } catch (...) {
      what = "unknown exception";
    }
  }
  abort_job(what);
}
}  // namespace

RuntimeInfo init_runtime(int* argc, char*** argv) {
  if (g_initialized) return g_info;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    int provided = 0;
    SY_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  }
  SY_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  SY_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &g_info.rank));
  SY_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &g_info.world_size));
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back through SY_HDF5_CHECK
  log::set_rank(g_info.rank);
  std::set_terminate(on_terminate);
  g_initialized = true;
  return g_info;
}

const RuntimeInfo& runtime() { return g_info; }
bool runtime_initialized() { return g_initialized; }

void abort_job(const char* what) {
  if (g_info.world_size > 1)
    std::fprintf(stderr, "switchyard: error on rank %d of %d: %s\n", g_info.rank, g_info.world_size, what);
  else
    std::fprintf(stderr, "switchyard: error: %s\n", what);
  std::fflush(stderr);
  int mpi_up = 0, mpi_down = 0;
  MPI_Initialized(&mpi_up);
  MPI_Finalized(&mpi_down);
  if (mpi_up && !mpi_down && g_info.world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

int run_guarded(int argc, char** argv, const std::function<int()>& body, bool use_mpi) {
  int code = 0;
  try {
    if (use_mpi) init_runtime(&argc, &argv);
    code = body();
  } catch (const std::exception& e) {
    abort_job(e.what());
  } catch (...) {
    abort_job("unknown exception");
  }
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
  return code;
}

}  // namespace sy
