// Reading and writing HDF5 attributes, datasets and groups, shared by the
// files that hold HDF5 (data/dataset.cpp, data/checkpoint.cpp); each of those
// keeps only what is particular to its format.
//
// Errors: a problem with a file's content (a missing attribute, a dataset of
// the wrong type or rank) throws h5::Problem with a message that names the
// object but not the file; the caller prefixes the file's path. A failing
// HDF5 call throws IoError through SY_HDF5_CHECK.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/hdf5_check.hpp"
#include "core/hdf5_handles.hpp"

namespace sy::h5 {

// A problem with one file's content; the caller prefixes the file's path.
class Problem : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "int32", "uint16", "float64", "string", ...
std::string describe_type(hid_t type);

// --- reading ----------------------------------------------------------------

bool has_link(hid_t loc, const std::string& name);

// The group `name` under loc; `what` names it in messages ("group /tensors").
H5Group open_group(hid_t loc, const std::string& name, const std::string& what);

// One opened dataset and its extent.
struct Array {
  std::string what;  // for messages: "/tokens", "tensor 'x' array 'param'"
  H5Dataset ds;
  std::vector<hsize_t> dims;
  int64_t count() const {
    int64_t n = 1;
    for (hsize_t d : dims) n *= int64_t(d);
    return n;
  }
};

// The dataset `name` under loc, which must have `rank` dimensions; `what` names it in messages.
Array open_array(hid_t loc, const std::string& name, int rank, const std::string& what);

// Requires a's type to be of class cls ("must hold <expected>"); returns the type.
H5Type require_class(const Array& a, H5T_class_t cls, const char* expected);

// All of a, converted to mem_type.
template <typename V>
std::vector<V> read_all(const Array& a, hid_t mem_type) {
  std::vector<V> v(size_t(a.count()));
  if (!v.empty()) SY_HDF5_CHECK(H5Dread(a.ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
  return v;
}

// All of a, which must hold fixed- or variable-length strings.
std::vector<std::string> read_strings(const Array& a);

// The attribute `name` of loc, which must hold one value.
H5Attr open_scalar_attr(hid_t loc, const char* name);
int64_t read_int_attr(hid_t loc, const char* name);
std::string read_string_attr(hid_t loc, const char* name);

// Requires the integer attribute format_version of loc to be `supported`.
void check_format_version(hid_t loc, int64_t supported);

// --- writing ----------------------------------------------------------------

H5Group create_group(hid_t loc, const std::string& name);

// A fixed-length NUL-terminated string type wide enough for the longest of strings.
H5Type string_type(const std::vector<std::string>& strings);

// strings packed at the width of type.
std::vector<char> pack_strings(const std::vector<std::string>& strings, hid_t type);

void write_int_attr(hid_t loc, const char* name, int64_t value);
void write_string_attr(hid_t loc, const char* name, const std::string& value);

// A dataset of dims (a scalar when dims is empty) written whole from data
// (nothing written when it is empty).
void write_array(hid_t loc, const char* name, hid_t file_type, hid_t mem_type, const void* data,
                 const std::vector<hsize_t>& dims);

// A 1-D dataset of fixed-length strings.
void write_strings(hid_t loc, const char* name, const std::vector<std::string>& strings);

// Flushes a written file (or a directory, after a rename into it) to disk, so
// an atomic write-then-rename survives a crash; IoError naming the path.
void fsync_path(const std::string& path);

}  // namespace sy::h5
