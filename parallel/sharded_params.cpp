#include "parallel/sharded_params.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "core/error.hpp"

namespace sy::par {

namespace {

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Several requests completed together (the buckets of one gather), then
// on_done once (the widening of a bf16 gather), before test() or wait() report done.
class GroupRequest final : public Request {
 public:
  GroupRequest(std::vector<RequestPtr> parts, std::function<void()> on_done)
      : parts_(std::move(parts)), on_done_(std::move(on_done)) {}
  bool test() override {
    bool all = true;
    for (auto& p : parts_) all = p->test() && all;  // test every part: it drives MPI progress
    if (all) complete();
    return all;
  }
  void wait() override {
    for (auto& p : parts_) p->wait();
    complete();
  }

 private:
  void complete() {
    if (on_done_) std::exchange(on_done_, nullptr)();
  }
  std::vector<RequestPtr> parts_;
  std::function<void()> on_done_;
};

}  // namespace

template <typename T>
ShardedParams<T>::ShardedParams(Communicator& group, int64_t bucket_bytes)
    : group_(group), bucket_bytes_(bucket_bytes) {
  SY_REQUIRE(bucket_bytes > 0, "bucket size must be positive (parallel.bucket_mb), got " << bucket_bytes << " bytes");
}

template <typename T>
void ShardedParams<T>::add(const std::string& name, int64_t numel) {
  SY_REQUIRE(!finalized_, "ShardedParams on " << group_.name() << ": cannot add '" << name << "' after finalize()");
  SY_REQUIRE(numel > 0, "ShardedParams: tensor '" << name << "' must have numel > 0, got " << numel);
  SY_REQUIRE(index_.count(name) == 0, "ShardedParams: tensor '" << name << "' registered twice");
  index_.emplace(name, int(tensors_.size()));
  tensors_.push_back({name, numel, 0, canonical_size_, 0});
  canonical_size_ += numel;
}

template <typename T>
void ShardedParams<T>::set_param_dtype(DType dtype) {
  SY_REQUIRE(!finalized_, "ShardedParams on " << group_.name() << ": set_param_dtype() after finalize()");
  param_dtype_ = dtype;
}

template <typename T>
void ShardedParams<T>::finalize() {
  SY_REQUIRE(!finalized_, "ShardedParams on " << group_.name() << ": finalize() called twice");
  SY_REQUIRE(!tensors_.empty(), "ShardedParams on " << group_.name() << ": finalize() with no tensors registered");
  const int64_t W = group_.size(), r = group_.rank();
  const int n = int(tensors_.size());

  // Buckets in reverse registration order, whole tensors, closed at >= bucket_bytes.
  buckets_.clear();
  int end = n;
  int64_t elems = 0;
  for (int i = n - 1; i >= 0; --i) {
    elems += tensors_[i].numel;
    if (elems * int64_t(sizeof(T)) >= bucket_bytes_ || i == 0) {
      buckets_.push_back({0, 0, 0, 0, i, end});
      end = i;
      elems = 0;
    }
  }
  const int nb = int(buckets_.size());

  // Flat order is the reverse of bucket order: bucket nb-1 (the first tensors) at 0.
  const int64_t unit = W * kShardAlign;
  int64_t flat = 0, shard_pos = 0;
  pieces_.clear();
  for (int b = nb - 1; b >= 0; --b) {
    Bucket& bk = buckets_[b];
    bk.flat_begin = flat;
    for (int i = bk.first_tensor; i < bk.end_tensor; ++i) {
      tensors_[i].flat_offset = flat;
      tensors_[i].bucket = b;
      flat += tensors_[i].numel;
    }
    bk.flat_end = bk.flat_begin + round_up(flat - bk.flat_begin, unit);
    bk.chunk = (bk.flat_end - bk.flat_begin) / W;
    bk.shard_begin = shard_pos;
    pieces_.push_back({shard_pos, bk.flat_begin + r * bk.chunk, bk.chunk});
    shard_pos += bk.chunk;
    flat = bk.flat_end;
  }
  flat_size_ = flat;
  shard_size_ = shard_pos;

  storage_.assign(size_t(2 * flat_size_ + 2 * shard_size_), T(0));
  if (param_dtype_ == DType::BF16) {
    shard16_.assign(size_t(shard_size_), bf16{});
    flat16_.assign(size_t(flat_size_), bf16{});
  }
  params_ = storage_.data();
  grads_ = params_ + flat_size_;
  shard_ = grads_ + flat_size_;
  grad_shard_ = shard_ + shard_size_;

  ready_.assign(size_t(n), 0);
  pending_.assign(size_t(nb), 0);
  requests_.clear();
  requests_.resize(size_t(nb));
  finalized_ = true;
}

template <typename T>
void ShardedParams<T>::require_finalized(const char* what) const {
  SY_REQUIRE(finalized_, "ShardedParams on " << group_.name() << ": " << what << " needs finalize() first");
}

template <typename T>
int ShardedParams<T>::index_of(const std::string& name) const {
  const auto it = index_.find(name);
  SY_REQUIRE(it != index_.end(), "ShardedParams on " << group_.name() << ": unknown tensor '" << name
                                                     << "'; known tensors: " << known_names());
  return it->second;
}

template <typename T>
std::string ShardedParams<T>::known_names() const {
  if (tensors_.empty()) return "(none)";
  std::string out;
  for (size_t i = 0; i < tensors_.size(); ++i) out += (i ? ", " : "") + tensors_[i].name;
  return out;
}

template <typename T>
const std::string& ShardedParams<T>::name(int i) const {
  SY_REQUIRE(i >= 0 && i < num_tensors(), "tensor index " << i << " outside [0, " << num_tensors() << ")");
  return tensors_[size_t(i)].name;
}

template <typename T>
int64_t ShardedParams<T>::flat_size() const {
  require_finalized("flat_size()");
  return flat_size_;
}

template <typename T>
int64_t ShardedParams<T>::shard_size() const {
  require_finalized("shard_size()");
  return shard_size_;
}

template <typename T>
int64_t ShardedParams<T>::canonical_size() const {
  return canonical_size_;
}

template <typename T>
const typename ShardedParams<T>::Bucket& ShardedParams<T>::bucket(int b) const {
  require_finalized("bucket()");
  SY_REQUIRE(b >= 0 && b < num_buckets(), "bucket " << b << " outside [0, " << num_buckets() << ")");
  return buckets_[size_t(b)];
}

template <typename T>
int ShardedParams<T>::bucket_of(const std::string& name) const {
  require_finalized("bucket_of()");
  return tensors_[size_t(index_of(name))].bucket;
}

template <typename T>
std::span<const typename ShardedParams<T>::Piece> ShardedParams<T>::shard_pieces() const {
  require_finalized("shard_pieces()");
  return pieces_;
}

template <typename T>
int64_t ShardedParams<T>::shard_to_flat(int64_t k) const {
  require_finalized("shard_to_flat()");
  SY_REQUIRE(k >= 0 && k < shard_size_, "shard index " << k << " outside [0, " << shard_size_ << ")");
  // The last piece starting at or before k.
  const auto it = std::upper_bound(pieces_.begin(), pieces_.end(), k,
                                   [](int64_t v, const Piece& p) { return v < p.shard_begin; });
  const Piece& p = *(it - 1);
  return p.flat_begin + (k - p.shard_begin);
}

template <typename T>
int64_t ShardedParams<T>::canonical_index(int64_t f) const {
  require_finalized("canonical_index()");
  SY_REQUIRE(f >= 0 && f < flat_size_, "flat index " << f << " outside [0, " << flat_size_ << ")");
  // Tensors sit in registration order at increasing flat offsets.
  const auto it = std::upper_bound(tensors_.begin(), tensors_.end(), f,
                                   [](int64_t v, const TensorInfo& t) { return v < t.flat_offset; });
  const TensorInfo& t = *(it - 1);
  return f < t.flat_offset + t.numel ? t.canonical_offset + (f - t.flat_offset) : -1;
}

template <typename T>
int64_t ShardedParams<T>::numel(const std::string& name) const {
  return tensors_[size_t(index_of(name))].numel;
}

template <typename T>
int64_t ShardedParams<T>::flat_offset(const std::string& name) const {
  require_finalized("flat_offset()");
  return tensors_[size_t(index_of(name))].flat_offset;
}

template <typename T>
T* ShardedParams<T>::param(const std::string& name) {
  require_finalized("param()");
  return params_ + tensors_[size_t(index_of(name))].flat_offset;
}

template <typename T>
T* ShardedParams<T>::grad(const std::string& name) {
  require_finalized("grad()");
  return grads_ + tensors_[size_t(index_of(name))].flat_offset;
}

template <typename T>
T* ShardedParams<T>::full_params() {
  require_finalized("full_params()");
  return params_;
}

template <typename T>
T* ShardedParams<T>::full_grads() {
  require_finalized("full_grads()");
  return grads_;
}

template <typename T>
T* ShardedParams<T>::shard() {
  require_finalized("shard()");
  return shard_;
}

template <typename T>
T* ShardedParams<T>::grad_shard() {
  require_finalized("grad_shard()");
  return grad_shard_;
}

template <typename T>
void ShardedParams<T>::init_full(const std::function<void(const std::string&, T*, int64_t)>& fn) {
  require_finalized("init_full()");
  for (const TensorInfo& t : tensors_) fn(t.name, params_ + t.flat_offset, t.numel);
  scatter_from_full();
}

template <typename T>
void ShardedParams<T>::scatter_from_full() {
  require_finalized("scatter_from_full()");
  for (const Piece& p : pieces_) std::copy_n(params_ + p.flat_begin, p.count, shard_ + p.shard_begin);
}

template <typename T>
RequestPtr ShardedParams<T>::igather() {
  require_finalized("igather()");
  std::vector<RequestPtr> parts;
  parts.reserve(buckets_.size());
  if (param_dtype_ == DType::F32) {
    // Bucket order, the same on every rank.
    for (const Bucket& bk : buckets_)
      parts.push_back(
          group_.iall_gather(shard_ + bk.shard_begin, params_ + bk.flat_begin, bk.chunk, elem_type_of<T>()));
    return std::make_unique<GroupRequest>(std::move(parts), nullptr);
  }
  for (int64_t k = 0; k < shard_size_; ++k) shard16_[size_t(k)] = float_to_bf16(float(shard_[k]));
  for (const Bucket& bk : buckets_)
    parts.push_back(group_.iall_gather(shard16_.data() + bk.shard_begin, flat16_.data() + bk.flat_begin, bk.chunk,
                                       ElemType::BF16));
  return std::make_unique<GroupRequest>(std::move(parts), [this] {
    for (int64_t f = 0; f < flat_size_; ++f) params_[f] = T(bf16_to_float(flat16_[size_t(f)]));
  });
}

template <typename T>
void ShardedParams<T>::gather() {
  igather()->wait();
}

template <typename T>
void ShardedParams<T>::zero_grad() {
  require_finalized("zero_grad()");
  SY_REQUIRE(!in_backward_,
             "ShardedParams on " << group_.name() << ": zero_grad() during a backward (call finish() first)");
  std::fill_n(grads_, flat_size_, T(0));
}

template <typename T>
void ShardedParams<T>::begin_backward(double grad_scale) {
  require_finalized("begin_backward()");
  SY_REQUIRE(!in_backward_, "ShardedParams on " << group_.name()
                                                << ": begin_backward() while a backward is in flight "
                                                   "(call finish() first)");
  SY_REQUIRE(std::isfinite(grad_scale), "grad_scale must be finite, got " << grad_scale);
  grad_scale_ = T(grad_scale);
  std::fill(ready_.begin(), ready_.end(), uint8_t(0));
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].end_tensor - buckets_[b].first_tensor;
  for (auto& rq : requests_) rq.reset();
  next_start_ = 0;
  in_backward_ = true;
}

