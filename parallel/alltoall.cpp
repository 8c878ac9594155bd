#include "parallel/alltoall.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.hpp"

namespace sy::par {

// ---- flow-split planning ----

int64_t flowsplit_boundary(int64_t total, int s, int k) {
  // floor(k total / s) without forming k * total.
  return k * (total / s) + (k * (total % s)) / s;
}

void flowsplit_segments(int dest, int64_t prefix, int64_t count, int64_t total, int s, std::vector<SubFlow>& out) {
  SY_REQUIRE(s >= 1, "flow-split needs at least one path, got " << s);
  SY_REQUIRE(prefix >= 0 && count >= 0 && prefix + count <= total,
             "flow [" << prefix << ", " << prefix + count << ") outside its leaf's " << total << " elements");
  if (count == 0) return;
  const int64_t end = prefix + count;
  // Path k0 = floor(prefix s / total) begins at or before prefix.
  int k = static_cast<int>(static_cast<__int128>(prefix) * s / total);
  for (; k < s; ++k) {
    const int64_t lo = flowsplit_boundary(total, s, k), hi = flowsplit_boundary(total, s, k + 1);
    if (lo >= end) break;
    const int64_t a = std::max(lo, prefix), b = std::min(hi, end);
    if (b > a) out.push_back({dest, a - prefix, b - a, k});
  }
}

void plan_flowsplit(const int64_t* counts, int n, int s, std::vector<SubFlow>& out) {
  SY_REQUIRE(n >= 0 && s >= 1, "plan_flowsplit: n = " << n << " ranks, s = " << s << " paths");
  out.clear();
  int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    SY_REQUIRE(counts[i] >= 0, "plan_flowsplit: negative count " << counts[i] << " to rank " << i);
    total += counts[i];
  }
  int64_t prefix = 0;
  for (int i = 0; i < n; ++i) {
    flowsplit_segments(i, prefix, counts[i], total, s, out);
    prefix += counts[i];
  }
}

// ---- shared machinery ----

namespace {

// Raw bytes that grow to the largest size asked for and are then reused
// (uninitialized: every byte read was written by this exchange).
class Staging {
 public:
  char* get(size_t bytes) {
    if (bytes > capacity_) {
      data_.reset(new char[bytes]);
      capacity_ = bytes;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
};

// The requests of one stage: test() checks them in order, wait() waits on each.
class Pending {
 public:
  void reserve(size_t n) { reqs_.reserve(n); }
  void clear() {
    reqs_.clear();
    next_ = 0;
  }
  void add(RequestPtr r) { reqs_.push_back(std::move(r)); }
  bool test() {
    while (next_ < reqs_.size() && reqs_[next_]->test()) ++next_;
    return next_ == reqs_.size();
  }
  void wait() {
    for (; next_ < reqs_.size(); ++next_) reqs_[next_]->wait();
  }
  // block: wait; else test.
  bool finish(bool block) {
    if (!block) return test();
    wait();
    return true;
  }

 private:
  std::vector<RequestPtr> reqs_;
  size_t next_ = 0;
};

void copy_elems(char* dst, const char* src, int64_t count, size_t esz) {
  if (count > 0) std::memcpy(dst, src, static_cast<size_t>(count) * esz);
}

}  // namespace

class AllToAllRequest final : public Request {
 public:
  explicit AllToAllRequest(AllToAll& owner) : owner_(owner) {}

  bool test() override {
    if (!done_ && owner_.advance(false)) finish();
    return done_;
  }
  void wait() override {
    if (done_) return;
    owner_.advance(true);
    finish();
  }

