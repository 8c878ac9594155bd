#include "parallel/nccl/nccl_plan.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <sstream>

#include "core/error.hpp"

namespace sy::par::nccl {

ncclDataType_t to_nccl(ElemType type) {
  switch (type) {
    case ElemType::F32: return ncclFloat32;
    case ElemType::F64: return ncclFloat64;
    case ElemType::I32: return ncclInt32;
    case ElemType::I64: return ncclInt64;
    case ElemType::U8: return ncclUint8;
    case ElemType::BF16: return ncclBfloat16;
  }
  SY_REQUIRE(false, "unknown ElemType " << static_cast<int>(type));
  return ncclNumTypes;
}

ncclRedOp_t to_nccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  SY_REQUIRE(false, "unknown ReduceOp " << static_cast<int>(op));
  return ncclSum;
}

size_t type_size(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclInt32:
    case ncclUint32: return 4;
    case ncclInt64:
    case ncclUint64: return 8;
    case ncclFloat16: return 2;
    case ncclFloat32: return 4;
    case ncclFloat64: return 8;
    case ncclBfloat16: return 2;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 24, 0)
    case ncclFloat8e4m3:
    case ncclFloat8e5m2: return 1;
#endif
    default: break;
  }
  SY_REQUIRE(false, "unknown NCCL data type " << static_cast<int>(type));
  return 0;
}

const char* type_name(ncclDataType_t type) {
  switch (type) {
    case ncclInt8: return "i8";
    case ncclUint8: return "u8";
    case ncclInt32: return "i32";
    case ncclUint32: return "u32";
    case ncclInt64: return "i64";
    case ncclUint64: return "u64";
    case ncclFloat16: return "f16";
    case ncclFloat32: return "f32";
    case ncclFloat64: return "f64";
    case ncclBfloat16: return "bf16";
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 24, 0)
    case ncclFloat8e4m3: return "f8e4m3";
    case ncclFloat8e5m2: return "f8e5m2";
#endif
    default: break;
  }
  return "unknown";
}

std::string describe(const Where& where, const std::string& op) {
  std::ostringstream os;
  os << "rank " << where.world_rank << " (rank " << where.rank << " of " << where.size << " in '" << where.group
     << "', NCCL on device " << where.device << "): " << op;
  return os.str();
}

std::string timeout_message(const Where& where, const std::string& op, double timeout_s) {
  std::ostringstream os;
  os << describe(where, op) << " did not complete within " << timeout_s
     << " s (parallel.timeout_s): a peer failed or is stuck; the NCCL communicator was aborted";
  return os.str();
}

std::string failure_message(const Where& where, const std::string& op, const std::string& call,
                            const std::string& detail) {
  return describe(where, op) + ": " + call + " failed: " + detail + "; the NCCL communicator was aborted";
}

std::string aborted_message(const Where& where, const std::string& op) {
  return describe(where, op) + ": the NCCL communicator was aborted after an earlier error; it cannot be used again";
}

void check_buffer(const void* ptr, int64_t count, const char* which, const char* op, const std::string& group) {
  SY_REQUIRE(count >= 0, op << " on '" << group << "': " << which << " count must be >= 0, got " << count);
  SY_REQUIRE(count == 0 || ptr != nullptr,
             op << " on '" << group << "': " << which << " buffer is null but its count is " << count);
}

void check_peer(int peer, int size, const char* which, const char* op, const std::string& group) {
  SY_REQUIRE(peer >= 0 && peer < size,
             op << " on '" << group << "': " << which << " " << peer << " is outside the group of " << size
                << " ranks");
}

void check_memory(cudaMemoryType type, int ptr_device, int device, const char* which, const char* op,
                  const std::string& group) {
  SY_REQUIRE(type == cudaMemoryTypeDevice || type == cudaMemoryTypeManaged,
             op << " on '" << group << "': the " << which
                << " buffer is not device memory (cudaPointerGetAttributes type " << static_cast<int>(type)
                << "); the NCCL communicator moves device buffers only, use the MPI communicator for host data");
  SY_REQUIRE(type == cudaMemoryTypeManaged || ptr_device == device,
             op << " on '" << group << "': the " << which << " buffer is on device " << ptr_device
                << " but the communicator runs on device " << device);
}

void check_block_overlap(const void* part, const void* whole, size_t block_bytes, int rank, int size,
                         const char* op, const std::string& group) {
  if (block_bytes == 0 || part == nullptr || whole == nullptr) return;
  const auto p = reinterpret_cast<uintptr_t>(part);
  const auto w = reinterpret_cast<uintptr_t>(whole);
  const uintptr_t p_end = p + block_bytes;
  const uintptr_t w_end = w + block_bytes * static_cast<uintptr_t>(size);
  const bool overlap = p < w_end && w < p_end;
  SY_REQUIRE(!overlap || p == w + block_bytes * static_cast<uintptr_t>(rank),
             op << " on '" << group << "': the buffers overlap but the block buffer is not this rank's block ("
                << rank << ") of the full buffer; in place needs exactly that block, otherwise use separate "
                << "buffers");
}

