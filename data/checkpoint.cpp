#include "data/checkpoint.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "core/error.hpp"
#include "core/hdf5_check.hpp"
#include "core/hdf5_io.hpp"
#include "core/log.hpp"

namespace sy::data {

namespace {

using h5::fsync_path;

namespace fs = std::filesystem;
using par::Communicator;

using h5::Array;
using h5::check_format_version;
using h5::create_group;
using h5::H5Dataset;
using h5::H5File;
using h5::H5Group;
using h5::H5Space;
using h5::H5Type;
using h5::has_link;
using h5::Hdf5Quiet;
using h5::open_array;
using h5::open_group;
using h5::pack_strings;
using h5::Problem;  // with_file prefixes the path
using h5::read_all;
using h5::read_int_attr;
using h5::read_string_attr;
using h5::read_strings;
using h5::require_class;
using h5::string_type;
using h5::write_array;
using h5::write_int_attr;
using h5::write_string_attr;
using h5::write_strings;

std::string str(int64_t v) { return std::to_string(v); }
std::string quote(const std::string& s) { return "'" + s + "'"; }

template <typename T>
hid_t file_type_of() {
  return sizeof(T) == 4 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
}
template <typename T>
hid_t mem_type_of() {
  return sizeof(T) == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
}

// --- agreement: every rank throws when any rank failed --------------------------

enum class FailKind : int64_t { None = 0, Io = 1, Invalid = 2 };
struct Failure {
  FailKind kind = FailKind::None;
  std::string message;
  bool failed() const { return kind != FailKind::None; }
};

template <typename Fn>
Failure attempt(Fn&& fn) {
  try {
    fn();
    return {};
  } catch (const InvalidArgument& e) {
    return {FailKind::Invalid, e.what()};
  } catch (const std::exception& e) {
    return {FailKind::Io, e.what()};
  }
}

// Collective: the failure of the lowest failing rank, on every rank (none when all succeeded).
Failure agree(Communicator& comm, const Failure& mine) {
  int64_t first = mine.failed() ? comm.rank() : INT64_MAX;
  comm.allreduce(&first, 1, par::ReduceOp::Min);
  if (first == INT64_MAX) return {};
  const int root = int(first);
  int64_t header[2] = {int64_t(mine.kind), int64_t(mine.message.size())};  // kind, message bytes
  comm.broadcast(header, 2, par::ElemType::I64, root);
  std::string text = comm.rank() == root ? mine.message : std::string(size_t(header[1]), '\0');
  if (header[1] > 0) comm.broadcast(text.data(), header[1], par::ElemType::U8, root);
  std::replace(text.begin(), text.end(), '\n', ' ');
  return {FailKind(header[0]), text};
}

[[noreturn]] void raise(const Failure& f) {
  if (f.kind == FailKind::Invalid) throw InvalidArgument(f.message);
  throw IoError(f.message);
}

template <typename Fn>
void collective_step(Communicator& comm, Fn&& fn) {
  if (const Failure f = agree(comm, attempt(fn)); f.failed()) raise(f);
}

// --- names and paths ------------------------------------------------------------

// A tensor or array name as one HDF5 link name: bytes outside [A-Za-z0-9._-]
// and a leading '.' become %XX (so '/' never splits a path and "." never aliases).
std::string h5_key(const std::string& name) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string key;
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                       c == '-' || (c == '.' && i > 0);
    if (plain) {
      key += char(c);
    } else {
      key += '%';
      key += kHex[c >> 4];
      key += kHex[c & 15];
    }
  }
  return key;
}

std::string rank_file_name(int64_t rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank-%05lld.h5", static_cast<long long>(rank));
  return buf;
}

