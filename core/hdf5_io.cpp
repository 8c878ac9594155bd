#include "core/hdf5_io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sy::h5 {

std::string describe_type(hid_t type) {
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_FLOAT: return "float" + std::to_string(bits);
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ARRAY: return "array";
    default: return "a non-numeric type";
  }
}

// --- reading ----------------------------------------------------------------

bool has_link(hid_t loc, const std::string& name) { return SY_HDF5_CHECK(H5Lexists(loc, name.c_str(), H5P_DEFAULT)) > 0; }

H5Group open_group(hid_t loc, const std::string& name, const std::string& what) {
  if (!has_link(loc, name)) throw Problem("missing " + what);
  H5Group g(H5Gopen2(loc, name.c_str(), H5P_DEFAULT));
  if (!g.valid()) throw Problem(what + " is not a group");
  return g;
}

Array open_array(hid_t loc, const std::string& name, int rank, const std::string& what) {
  Array a;
  a.what = what;
  if (!has_link(loc, name)) throw Problem("missing " + what);
  a.ds = H5Dataset(H5Dopen2(loc, name.c_str(), H5P_DEFAULT));
  if (!a.ds.valid()) throw Problem(what + " is not a dataset");
  H5Space space(SY_HDF5_CHECK(H5Dget_space(a.ds.get())));
  const int nd = SY_HDF5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (nd != rank)
    throw Problem(what + " must be " + std::to_string(rank) + "-D, has " + std::to_string(nd) + " dimensions");
  a.dims.resize(size_t(nd));
  SY_HDF5_CHECK(H5Sget_simple_extent_dims(space.get(), a.dims.data(), nullptr));
  return a;
}

H5Type require_class(const Array& a, H5T_class_t cls, const char* expected) {
  H5Type type(SY_HDF5_CHECK(H5Dget_type(a.ds.get())));
  if (H5Tget_class(type.get()) != cls)
    throw Problem(a.what + " must hold " + expected + ", got " + describe_type(type.get()));
  return type;
}

std::vector<std::string> read_strings(const Array& a) {
  const H5Type type = require_class(a, H5T_STRING, "strings");
  const size_t n = size_t(a.count());
  std::vector<std::string> out(n);
  if (n == 0) return out;
  if (SY_HDF5_CHECK(H5Tis_variable_str(type.get())) > 0) {
    H5Type mem(SY_HDF5_CHECK(H5Tcopy(H5T_C_S1)));
    SY_HDF5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
    std::vector<char*> ptrs(n, nullptr);
    SY_HDF5_CHECK(H5Dread(a.ds.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()));
    for (size_t i = 0; i < n; ++i) out[i] = ptrs[i] ? ptrs[i] : "";
    H5Space space(SY_HDF5_CHECK(H5Dget_space(a.ds.get())));
    SY_HDF5_CHECK(H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data()));
  } else {
    const size_t width = H5Tget_size(type.get());
    std::vector<char> buf(n * width);
    SY_HDF5_CHECK(H5Dread(a.ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()));
    for (size_t i = 0; i < n; ++i) out[i].assign(buf.data() + i * width, strnlen(buf.data() + i * width, width));
  }
  return out;
}

H5Attr open_scalar_attr(hid_t loc, const char* name) {
  if (SY_HDF5_CHECK(H5Aexists(loc, name)) <= 0) throw Problem(std::string("missing attribute ") + name);
  H5Attr attr(SY_HDF5_CHECK(H5Aopen(loc, name, H5P_DEFAULT)));
  H5Space space(SY_HDF5_CHECK(H5Aget_space(attr.get())));
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    throw Problem(std::string("attribute ") + name + " must hold one value");
  return attr;
}

int64_t read_int_attr(hid_t loc, const char* name) {
  H5Attr attr = open_scalar_attr(loc, name);
  H5Type type(SY_HDF5_CHECK(H5Aget_type(attr.get())));
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    throw Problem(std::string("attribute ") + name + " must be an integer, got " + describe_type(type.get()));
  int64_t v = 0;
  SY_HDF5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v));
  return v;
}

