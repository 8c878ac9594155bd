#include "parallel/nccl/nccl_communicator.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "core/cuda/checks.hpp"
#include "core/error.hpp"
#include "core/mpi_check.hpp"
#include "parallel/nccl/nccl_plan.hpp"

namespace sy::par {

namespace nccl {

namespace {

// Makes `device` current for a scope and restores the previous one (noexcept:
// also used in destructors, where a failure leaves the device as it was).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) noexcept {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) {
      if (cudaSetDevice(device) != cudaSuccess) (void)cudaGetLastError();
    } else {
      previous_ = -1;  // nothing to restore
    }
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

void pause_for(double waited_s) {
  switch (poll_phase(waited_s)) {
    case PollPhase::Spin: break;
    case PollPhase::Yield: std::this_thread::yield(); break;
    case PollPhase::Sleep: std::this_thread::sleep_for(std::chrono::microseconds(50)); break;
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Owns an MPI communicator until released (freed unless MPI is finalized).
class MpiCommHolder {
 public:
  explicit MpiCommHolder(MPI_Comm comm) : comm_(comm) {}
  ~MpiCommHolder() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
  }
  MpiCommHolder(const MpiCommHolder&) = delete;
  MpiCommHolder& operator=(const MpiCommHolder&) = delete;
  MPI_Comm get() const { return comm_; }
  MPI_Comm release() {
    const MPI_Comm c = comm_;
    comm_ = MPI_COMM_NULL;
    return c;
  }

 private:
  MPI_Comm comm_;
};

int world_rank_or(int fallback) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return fallback;
  int rank = fallback;
  if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS) return fallback;
  return rank;
}

}  // namespace

// Everything the requests need after the communicator object is gone: the NCCL
// comm, the communication stream, the events and the barrier buffer. The last
// owner (communicator or request) destroys it.
struct State {
  Where where;
  double timeout_s = 0;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;     // recorded on the compute stream, waited on by `stream`
  cudaEvent_t tail = nullptr;      // recorded on `stream` for stream_wait_all
  int32_t* barrier_buf = nullptr;  // (1) stays 0: the barrier all-reduces it
  std::atomic<bool> aborted{false};
  std::mutex pool_mu;
  std::vector<cudaEvent_t> free_events;  // completion events for reuse

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  // Destroys the NCCL comm after the queued work drains (bounded by timeout_s);
  // aborts it instead when the work does not finish or NCCL reported an error.
  ~State() {
    DeviceGuard guard(where.device);
    if (comm != nullptr && !aborted.load()) {
      const auto start = std::chrono::steady_clock::now();
      bool drained = false;
      for (;;) {
        const cudaError_t rc = stream ? cudaStreamQuery(stream) : cudaSuccess;
        if (rc == cudaSuccess) {
          drained = true;
          break;
        }
        if (rc != cudaErrorNotReady) break;
        const double waited = seconds_since(start);
        if (waited > timeout_s) break;
        pause_for(waited);
      }
      (void)cudaGetLastError();
      ncclResult_t async = ncclSuccess;
      const bool healthy = ncclCommGetAsyncError(comm, &async) == ncclSuccess && async == ncclSuccess;
      if (drained && healthy)
        ncclCommDestroy(comm);
      else
        ncclCommAbort(comm);
    }
    for (cudaEvent_t e : free_events) cudaEventDestroy(e);
    if (ready) cudaEventDestroy(ready);
    if (tail) cudaEventDestroy(tail);
    if (barrier_buf) cudaFree(barrier_buf);
    if (stream) cudaStreamDestroy(stream);
  }

  // Aborts the NCCL comm once: queued NCCL kernels end, peers waiting on this
  // rank time out on their side. Later operations are refused.
  void abort() noexcept {
    bool expected = false;
    if (aborted.compare_exchange_strong(expected, true) && comm != nullptr) {
      DeviceGuard guard(where.device);
      ncclCommAbort(comm);
    }
  }

  std::string nccl_text(ncclResult_t rc) const {
    std::string text = ncclGetErrorString(rc);
    if (comm != nullptr && !aborted.load()) {
      const char* last = ncclGetLastError(comm);
      if (last != nullptr && *last != '\0') text += std::string(" (") + last + ")";
    }
    return text;
  }

  // Aborts and throws CommError naming the rank, the group and the operation.
  [[noreturn]] void fail(const char* op, const std::string& call, const std::string& detail) {
    const std::string message = failure_message(where, op, call, detail);
    abort();
    throw CommError(message);
  }