// The step of "step-<digits>", or -1 for any other name.
int64_t parse_step_name(const std::string& name) {
  constexpr std::string_view kPrefix = "step-";
  if (name.size() < kPrefix.size() + 8 || name.size() > kPrefix.size() + 18 || !name.starts_with(kPrefix)) return -1;
  int64_t step = 0;
  for (size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// --- files ----------------------------------------------------------------------

void run_write_hook(const std::string& path) {
  if (const auto& hook = detail::checkpoint_write_hook()) hook(path);
}

// Writes text to path and syncs it.
void write_text_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw IoError(path + ": cannot create: " + std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      throw IoError(path + ": cannot write: " + std::strerror(err));
    }
    done += size_t(n);
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  if (::close(fd) != 0 || (rc != 0 && err != EINVAL))
    throw IoError(path + ": cannot write: " + std::strerror(rc != 0 ? err : errno));
}

// write_text_file for save_checkpoint (the test hook sees it).
void save_text_file(const std::string& path, const std::string& text) {
  try {
    run_write_hook(path);
  } catch (const std::exception& e) {
    throw IoError(path + ": " + e.what());
  }
  write_text_file(path, text);
}

void remove_quietly(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

// --- HDF5 writing ---------------------------------------------------------------

// One contiguous block copied between a file dataset and a local buffer.
struct Block {
  int64_t file_offset = 0;
  int64_t local_offset = 0;
  int64_t count = 0;
};

// Sorted by file offset, neighbours that are contiguous in both merged (one HDF5 call each).
void coalesce(std::vector<Block>& blocks) {
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) { return a.file_offset < b.file_offset; });
  size_t out = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (out > 0) {
      Block& last = blocks[out - 1];
      if (last.file_offset + last.count == blocks[i].file_offset &&
          last.local_offset + last.count == blocks[i].local_offset) {
        last.count += blocks[i].count;
        continue;
      }
    }
    blocks[out++] = blocks[i];
  }
  blocks.resize(out);
}

// Selects [offset, offset + count) of the 1-D file_space and a memory space of count.
H5Space select_block(hid_t file_space, int64_t offset, int64_t count) {
  const hsize_t start = hsize_t(offset), n = hsize_t(count);
  SY_HDF5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, nullptr, &n, nullptr));
  return H5Space(SY_HDF5_CHECK(H5Screate_simple(1, &n, nullptr)));
}

void write_meta_file(const std::string& path, const CheckpointMeta& meta, int world) {
  run_write_hook(path);
  H5File file(SY_HDF5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT)));
  const hid_t f = file.get();
  write_int_attr(f, "format_version", kCheckpointFormatVersion);
  write_int_attr(f, "step", meta.step);
  write_int_attr(f, "world_size", world);
  write_string_attr(f, "layout", meta.layout);
  {
    H5Type type = string_type({meta.config_ini});
    const std::vector<char> buf = pack_strings({meta.config_ini}, type.get());
    write_array(f, "config_ini", type.get(), type.get(), buf.data(), {});
  }
  std::vector<std::string> keys;
  std::vector<int64_t> ints;
  for (const auto& [k, v] : meta.ints) keys.push_back(k), ints.push_back(v);
  H5Group g_ints = create_group(f, "ints");
  write_strings(g_ints.get(), "keys", keys);
  write_array(g_ints.get(), "values", H5T_STD_I64LE, H5T_NATIVE_INT64, ints.data(), {hsize_t(ints.size())});
  g_ints.close();
  keys.clear();
  std::vector<double> reals;
  for (const auto& [k, v] : meta.reals) keys.push_back(k), reals.push_back(v);
  H5Group g_reals = create_group(f, "reals");
  write_strings(g_reals.get(), "keys", keys);
  write_array(g_reals.get(), "values", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, reals.data(), {hsize_t(reals.size())});
  g_reals.close();
  SY_HDF5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
  file.close();
  fsync_path(path);
}