 private:
  void finish() {
    done_ = true;
    owner_.in_flight_ = false;
  }
  AllToAll& owner_;
  bool done_ = false;
};

AllToAll::AllToAll(Communicator& group)
    : group_(group), rank_(group.rank()), size_(group.size()), sc_(size_), sd_(size_), rc_(size_), rd_(size_) {}

RequestPtr AllToAll::start(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                           const int64_t* recv_counts, const int64_t* recv_displs, ElemType type) {
  SY_REQUIRE(!in_flight_, name() << " all-to-all on " << group_.name()
                                 << ": the previous exchange of this object has not completed (wait() on it first)");
  for (int p = 0; p < size_; ++p) {
    SY_REQUIRE(send_counts[p] >= 0 && recv_counts[p] >= 0 && send_displs[p] >= 0 && recv_displs[p] >= 0,
               name() << " all-to-all on " << group_.name() << ": negative count or displacement for peer " << p);
    sc_[p] = send_counts[p];
    sd_[p] = send_displs[p];
    rc_[p] = recv_counts[p];
    rd_[p] = recv_displs[p];
  }
  SY_REQUIRE(sc_[rank_] == rc_[rank_], name() << " all-to-all on " << group_.name() << ": this rank sends itself "
                                              << sc_[rank_] << " elements but expects " << rc_[rank_]);
  in_flight_ = true;
  begin(static_cast<const char*>(send), static_cast<char*>(recv), elem_size(type), type);
  return std::make_unique<AllToAllRequest>(*this);
}

// ---- linear ----

namespace {

class LinearMpi final : public AllToAll {
 public:
  using AllToAll::AllToAll;
  const char* name() const override { return "linear"; }

 protected:
  void begin(const char* send, char* recv, size_t, ElemType type) override {
    req_ = group_.ialltoallv(send, sc_.data(), sd_.data(), recv, rc_.data(), rd_.data(), type);
  }
  bool advance(bool block) override {
    if (!block) return req_->test();
    req_->wait();
    return true;
  }

 private:
  RequestPtr req_;
};

// Every receive posted first, then every send, each peer in turn from the
// next rank on so that not every rank sends to the same peer at once.
class LinearPaired final : public AllToAll {
 public:
  LinearPaired(Communicator& group, int tag) : AllToAll(group), tag_(tag) { pending_.reserve(2 * size_); }
  const char* name() const override { return "linear_paired"; }

 protected:
  void begin(const char* send, char* recv, size_t esz, ElemType type) override {
    pending_.clear();
    for (int k = 1; k < size_; ++k) {
      const int p = (rank_ - k + size_) % size_;
      if (rc_[p] > 0) pending_.add(group_.irecv(recv + rd_[p] * esz, rc_[p], type, p, tag_));
    }
    for (int k = 1; k < size_; ++k) {
      const int q = (rank_ + k) % size_;
      if (sc_[q] > 0) pending_.add(group_.isend(send + sd_[q] * esz, sc_[q], type, q, tag_));
    }
    copy_elems(recv + rd_[rank_] * esz, send + sd_[rank_] * esz, sc_[rank_], esz);
  }
  bool advance(bool block) override { return pending_.finish(block); }

 private:
  int tag_;
  Pending pending_;
};

// ---- 2DH ----
//
// Rank (a, i) = group rank a m + i: node a of N, local index i of m.
// Block (src -> dst) is src's send block for dst. The stages:
//   count exchange  inside the node: to local peer j, the N counts (me -> (b, j)),
//                   so each rank learns every block it will forward;
//   1 stride-copy   send blocks from [b][j] to [j][b] order (A);
//   2 intra-node    to local peer j its [j] run: A -> B, which holds for each
//                   local source i' the blocks ((a, i') -> (b, i)) in b order;
//   3 stride-copy   B from [i'][b] to [b][i'] order (C);
//   4 inter-node    to rank (b, i) the [b] run of C; rank (a', i) sends this
//                   rank the blocks ((a', i') -> me) for i' = 0 .. m-1, which is
//                   the source-rank order of recv: received in place when recv
//                   holds each node's m blocks back to back, else staged (D) and
//                   copied out by recv_displs.
// Only the intra-node counts travel: the inter-node receive sizes are the
// caller's recv_counts. With one rank per node, or one node, a level is empty
// and 2dh is the one exchange of linear (no copies, no sub-groups).
class TwoDH final : public AllToAll {
 public:
  TwoDH(Communicator& group, int m)
      : AllToAll(group),
        m_(m),
        N_(size_ / m),
        node_index_(rank_ / m),
        one_level_(m == 1 || m == size_),
        cnt_out_(int64_t(m) * N_),
        cnt_in_(int64_t(m) * N_),
        cnt_counts_(m, N_),
        cnt_displs_(m),
        s2c_(m), s2d_(m), r2c_(m), r2d_(m), pos_(m),
        s4c_(N_), s4d_(N_), r4c_(N_), r4d_(N_) {
    for (int j = 0; j < m; ++j) cnt_displs_[j] = int64_t(j) * N_;
    if (!one_level_) {  // collective over the group, like every split
      node_ = group.split_group(rank_ / m, rank_, group.name() + ".2dh_node");
      cross_ = group.split_group(rank_ % m, rank_, group.name() + ".2dh_cross");
    }
  }
  const char* name() const override { return "2dh"; }

