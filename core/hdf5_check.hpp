// SY_HDF5_CHECK: the HDF5 member of the check-macro family (core/error.hpp).
// HDF5 calls return a negative id or status on failure; the library's own
// error stack is silenced and its innermost message is reported instead.
#pragma once

#include <hdf5.h>

#include <string>

#include "core/error.hpp"

namespace sy::detail {
// The most specific message on HDF5's error stack (empty if none).
std::string hdf5_error_text();
}  // namespace sy::detail

// Evaluates to the call's result so ids can be taken directly:
//   hid_t file = SY_HDF5_CHECK(H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT));
#define SY_HDF5_CHECK(expr)                                                                                  \
  ([&](const char* sy_file_, int sy_line_) {                                                                 \
    const auto sy_h5_rc_ = (expr);                                                                           \
    if (sy_h5_rc_ < 0)                                                                                       \
      ::sy::detail::throw_check<::sy::IoError>(#expr, ::sy::detail::hdf5_error_text(), sy_file_, sy_line_); \
    return sy_h5_rc_;                                                                                        \
  }(__FILE__, __LINE__))