template <typename T>
void write_rank_file(const std::string& path, const CheckpointMeta& meta, int rank, int world,
                     const std::vector<CheckpointTensor<T>>& tensors) {
  run_write_hook(path);
  H5File file(SY_HDF5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT)));
  const hid_t f = file.get();
  write_int_attr(f, "format_version", kCheckpointFormatVersion);
  write_int_attr(f, "step", meta.step);
  write_int_attr(f, "rank", rank);
  write_int_attr(f, "world_size", world);
  H5Group all = create_group(f, "tensors");
  std::vector<int64_t> runs;  // (n, 2)
  std::vector<Block> blocks;
  for (const CheckpointTensor<T>& t : tensors) {
    H5Group g = create_group(all.get(), h5_key(t.name));
    write_string_attr(g.get(), "name", t.name);
    write_int_attr(g.get(), "global_numel", t.global_numel);
    runs.clear();
    blocks.clear();
    int64_t total = 0;
    for (const CheckpointRun& r : t.runs) {
      if (r.count == 0) continue;
      runs.insert(runs.end(), {r.global_begin, r.count});
      blocks.push_back({total, r.local_offset, r.count});
      total += r.count;
    }
    coalesce(blocks);
    write_array(g.get(), "runs", H5T_STD_I64LE, H5T_NATIVE_INT64, runs.data(), {hsize_t(runs.size() / 2), 2});
    H5Group arrays = create_group(g.get(), "arrays");
    for (const CheckpointArray<T>& a : t.arrays) {
      const hsize_t n = hsize_t(total);
      H5Space space(SY_HDF5_CHECK(H5Screate_simple(1, &n, nullptr)));
      H5Dataset ds(SY_HDF5_CHECK(H5Dcreate2(arrays.get(), h5_key(a.name).c_str(), file_type_of<T>(), space.get(),
                                            H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
      for (const Block& b : blocks) {
        H5Space mem = select_block(space.get(), b.file_offset, b.count);
        SY_HDF5_CHECK(H5Dwrite(ds.get(), mem_type_of<T>(), mem.get(), space.get(), H5P_DEFAULT, a.data + b.local_offset));
      }
      ds.close();
    }
  }
  all.close();
  SY_HDF5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
  file.close();
  fsync_path(path);
}

// --- HDF5 reading ---------------------------------------------------------------

// The deepest message on HDF5's error stack: for a failed H5Fopen the cause
// ("truncated file: eof = ...") rather than "unable to open file".
herr_t deepest_error(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0 && err->desc) *static_cast<std::string*>(out) = err->desc;
  return 0;
}
std::string hdf5_cause() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, deepest_error, &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? "HDF5 call returned an error" : text;
}

H5File open_h5(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Problem("no such file");
  if (!fs::is_regular_file(path, ec)) throw Problem("not a regular file");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw Problem("not an HDF5 file");
  H5File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) throw Problem("cannot open (corrupt or truncated?): " + hdf5_cause());
  return file;
}

// Runs fn; a problem, an HDF5 failure or any other error becomes IoError "<path>: <what>".
template <typename Fn>
auto with_file(const std::string& path, Fn&& fn) {
  try {
    return fn();
  } catch (const InvalidArgument&) {
    throw;
  } catch (const std::exception& e) {
    throw IoError(path + ": " + e.what());
  }
}

CheckpointMeta read_meta_file(const std::string& path) {
  return with_file(path, [&] {
    H5File file = open_h5(path);
    const hid_t f = file.get();
    check_format_version(f, kCheckpointFormatVersion);
    CheckpointMeta meta;
    meta.step = read_int_attr(f, "step");
    const int64_t world = read_int_attr(f, "world_size");
    if (world < 1 || world > INT32_MAX) throw Problem("attribute world_size = " + str(world) + " is not a rank count");
    meta.world_size = int(world);
    meta.layout = read_string_attr(f, "layout");
    {
      const Array a = open_array(f, "config_ini", 0, "/config_ini");
      meta.config_ini = read_strings(a).at(0);
    }
    const auto read_keys = [&](const char* group, const char* key_what, const char* value_what,
                               H5T_class_t value_class, const char* expected) {
      H5Group g = open_group(f, group, std::string("group /") + group);
      Array keys = open_array(g.get(), "keys", 1, key_what);
      Array values = open_array(g.get(), "values", 1, value_what);
      require_class(values, value_class, expected);
      if (keys.count() != values.count())
        throw Problem(std::string(key_what) + " has " + str(keys.count()) + " entries, " + value_what + " " +
                      str(values.count()));
      return std::make_pair(read_strings(keys), std::move(values));
    };
    {
      auto [keys, values] = read_keys("ints", "/ints/keys", "/ints/values", H5T_INTEGER, "integers");
      const auto v = read_all<int64_t>(values, H5T_NATIVE_INT64);
      for (size_t i = 0; i < keys.size(); ++i) meta.ints[keys[i]] = v[i];
    }
    {
      auto [keys, values] = read_keys("reals", "/reals/keys", "/reals/values", H5T_FLOAT, "reals");
      const auto v = read_all<double>(values, H5T_NATIVE_DOUBLE);
      for (size_t i = 0; i < keys.size(); ++i) meta.reals[keys[i]] = v[i];
    }
    return meta;
  });
}

