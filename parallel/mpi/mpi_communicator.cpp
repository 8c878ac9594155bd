#include "parallel/mpi/mpi_communicator.hpp"

#include <chrono>
#include <climits>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "core/mpi_check.hpp"

namespace sy::par {

size_t elem_size(ElemType t) {
  switch (t) {
    case ElemType::F32: return 4;
    case ElemType::F64: return 8;
    case ElemType::I32: return 4;
    case ElemType::I64: return 8;
    case ElemType::U8: return 1;
    case ElemType::BF16: return 2;
  }
  return 0;
}

const char* elem_type_name(ElemType t) {
  switch (t) {
    case ElemType::F32: return "f32";
    case ElemType::F64: return "f64";
    case ElemType::I32: return "i32";
    case ElemType::I64: return "i64";
    case ElemType::U8: return "u8";
    case ElemType::BF16: return "bf16";
  }
  return "?";
}

namespace {

MPI_Datatype mpi_type(ElemType t) {
  switch (t) {
    case ElemType::F32: return MPI_FLOAT;
    case ElemType::F64: return MPI_DOUBLE;
    case ElemType::I32: return MPI_INT32_T;
    case ElemType::I64: return MPI_INT64_T;
    case ElemType::U8: return MPI_UINT8_T;
    case ElemType::BF16: return MPI_UINT16_T;  // moved as bits, never reduced (reducible_type)
  }
  return MPI_DATATYPE_NULL;
}

// The type of a reduction: MPI has no bf16 arithmetic, so bf16 is refused
// rather than summed as integers.
MPI_Datatype reducible_type(ElemType t, const std::string& group, const char* what) {
  SY_CHECK_AS(CommError, t != ElemType::BF16,
              what << " on " << group << ": the MPI communicator cannot reduce bf16 (MPI has no bf16 arithmetic); "
                                         "reduce in f32 and convert");
  return mpi_type(t);
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// MPI counts are int: refuse what does not fit instead of truncating.
int to_int(int64_t n, const char* what) {
  SY_CHECK_AS(CommError, n >= 0 && n <= INT_MAX, what << " = " << n << " does not fit an MPI count");
  return static_cast<int>(n);
}

class MpiRequest final : public Request {
 public:
  MpiRequest(MPI_Request req, std::string what, double timeout_s, std::shared_ptr<void> keep_alive)
      : req_(req), what_(std::move(what)), timeout_s_(timeout_s), keep_alive_(std::move(keep_alive)) {}
  ~MpiRequest() override {
    // A request dropped unfinished (an exception unwinding) is left to MPI_Abort.
  }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    SY_MPI_CHECK(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE));
    done_ = flag != 0;
    return done_;
  }

  // Polls so that a peer that never arrives becomes an error after the
  // timeout instead of a hang. MPI moves data only inside MPI calls, and a
  // large message moves fragment by fragment, so for the first 10 ms the
  // polls follow each other without pause, as in MPI_Wait (a 50 us sleep
  // between polls made a 16 MiB all-to-all on 2 ranks about 12x slower);
  // then each poll yields the core to oversubscribed ranks, and after 1 s,
  // when a peer is late rather than a transfer long, polls sleep 50 us.
  void wait() override {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    double waited = 0;
    for (int spins = 0; !test(); ++spins) {
      if ((spins & 255) == 0) {
        waited = std::chrono::duration<double>(Clock::now() - start).count();
        if (waited > timeout_s_) {
          int rank = 0;
          MPI_Comm_rank(MPI_COMM_WORLD, &rank);
          throw CommError("rank " + std::to_string(rank) + ": " + what_ + " did not complete within " +
                          std::to_string(timeout_s_) + " s (parallel.timeout_s): a peer failed or is stuck");
        }
      }
      if (waited > 1.0) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      } else if (waited > 0.01) {
        std::this_thread::yield();
      }
    }
  }