 protected:
  void begin(const char* send, char* recv, size_t esz, ElemType type) override {
    if (one_level_) {
      data_req_ = group_.ialltoallv(send, sc_.data(), sd_.data(), recv, rc_.data(), rd_.data(), type);
      direct_ = true;
      stage_ = 2;
      return;
    }
    send_ = send;
    recv_ = recv;
    esz_ = esz;
    type_ = type;
    for (int j = 0; j < m_; ++j)
      for (int b = 0; b < N_; ++b) cnt_out_[j * N_ + b] = sc_[b * m_ + j];
    count_req_ = node_->ialltoallv(cnt_out_.data(), cnt_counts_.data(), cnt_displs_.data(), cnt_in_.data(),
                                   cnt_counts_.data(), cnt_displs_.data(), ElemType::I64);
    // Stage 1 needs only this rank's counts: it overlaps the count exchange.
    int64_t send_total = 0;
    for (int p = 0; p < size_; ++p) send_total += sc_[p];
    char* A = a_.get(send_total * esz);
    int64_t off = 0;
    for (int j = 0; j < m_; ++j) {
      s2d_[j] = off;
      for (int b = 0; b < N_; ++b) {
        const int q = b * m_ + j;
        copy_elems(A + off * esz, send + sd_[q] * esz, sc_[q], esz);
        off += sc_[q];
      }
      s2c_[j] = off - s2d_[j];
    }
    stage_ = 0;
  }

  bool advance(bool block) override {
    if (stage_ == 0) {
      if (block) {
        count_req_->wait();
      } else if (!count_req_->test()) {
        return false;
      }
      start_intra_node();
      stage_ = 1;
    }
    if (stage_ == 1) {
      if (block) {
        data_req_->wait();
      } else if (!data_req_->test()) {
        return false;
      }
      start_inter_node();
      stage_ = 2;
    }
    if (stage_ == 2) {
      if (block) {
        data_req_->wait();
      } else if (!data_req_->test()) {
        return false;
      }
      if (!direct_) {
        int64_t pos = 0;
        for (int p = 0; p < size_; ++p) {
          copy_elems(recv_ + rd_[p] * esz_, d_recv_ + pos * esz_, rc_[p], esz_);
          pos += rc_[p];
        }
      }
      stage_ = 3;
    }
    return true;
  }

 private:
  void start_intra_node() {
    // cnt_in_[i' N + b]: elements (a, i') -> (b, me). Those of my own node are recv_counts.
    for (int ip = 0; ip < m_; ++ip) {
      const int64_t got = cnt_in_[ip * N_ + node_index_], want = rc_[node_index_ * m_ + ip];
      SY_CHECK_AS(CommError, got == want,
                  "2dh all-to-all on " << group_.name() << ": rank " << node_index_ * m_ + ip << " sends rank "
                                       << rank_ << " " << got << " elements but it expects " << want);
    }
    int64_t off = 0;
    for (int ip = 0; ip < m_; ++ip) {
      r2d_[ip] = off;
      for (int b = 0; b < N_; ++b) off += cnt_in_[ip * N_ + b];
      r2c_[ip] = off - r2d_[ip];
    }
    through_ = off;
    b_recv_ = b_.get(through_ * esz_);
    data_req_ = node_->ialltoallv(a_.get(0), s2c_.data(), s2d_.data(), b_recv_, r2c_.data(), r2d_.data(), type_);
  }