// --- arguments ------------------------------------------------------------------

// The caller's side of the contract, for save and load alike; `who` names the
// function and, on several ranks, the rank.
template <typename T>
void check_tensors(const std::vector<CheckpointTensor<T>>& tensors, const std::string& who) {
  std::set<std::string> names;
  for (const CheckpointTensor<T>& t : tensors) {
    const std::string tensor = who + ": tensor " + quote(t.name);
    SY_REQUIRE(!t.name.empty(), who << ": a tensor has an empty name");
    SY_REQUIRE(names.insert(t.name).second, tensor << " is given twice");
    SY_REQUIRE(t.global_numel >= 0, tensor << ": global_numel " << t.global_numel << " is negative");
    SY_REQUIRE(t.local_numel >= -1, tensor << ": local_numel " << t.local_numel << " (use -1 for unknown)");
    SY_REQUIRE(!t.arrays.empty(), tensor << " has no arrays");
    bool holds = false;
    for (size_t i = 0; i < t.runs.size(); ++i) {
      const CheckpointRun& r = t.runs[i];
      SY_REQUIRE(r.count >= 0 && r.global_begin >= 0 && r.global_begin <= t.global_numel - r.count,
                 tensor << ": run " << i << " (global " << r.global_begin << " + " << r.count
                        << ") is outside its global_numel " << t.global_numel);
      SY_REQUIRE(r.local_offset >= 0 && (t.local_numel < 0 || r.local_offset <= t.local_numel - r.count),
                 tensor << ": run " << i << " (local " << r.local_offset << " + " << r.count
                        << ") is outside its buffers of local_numel " << t.local_numel);
      holds = holds || r.count > 0;
    }
    std::set<std::string> arrays;
    for (const CheckpointArray<T>& a : t.arrays) {
      SY_REQUIRE(!a.name.empty(), tensor << " has an array with an empty name");
      SY_REQUIRE(arrays.insert(a.name).second, tensor << ": array " << quote(a.name) << " is given twice");
      SY_REQUIRE(a.data != nullptr || !holds, tensor << ": array " << quote(a.name) << " has no buffer");
    }
  }
}

std::string who(const char* function, const Communicator& comm) {
  return comm.size() == 1 ? std::string(function)
                          : std::string(function) + " (rank " + str(comm.rank()) + " of " + str(comm.size()) + ")";
}

// --- saving, rank 0's steps -----------------------------------------------------

void prepare_tmp_dir(const fs::path& root, const fs::path& tmp) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec || !fs::is_directory(root)) {
    if (!ec) ec = std::make_error_code(std::errc::not_a_directory);
    throw IoError("checkpoint " + root.string() + ": cannot create the directory: " + ec.message());
  }
  fs::remove_all(tmp, ec);  // left by a save that died before its rename
  if (ec) throw IoError(tmp.string() + ": cannot remove a stale temporary directory: " + ec.message());
  fs::create_directory(tmp, ec);
  if (ec) throw IoError(tmp.string() + ": cannot create: " + ec.message());
}