  void check(ncclResult_t rc, const char* op, const char* call) {
    if (rc != ncclSuccess) fail(op, call, nccl_text(rc));
  }

  void check_async(const char* op) {
    if (aborted.load()) throw CommError(aborted_message(where, op));
    ncclResult_t async = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm, &async);
    if (rc != ncclSuccess) fail(op, "ncclCommGetAsyncError", nccl_text(rc));
    if (async != ncclSuccess && async != ncclInProgress) fail(op, "NCCL (asynchronous error)", nccl_text(async));
  }

  cudaEvent_t acquire_event() {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (!free_events.empty()) {
        const cudaEvent_t e = free_events.back();
        free_events.pop_back();
        return e;
      }
    }
    DeviceGuard guard(where.device);
    cudaEvent_t e = nullptr;
    SY_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  void release_event(cudaEvent_t e) noexcept {
    if (e == nullptr) return;
    try {
      std::lock_guard<std::mutex> lock(pool_mu);
      free_events.push_back(e);
    } catch (...) {
      cudaEventDestroy(e);
    }
  }
};

namespace {

// A pending NCCL operation: its completion event on the communication stream.
class NcclRequest final : public Request {
 public:
  NcclRequest(std::shared_ptr<State> state, cudaEvent_t event, const char* op)
      : state_(std::move(state)), event_(event), op_(op) {}
  // The event goes back to the pool; a later cudaEventRecord on it is legal even
  // while this record is pending, and waits enqueued earlier keep this record.
  ~NcclRequest() override { state_->release_event(event_); }

  bool test() override {
    if (done_) return true;
    if (state_->aborted.load()) throw CommError(aborted_message(state_->where, op_));
    const cudaError_t rc = cudaEventQuery(event_);
    if (rc == cudaErrorNotReady) {
      (void)cudaGetLastError();  // not an error: keep it out of the next check
      state_->check_async(op_);
      return false;
    }
    if (rc != cudaSuccess) {
      (void)cudaGetLastError();
      state_->fail(op_, "cudaEventQuery", std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc));
    }
    state_->check_async(op_);
    done_ = true;
    return true;
  }

  void wait() override {
    const auto start = std::chrono::steady_clock::now();
    while (!test()) {
      const double waited = seconds_since(start);
      if (waited > state_->timeout_s) {
        const std::string message = timeout_message(state_->where, op_, state_->timeout_s);
        state_->abort();
        throw CommError(message);
      }
      pause_for(waited);
    }
  }

  cudaEvent_t event() const { return event_; }

 private:
  std::shared_ptr<State> state_;
  cudaEvent_t event_;
  const char* op_;  // a string literal
  bool done_ = false;
};

// Creates the stream, events and barrier buffer, then the NCCL comm (collective
// over the `size` ranks that share `id`).
std::shared_ptr<State> create_state(const ncclUniqueId& id, const Where& where, double timeout_s) {
  SY_REQUIRE(timeout_s > 0, "communicator '" << where.group << "': timeout must be positive, got " << timeout_s);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) {
    (void)cudaGetLastError();
    devices = 0;
  }
  SY_CHECK_AS(DeviceError, devices > 0,
              "NCCL communicator '" << where.group << "': no CUDA device is usable on rank " << where.world_rank);
  SY_REQUIRE(where.device >= 0 && where.device < devices,
             "NCCL communicator '" << where.group << "': device " << where.device << " outside the " << devices
                                   << " devices of rank " << where.world_rank);

  auto state = std::make_shared<State>();
  state->where = where;
  state->timeout_s = timeout_s;
  DeviceGuard guard(where.device);
  SY_CUDA_CHECK(cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking));
  SY_CUDA_CHECK(cudaEventCreateWithFlags(&state->ready, cudaEventDisableTiming));
  SY_CUDA_CHECK(cudaEventCreateWithFlags(&state->tail, cudaEventDisableTiming));
  SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&state->barrier_buf), sizeof(int32_t)));
  // On the communication stream: a cudaMemset would go to the legacy default
  // stream, which the non-blocking stream does not wait for.
  SY_CUDA_CHECK(cudaMemsetAsync(state->barrier_buf, 0, sizeof(int32_t), state->stream));

  ncclComm_t comm = nullptr;
  const ncclResult_t rc = ncclCommInitRank(&comm, where.size, id, where.rank);
  if (rc != ncclSuccess)
    throw CommError(describe(where, "communicator creation") + ": ncclCommInitRank failed: " +
                    ncclGetErrorString(rc));
  state->comm = comm;  // from here on ~State destroys (or aborts) it
  int count = 0, rank = -1;
  state->check(ncclCommCount(comm, &count), "communicator creation", "ncclCommCount");
  state->check(ncclCommUserRank(comm, &rank), "communicator creation", "ncclCommUserRank");
  if (count != where.size || rank != where.rank)
    state->fail("communicator creation", "ncclCommInitRank",
                "NCCL reports rank " + std::to_string(rank) + " of " + std::to_string(count));
  return state;
}

}  // namespace

}  // namespace nccl

