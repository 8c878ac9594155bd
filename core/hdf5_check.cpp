#include "core/hdf5_check.hpp"

namespace sy::detail {

namespace {
herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0 && err->desc) *static_cast<std::string*>(out) = err->desc;
  return 0;
}
}  // namespace

std::string hdf5_error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &text);  // upward: the innermost entry first
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? "HDF5 call returned an error" : text;
}

}  // namespace sy::detail
