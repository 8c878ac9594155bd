// All-to-all with variable counts over a Communicator, by one of several
// algorithms behind one interface (DESIGN.md sections 4 and 5), chosen by
// parallel.a2a_algo:
//   linear     one exchange among all ranks: the communicator's ialltoallv
//              (MPI_Ialltoallv), or paired isend/irecv (AllToAllTopology::linear_paired);
//   2dh        two-dimensional hierarchical with m ranks per node: stride-copy,
//              all-to-all inside the node, stride-copy, all-to-all among the
//              ranks with the same local index across nodes;
//   flowsplit  leaves of L ranks under a leaf-spine of s paths: flows inside the
//              sender's leaf go direct; the flows to each other leaf fill the s
//              paths to exactly 1/s of their bytes each, in order, split at path
//              boundaries; every sub-flow is its own message tagged with its path;
//   auto       linear here; the MoE layer's run-time tuner (parallel/tuner.hpp)
//              picks among the others per layer.
// Every algorithm delivers exactly the bytes MPI_Alltoallv delivers for the same
// counts and displacements (tests/parallel/AllToAllMpiTest.cpp).
//
// Nodes and leaves are consecutive blocks of ranks of the group: group rank g
// sits on node g / m, with local index g % m (for the world, and for groups of
// consecutive world ranks, ProcessGrid's node_group). On one machine
// parallel.ranks_per_node / ranks_per_leaf emulate them.
//
// One object per group, reused for every exchange: its staging buffers grow to
// the largest exchange seen and are then reused, so exchanges no larger than an
// earlier one allocate no buffers (the communicator still makes one small
// Request per message it posts). One exchange per object at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/config.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {

// Where the ranks of a group sit, and the linear variant.
struct AllToAllTopology {
  int ranks_per_node = 0;      // 2dh: m; 0 = the whole group is one node
  int ranks_per_leaf = 0;      // flowsplit: L; 0 = ranks_per_node
  int spine_paths = 4;         // flowsplit: s, paths from a leaf to any other leaf
  bool linear_paired = false;  // linear: paired isend/irecv instead of one ialltoallv
  int tag = 0x5A00;            // point-to-point tags used: tag .. tag + spine_paths + 1
};

// The topology of parallel.* keys: ranks_per_node 0 takes detected_ranks_per_node
// (ProcessGrid::ranks_per_node(), the shared-memory node), ranks_per_leaf 0
// takes the node.
AllToAllTopology alltoall_topology(const ParallelConfig& config, int detected_ranks_per_node = 0);

class AllToAll {
 public:
  explicit AllToAll(Communicator& group);
  virtual ~AllToAll() = default;
  AllToAll(const AllToAll&) = delete;
  AllToAll& operator=(const AllToAll&) = delete;

  // "linear", "linear_paired", "2dh" or "flowsplit".
  virtual const char* name() const = 0;
  Communicator& group() const { return group_; }

  // Starts the exchange, with the contract of Communicator::ialltoallv:
  // group().size() counts and displacements per side, in elements of `type`;
  // rank p's send_counts[q] equals rank q's recv_counts[p]. The count arrays
  // are copied; send and recv must stay untouched until the request completes
  // (wait() or test() true), and the request must not outlive this object.
  // Throws InvalidArgument while an earlier exchange of this object is still
  // pending. Collective over the group, like ialltoallv.
  RequestPtr start(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                   const int64_t* recv_counts, const int64_t* recv_displs, ElemType type);
  void run(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
           const int64_t* recv_counts, const int64_t* recv_displs, ElemType type) {
    start(send, send_counts, send_displs, recv, recv_counts, recv_displs, type)->wait();
  }

 protected:
  // Posts what can be posted from the counts in sc_/sd_/rc_/rd_ (elements).
  virtual void begin(const char* send, char* recv, size_t esz, ElemType type) = 0;
  // Moves the exchange on; true once complete. block = wait for each stage.
  virtual bool advance(bool block) = 0;

  Communicator& group_;
  int rank_, size_;
  std::vector<int64_t> sc_, sd_, rc_, rd_;  // (size_) each: this exchange's counts and displacements

 private:
  friend class AllToAllRequest;
  bool in_flight_ = false;
};

// The algorithm for algo over group (auto = linear: the tuner chooses an
// algorithm, not this factory). Collective over the group (2dh splits it into node and cross
// groups). Throws ConfigError when the group does not split into whole nodes
// (2dh) or leaves (flowsplit).
std::unique_ptr<AllToAll> make_alltoall(AllToAllAlgo algo, Communicator& group, const AllToAllTopology& topology);
inline std::unique_ptr<AllToAll> make_alltoall(AllToAllAlgo algo, Communicator& group, const ParallelConfig& config,
                                               int detected_ranks_per_node = 0) {
  return make_alltoall(algo, group, alltoall_topology(config, detected_ranks_per_node));
}

// ---- flow-split planning (pure functions, the same on sender and receiver) ----

// One message of a flow: `count` elements starting `offset` elements into the
// flow to rank `dest` (an index among the destination leaf's ranks), over `path`.
struct SubFlow {
  int dest;
  int64_t offset;
  int64_t count;
  int path;
};

// Where path k's share of a leaf's `total` elements begins: floor(k total / s).
// Path k carries [boundary(k), boundary(k + 1)): floor or ceil of total / s.
int64_t flowsplit_boundary(int64_t total, int s, int k);

// The sub-flows of one flow of `count` elements that starts `prefix` elements
// into its leaf's `total` (appended to out, with dest = `dest`, in path order;
// nothing for count 0). The receiver calls it with the sender's prefix and total.
void flowsplit_segments(int dest, int64_t prefix, int64_t count, int64_t total, int s, std::vector<SubFlow>& out);

// A sender's flows to one destination leaf (counts[i] elements to the leaf's
// rank i, n ranks) over s paths: flows in order fill path 0, then 1, ..., each
// path to within one element of total / s, a flow split where a path fills
// (at most s - 1 extra sub-flows). With equal counts every path carries the
// same bytes as DESIGN.md section 5's rule (n f / s when s divides n f).
// out is cleared first (its capacity is kept).
void plan_flowsplit(const int64_t* counts, int n, int s, std::vector<SubFlow>& out);
inline std::vector<SubFlow> plan_flowsplit(const int64_t* counts, int n, int s) {
  std::vector<SubFlow> out;
  plan_flowsplit(counts, n, s, out);
  return out;
}

}  // namespace sy::par