// ---------------------------------------------------------------------------
// NcclCommunicator

NcclCommunicator::NcclCommunicator(std::shared_ptr<nccl::State> state, MPI_Comm bootstrap)
    : state_(std::move(state)), bootstrap_(bootstrap) {
  SY_REQUIRE(state_ != nullptr && state_->comm != nullptr, "NcclCommunicator needs a created NCCL comm");
}

NcclCommunicator::~NcclCommunicator() {
  nccl::MpiCommHolder free_bootstrap(bootstrap_);
  state_.reset();  // destroyed here unless a request still holds it
}

int NcclCommunicator::rank() const { return state_->where.rank; }
int NcclCommunicator::size() const { return state_->where.size; }
const std::string& NcclCommunicator::name() const { return state_->where.group; }
int NcclCommunicator::device() const { return state_->where.device; }
double NcclCommunicator::timeout_s() const { return state_->timeout_s; }
cudaStream_t NcclCommunicator::comm_stream() const { return state_->stream; }
ncclComm_t NcclCommunicator::nccl_comm() const { return state_->comm; }
bool NcclCommunicator::aborted() const { return state_->aborted.load(); }

void NcclCommunicator::require_usable(const char* op) const {
  if (state_->aborted.load()) throw CommError(nccl::aborted_message(state_->where, op));
}

void NcclCommunicator::require_device(const void* ptr, int64_t count, const char* which, const char* op) const {
  if (count == 0) return;
  cudaPointerAttributes attr{};
  const cudaError_t rc = cudaPointerGetAttributes(&attr, ptr);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    SY_REQUIRE(false, op << " on '" << name() << "': cudaPointerGetAttributes on the " << which
                         << " buffer failed: " << cudaGetErrorString(rc));
  }
  nccl::check_memory(attr.type, attr.device, device(), which, op, name());
}

void NcclCommunicator::order_after_compute() {
  if (compute_stream_ == state_->stream) return;
  SY_CUDA_CHECK(cudaEventRecord(state_->ready, compute_stream_));
  SY_CUDA_CHECK(cudaStreamWaitEvent(state_->stream, state_->ready, 0));
}

RequestPtr NcclCommunicator::finish(const char* op) {
  auto request = std::make_unique<nccl::NcclRequest>(state_, state_->acquire_event(), op);
  SY_CUDA_CHECK(cudaEventRecord(request->event(), state_->stream));
  return request;
}

void NcclCommunicator::stream_wait(const Request& request, cudaStream_t stream) const {
  if (dynamic_cast<const CompletedRequest*>(&request) != nullptr) return;
  const auto* r = dynamic_cast<const nccl::NcclRequest*>(&request);
  SY_REQUIRE(r != nullptr, "stream_wait on '" << name() << "': the request is not from an NCCL communicator");
  nccl::DeviceGuard guard(device());
  SY_CUDA_CHECK(cudaStreamWaitEvent(stream, r->event(), 0));
}

void NcclCommunicator::stream_wait_all(cudaStream_t stream) const {
  if (stream == state_->stream) return;
  nccl::DeviceGuard guard(device());
  SY_CUDA_CHECK(cudaEventRecord(state_->tail, state_->stream));
  SY_CUDA_CHECK(cudaStreamWaitEvent(stream, state_->tail, 0));
}

// --- ElemType forms: map the type, then the ncclDataType_t forms.