// Renames tmp to final_dir (moving an older final_dir of the same step aside)
// and points root/latest at it; on failure puts everything back as it was.
void publish(const fs::path& root, const fs::path& tmp, const fs::path& final_dir, const std::string& name) {
  fsync_path(tmp.string());
  const fs::path old = root / (name + ".old"), latest = root / "latest", latest_tmp = root / "latest.tmp";
  std::error_code ec;
  bool moved_aside = false, renamed = false;
  try {
    if (fs::exists(final_dir)) {
      fs::remove_all(old, ec);
      fs::rename(final_dir, old, ec);
      if (ec) throw IoError(final_dir.string() + ": cannot move the older checkpoint of this step aside: " + ec.message());
      moved_aside = true;
    }
    fs::rename(tmp, final_dir, ec);
    if (ec) throw IoError(tmp.string() + ": cannot rename to " + final_dir.string() + ": " + ec.message());
    renamed = true;
    fsync_path(root.string());
    save_text_file(latest_tmp.string(), name + "\n");
    fs::rename(latest_tmp, latest, ec);
    if (ec) throw IoError(latest_tmp.string() + ": cannot rename to " + latest.string() + ": " + ec.message());
  } catch (...) {
    remove_quietly(latest_tmp);
    if (renamed) remove_quietly(final_dir);
    if (moved_aside) fs::rename(old, final_dir, ec);
    throw;
  }
  // Committed: latest names the new step. What follows only tidies.
  if (moved_aside) remove_quietly(old);
  try {
    fsync_path(root.string());
  } catch (const IoError& e) {
    SY_LOG_WARN("checkpoint " << final_dir.string() << " is written, but " << e.what());
  }
}

// Removes step directories beyond the newest `keep` (by step; `current` always stays).
void remove_old_steps(const fs::path& root, const std::string& current, int keep) {
  std::vector<std::pair<int64_t, fs::path>> steps;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const int64_t step = parse_step_name(name);
    if (step >= 0 && name != current && it->is_directory()) steps.emplace_back(step, it->path());
  }
  if (ec) {
    SY_LOG_WARN("checkpoint " << root.string() << ": cannot list old steps to remove: " << ec.message());
    return;
  }
  std::sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = size_t(keep - 1); i < steps.size(); ++i) {
    fs::remove_all(steps[i].second, ec);
    if (ec) SY_LOG_WARN("checkpoint: cannot remove " << steps[i].second.string() << ": " << ec.message());
  }
}

// --- loading --------------------------------------------------------------------

// Global elements [begin, end) still to fill, starting at local_offset.
struct Piece {
  int64_t begin = 0, end = 0, local_offset = 0;
};

// A rank file's runs of one tensor, made disjoint and sorted by begin.
struct FileRun {
  int64_t begin = 0, end = 0, file_offset = 0;
};

// One open rank file; its header checked against the meta.
struct RankFile {
  H5File file;
  H5Group tensors;
};

RankFile open_rank_file(const std::string& path, const CheckpointMeta& meta, int rank) {
  RankFile rf;
  rf.file = open_h5(path);
  const hid_t f = rf.file.get();
  check_format_version(f, kCheckpointFormatVersion);
  if (const int64_t step = read_int_attr(f, "step"); step != meta.step)
    throw Problem("holds step " + str(step) + ", meta.h5 step " + str(meta.step));
  if (const int64_t r = read_int_attr(f, "rank"); r != rank)
    throw Problem("holds rank " + str(r) + ", expected " + str(rank));
  if (const int64_t w = read_int_attr(f, "world_size"); w != meta.world_size)
    throw Problem("holds world_size " + str(w) + ", meta.h5 " + str(meta.world_size));
  rf.tensors = open_group(f, "tensors", "group /tensors");
  return rf;
}