int64_t total_elements(int64_t block, int size, size_t elem_bytes, const char* op, const std::string& group) {
  SY_REQUIRE(block >= 0, op << " on '" << group << "': block count must be >= 0, got " << block);
  SY_REQUIRE(size >= 1 && elem_bytes > 0, op << " on '" << group << "': bad group size " << size
                                              << " or element size " << elem_bytes);
  const int64_t max_block = std::numeric_limits<int64_t>::max() / size / static_cast<int64_t>(elem_bytes);
  SY_REQUIRE(block <= max_block, op << " on '" << group << "': " << size << " blocks of " << block
                                    << " elements overflow a 64-bit byte count");
  return block * size;
}

std::vector<PeerTransfer> plan_alltoallv(int rank, int size, const int64_t* send_counts,
                                         const int64_t* send_displs, const int64_t* recv_counts,
                                         const int64_t* recv_displs, size_t elem_bytes, int64_t send_capacity,
                                         int64_t recv_capacity, const std::string& group) {
  SY_REQUIRE(size >= 1 && rank >= 0 && rank < size,
             "alltoallv on '" << group << "': rank " << rank << " outside a group of " << size);
  SY_REQUIRE(send_counts && send_displs && recv_counts && recv_displs,
             "alltoallv on '" << group << "': the count and displacement arrays (" << size
                              << " entries each) must not be null");
  SY_REQUIRE(elem_bytes > 0, "alltoallv on '" << group << "': element size must be positive");
  // The largest element offset whose byte offset still fits int64.
  const int64_t max_elems = std::numeric_limits<int64_t>::max() / static_cast<int64_t>(elem_bytes);

  auto check_side = [&](const char* side, int p, int64_t count, int64_t displ, int64_t capacity) {
    SY_REQUIRE(count >= 0 && displ >= 0, "alltoallv on '" << group << "': " << side << " count " << count
                                                           << " and displacement " << displ << " for peer " << p
                                                           << " must be >= 0");
    SY_REQUIRE(displ <= max_elems - count, "alltoallv on '" << group << "': " << side << " block for peer " << p
                                                             << " at " << displ << " + " << count
                                                             << " elements overflows a 64-bit byte offset");
    SY_REQUIRE(capacity < 0 || count == 0 || displ + count <= capacity,
               "alltoallv on '" << group << "': " << side << " block for peer " << p << " is elements [" << displ
                                << ", " << displ + count << ") but the " << side << " buffer holds " << capacity);
  };

  std::vector<PeerTransfer> plan;
  for (int p = 0; p < size; ++p) {
    check_side("send", p, send_counts[p], send_displs[p], send_capacity);
    check_side("recv", p, recv_counts[p], recv_displs[p], recv_capacity);
    if (send_counts[p] == 0 && recv_counts[p] == 0) continue;
    plan.push_back({p, send_displs[p], send_counts[p], recv_displs[p], recv_counts[p]});
  }
  SY_REQUIRE(send_counts[rank] == recv_counts[rank],
             "alltoallv on '" << group << "': rank " << rank << " sends " << send_counts[rank]
                              << " elements to itself but expects to receive " << recv_counts[rank]);

  // Receive ranges of different peers must not overlap: NCCL would write them concurrently.
  std::vector<const PeerTransfer*> recvs;
  for (const PeerTransfer& t : plan)
    if (t.recv_count > 0) recvs.push_back(&t);
  std::sort(recvs.begin(), recvs.end(),
            [](const PeerTransfer* a, const PeerTransfer* b) { return a->recv_offset < b->recv_offset; });
  for (size_t i = 1; i < recvs.size(); ++i) {
    const PeerTransfer& a = *recvs[i - 1];
    const PeerTransfer& b = *recvs[i];
    SY_REQUIRE(a.recv_offset + a.recv_count <= b.recv_offset,
               "alltoallv on '" << group << "': receive blocks of peers " << a.peer << " [" << a.recv_offset << ", "
                                << a.recv_offset + a.recv_count << ") and " << b.peer << " [" << b.recv_offset
                                << ", " << b.recv_offset + b.recv_count << ") overlap");
  }
  return plan;
}

PollPhase poll_phase(double waited_s) {
  if (waited_s < 100e-6) return PollPhase::Spin;
  if (waited_s < 10e-3) return PollPhase::Yield;
  return PollPhase::Sleep;
}

}  // namespace sy::par::nccl
