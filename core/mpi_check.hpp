// SY_MPI_CHECK: the MPI member of the check-macro family (core/error.hpp).
// Communicators should return errors (MPI_ERRORS_RETURN) for this to see them.
#pragma once

#include <mpi.h>

#include <string>

#include "core/error.hpp"

namespace sy::detail {
inline std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(rc);
  return std::string(text, len);
}
}  // namespace sy::detail

#define SY_MPI_CHECK(expr)                                                                                 \
  do {                                                                                                     \
    const int sy_mpi_rc_ = (expr);                                                                         \
    if (sy_mpi_rc_ != MPI_SUCCESS)                                                                         \
      ::sy::detail::throw_check<::sy::CommError>(#expr, ::sy::detail::mpi_error_text(sy_mpi_rc_), __FILE__, \
                                                 __LINE__);                                                \
  } while (0)
