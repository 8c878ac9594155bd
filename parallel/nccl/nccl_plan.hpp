// Host-side logic of the NCCL communicator (parallel/nccl/nccl_communicator.hpp),
// kept apart so that it is checked on a machine without a GPU: the type and
// reduction mappings, argument validation with the messages a user sees, the
// all-to-all-v send/receive plan, the wording of errors, and the polling
// schedule of Request::wait(). Nothing here calls CUDA or NCCL.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/communicator.hpp"

namespace sy::par::nccl {

// ElemType -> ncclDataType_t (F32 -> ncclFloat32, F64 -> ncclFloat64, I32 -> ncclInt32,
// I64 -> ncclInt64, U8 -> ncclUint8, BF16 -> ncclBfloat16: NCCL reduces bf16 natively).
ncclDataType_t to_nccl(ElemType type);
// ReduceOp -> ncclRedOp_t (Sum, Max, Min).
ncclRedOp_t to_nccl(ReduceOp op);
// Bytes per element of an NCCL type; throws InvalidArgument for a value outside the enum.
size_t type_size(ncclDataType_t type);
// "f32", "bf16", ... for messages; "unknown" outside the enum.
const char* type_name(ncclDataType_t type);

// Where an operation ran, for messages: the world rank (the group rank when MPI
// is not initialized), the rank and size in the group, the group's name, the device.
struct Where {
  int world_rank = 0;
  int rank = 0;
  int size = 1;
  std::string group;
  int device = 0;
};
// "rank 3 (rank 1 of 4 in 'ep_group', NCCL on device 0): alltoallv"
std::string describe(const Where& where, const std::string& op);
// "<describe> did not complete within 30 s (parallel.timeout_s): a peer failed or is stuck;
//  the NCCL communicator was aborted"
std::string timeout_message(const Where& where, const std::string& op, double timeout_s);
// "<describe>: <call> failed: <nccl error text>; the NCCL communicator was aborted"
std::string failure_message(const Where& where, const std::string& op, const std::string& call,
                            const std::string& detail);
// "<describe>: the NCCL communicator was aborted after an earlier error; it cannot be used again"
std::string aborted_message(const Where& where, const std::string& op);

// Argument checks, each throwing InvalidArgument that names the operation and the group.
// count >= 0, and a non-null pointer when count > 0.
void check_buffer(const void* ptr, int64_t count, const char* which, const char* op, const std::string& group);
// 0 <= peer < size (which: "peer", "root").
void check_peer(int peer, int size, const char* which, const char* op, const std::string& group);
// A pointer NCCL can read and write: device memory of `device` or managed memory. `type`
// and `ptr_device` are what cudaPointerGetAttributes reported.
void check_memory(cudaMemoryType type, int ptr_device, int device, const char* which, const char* op,
                  const std::string& group);
// For reduce_scatter (part = recv, whole = send) and all_gather (part = send, whole = recv):
// the part either lies apart from the whole or is exactly this rank's block of it
// (NCCL's in-place form). Any other overlap is refused.
void check_block_overlap(const void* part, const void* whole, size_t block_bytes, int rank, int size,
                         const char* op, const std::string& group);

// block * size elements (reduce_scatter's send, all_gather's recv), checked: block >= 0
// and the byte count of the whole fits int64.
int64_t total_elements(int64_t block, int size, size_t elem_bytes, const char* op, const std::string& group);

// One peer's share of an all-to-all-v, in elements from the buffer starts; a zero
// count means no message in that direction.
struct PeerTransfer {
  int peer = 0;
  int64_t send_offset = 0, send_count = 0;
  int64_t recv_offset = 0, recv_count = 0;
};
// The messages of an all-to-all-v with `size` entries in each array: peers with
// nothing to send or receive are dropped, the rest come in ascending peer order.
// Checks: counts and displacements >= 0; no element offset overflows int64 in bytes;
// with a capacity >= 0 (elements in that buffer), displacement + count <= capacity;
// receive ranges of different peers do not overlap (they would race); this rank's
// send and receive counts with itself agree.
std::vector<PeerTransfer> plan_alltoallv(int rank, int size, const int64_t* send_counts,
                                         const int64_t* send_displs, const int64_t* recv_counts,
                                         const int64_t* recv_displs, size_t elem_bytes, int64_t send_capacity,
                                         int64_t recv_capacity, const std::string& group);

// What Request::wait() does between two polls of the completion event, by the time
// waited so far: spin for the first 100 us (short collectives), then yield the core
// until 10 ms, then sleep 50 us per poll (NCCL progresses on the GPU and its proxy
// thread, so polling less often delays nothing but the wake-up).
enum class PollPhase : uint8_t { Spin, Yield, Sleep };
PollPhase poll_phase(double waited_s);

}  // namespace sy::par::nccl