RequestPtr NcclCommunicator::iallreduce(const void* send, void* recv, int64_t count, ElemType type, ReduceOp op) {
  return iallreduce(send, recv, count, nccl::to_nccl(type), op);
}
RequestPtr NcclCommunicator::ireduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type,
                                             ReduceOp op) {
  return ireduce_scatter(send, recv, recv_count, nccl::to_nccl(type), op);
}
RequestPtr NcclCommunicator::iall_gather(const void* send, void* recv, int64_t send_count, ElemType type) {
  return iall_gather(send, recv, send_count, nccl::to_nccl(type));
}
RequestPtr NcclCommunicator::ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                                        void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                                        ElemType type) {
  return ialltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs, nccl::to_nccl(type));
}
RequestPtr NcclCommunicator::ibroadcast(void* buf, int64_t count, ElemType type, int root) {
  return ibroadcast(buf, count, nccl::to_nccl(type), root);
}
RequestPtr NcclCommunicator::isend(const void* buf, int64_t count, ElemType type, int peer, int /*tag*/) {
  return isend(buf, count, nccl::to_nccl(type), peer);
}
RequestPtr NcclCommunicator::irecv(void* buf, int64_t count, ElemType type, int peer, int /*tag*/) {
  return irecv(buf, count, nccl::to_nccl(type), peer);
}

// --- ncclDataType_t forms: validate, order after compute, enqueue, record completion.

RequestPtr NcclCommunicator::iallreduce(const void* send, void* recv, int64_t count, ncclDataType_t type,
                                        ReduceOp op) {
  static constexpr const char* kOp = "allreduce";
  require_usable(kOp);
  const size_t bytes = nccl::type_size(type);
  const ncclRedOp_t nccl_op = nccl::to_nccl(op);
  nccl::check_buffer(send, count, "send", kOp, name());
  nccl::check_buffer(recv, count, "recv", kOp, name());
  if (count == 0) return completed_request();
  nccl::check_block_overlap(send, recv, static_cast<size_t>(count) * bytes, 0, 1, kOp, name());  // in place or apart
  nccl::DeviceGuard guard(device());
  require_device(send, count, "send", kOp);
  require_device(recv, count, "recv", kOp);
  order_after_compute();
  state_->check(ncclAllReduce(send, recv, static_cast<size_t>(count), type, nccl_op, state_->comm, state_->stream),
                kOp, "ncclAllReduce");
  return finish(kOp);
}

RequestPtr NcclCommunicator::ireduce_scatter(const void* send, void* recv, int64_t recv_count, ncclDataType_t type,
                                             ReduceOp op) {
  static constexpr const char* kOp = "reduce_scatter";
  require_usable(kOp);
  const size_t bytes = nccl::type_size(type);
  const ncclRedOp_t nccl_op = nccl::to_nccl(op);
  const int64_t send_count = nccl::total_elements(recv_count, size(), bytes, kOp, name());
  nccl::check_buffer(send, send_count, "send", kOp, name());
  nccl::check_buffer(recv, recv_count, "recv", kOp, name());
  if (recv_count == 0) return completed_request();
  nccl::check_block_overlap(recv, send, static_cast<size_t>(recv_count) * bytes, rank(), size(), kOp, name());
  nccl::DeviceGuard guard(device());
  require_device(send, send_count, "send", kOp);
  require_device(recv, recv_count, "recv", kOp);
  order_after_compute();
  state_->check(ncclReduceScatter(send, recv, static_cast<size_t>(recv_count), type, nccl_op, state_->comm,
                                  state_->stream),
                kOp, "ncclReduceScatter");
  return finish(kOp);
}

RequestPtr NcclCommunicator::iall_gather(const void* send, void* recv, int64_t send_count, ncclDataType_t type) {
  static constexpr const char* kOp = "all_gather";
  require_usable(kOp);
  const size_t bytes = nccl::type_size(type);
  const int64_t recv_count = nccl::total_elements(send_count, size(), bytes, kOp, name());
  nccl::check_buffer(send, send_count, "send", kOp, name());
  nccl::check_buffer(recv, recv_count, "recv", kOp, name());
  if (send_count == 0) return completed_request();
  nccl::check_block_overlap(send, recv, static_cast<size_t>(send_count) * bytes, rank(), size(), kOp, name());
  nccl::DeviceGuard guard(device());
  require_device(send, send_count, "send", kOp);
  require_device(recv, recv_count, "recv", kOp);
  order_after_compute();
  state_->check(
      ncclAllGather(send, recv, static_cast<size_t>(send_count), type, state_->comm, state_->stream), kOp,
      "ncclAllGather");
  return finish(kOp);
}

