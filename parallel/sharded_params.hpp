// Fully sharded dense parameters (ZeRO-3 style, DESIGN section 3): a flat
// parameter set used replicated on the W ranks of `group` but stored once:
// each rank owns a 1/W shard (and the optimizer state for it, kept by the
// caller beside shard()). Layers all-gather before use; gradients are
// reduce-scattered back to the owners in buckets, each started as soon as
// backward has produced all of its gradients.
//
// Layout. Tensors are registered in forward order (name, numel). Buckets are
// formed in REVERSE registration order (backward produces the last layers'
// gradients first): walking from the last tensor to the first, a bucket takes
// whole tensors until it holds at least bucket_bytes. Bucket 0 thus holds the
// last tensors. The flat buffer (F) keeps the tensors in registration order,
// each bucket one contiguous range [b0, b1) padded at its end with zeros so
// that b1 - b0 is a multiple of W * 16 elements:
//   flat: | bucket nb-1: t0 t1 .. pad | ... | bucket 0: .. t(n-1) pad |
// A bucket's reduce-scatter (or all-gather) over its range gives rank r the
// r-th 1/W of it, its piece [b0 + r*chunk, b0 + (r+1)*chunk), chunk = (b1-b0)/W
// (a multiple of 16). This rank's shard (S = F / W) is the concatenation of
// its pieces of every bucket in flat order (shard_pieces()); gather() inverts
// exactly that mapping. So a rank's shard is not one contiguous range of the
// flat buffer; shard_to_flat() and canonical_index() give, for a checkpoint
// writer, where each shard element sits in the flat buffer and in the
// canonical (unpadded, registration-order) concatenation of the tensors.
// Padding elements are zero in every buffer and stay zero under any
// element-wise optimizer (their gradient is zero).
//
// Gradient rule: layers accumulate (+=) into grad(name) (the full gradient
// buffer, zeroed by zero_grad()); a bucket's reduce-scatter OVERWRITES its
// pieces of grad_shard() with the sum over the group of grad_scale * the
// ranks' full gradients. The full gradient buffer is scaled in place when its
// bucket starts and must not be written again until finish().
//
// Buckets start in bucket order on every rank (MPI needs the same collective
// order everywhere): a bucket whose gradients are all ready waits for the
// buckets before it, so ranks may mark tensors ready in different orders.
// Memory: one allocation at finalize() (full params, full grads, shard, grad
// shard); a backward or a gather allocates no buffers (only the
// communicator's request handles).
//
// Mixed precision (train.dtype = bf16): with set_param_dtype(BF16) the shard
// stays the fp32 master copy the optimizer updates, but gather() rounds it to
// bf16 (nearest even), all-gathers 2 bytes per element, and widens the bf16
// values back into the full parameters: the layers compute with bf16 weights,
// the weight all-gather moves half the bytes, and updates smaller than a bf16
// step still accumulate in the master. Two more buffers (shard and flat bf16
// staging) come with the one allocation at finalize().
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "parallel/communicator.hpp"

namespace sy::par {

template <typename T>
class ShardedParams {
 public:
  static constexpr int64_t kDefaultBucketBytes = int64_t(25) << 20;  // parallel.bucket_mb = 25
  static constexpr int64_t kShardAlign = 16;                        // elements; every piece is a multiple

  // One bucket of the flat buffer, in the order backward fills them.
  struct Bucket {
    int64_t flat_begin, flat_end;  // [b0, b1) of the flat buffer; (b1 - b0) % (W * 16) == 0
    int64_t chunk;                 // (b1 - b0) / W: each rank's piece; rank r owns [b0 + r*chunk, +chunk)
    int64_t shard_begin;           // where this rank's piece sits in shard() and grad_shard()
    int first_tensor, end_tensor;  // registration indices [first, end) of its tensors
  };
  // One piece of this rank's shard: shard[shard_begin + i] is flat[flat_begin + i], i < count.
  struct Piece {
    int64_t shard_begin, flat_begin, count;
  };

  // group: the ranks that share (and shard) the set; bucket_bytes: target bucket size.
  explicit ShardedParams(Communicator& group, int64_t bucket_bytes = kDefaultBucketBytes);
  ShardedParams(const ShardedParams&) = delete;
  ShardedParams& operator=(const ShardedParams&) = delete;

  // --- construction -------------------------------------------------------
  // Registers a tensor of numel > 0 elements; names are unique; before finalize().
  void add(const std::string& name, int64_t numel);
  // Precision of the gathered (working) parameters: F32 (the default: exact
  // copies of the shards) or BF16 (see the header comment). Before finalize().
  void set_param_dtype(DType dtype);
  DType param_dtype() const { return param_dtype_; }
  // Computes the layout and makes the one allocation (all buffers zeroed).
  void finalize();
  bool finalized() const { return finalized_; }

  // --- layout ---------------------------------------------------------------
  Communicator& group() const { return group_; }
  int num_tensors() const { return int(tensors_.size()); }
  const std::string& name(int i) const;  // registration order
  int64_t flat_size() const;             // F: padded, a multiple of W * 16
  int64_t shard_size() const;            // S = F / W, a multiple of 16
  int64_t canonical_size() const;        // sum of the tensors' numel (no padding)
  int64_t bucket_bytes() const { return bucket_bytes_; }
  int num_buckets() const { return int(buckets_.size()); }
  const Bucket& bucket(int b) const;
  int bucket_of(const std::string& name) const;
  // This rank's pieces, in flat order; their counts sum to shard_size().
  std::span<const Piece> shard_pieces() const;
  // Flat index of shard element k (0 <= k < S).
  int64_t shard_to_flat(int64_t k) const;
  // Index of flat element f in the canonical concatenation of the tensors
  // (registration order, no padding), or -1 when f is padding.
  int64_t canonical_index(int64_t f) const;

