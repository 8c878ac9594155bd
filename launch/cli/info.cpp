// `switchyard info`: what this build is and how fast this machine multiplies.
#include <hdf5.h>
#include <mpi.h>

#include <Eigen/Core>
#include <iostream>
#include <thread>

#include "bench/bench.hpp"
#include "core/backend.hpp"
#include "core/thread_pool.hpp"
#include "launch/cli/commands.hpp"
#include "switchyard/build_info.hpp"

namespace sy::cli {

int info_main(const Args& args) {
  bool measure = true;
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << "usage: switchyard info [--no-bench]\n\n"
                   "Prints the version, build options (CUDA, MPI library, Eigen, HDF5, threads) and\n"
                   "the fp32 GEMM GFLOP/s and FMA peak it measures in a second or two.\n"
                   "  --no-bench   skip the measurements\n";
      return 0;
    }
    if (a == "--version") {
      std::cout << "switchyard " << SWITCHYARD_VERSION << "\n";
      return 0;
    }
    if (a == "--no-bench") {
      measure = false;
      continue;
    }
    std::cerr << "switchyard info: unknown option '" << a << "' (see switchyard info --help)\n";
    return 2;
  }
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);
  std::string mpi(mpi_version, len);
  if (auto cut = mpi.find_first_of(",\n"); cut != std::string::npos) mpi.resize(cut);
  unsigned h5_major = 0, h5_minor = 0, h5_release = 0;
  H5get_libversion(&h5_major, &h5_minor, &h5_release);

  std::cout << "switchyard " << SWITCHYARD_VERSION << " (" << SWITCHYARD_BUILD_TYPE << ", "
            << SWITCHYARD_CXX_COMPILER << (SWITCHYARD_NATIVE ? ", -march=native" : "") << ")\n";
  std::cout << "  MPI        " << mpi << "\n";
  std::cout << "  Eigen      " << EIGEN_WORLD_VERSION << "." << EIGEN_MAJOR_VERSION << "." << EIGEN_MINOR_VERSION
            << "\n";
  std::cout << "  HDF5       " << h5_major << "." << h5_minor << "." << h5_release << "\n";
  std::cout << "  CUDA       ";
  if (cuda_built()) {
    std::cout << "built (nvcc " << SWITCHYARD_CUDA_VERSION << "), "
              << (cuda_available() ? "device available" : "no usable device on this machine") << "\n";
  } else {
    std::cout << "not built\n";
  }
  std::cout << "  threads    " << num_threads() << " compute (SWITCHYARD_THREADS), " << std::thread::hardware_concurrency()
            << " hardware\n";
  if (measure) {
    const int t = num_threads();
    const double peak = bench::measure_fma_peak_gflops(t, 0.2);
    const double g = bench::measure_gemm_gflops(2048, 512, 1024, t, 0.3);
    std::cout << "  FMA peak   " << peak << " GFLOP/s fp32 on " << t << " thread" << (t == 1 ? "" : "s") << "\n";
    std::cout << "  GEMM       " << g << " GFLOP/s fp32 at 2048x512x1024 (" << 100.0 * g / peak << "% of peak)\n";
  }
  return 0;
}

}  // namespace sy::cli