RequestPtr NcclCommunicator::ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                                        void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                                        ncclDataType_t type, int64_t send_capacity, int64_t recv_capacity) {
  static constexpr const char* kOp = "alltoallv";
  require_usable(kOp);
  const size_t bytes = nccl::type_size(type);
  const std::vector<nccl::PeerTransfer> plan =
      nccl::plan_alltoallv(rank(), size(), send_counts, send_displs, recv_counts, recv_displs, bytes, send_capacity,
                           recv_capacity, name());
  if (plan.empty()) return completed_request();
  bool any_send = false, any_recv = false;
  for (const nccl::PeerTransfer& t : plan) {
    any_send = any_send || t.send_count > 0;
    any_recv = any_recv || t.recv_count > 0;
  }
  SY_REQUIRE(!any_send || send != nullptr, kOp << " on '" << name() << "': send buffer is null but counts are not 0");
  SY_REQUIRE(!any_recv || recv != nullptr, kOp << " on '" << name() << "': recv buffer is null but counts are not 0");
  nccl::DeviceGuard guard(device());
  require_device(send, any_send ? 1 : 0, "send", kOp);
  require_device(recv, any_recv ? 1 : 0, "recv", kOp);
  order_after_compute();

  const auto* send_bytes = static_cast<const char*>(send);
  auto* recv_bytes = static_cast<char*>(recv);
  state_->check(ncclGroupStart(), kOp, "ncclGroupStart");
  ncclResult_t failed_rc = ncclSuccess;
  const char* failed_call = nullptr;
  for (const nccl::PeerTransfer& t : plan) {
    if (t.send_count > 0) {
      failed_rc = ncclSend(send_bytes + t.send_offset * static_cast<int64_t>(bytes), static_cast<size_t>(t.send_count),
                           type, t.peer, state_->comm, state_->stream);
      if (failed_rc != ncclSuccess) {
        failed_call = "ncclSend";
        break;
      }
    }
    if (t.recv_count > 0) {
      failed_rc = ncclRecv(recv_bytes + t.recv_offset * static_cast<int64_t>(bytes), static_cast<size_t>(t.recv_count),
                           type, t.peer, state_->comm, state_->stream);
      if (failed_rc != ncclSuccess) {
        failed_call = "ncclRecv";
        break;
      }
    }
  }
  const ncclResult_t end_rc = ncclGroupEnd();  // always close the group, even after a failed call
  if (failed_call != nullptr) state_->fail(kOp, failed_call, state_->nccl_text(failed_rc));
  state_->check(end_rc, kOp, "ncclGroupEnd");
  return finish(kOp);
}

RequestPtr NcclCommunicator::ibroadcast(void* buf, int64_t count, ncclDataType_t type, int root) {
  static constexpr const char* kOp = "broadcast";
  require_usable(kOp);
  (void)nccl::type_size(type);
  nccl::check_peer(root, size(), "root", kOp, name());
  nccl::check_buffer(buf, count, "data", kOp, name());
  if (count == 0) return completed_request();
  nccl::DeviceGuard guard(device());
  require_device(buf, count, "data", kOp);
  order_after_compute();
  state_->check(ncclBroadcast(buf, buf, static_cast<size_t>(count), type, root, state_->comm, state_->stream), kOp,
                "ncclBroadcast");
  return finish(kOp);
}

RequestPtr NcclCommunicator::isend(const void* buf, int64_t count, ncclDataType_t type, int peer) {
  static constexpr const char* kOp = "send";
  require_usable(kOp);
  (void)nccl::type_size(type);
  nccl::check_peer(peer, size(), "peer", kOp, name());
  nccl::check_buffer(buf, count, "send", kOp, name());
  if (count == 0) return completed_request();
  nccl::DeviceGuard guard(device());
  require_device(buf, count, "send", kOp);
  order_after_compute();
  state_->check(ncclSend(buf, static_cast<size_t>(count), type, peer, state_->comm, state_->stream), kOp,
                "ncclSend");
  return finish(kOp);
}

RequestPtr NcclCommunicator::irecv(void* buf, int64_t count, ncclDataType_t type, int peer) {
  static constexpr const char* kOp = "recv";
  require_usable(kOp);
  (void)nccl::type_size(type);
  nccl::check_peer(peer, size(), "peer", kOp, name());
  nccl::check_buffer(buf, count, "recv", kOp, name());
  if (count == 0) return completed_request();
  nccl::DeviceGuard guard(device());
  require_device(buf, count, "recv", kOp);
  order_after_compute();
  state_->check(ncclRecv(buf, static_cast<size_t>(count), type, peer, state_->comm, state_->stream), kOp,
                "ncclRecv");
  return finish(kOp);
}