  // --- named views (throw InvalidArgument naming an unknown name and the known ones)
  int64_t numel(const std::string& name) const;
  int64_t flat_offset(const std::string& name) const;
  T* param(const std::string& name);  // (numel) in the full (gathered) parameters
  T* grad(const std::string& name);   // (numel) in the full (local) gradients
  T* full_params();                   // (F)
  T* full_grads();                    // (F)
  T* shard();                         // (S) this rank's master parameters: what the optimizer updates
  T* grad_shard();                    // (S) this rank's reduced gradients

  // --- parameters -------------------------------------------------------------
  // Calls fn(name, param(name), numel) for every tensor (it must give the same
  // values on every rank), then scatter_from_full().
  void init_full(const std::function<void(const std::string&, T*, int64_t)>& fn);
  // Copies this rank's pieces of the full parameters into shard(). Local.
  void scatter_from_full();
  // All-gathers every rank's shard into the full parameters, bucket by bucket
  // (rounded to bf16 on the way when param_dtype() is BF16).
  void gather();
  // The same, non-blocking: the full parameters are valid after wait().
  // shard() must not change until then.
  RequestPtr igather();

  // --- gradient sync ------------------------------------------------------------
  // Zeroes the full gradient buffer (the start of an accumulation).
  void zero_grad();
  // Starts a backward: every tensor must then be marked ready exactly once.
  // grad_scale multiplies the local gradients before the sum (1/replicas
  // turns the sum into a mean).
  void begin_backward(double grad_scale = 1.0);
  // The tensor's gradient is complete. Starts (ireduce_scatter) every bucket
  // that is now complete and whose predecessors have started.
  void mark_ready(const std::string& name);
  // Waits for every bucket. Throws InvalidArgument naming the tensors never
  // marked ready (after waiting for the buckets already started, so the
  // group stays consistent); the backward is over either way.
  void finish();
  bool in_backward() const { return in_backward_; }
  // Buckets started in the current (or last) backward.
  int buckets_started() const { return next_start_; }
  // True once bucket b's reduce-scatter has completed (never blocks).
  bool bucket_done(int b);

  // --- gradient norm and clipping -----------------------------------------------------
  // Sum of squares of grad_shard() (padding contributes zero).
  double grad_norm_sq_local() const;
  // grad_shard() *= scale.
  void clip_grad_shard(double scale);

 private:
  struct TensorInfo {
    std::string name;
    int64_t numel;
    int64_t flat_offset;
    int64_t canonical_offset;
    int bucket;
  };
  int index_of(const std::string& name) const;
  std::string known_names() const;  // for error messages
  void require_finalized(const char* what) const;
  void start_bucket(int b);

  Communicator& group_;
  int64_t bucket_bytes_;
  bool finalized_ = false;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, int> index_;
  std::vector<Bucket> buckets_;  // bucket order (0 = last tensors)
  std::vector<Piece> pieces_;    // flat order
  int64_t flat_size_ = 0, shard_size_ = 0, canonical_size_ = 0;

  std::vector<T> storage_;  // (2F + 2S): params (F), grads (F), shard (S), grad shard (S)
  T* params_ = nullptr;     // (F)
  T* grads_ = nullptr;      // (F)
  T* shard_ = nullptr;      // (S)
  T* grad_shard_ = nullptr; // (S)
  DType param_dtype_ = DType::F32;
  std::vector<bf16> shard16_;  // (S) the master shard rounded, the all-gather's send buffer (BF16 only)
  std::vector<bf16> flat16_;   // (F) the gathered bf16 parameters, widened into params_ (BF16 only)

  // Backward state, sized at finalize().
  bool in_backward_ = false;
  T grad_scale_ = T(1);
  std::vector<uint8_t> ready_;        // (n tensors)
  std::vector<int> pending_;          // (nb) tensors of the bucket not yet ready
  std::vector<RequestPtr> requests_;  // (nb) the buckets' reduce-scatters
  int next_start_ = 0;                // buckets [0, next_start_) have started
};

// --- global gradient norm --------------------------------------------------------
// One parameter set's share of the squared gradient norm on this rank.
// copies: how many ranks of the world hold each of these elements. A set
// sharded over `group` and replicated over the other ranks (the group's
// copies partition the world) has copies = world.size() / group.size():
// dense parameters sharded over the whole world have 1; a set replicated on
// every rank has world.size(); expert shards stored once per ep_group and
// replicated over dp_group have dp.
struct GradNormPart {
  double local_sq;
  int64_t copies = 1;
};
// sqrt(sum over world ranks and parts of local_sq / copies): every element
// counted once. One allreduce over `world`; collective on every rank of it.
double global_grad_norm(std::span<const GradNormPart> parts, Communicator& world);
double global_grad_norm(std::initializer_list<GradNormPart> parts, Communicator& world);
// The factor clip_grad_shard takes: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (off).
double clip_scale(double norm, double max_norm);

extern template class ShardedParams<float>;
extern template class ShardedParams<double>;

}  // namespace sy::par