template <typename T>
void ShardedParams<T>::mark_ready(const std::string& name) {
  require_finalized("mark_ready()");
  const int i = index_of(name);
  SY_REQUIRE(in_backward_, "ShardedParams on " << group_.name() << ": mark_ready('" << name
                                               << "') outside a backward (call begin_backward() first)");
  SY_REQUIRE(!ready_[size_t(i)], "ShardedParams on " << group_.name() << ": tensor '" << name
                                                     << "' marked ready twice in one backward");
  ready_[size_t(i)] = 1;
  --pending_[size_t(tensors_[size_t(i)].bucket)];
  const int nb = num_buckets();
  while (next_start_ < nb && pending_[size_t(next_start_)] == 0) start_bucket(next_start_++);
}

template <typename T>
void ShardedParams<T>::start_bucket(int b) {
  const Bucket& bk = buckets_[size_t(b)];
  if (grad_scale_ != T(1))
    for (int64_t f = bk.flat_begin; f < bk.flat_end; ++f) grads_[f] *= grad_scale_;
  requests_[size_t(b)] = group_.ireduce_scatter(grads_ + bk.flat_begin, grad_shard_ + bk.shard_begin, bk.chunk,
                                                elem_type_of<T>(), ReduceOp::Sum);
}

template <typename T>
void ShardedParams<T>::finish() {
  require_finalized("finish()");
  SY_REQUIRE(in_backward_, "ShardedParams on " << group_.name() << ": finish() without begin_backward()");
  in_backward_ = false;
  // The started buckets were started on every rank alike: complete them first.
  for (int b = 0; b < next_start_; ++b) requests_[size_t(b)]->wait();
  std::ostringstream missing;
  int num_missing = 0;
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (!ready_[i]) missing << (num_missing++ ? ", " : "") << tensors_[i].name;
  SY_REQUIRE(num_missing == 0, "ShardedParams on " << group_.name() << ": finish() with " << num_missing
                                                   << " gradient(s) never marked ready: " << missing.str()
                                                   << " (mark every tensor once per backward, with a zero "
                                                      "gradient if unused; a skipped gradient would be stale)");
}

