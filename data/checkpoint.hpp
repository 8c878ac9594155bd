// Checkpoints (DESIGN.md section 8): a directory per step, one HDF5 file per
// rank holding that rank's pieces of every tensor in global (one-rank)
// coordinates, so that any world size and any layout can load it (resharding).
//
// On disk, format version 1:
//   <dir>/latest                  text "step-00000012\n": the newest complete step; written last (tmp + rename)
//   <dir>/step-00000012/          one complete checkpoint; written as step-00000012.tmp/, synced, renamed
//     meta.h5                     written by rank 0
//       attributes on /: format_version int64 = 1, step int64, world_size int64, layout string
//       /config_ini               string (scalar)   the resolved config (to_ini)
//       /ints/keys  string (K)    /ints/values  int64 (K)      CheckpointMeta::ints, in key order
//       /reals/keys string (R)    /reals/values float64 (R)    CheckpointMeta::reals, in key order
//     config.ini                  the same config as text, for people (loading reads meta.h5)
//     rank-00003.h5               what rank 3 held
//       attributes on /: format_version, step, rank, world_size (int64)
//       /tensors/<key>/           one group per tensor the rank passed (also when it holds no element);
//                                 <key> is the name with every byte outside [A-Za-z0-9._-] (and a
//                                 leading '.') written as %XX; attributes name string, global_numel int64
//         runs         int64 (n, 2)      [global_begin, count] per run, count > 0, in the caller's order
//         arrays/<key> float32|float64 (sum of counts)   values of run 0, then run 1, ... (T's type;
//                                        loading converts, so a float checkpoint loads into double)
//
// Rules:
//  - save_checkpoint and load_checkpoint are collective over comm. When any
//    rank fails, every rank throws the error of the lowest failing rank (one
//    line naming the file or tensor and the cause): InvalidArgument for a
//    broken contract (checked before anything is written), IoError otherwise.
//  - A failed save removes its temporary directory; earlier step directories
//    and `latest` are untouched. A save of a step that already exists replaces
//    that step directory (the old one is restored when the save fails).
//  - Elements held by several ranks (replicas) are written by each; loading
//    takes any one copy. Loading reads only the runs that overlap this rank's
//    elements, file by file, starting with the file of the same rank index
//    (so replicated elements are spread over the files), and stops as soon as
//    every element is filled: memory O(runs), no staging copy of values.
//  - The meta written is rank 0's: state that differs per rank must be put
//    into rank 0's meta by the caller (or be derivable from the step).
//  - The directory must be shared by all ranks (one file system).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "parallel/communicator.hpp"

namespace sy::data {

inline constexpr int64_t kCheckpointFormatVersion = 1;

// A contiguous run of a global tensor that this rank holds: global elements
// [global_begin, global_begin + count) are local elements
// [local_offset, local_offset + count) of each of the tensor's arrays.
struct CheckpointRun {
  int64_t global_begin = 0;
  int64_t count = 0;
  int64_t local_offset = 0;
};

// One buffer of a tensor: "param", "adam_m", "adam_v", ... Read by save, written by load.
template <typename T>
struct CheckpointArray {
  std::string name;
  T* data = nullptr;  // (local_numel) in the tensor's local coordinates
};

template <typename T>
struct CheckpointTensor {
  std::string name;           // global name, e.g. "layers.0.attn.qkv_weight"
  int64_t global_numel = 0;   // elements of the whole tensor in one-rank (global) coordinates
  std::vector<CheckpointRun> runs;  // this rank's elements; runs may overlap, ranks may share elements
  std::vector<CheckpointArray<T>> arrays;
  // Elements in each array's buffer: every run must end within it. -1 = not
  // known (runs are then checked against global_numel only).
  int64_t local_numel = -1;
};

struct CheckpointMeta {
  int64_t step = 0;
  int world_size = 0;      // ranks that wrote it (filled by save_checkpoint)
  std::string layout;      // free text, e.g. "dp=2 ep=2 tp=1"
  std::string config_ini;  // the resolved config (to_ini)
  std::map<std::string, int64_t> ints;  // extra state: sampler, rng, ...
  std::map<std::string, double> reals;
};

// "step-00000012" (8 digits at least).
std::string checkpoint_step_name(int64_t step);

// Collective over comm. Writes dir/step-<8 digits>/ (created with dir when
// missing) as a temporary directory, syncs it, renames it, then points
// dir/latest at it and removes all but the newest `keep` step directories
// (keep = 0 keeps all; the new one is always kept). Every rank must pass the
// same dir and meta.step. Returns the step directory. T = float or double.
template <typename T>
std::string save_checkpoint(const std::string& dir, const CheckpointMeta& meta,
                            const std::vector<CheckpointTensor<T>>& tensors, par::Communicator& comm, int keep = 0);

// A step directory (holds meta.h5) as it is, or a checkpoint directory through
// its `latest` file. Throws IoError saying what was expected.
std::string resolve_checkpoint(const std::string& path);

// The meta of the checkpoint at path (resolved as above); no communication.
CheckpointMeta read_checkpoint_meta(const std::string& path);

// Collective over comm. Fills every run of every array of every tensor from
// the checkpoint at path (resolved as above), whatever world size and layout
// wrote it, and returns its meta. IoError naming the tensor when it is not in
// the checkpoint, its global_numel differs, an array is missing, or a local
// element is in no file; naming the file when a file is missing, corrupt,
// truncated or of another format version.
template <typename T>
CheckpointMeta load_checkpoint(const std::string& path, const std::vector<CheckpointTensor<T>>& tensors,
                               par::Communicator& comm);

// The saved config (meta.config_ini) parsed by load_config; ConfigError when
// the current build refuses it, IoError when the checkpoint holds none.
Config checkpoint_config(const CheckpointMeta& meta);

// The keys that fix the parameters' shapes (model.*, and moe.num_experts,
// hidden_size, activation, router, num_null_experts, num_shared_experts,
// every) whose values differ, as "key: saved -> now" in table order; empty
// when the checkpoint's parameters fit the current model.
std::vector<std::string> model_config_differences(const Config& saved, const Config& now);

namespace detail {
// Test-only: when set, called by each rank with the path of every file it is
// about to write during save_checkpoint; a hook that throws makes that write
// fail as a full disk would.
inline std::function<void(const std::string& path)>& checkpoint_write_hook() {
  static std::function<void(const std::string&)> hook;
  return hook;
}
}  // namespace detail

}  // namespace sy::data