RequestPtr NcclCommunicator::ibarrier() {
  static constexpr const char* kOp = "barrier";
  require_usable(kOp);
  nccl::DeviceGuard guard(device());
  order_after_compute();
  state_->check(ncclAllReduce(state_->barrier_buf, state_->barrier_buf, 1, ncclInt32, ncclSum, state_->comm,
                              state_->stream),
                kOp, "ncclAllReduce");
  return finish(kOp);
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::split(int color, int key, const std::string& name) const {
  SY_REQUIRE(color >= 0, "split of '" << this->name() << "' into '" << name << "': color must be >= 0, got " << color);
  require_usable("split");
  std::unique_ptr<NcclCommunicator> sub;
  if (bootstrap_ == MPI_COMM_NULL) {
    // No MPI: a one-rank group splits into itself.
    sub = make_local_nccl_communicator(device(), name, timeout_s());
  } else {
    MPI_Comm split_comm = MPI_COMM_NULL;
    SY_MPI_CHECK(MPI_Comm_split(bootstrap_, color, key, &split_comm));
    nccl::MpiCommHolder holder(split_comm);  // make_nccl_communicator keeps a duplicate
    sub = make_nccl_communicator(split_comm, device(), name, timeout_s());
  }
  sub->set_compute_stream(compute_stream_);
  return sub;
}

// ---------------------------------------------------------------------------
// Factories

std::unique_ptr<NcclCommunicator> make_nccl_communicator(MPI_Comm comm, int device, const std::string& name,
                                                         double timeout_s) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  SY_CHECK_AS(CommError, initialized && !finalized,
              "NCCL communicator '" << name << "': MPI must be initialized to bootstrap NCCL");
  SY_REQUIRE(comm != MPI_COMM_NULL, "NCCL communicator '" << name << "': the MPI communicator is MPI_COMM_NULL");
  SY_REQUIRE(timeout_s > 0, "NCCL communicator '" << name << "': timeout must be positive, got " << timeout_s);

  MPI_Comm dup = MPI_COMM_NULL;
  SY_MPI_CHECK(MPI_Comm_dup(comm, &dup));
  nccl::MpiCommHolder bootstrap(dup);
  SY_MPI_CHECK(MPI_Comm_set_errhandler(bootstrap.get(), MPI_ERRORS_RETURN));
  nccl::Where where;
  SY_MPI_CHECK(MPI_Comm_rank(bootstrap.get(), &where.rank));
  SY_MPI_CHECK(MPI_Comm_size(bootstrap.get(), &where.size));
  where.world_rank = nccl::world_rank_or(where.rank);
  where.group = name;
  where.device = device;

  // Rank 0 sends the id with a status, so a failure there ends every rank with an
  // error instead of leaving them in ncclCommInitRank.
  struct Bootstrap {
    int32_t ok = 0;
    int32_t error = 0;
    ncclUniqueId id{};
  } msg;
  if (where.rank == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&msg.id);
    msg.ok = rc == ncclSuccess ? 1 : 0;
    msg.error = static_cast<int32_t>(rc);
  }
  SY_MPI_CHECK(MPI_Bcast(&msg, static_cast<int>(sizeof msg), MPI_BYTE, 0, bootstrap.get()));
  if (!msg.ok)
    throw CommError(nccl::describe(where, "communicator creation") +
                    ": ncclGetUniqueId failed on rank 0 of the group: " +
                    ncclGetErrorString(static_cast<ncclResult_t>(msg.error)));

  auto state = nccl::create_state(msg.id, where, timeout_s);
  auto communicator = std::make_unique<NcclCommunicator>(std::move(state), bootstrap.get());
  bootstrap.release();  // now owned by the communicator
  return communicator;
}

std::unique_ptr<NcclCommunicator> make_local_nccl_communicator(int device, const std::string& name,
                                                               double timeout_s) {
  nccl::Where where;
  where.rank = 0;
  where.size = 1;
  where.world_rank = nccl::world_rank_or(0);
  where.group = name;
  where.device = device;
  ncclUniqueId id{};
  const ncclResult_t rc = ncclGetUniqueId(&id);
  if (rc != ncclSuccess)
    throw CommError(nccl::describe(where, "communicator creation") + ": ncclGetUniqueId failed: " +
                    ncclGetErrorString(rc));
  return std::make_unique<NcclCommunicator>(nccl::create_state(id, where, timeout_s), MPI_COMM_NULL);
}

}  // namespace sy::par