template <typename T>
bool ShardedParams<T>::bucket_done(int b) {
  require_finalized("bucket_done()");
  SY_REQUIRE(b >= 0 && b < num_buckets(), "bucket " << b << " outside [0, " << num_buckets() << ")");
  const auto& rq = requests_[size_t(b)];
  if (b >= next_start_ || !rq) return false;
  return rq->test();
}

template <typename T>
double ShardedParams<T>::grad_norm_sq_local() const {
  require_finalized("grad_norm_sq_local()");
  double sum = 0;
  for (int64_t k = 0; k < shard_size_; ++k) sum += double(grad_shard_[k]) * double(grad_shard_[k]);
  return sum;
}

template <typename T>
void ShardedParams<T>::clip_grad_shard(double scale) {
  require_finalized("clip_grad_shard()");
  SY_REQUIRE(std::isfinite(scale), "clip scale must be finite, got " << scale);
  const T s = T(scale);
  for (int64_t k = 0; k < shard_size_; ++k) grad_shard_[k] *= s;
}

double global_grad_norm(std::span<const GradNormPart> parts, Communicator& world) {
  double sum = 0;
  for (const GradNormPart& p : parts) {
    SY_REQUIRE(p.copies >= 1 && p.copies <= world.size(),
               "GradNormPart.copies must be in [1, " << world.size() << "] (ranks of " << world.name()
                                                     << " holding each element), got " << p.copies);
    SY_REQUIRE(p.local_sq >= 0 || std::isnan(p.local_sq), "a squared norm must be >= 0, got " << p.local_sq);
    sum += p.local_sq / double(p.copies);
  }
  world.allreduce(&sum, 1, ReduceOp::Sum);
  return std::sqrt(sum);
}

double global_grad_norm(std::initializer_list<GradNormPart> parts, Communicator& world) {
  return global_grad_norm(std::span<const GradNormPart>(parts.begin(), parts.size()), world);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

template class ShardedParams<float>;
template class ShardedParams<double>;

}  // namespace sy::par