// Fills what this file holds of `todo` (the rest stays in todo).
template <typename T>
void read_tensor(hid_t group, const CheckpointTensor<T>& t, std::vector<Piece>& todo) {
  const std::string tensor = "tensor " + quote(t.name);
  if (const int64_t numel = read_int_attr(group, "global_numel"); numel != t.global_numel)
    throw Problem(tensor + " has " + str(numel) + " elements, expected " + str(t.global_numel));

  const Array runs_array = open_array(group, "runs", 2, tensor + " runs");
  if (runs_array.dims[1] != 2)
    throw Problem(tensor + " runs must be (n, 2), got (n, " + str(int64_t(runs_array.dims[1])) + ")");
  require_class(runs_array, H5T_INTEGER, "integers");
  const std::vector<int64_t> flat = read_all<int64_t>(runs_array, H5T_NATIVE_INT64);  // (n, 2)
  std::vector<FileRun> runs;
  int64_t total = 0;
  for (size_t i = 0; i < flat.size() / 2; ++i) {
    const int64_t begin = flat[2 * i], count = flat[2 * i + 1];
    if (begin < 0 || count <= 0 || begin > t.global_numel - count)
      throw Problem(tensor + " run " + str(int64_t(i)) + " (" + str(begin) + " + " + str(count) +
                    ") is outside its " + str(t.global_numel) + " elements");
    runs.push_back({begin, begin + count, total});
    total += count;
  }
  std::stable_sort(runs.begin(), runs.end(), [](const FileRun& a, const FileRun& b) { return a.begin < b.begin; });
  {  // disjoint: an element held twice is taken from its first run
    size_t out = 0;
    int64_t covered = INT64_MIN;
    for (FileRun r : runs) {
      if (r.end <= covered) continue;
      if (r.begin < covered) r.file_offset += covered - r.begin, r.begin = covered;
      runs[out++] = r;
      covered = r.end;
    }
    runs.resize(out);
  }

  // What this file has of each piece, and what stays to be found elsewhere.
  std::vector<Block> blocks;
  std::vector<Piece> left;
  for (const Piece& p : todo) {
    int64_t pos = p.begin;
    auto it = std::upper_bound(runs.begin(), runs.end(), pos, [](int64_t v, const FileRun& r) { return v < r.begin; });
    if (it != runs.begin() && std::prev(it)->end > pos) --it;
    for (; it != runs.end() && it->begin < p.end; ++it) {
      if (it->begin > pos) {
        left.push_back({pos, it->begin, p.local_offset + (pos - p.begin)});
        pos = it->begin;
      }
      const int64_t stop = std::min(it->end, p.end);
      blocks.push_back({it->file_offset + (pos - it->begin), p.local_offset + (pos - p.begin), stop - pos});
      pos = stop;
    }
    if (pos < p.end) left.push_back({pos, p.end, p.local_offset + (pos - p.begin)});
  }
  if (blocks.empty()) return;
  coalesce(blocks);

  H5Group arrays = open_group(group, "arrays", tensor + " arrays");
  for (const CheckpointArray<T>& a : t.arrays) {
    const std::string what = tensor + " array " + quote(a.name);
    if (!has_link(arrays.get(), h5_key(a.name))) throw Problem(tensor + " has no array " + quote(a.name));
    const Array values = open_array(arrays.get(), h5_key(a.name), 1, what);
    require_class(values, H5T_FLOAT, "floating-point values");
    if (values.count() != total)
      throw Problem(what + " has " + str(values.count()) + " values, its runs hold " + str(total));
    H5Space space(SY_HDF5_CHECK(H5Dget_space(values.ds.get())));
    for (const Block& b : blocks) {
      H5Space mem = select_block(space.get(), b.file_offset, b.count);
      SY_HDF5_CHECK(
          H5Dread(values.ds.get(), mem_type_of<T>(), mem.get(), space.get(), H5P_DEFAULT, a.data + b.local_offset));
    }
  }
  todo = std::move(left);
}

