// Errors and the check-macro family.
//
// Every failed check throws a typed exception whose message names the failing
// expression (or the library call) and file:line. At the public edge
// (launch/main.cpp) an exception on any rank ends the whole job with MPI_Abort.
// Library-specific macros live beside their library: core/mpi_check.hpp,
// core/hdf5_check.hpp, core/cuda/checks.hpp; all of them end in throw_check().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sy {

// Base of every switchyard exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// Bad user input: config keys and values, command-line arguments.
class ConfigError : public Error {
 public:
  using Error::Error;
};
// A caller broke a function's contract: shapes, dtypes, devices, sizes.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};
// Communication (MPI, NCCL) failed or timed out.
class CommError : public Error {
 public:
  using Error::Error;
};
// Files: HDF5, checkpoints, datasets.
class IoError : public Error {
 public:
  using Error::Error;
};
// Training diverged: a non-finite loss or gradient.
class NumericError : public Error {
 public:
  using Error::Error;
};
// Device runtime and kernels (CUDA, cuBLAS).
class DeviceError : public Error {
 public:
  using Error::Error;
};

namespace detail {
// Formats "<what> failed: <detail> [file:line]" and throws ErrorT.
template <typename ErrorT>
[[noreturn]] void throw_check(const char* what, const std::string& detail, const char* file, int line) {
  std::ostringstream os;
  os << what << " failed";
  if (!detail.empty()) os << ": " << detail;
  os << " [" << file << ":" << line << "]";
  throw ErrorT(os.str());
}
}  // namespace detail

}  // namespace sy

// SY_REQUIRE(cond, message stream) validates arguments at the top of public functions:
//   SY_REQUIRE(x.rank() == 2, "x must be (T, M), got rank " << x.rank());
#define SY_REQUIRE(cond, msg)                                                                    \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::ostringstream sy_require_os_;                                                         \
      sy_require_os_ << msg;                                                                     \
      ::sy::detail::throw_check<::sy::InvalidArgument>("check `" #cond "`", sy_require_os_.str(), \
                                                       __FILE__, __LINE__);                      \
    }                                                                                            \
  } while (0)

// SY_CHECK_AS(ErrorT, cond, msg): the same with a chosen exception type.
#define SY_CHECK_AS(ErrorT, cond, msg)                                                          \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::ostringstream sy_check_os_;                                                          \
      sy_check_os_ << msg;                                                                      \
      ::sy::detail::throw_check<ErrorT>("check `" #cond "`", sy_check_os_.str(), __FILE__, __LINE__); \
    }                                                                                           \
  } while (0)
