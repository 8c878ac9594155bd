// Communicators: the collectives switchyard needs, blocking and non-blocking,
// behind one interface (parallel/mpi now; parallel/nccl with the GPU backend).
//
// Thin boundary (STYLE 6): raw pointers, element counts and an element type;
// the layer above owns buffers and checks shapes. Every non-blocking call
// returns a Request; wait() on it completes the operation, and a request not
// done within the communicator's timeout (parallel.timeout_s) throws CommError
// naming the rank, the group and the operation, which ends the job.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.hpp"

namespace sy::par {

// BF16 (sy::bf16, 2 bytes) is a storage type: every communicator moves it
// (gathers, all-to-alls, broadcasts, point-to-point); the MPI communicator
// refuses to reduce it (MPI has no bf16 arithmetic), NCCL reduces it natively.
enum class ElemType : uint8_t { F32, F64, I32, I64, U8, BF16 };
enum class ReduceOp : uint8_t { Sum, Max, Min };

template <typename T>
constexpr ElemType elem_type_of();
template <>
constexpr ElemType elem_type_of<float>() { return ElemType::F32; }
template <>
constexpr ElemType elem_type_of<double>() { return ElemType::F64; }
template <>
constexpr ElemType elem_type_of<int32_t>() { return ElemType::I32; }
template <>
constexpr ElemType elem_type_of<int64_t>() { return ElemType::I64; }
template <>
constexpr ElemType elem_type_of<uint8_t>() { return ElemType::U8; }
template <>
constexpr ElemType elem_type_of<bf16>() { return ElemType::BF16; }

size_t elem_size(ElemType t);
const char* elem_type_name(ElemType t);

// A pending non-blocking operation.
class Request {
 public:
  virtual ~Request() = default;
  // True once complete (never blocks).
  virtual bool test() = 0;
  // Blocks until complete; throws CommError after the communicator's timeout.
  virtual void wait() = 0;
};
using RequestPtr = std::unique_ptr<Request>;

// An operation that completed when it was started (a blocking fallback).
class CompletedRequest final : public Request {
 public:
  bool test() override { return true; }
  void wait() override {}
};
inline RequestPtr completed_request() { return std::make_unique<CompletedRequest>(); }

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name in messages ("world", "ep_group", ...).
  virtual const std::string& name() const = 0;

  // recv (count) = op over ranks of send (count); send may equal recv (in place).
  virtual RequestPtr iallreduce(const void* send, void* recv, int64_t count, ElemType type, ReduceOp op) = 0;
  // send holds size() blocks of recv_count; rank i receives op over ranks of block i.
  virtual RequestPtr ireduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type,
                                     ReduceOp op) = 0;
  // recv (size() * send_count) = every rank's send, in rank order.
  virtual RequestPtr iall_gather(const void* send, void* recv, int64_t send_count, ElemType type) = 0;
  // Variable counts and displacements per peer, in elements (size() entries each).
  virtual RequestPtr ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                                void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                                ElemType type) = 0;
  virtual RequestPtr ibroadcast(void* buf, int64_t count, ElemType type, int root) = 0;
  virtual RequestPtr isend(const void* buf, int64_t count, ElemType type, int peer, int tag) = 0;
  virtual RequestPtr irecv(void* buf, int64_t count, ElemType type, int peer, int tag) = 0;
  virtual RequestPtr ibarrier() = 0;

  // A sub-group: the ranks with the same color, ordered by key (collective
  // over this group, like MPI_Comm_split). Test doubles may leave it out.
  virtual std::unique_ptr<Communicator> split_group(int color, int key, const std::string& name) const;

  // Blocking forms.
  void allreduce(const void* send, void* recv, int64_t count, ElemType type, ReduceOp op) {
    iallreduce(send, recv, count, type, op)->wait();
  }
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type, ReduceOp op) {
    ireduce_scatter(send, recv, recv_count, type, op)->wait();
  }
  void all_gather(const void* send, void* recv, int64_t send_count, ElemType type) {
    iall_gather(send, recv, send_count, type)->wait();
  }
  void alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                 const int64_t* recv_counts, const int64_t* recv_displs, ElemType type) {
    ialltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs, type)->wait();
  }
  void broadcast(void* buf, int64_t count, ElemType type, int root) { ibroadcast(buf, count, type, root)->wait(); }
  void send(const void* buf, int64_t count, ElemType type, int peer, int tag) {
    isend(buf, count, type, peer, tag)->wait();
  }
  void recv(void* buf, int64_t count, ElemType type, int peer, int tag) { irecv(buf, count, type, peer, tag)->wait(); }
  void barrier() { ibarrier()->wait(); }

  // Typed conveniences.
  template <typename T>
  void allreduce(T* data, int64_t count, ReduceOp op = ReduceOp::Sum) {
    allreduce(data, data, count, elem_type_of<T>(), op);
  }
};

}  // namespace sy::par