// This rank's part of load_checkpoint, without communication.
template <typename T>
CheckpointMeta load_local(const std::string& path, const std::vector<CheckpointTensor<T>>& tensors,
                          std::vector<std::vector<Piece>>& todo, int rank) {
  const std::string step_dir = resolve_checkpoint(path);
  CheckpointMeta meta = read_meta_file((fs::path(step_dir) / "meta.h5").string());
  const int world = meta.world_size;
  std::vector<char> seen(tensors.size(), 0);  // some file holds the tensor
  const auto pending = [&] { return std::any_of(todo.begin(), todo.end(), [](const auto& v) { return !v.empty(); }); };
  // Start at the file of the same rank index: replicas are then read from different files.
  for (int k = 0; k < world && pending(); ++k) {
    const int file_rank = (rank + k) % world;
    const std::string file_path = (fs::path(step_dir) / rank_file_name(file_rank)).string();
    with_file(file_path, [&] {
      const RankFile rf = open_rank_file(file_path, meta, file_rank);
      for (size_t i = 0; i < tensors.size(); ++i) {
        if (todo[i].empty()) continue;
        const std::string key = h5_key(tensors[i].name);
        if (!has_link(rf.tensors.get(), key)) continue;
        seen[i] = 1;
        H5Group g = open_group(rf.tensors.get(), key, "tensor " + quote(tensors[i].name));
        read_tensor(g.get(), tensors[i], todo[i]);
      }
    });
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (todo[i].empty()) continue;
    const std::string tensor = "checkpoint " + step_dir + ": tensor " + quote(tensors[i].name);
    if (!seen[i]) throw IoError(tensor + " is not in the checkpoint");
    const Piece& first = *std::min_element(todo[i].begin(), todo[i].end(),
                                           [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
    int64_t missing = 0;
    for (const Piece& p : todo[i]) missing += p.end - p.begin;
    throw IoError(tensor + ": global elements [" + str(first.begin) + ", " + str(first.end) + ") are in no rank file (" +
                  str(missing) + " of this rank's elements missing)");
  }
  return meta;
}

// "section.key" -> value, in to_ini's (table) order.
std::vector<std::pair<std::string, std::string>> ini_values(const Config& config) {
  std::vector<std::pair<std::string, std::string>> values;
  std::istringstream in(to_ini(config));
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line.substr(1, line.find(']') - 1);
      continue;
    }
    const size_t eq = line.find(" =");
    if (eq == std::string::npos) continue;
    std::string value = line.substr(eq + 2);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    values.emplace_back(section + "." + line.substr(0, eq), value);
  }
  return values;
}

}  // namespace

// --- public -----------------------------------------------------------------------

std::string checkpoint_step_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

template <typename T>
std::string save_checkpoint(const std::string& dir, const CheckpointMeta& meta,
                            const std::vector<CheckpointTensor<T>>& tensors, par::Communicator& comm, int keep) {
  Hdf5Quiet quiet;
  const int rank = comm.rank(), world = comm.size();
  const std::string caller = who("save_checkpoint", comm);
  collective_step(comm, [&] {
    SY_REQUIRE(!dir.empty(), caller << ": the checkpoint directory is empty");
    SY_REQUIRE(keep >= 0, caller << ": keep = " << keep << " (0 keeps all)");
    SY_REQUIRE(meta.step >= 0, caller << ": meta.step " << meta.step << " is negative");
    check_tensors(tensors, caller);
  });
  {  // every rank must name the same step directory
    const int64_t dir_hash = int64_t(std::hash<std::string>{}(dir) >> 2);
    int64_t v[4] = {meta.step, -meta.step, dir_hash, -dir_hash};
    comm.allreduce(v, 4, par::ReduceOp::Max);
    SY_REQUIRE(v[0] == -v[1] && v[2] == -v[3],
               "save_checkpoint: every rank must pass the same dir and meta.step (steps " << -v[1] << " to " << v[0]
                                                                                          << ")");
  }
  const fs::path root(dir);
  const std::string name = checkpoint_step_name(meta.step);
  const fs::path final_dir = root / name, tmp_dir = root / (name + ".tmp");

  collective_step(comm, [&] {
    if (rank == 0) prepare_tmp_dir(root, tmp_dir);
  });
  Failure failure = agree(comm, attempt([&] {
                            const std::string path = (tmp_dir / rank_file_name(rank)).string();
                            with_file(path, [&] { write_rank_file(path, meta, rank, world, tensors); });
                            if (rank != 0) return;
                            const std::string meta_path = (tmp_dir / "meta.h5").string();
                            with_file(meta_path, [&] { write_meta_file(meta_path, meta, world); });
                            save_text_file((tmp_dir / "config.ini").string(), meta.config_ini);
                          }));
  if (!failure.failed()) failure = agree(comm, attempt([&] {
                                           if (rank == 0) publish(root, tmp_dir, final_dir, name);
                                         }));
  if (failure.failed()) {
    if (rank == 0) remove_quietly(tmp_dir);
    comm.barrier();  // no rank returns before the temporary directory is gone
    raise(failure);
  }
  if (rank == 0 && keep > 0) remove_old_steps(root, name, keep);
  comm.barrier();
  return final_dir.string();
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_regular_file(p / "meta.h5", ec)) return path;
  const fs::path latest = p / "latest";
  if (fs::is_regular_file(latest, ec)) {
    std::ifstream in(latest);
    std::string name;
    std::getline(in, name);
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    if (name.empty()) throw IoError(latest.string() + ": expected the name of a step directory, found nothing");
    const fs::path step = p / name;
    if (!fs::is_regular_file(step / "meta.h5", ec))
      throw IoError(latest.string() + " names " + quote(name) + ", which holds no meta.h5");
    return step.string();
  }
  const char* state = fs::is_directory(p, ec) ? "" : (fs::exists(p, ec) ? " (not a directory)" : " (no such directory)");
  throw IoError(path + state +
                ": expected a checkpoint step directory (holding meta.h5) or a checkpoint directory holding a "
                "'latest' file");
}

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  Hdf5Quiet quiet;
  return read_meta_file((fs::path(resolve_checkpoint(path)) / "meta.h5").string());
}

