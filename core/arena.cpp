#include "core/arena.hpp"

#include <sstream>

#include "core/error.hpp"

namespace sy {

namespace {
size_t align_up(size_t n) { return (n + Backend::kAlignment - 1) / Backend::kAlignment * Backend::kAlignment; }
}  // namespace

std::atomic<uint64_t> Arena::allocations_{0};

void ArenaLayout::add(const std::string& name, Shape shape, DType dtype) {
  SY_REQUIRE(!name.empty(), "arena buffer needs a name");
  SY_REQUIRE(index_.count(name) == 0, "arena buffer '" << name << "' added twice");
  index_[name] = entries_.size();
  entries_.push_back({name, shape, dtype, buffer_bytes_});
  buffer_bytes_ += align_up(static_cast<size_t>(shape.numel()) * dtype_size(dtype));
}

size_t ArenaLayout::total_bytes() const { return buffer_bytes_ + align_up(scratch_bytes_); }

Arena::Arena(Backend& backend, const ArenaLayout& layout)
    : backend_(backend),
      total_bytes_(layout.total_bytes()),
      buffer_bytes_(layout.buffer_bytes_),
      scratch_bytes_(align_up(layout.scratch_bytes_)),
      entries_(layout.entries_),
      index_(layout.index_) {
  if (total_bytes_ > 0) {
    base_ = static_cast<char*>(backend_.allocate(total_bytes_));
    allocations_.fetch_add(1);
  }
}

Arena::~Arena() {
  if (base_) backend_.deallocate(base_);
}

Tensor Arena::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    std::ostringstream known;
    for (size_t i = 0; i < entries_.size(); ++i) known << (i ? ", " : "") << entries_[i].name;
    SY_REQUIRE(false, "no arena buffer '" << name << "'; known: " << known.str());
  }
  const auto& e = entries_[it->second];
  return Tensor(base_ + e.offset, e.shape, e.dtype, backend_.device());
}

Tensor Arena::scratch(Shape shape, DType dtype) {
  const size_t bytes = align_up(static_cast<size_t>(shape.numel()) * dtype_size(dtype));
  SY_REQUIRE(scratch_used_ + bytes <= scratch_bytes_,
             "arena scratch exhausted: " << shape.str() << " " << dtype_name(dtype) << " needs " << bytes
                                         << " bytes, " << (scratch_bytes_ - scratch_used_) << " of "
                                         << scratch_bytes_ << " left");
  Tensor t(base_ + buffer_bytes_ + scratch_used_, shape, dtype, backend_.device());
  scratch_used_ += bytes;
  return t;
}

void Arena::zero_buffers() {
  if (buffer_bytes_) backend_.fill_zero(base_, buffer_bytes_);
}

}  // namespace sy