  void start_inter_node() {
    char* C = c_.get(through_ * esz_);
    for (int ip = 0; ip < m_; ++ip) pos_[ip] = r2d_[ip];
    int64_t off = 0;
    for (int b = 0; b < N_; ++b) {
      s4d_[b] = off;
      for (int ip = 0; ip < m_; ++ip) {
        const int64_t n = cnt_in_[ip * N_ + b];
        copy_elems(C + off * esz_, b_recv_ + pos_[ip] * esz_, n, esz_);
        pos_[ip] += n;
        off += n;
      }
      s4c_[b] = off - s4d_[b];
    }
    // In place when each source node's m blocks lie back to back in recv.
    direct_ = true;
    int64_t recv_total = 0;
    for (int ap = 0; ap < N_; ++ap) {
      r4c_[ap] = 0;
      for (int ip = 0; ip < m_; ++ip) {
        const int p = ap * m_ + ip;
        r4c_[ap] += rc_[p];
        if (ip > 0 && rd_[p] != rd_[p - 1] + rc_[p - 1]) direct_ = false;
      }
      recv_total += r4c_[ap];
    }
    char* target = recv_;
    if (direct_) {
      for (int ap = 0; ap < N_; ++ap) r4d_[ap] = rd_[ap * m_];
    } else {
      int64_t pos = 0;
      for (int ap = 0; ap < N_; ++ap) {
        r4d_[ap] = pos;
        pos += r4c_[ap];
      }
      d_recv_ = target = d_.get(recv_total * esz_);
    }
    data_req_ = cross_->ialltoallv(C, s4c_.data(), s4d_.data(), target, r4c_.data(), r4d_.data(), type_);
  }

  const int m_, N_, node_index_;
  const bool one_level_;                 // m = 1 or N = 1: one exchange over the group
  std::unique_ptr<Communicator> node_;   // the m ranks of this node, by local index
  std::unique_ptr<Communicator> cross_;  // the N ranks with this local index, by node
  std::vector<int64_t> cnt_out_, cnt_in_;         // (m, N): counts to / from each local peer, by node
  std::vector<int64_t> cnt_counts_, cnt_displs_;  // (m): N and j N
  std::vector<int64_t> s2c_, s2d_, r2c_, r2d_, pos_;  // (m): stage 2 counts and displacements
  std::vector<int64_t> s4c_, s4d_, r4c_, r4d_;        // (N): stage 4 counts and displacements
  Staging a_, b_, c_, d_;  // A (send total), B and C (through_), D (recv total, when not in place)
  const char* send_ = nullptr;
  char* recv_ = nullptr;
  char* b_recv_ = nullptr;
  char* d_recv_ = nullptr;
  size_t esz_ = 0;
  ElemType type_ = ElemType::U8;
  int64_t through_ = 0;  // elements this rank forwards between stages 2 and 4
  bool direct_ = false;
  int stage_ = 3;
  RequestPtr count_req_, data_req_;
};

// ---- flow-split ----
//
// Leaves of L consecutive ranks. To a rank of its own leaf a sender sends one
// message (tag + s); to the ranks of another leaf its flows go through
// plan_flowsplit, one message per sub-flow, tagged tag + path. A receiver
// recomputes the sender's sub-flows of its own flow from (prefix, count,
// total): where its flow starts in the sender's bytes for that leaf, and how
// many those are. The sender sends these 3 integers ahead of the data, one
// small message (tag + s + 1) to each rank of another leaf it sends to (not
// needed with one path or one leaf); the receiver posts the receives of a
// source's sub-flows as soon as that source's integers arrive. Everything
// else is posted at once.
class FlowSplit final : public AllToAll {
 public:
  FlowSplit(Communicator& group, int L, int s, int tag)
      : AllToAll(group),
        L_(L),
        leaves_(size_ / L),
        leaf_(rank_ / L),
        s_(s),
        tag_(tag),
        exchange_meta_(s > 1 && size_ / L > 1),
        meta_out_(3 * size_),
        meta_in_(3 * size_) {
    const size_t messages = 2 * size_ + size_t(leaves_) * (s - 1);
    sends_.reserve(messages);
    recvs_.reserve(messages);
    meta_reqs_.reserve(size_);
    meta_from_.reserve(size_);
    plan_.reserve(L + s);
  }
  const char* name() const override { return "flowsplit"; }