template <typename T>
CheckpointMeta load_checkpoint(const std::string& path, const std::vector<CheckpointTensor<T>>& tensors,
                               par::Communicator& comm) {
  Hdf5Quiet quiet;
  std::vector<std::vector<Piece>> todo(tensors.size());  // per tensor: global elements still to fill
  collective_step(comm, [&] {
    check_tensors(tensors, who("load_checkpoint", comm));
    for (size_t i = 0; i < tensors.size(); ++i)
      for (const CheckpointRun& r : tensors[i].runs)
        if (r.count > 0) todo[i].push_back({r.global_begin, r.global_begin + r.count, r.local_offset});
  });
  CheckpointMeta meta;
  collective_step(comm, [&] { meta = load_local(path, tensors, todo, comm.rank()); });
  return meta;
}

Config checkpoint_config(const CheckpointMeta& meta) {
  if (meta.config_ini.empty()) throw IoError("the checkpoint holds no config (config_ini is empty)");
  std::string path = (fs::temp_directory_path() / "sy-checkpoint-config-XXXXXX").string();
  const int fd = ::mkstemp(path.data());
  if (fd < 0)
    throw IoError("cannot create a temporary file for the checkpoint's config: " + std::string(std::strerror(errno)));
  ::close(fd);
  try {
    write_text_file(path, meta.config_ini);
    Config config = load_config(path);
    remove_quietly(path);
    return config;
  } catch (const ConfigError& e) {
    remove_quietly(path);
    std::string message = e.what();
    for (size_t at; (at = message.find(path)) != std::string::npos;) message.replace(at, path.size(), "checkpoint config");
    throw ConfigError(message);
  } catch (...) {
    remove_quietly(path);
    throw;
  }
}

std::vector<std::string> model_config_differences(const Config& saved, const Config& now) {
  static const std::set<std::string> kMoeShapeKeys = {"moe.num_experts",      "moe.hidden_size",
                                                      "moe.activation",       "moe.router",
                                                      "moe.num_null_experts", "moe.num_shared_experts",
                                                      "moe.every"};
  const auto a = ini_values(saved), b = ini_values(now);
  std::vector<std::string> differences;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const std::string& key = a[i].first;
    if (!key.starts_with("model.") && !kMoeShapeKeys.contains(key)) continue;
    if (a[i].second != b[i].second) differences.push_back(key + ": " + a[i].second + " -> " + b[i].second);
  }
  return differences;
}

template std::string save_checkpoint<float>(const std::string&, const CheckpointMeta&,
                                            const std::vector<CheckpointTensor<float>>&, par::Communicator&, int);
template std::string save_checkpoint<double>(const std::string&, const CheckpointMeta&,
                                             const std::vector<CheckpointTensor<double>>&, par::Communicator&, int);
template CheckpointMeta load_checkpoint<float>(const std::string&, const std::vector<CheckpointTensor<float>>&,
                                               par::Communicator&);
template CheckpointMeta load_checkpoint<double>(const std::string&, const std::vector<CheckpointTensor<double>>&,
                                                par::Communicator&);

}  // namespace sy::data
