// The NCCL communicator: the collectives of par::Communicator over DEVICE
// buffers, run on a stream of its own and ordered against compute by events
// (DESIGN section 4: on GPU the all-to-all runs on its own stream).
//
// Ordering. Every operation first records an event on the compute stream
// (set_compute_stream; the legacy default stream until set) and makes the
// communication stream wait on it, so inputs written by kernels already queued
// on the compute stream are ready; then it enqueues the NCCL call and records a
// completion event on the communication stream. The returned Request:
//   test()  cudaEventQuery of the completion event (never blocks);
//   wait()  polls it (nccl_plan.hpp poll_phase) until complete, for at most
//           timeout_s (parallel.timeout_s); past that, or when NCCL reports an
//           asynchronous error, the communicator is aborted (ncclCommAbort) and
//           CommError names the rank, the group and the operation. An aborted
//           communicator refuses every later operation.
// To let compute consume the outputs without blocking the host, call
// stream_wait(request, compute_stream) (or stream_wait_all) instead of wait().
// Buffers must stay allocated, and must not be written by compute, until the
// request completes (or the consuming stream has waited on it).
//
// Differences from the MPI communicator:
// - Buffers are device memory of this communicator's device (or managed memory),
//   checked with cudaPointerGetAttributes; host buffers are refused.
// - isend/irecv ignore `tag` (NCCL has none): messages between two ranks match
//   in the order they were issued. A send is complete only when the peer has
//   received it (no eager buffering), so the blocking send() must not be followed
//   by a recv() that the peer posts first: issue isend and irecv, then wait both.
//   A send to oneself must be in the same NCCL group as its receive: use
//   ialltoallv (which groups them) rather than isend/irecv to self.
// - ibarrier is a one-element all-reduce on a device buffer the communicator owns.
// - ElemType::BF16 is moved and reduced natively (ncclBfloat16); the overloads
//   taking an ncclDataType_t reach the other NCCL types (ncclFloat16, ...).
// One host thread issues the operations of a communicator and waits on them.
#pragma once

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.hpp"

namespace sy::par {

namespace nccl {
struct State;  // the NCCL comm, the stream, events; shared with the requests (nccl_communicator.cpp)
}

class NcclCommunicator final : public Communicator {
 public:
  // Use make_nccl_communicator / make_local_nccl_communicator.
  NcclCommunicator(std::shared_ptr<nccl::State> state, MPI_Comm bootstrap);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  const std::string& name() const override;
  int device() const;
  double timeout_s() const;
  // The stream every NCCL call of this communicator is enqueued on (created here,
  // cudaStreamNonBlocking); callers may enqueue packing kernels on it too.
  cudaStream_t comm_stream() const;
  ncclComm_t nccl_comm() const;
  // True once the communicator was aborted (timeout or NCCL error).
  bool aborted() const;

  // The stream whose queued work every later operation waits for (nullptr, the
  // legacy default stream, until set).
  void set_compute_stream(cudaStream_t stream) { compute_stream_ = stream; }
  cudaStream_t compute_stream() const { return compute_stream_; }

  // Makes `stream` wait (on the device, the host does not block) for the
  // operation of `request`. A request returned for an empty operation
  // (CompletedRequest) needs no wait; a request of another communicator type is refused.
  void stream_wait(const Request& request, cudaStream_t stream) const;
  // Makes `stream` wait for everything enqueued so far on the communication stream.
  void stream_wait_all(cudaStream_t stream) const;

  RequestPtr iallreduce(const void* send, void* recv, int64_t count, ElemType type, ReduceOp op) override;
  RequestPtr ireduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type, ReduceOp op) override;
  RequestPtr iall_gather(const void* send, void* recv, int64_t send_count, ElemType type) override;
  RequestPtr ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                        const int64_t* recv_counts, const int64_t* recv_displs, ElemType type) override;
  RequestPtr ibroadcast(void* buf, int64_t count, ElemType type, int root) override;
  // `tag` is ignored (see above).
  RequestPtr isend(const void* buf, int64_t count, ElemType type, int peer, int tag) override;
  RequestPtr irecv(void* buf, int64_t count, ElemType type, int peer, int tag) override;
  RequestPtr ibarrier() override;

  // The same operations on any NCCL type (ncclFloat16, ...; ElemType::BF16 maps to
  // ncclBfloat16); counts and displacements in elements of that type.
  RequestPtr iallreduce(const void* send, void* recv, int64_t count, ncclDataType_t type, ReduceOp op);
  RequestPtr ireduce_scatter(const void* send, void* recv, int64_t recv_count, ncclDataType_t type, ReduceOp op);
  RequestPtr iall_gather(const void* send, void* recv, int64_t send_count, ncclDataType_t type);
  // send_capacity / recv_capacity: elements in the send / recv buffers, checked
  // against every displacement + count when >= 0 (-1: unknown, not checked).
  RequestPtr ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                        const int64_t* recv_counts, const int64_t* recv_displs, ncclDataType_t type,
                        int64_t send_capacity = -1, int64_t recv_capacity = -1);
  RequestPtr ibroadcast(void* buf, int64_t count, ncclDataType_t type, int root);
  RequestPtr isend(const void* buf, int64_t count, ncclDataType_t type, int peer);
  RequestPtr irecv(void* buf, int64_t count, ncclDataType_t type, int peer);

  // MPI_Comm_split of the bootstrap MPI communicator, then a new NCCL communicator
  // over the sub-group on the same device (collective over this group). A
  // communicator without MPI (make_local_nccl_communicator) has one rank and
  // splits into another one-rank communicator.
  std::unique_ptr<NcclCommunicator> split(int color, int key, const std::string& name) const;
  std::unique_ptr<Communicator> split_group(int color, int key, const std::string& name) const override {
    return split(color, key, name);
  }

 private:
  // Makes the communication stream wait for the compute stream.
  void order_after_compute();
  // Records the completion event of `op` and returns its request.
  RequestPtr finish(const char* op);
  // Checks that ptr is device memory NCCL can use (when count > 0).
  void require_device(const void* ptr, int64_t count, const char* which, const char* op) const;
  void require_usable(const char* op) const;

  std::shared_ptr<nccl::State> state_;
  MPI_Comm bootstrap_ = MPI_COMM_NULL;  // a duplicate owned here; MPI_COMM_NULL without MPI
  cudaStream_t compute_stream_ = nullptr;
};

// Collective over `comm` (which MPI must have initialized): rank 0 draws the NCCL
// unique id, MPI_Bcast hands it to the group, every rank creates its NCCL
// communicator on `device` (cudaSetDevice for the call, restored after). `comm`
// is duplicated and kept for split(). timeout_s bounds every wait() (parallel.timeout_s).
std::unique_ptr<NcclCommunicator> make_nccl_communicator(MPI_Comm comm, int device, const std::string& name,
                                                         double timeout_s);
// A one-rank communicator without MPI (single-GPU runs, unit tests).
std::unique_ptr<NcclCommunicator> make_local_nccl_communicator(int device, const std::string& name,
                                                               double timeout_s);

}  // namespace sy::par