 protected:
  void begin(const char* send, char* recv, size_t esz, ElemType type) override {
    recv_ = recv;
    esz_ = esz;
    type_ = type;
    sends_.clear();
    recvs_.clear();
    meta_reqs_.clear();
    meta_from_.clear();
    meta_next_ = 0;
    const int local = rank_ % L_, first = leaf_ * L_;
    if (exchange_meta_) {
      // Receives of the sources' integers first, then ours to each destination.
      for (int d = 1; d < leaves_; ++d) {
        const int lam = (leaf_ - d + leaves_) % leaves_;
        for (int k = 0; k < L_; ++k) {
          const int p = lam * L_ + k;
          if (rc_[p] == 0) continue;
          meta_reqs_.push_back(group_.irecv(&meta_in_[3 * p], 3, ElemType::I64, p, tag_ + s_ + 1));
          meta_from_.push_back(p);
        }
      }
      for (int d = 1; d < leaves_; ++d) {
        const int lam = (leaf_ + d) % leaves_;
        int64_t total = 0;
        for (int k = 0; k < L_; ++k) total += sc_[lam * L_ + k];
        int64_t prefix = 0;
        for (int k = 0; k < L_; ++k) {
          const int q = lam * L_ + k;
          meta_out_[3 * q] = prefix;
          meta_out_[3 * q + 1] = sc_[q];
          meta_out_[3 * q + 2] = total;
          prefix += sc_[q];
          if (sc_[q] > 0) sends_.add(group_.isend(&meta_out_[3 * q], 3, ElemType::I64, q, tag_ + s_ + 1));
        }
      }
    }
    for (int k = 1; k < L_; ++k) {
      const int p = first + (local - k + L_) % L_;
      if (rc_[p] > 0) recvs_.add(group_.irecv(recv + rd_[p] * esz, rc_[p], type, p, tag_ + s_));
    }
    if (!exchange_meta_) {  // one path: a flow is one sub-flow, [0, count) of its own
      for (int d = 1; d < leaves_; ++d) {
        const int lam = (leaf_ - d + leaves_) % leaves_;
        for (int k = 0; k < L_; ++k) post_receives(lam * L_ + k, 0, rc_[lam * L_ + k]);
      }
    }
    for (int k = 1; k < L_; ++k) {
      const int q = first + (local + k) % L_;
      if (sc_[q] > 0) sends_.add(group_.isend(send + sd_[q] * esz, sc_[q], type, q, tag_ + s_));
    }
    for (int d = 1; d < leaves_; ++d) {
      const int lam = (leaf_ + d) % leaves_;
      plan_flowsplit(sc_.data() + lam * L_, L_, s_, plan_);
      // Posted from the rank with this rank's local index on, so that the
      // senders of a leaf start on different receivers (as linear_paired does).
      const size_t n = plan_.size();
      size_t from = 0;
      while (from < n && plan_[from].dest < local) ++from;
      for (size_t j = 0; j < n; ++j) {
        const SubFlow& f = plan_[(from + j) % n];
        const int q = lam * L_ + f.dest;
        sends_.add(group_.isend(send + (sd_[q] + f.offset) * esz, f.count, type, q, tag_ + f.path));
      }
    }
    copy_elems(recv + rd_[rank_] * esz, send + sd_[rank_] * esz, sc_[rank_], esz);
  }