 private:
  MPI_Request req_;
  std::string what_;
  double timeout_s_;
  std::shared_ptr<void> keep_alive_;
  bool done_ = false;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, bool owned, std::string name, double timeout_s)
    : comm_(comm), owned_(owned), name_(std::move(name)), timeout_s_(timeout_s) {
  SY_REQUIRE(timeout_s > 0, "communicator timeout must be positive, got " << timeout_s);
  SY_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  SY_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  SY_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

RequestPtr MpiCommunicator::make_request(MPI_Request req, const char* op, std::shared_ptr<void> keep_alive) const {
  return std::make_unique<MpiRequest>(req, std::string(op) + " on " + name_, timeout_s_, std::move(keep_alive));
}

RequestPtr MpiCommunicator::iallreduce(const void* send, void* recv, int64_t count, ElemType type, ReduceOp op) {
  MPI_Request req;
  SY_MPI_CHECK(MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, to_int(count, "allreduce count"),
                              reducible_type(type, name_, "allreduce"), mpi_op(op), comm_, &req));
  return make_request(req, "allreduce");
}

RequestPtr MpiCommunicator::ireduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type,
                                            ReduceOp op) {
  MPI_Request req;
  SY_MPI_CHECK(MPI_Ireduce_scatter_block(send, recv, to_int(recv_count, "reduce_scatter count"),
                                         reducible_type(type, name_, "reduce_scatter"), mpi_op(op), comm_, &req));
  return make_request(req, "reduce_scatter");
}

RequestPtr MpiCommunicator::iall_gather(const void* send, void* recv, int64_t send_count, ElemType type) {
  MPI_Request req;
  const int n = to_int(send_count, "all_gather count");
  SY_MPI_CHECK(MPI_Iallgather(send, n, mpi_type(type), recv, n, mpi_type(type), comm_, &req));
  return make_request(req, "all_gather");
}

RequestPtr MpiCommunicator::ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                                       void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                                       ElemType type) {
  // MPI takes int arrays; they must live until the operation completes.
  auto counts = std::make_shared<std::vector<int>>(4 * size_);
  int* sc = counts->data();
  int* sd = sc + size_;
  int* rc = sd + size_;
  int* rd = rc + size_;
  for (int i = 0; i < size_; ++i) {
    sc[i] = to_int(send_counts[i], "alltoallv send count");
    sd[i] = to_int(send_displs[i], "alltoallv send displacement");
    rc[i] = to_int(recv_counts[i], "alltoallv recv count");
    rd[i] = to_int(recv_displs[i], "alltoallv recv displacement");
  }
  MPI_Request req;
  SY_MPI_CHECK(MPI_Ialltoallv(send, sc, sd, mpi_type(type), recv, rc, rd, mpi_type(type), comm_, &req));
  return make_request(req, "alltoallv", counts);
}

RequestPtr MpiCommunicator::ibroadcast(void* buf, int64_t count, ElemType type, int root) {
  SY_REQUIRE(root >= 0 && root < size_, "broadcast root " << root << " outside " << name_ << " of " << size_);
  MPI_Request req;
  SY_MPI_CHECK(MPI_Ibcast(buf, to_int(count, "broadcast count"), mpi_type(type), root, comm_, &req));
  return make_request(req, "broadcast");
}

RequestPtr MpiCommunicator::isend(const void* buf, int64_t count, ElemType type, int peer, int tag) {
  SY_REQUIRE(peer >= 0 && peer < size_, "send peer " << peer << " outside " << name_ << " of " << size_);
  MPI_Request req;
  SY_MPI_CHECK(MPI_Isend(buf, to_int(count, "send count"), mpi_type(type), peer, tag, comm_, &req));
  return make_request(req, "send");
}

RequestPtr MpiCommunicator::irecv(void* buf, int64_t count, ElemType type, int peer, int tag) {
  SY_REQUIRE(peer >= 0 && peer < size_, "recv peer " << peer << " outside " << name_ << " of " << size_);
  MPI_Request req;
  SY_MPI_CHECK(MPI_Irecv(buf, to_int(count, "recv count"), mpi_type(type), peer, tag, comm_, &req));
  return make_request(req, "recv");
}

RequestPtr MpiCommunicator::ibarrier() {
  MPI_Request req;
  SY_MPI_CHECK(MPI_Ibarrier(comm_, &req));
  return make_request(req, "barrier");
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, int key, const std::string& name) const {
  MPI_Comm sub = MPI_COMM_NULL;
  SY_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
  return std::make_unique<MpiCommunicator>(sub, true, name, timeout_s_);
}

}  // namespace sy::par

namespace sy::par {

std::unique_ptr<Communicator> Communicator::split_group(int, int, const std::string& name) const {
  SY_CHECK_AS(CommError, false, "group '" << this->name() << "' cannot be split (asked for '" << name << "')");
  return nullptr;
}

}  // namespace sy::par