std::string read_string_attr(hid_t loc, const char* name) {
  H5Attr attr = open_scalar_attr(loc, name);
  H5Type type(SY_HDF5_CHECK(H5Aget_type(attr.get())));
  if (H5Tget_class(type.get()) != H5T_STRING)
    throw Problem(std::string("attribute ") + name + " must be a string, got " + describe_type(type.get()));
  if (SY_HDF5_CHECK(H5Tis_variable_str(type.get())) > 0) {
    H5Type mem(SY_HDF5_CHECK(H5Tcopy(H5T_C_S1)));
    SY_HDF5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
    char* p = nullptr;
    SY_HDF5_CHECK(H5Aread(attr.get(), mem.get(), &p));
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  const size_t width = H5Tget_size(type.get());
  std::vector<char> buf(width);
  SY_HDF5_CHECK(H5Aread(attr.get(), type.get(), buf.data()));
  return std::string(buf.data(), strnlen(buf.data(), width));
}

void check_format_version(hid_t loc, int64_t supported) {
  const int64_t version = read_int_attr(loc, "format_version");
  if (version != supported)
    throw Problem("format_version " + std::to_string(version) + " is not supported (this build reads " +
                  std::to_string(supported) + ")");
}

// --- writing ----------------------------------------------------------------

H5Group create_group(hid_t loc, const std::string& name) {
  return H5Group(SY_HDF5_CHECK(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
}

H5Type string_type(const std::vector<std::string>& strings) {
  size_t width = 1;
  for (const auto& s : strings) width = std::max(width, s.size() + 1);
  H5Type type(SY_HDF5_CHECK(H5Tcopy(H5T_C_S1)));
  SY_HDF5_CHECK(H5Tset_size(type.get(), width));
  SY_HDF5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLTERM));
  return type;
}

std::vector<char> pack_strings(const std::vector<std::string>& strings, hid_t type) {
  const size_t width = H5Tget_size(type);
  std::vector<char> buf(std::max<size_t>(1, width * strings.size()), '\0');
  for (size_t i = 0; i < strings.size(); ++i) std::memcpy(buf.data() + i * width, strings[i].data(), strings[i].size());
  return buf;
}

void write_int_attr(hid_t loc, const char* name, int64_t value) {
  H5Space space(SY_HDF5_CHECK(H5Screate(H5S_SCALAR)));
  H5Attr attr(SY_HDF5_CHECK(H5Acreate2(loc, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  SY_HDF5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value));
  attr.close();
}

void write_string_attr(hid_t loc, const char* name, const std::string& value) {
  H5Type type = string_type({value});
  H5Space space(SY_HDF5_CHECK(H5Screate(H5S_SCALAR)));
  H5Attr attr(SY_HDF5_CHECK(H5Acreate2(loc, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  const std::vector<char> buf = pack_strings({value}, type.get());
  SY_HDF5_CHECK(H5Awrite(attr.get(), type.get(), buf.data()));
  attr.close();
}

void write_array(hid_t loc, const char* name, hid_t file_type, hid_t mem_type, const void* data,
                 const std::vector<hsize_t>& dims) {
  H5Space space(dims.empty() ? SY_HDF5_CHECK(H5Screate(H5S_SCALAR))
                             : SY_HDF5_CHECK(H5Screate_simple(int(dims.size()), dims.data(), nullptr)));
  H5Dataset ds(SY_HDF5_CHECK(H5Dcreate2(loc, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  if (SY_HDF5_CHECK(H5Sget_simple_extent_npoints(space.get())) > 0)
    SY_HDF5_CHECK(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
  ds.close();
}

void write_strings(hid_t loc, const char* name, const std::vector<std::string>& strings) {
  H5Type type = string_type(strings);
  const std::vector<char> buf = pack_strings(strings, type.get());
  write_array(loc, name, type.get(), type.get(), buf.data(), {hsize_t(strings.size())});
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw IoError("cannot open " + path + " to sync it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) throw IoError("cannot sync " + path + ": " + std::strerror(err));
}

}  // namespace sy::h5
