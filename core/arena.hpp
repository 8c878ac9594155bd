// Arena: one device allocation holding named buffers, planned up front.
//
// A layer (or the trainer) lists every buffer it needs in an ArenaLayout, one
// function computing all sizes; the Arena then makes ONE allocation and hands
// out Tensor views by name. A training step only takes views and uses the
// scratch region (a bump allocator reset once per step), so it allocates
// nothing. Arena::allocation_count() lets tests prove that.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/backend.hpp"
#include "core/tensor.hpp"

namespace sy {

class ArenaLayout {
 public:
  // Adds a named buffer; names are unique.
  void add(const std::string& name, Shape shape, DType dtype = DType::F32);
  // Bytes of the bump-allocated scratch region (reset per step).
  void reserve_scratch(size_t bytes) { scratch_bytes_ = bytes; }

  size_t total_bytes() const;  // buffers + scratch, each aligned
  size_t num_buffers() const { return entries_.size(); }

 private:
  friend class Arena;
  struct Entry {
    std::string name;
    Shape shape;
    DType dtype;
    size_t offset;
  };
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  size_t buffer_bytes_ = 0;
  size_t scratch_bytes_ = 0;
};

class Arena {
 public:
  Arena(Backend& backend, const ArenaLayout& layout);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // The named buffer; throws InvalidArgument listing the known names if absent.
  Tensor get(const std::string& name) const;
  bool has(const std::string& name) const { return index_.count(name) != 0; }

  // A view of the next free bytes of scratch; throws InvalidArgument when the
  // scratch region is exhausted (the layout under-reserved: a bug to fix there).
  Tensor scratch(Shape shape, DType dtype = DType::F32);
  void reset_scratch() { scratch_used_ = 0; }
  size_t scratch_used() const { return scratch_used_; }
  size_t scratch_capacity() const { return scratch_bytes_; }

  size_t bytes() const { return total_bytes_; }
  Backend& backend() const { return backend_; }
  // Zeroes every named buffer (not scratch).
  void zero_buffers();

  // Device allocations made by all arenas in this process so far.
  static uint64_t allocation_count() { return allocations_.load(); }

 private:
  Backend& backend_;
  char* base_ = nullptr;
  size_t total_bytes_ = 0;
  size_t buffer_bytes_ = 0;
  size_t scratch_bytes_ = 0;
  size_t scratch_used_ = 0;
  std::vector<ArenaLayout::Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  static std::atomic<uint64_t> allocations_;
};

}  // namespace sy
