// The MPI communicator: MPI's non-blocking collectives, one MPI_Comm owned
// (freed on destruction) or borrowed (MPI_COMM_WORLD).
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/communicator.hpp"

namespace sy::par {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of comm when owned is true. timeout_s bounds every wait().
  MpiCommunicator(MPI_Comm comm, bool owned, std::string name, double timeout_s);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm comm() const { return comm_; }
  double timeout_s() const { return timeout_s_; }

  RequestPtr iallreduce(const void* send, void* recv, int64_t count, ElemType type, ReduceOp op) override;
  RequestPtr ireduce_scatter(const void* send, void* recv, int64_t recv_count, ElemType type, ReduceOp op) override;
  RequestPtr iall_gather(const void* send, void* recv, int64_t send_count, ElemType type) override;
  RequestPtr ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                        const int64_t* recv_counts, const int64_t* recv_displs, ElemType type) override;
  RequestPtr ibroadcast(void* buf, int64_t count, ElemType type, int root) override;
  RequestPtr isend(const void* buf, int64_t count, ElemType type, int peer, int tag) override;
  RequestPtr irecv(void* buf, int64_t count, ElemType type, int peer, int tag) override;
  RequestPtr ibarrier() override;

  // Splits this communicator (MPI_Comm_split); the result owns its MPI_Comm.
  std::unique_ptr<MpiCommunicator> split(int color, int key, const std::string& name) const;
  std::unique_ptr<Communicator> split_group(int color, int key, const std::string& name) const override {
    return split(color, key, name);
  }

 private:
  RequestPtr make_request(MPI_Request req, const char* op, std::shared_ptr<void> keep_alive = nullptr) const;

  MPI_Comm comm_;
  bool owned_;
  std::string name_;
  double timeout_s_;
  int rank_ = 0, size_ = 1;
};

}  // namespace sy::par