  bool advance(bool block) override {
    // A source's sub-flows are received once its integers are in.
    for (; meta_next_ < meta_reqs_.size(); ++meta_next_) {
      if (block) {
        meta_reqs_[meta_next_]->wait();
      } else if (!meta_reqs_[meta_next_]->test()) {
        return false;
      }
      const int p = meta_from_[meta_next_];
      SY_CHECK_AS(CommError, meta_in_[3 * p + 1] == rc_[p],
                  "flowsplit all-to-all on " << group_.name() << ": rank " << p << " sends rank " << rank_ << " "
                                             << meta_in_[3 * p + 1] << " elements but it expects " << rc_[p]);
      post_receives(p, meta_in_[3 * p], meta_in_[3 * p + 2]);
    }
    return recvs_.finish(block) && sends_.finish(block);
  }

 private:
  // The sub-flows of source p's flow to this rank: [prefix, prefix + rc[p]) of its total for this leaf.
  void post_receives(int p, int64_t prefix, int64_t total) {
    plan_.clear();
    flowsplit_segments(p % L_, prefix, rc_[p], total, s_, plan_);
    for (const SubFlow& f : plan_)
      recvs_.add(group_.irecv(recv_ + (rd_[p] + f.offset) * esz_, f.count, type_, p, tag_ + f.path));
  }

  const int L_, leaves_, leaf_, s_, tag_;
  const bool exchange_meta_;
  std::vector<int64_t> meta_out_, meta_in_;  // (size, 3): (prefix, count, leaf total) to / from each peer
  std::vector<RequestPtr> meta_reqs_;        // receives of the sources' integers, in meta_from_ order
  std::vector<int> meta_from_;
  size_t meta_next_ = 0;
  std::vector<SubFlow> plan_;
  Pending sends_, recvs_;
  char* recv_ = nullptr;
  size_t esz_ = 0;
  ElemType type_ = ElemType::U8;
};

}  // namespace

AllToAllTopology alltoall_topology(const ParallelConfig& config, int detected_ranks_per_node) {
  AllToAllTopology t;
  t.ranks_per_node = config.ranks_per_node > 0 ? config.ranks_per_node : detected_ranks_per_node;
  t.ranks_per_leaf = config.ranks_per_leaf > 0 ? config.ranks_per_leaf : t.ranks_per_node;
  t.spine_paths = config.spine_paths;
  return t;
}

std::unique_ptr<AllToAll> make_alltoall(AllToAllAlgo algo, Communicator& group, const AllToAllTopology& topology) {
  const int W = group.size();
  switch (algo) {
    case AllToAllAlgo::Auto:  // the run-time tuner will choose; until then linear
    case AllToAllAlgo::Linear:
      if (topology.linear_paired) return std::make_unique<LinearPaired>(group, topology.tag);
      return std::make_unique<LinearMpi>(group);
    case AllToAllAlgo::TwoDH: {
      const int m = topology.ranks_per_node > 0 ? topology.ranks_per_node : W;
      SY_CHECK_AS(ConfigError, W % m == 0,
                  "parallel.ranks_per_node = " << m << " does not divide the " << W << " ranks of group '"
                                               << group.name() << "' (2dh needs whole nodes)");
      return std::make_unique<TwoDH>(group, m);
    }
    case AllToAllAlgo::FlowSplit: {
      const int node = topology.ranks_per_node > 0 ? topology.ranks_per_node : W;
      const int L = topology.ranks_per_leaf > 0 ? topology.ranks_per_leaf : node;
      SY_CHECK_AS(ConfigError, W % L == 0,
                  "parallel.ranks_per_leaf = " << L << " does not divide the " << W << " ranks of group '"
                                               << group.name() << "' (flowsplit needs whole leaves)");
      SY_CHECK_AS(ConfigError, topology.spine_paths >= 1 && topology.spine_paths <= 1024,
                  "parallel.spine_paths = " << topology.spine_paths << ": expected 1 to 1024");
      return std::make_unique<FlowSplit>(group, L, topology.spine_paths, topology.tag);
    }
  }
  throw InvalidArgument("make_alltoall: unknown algorithm");
}

}  // namespace sy::par
