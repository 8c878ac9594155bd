// Tensor: a typed, strided view of memory owned by someone else (an Arena).
//
// A Tensor never allocates or frees; copying one copies the view. Shapes have
// up to 4 dimensions; strides are in elements. Views (reshape, slice,
// transpose) are O(1) and share the memory.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.hpp"
#include "core/error.hpp"

namespace sy {

constexpr int kMaxRank = 4;

struct Shape {
  std::array<int64_t, kMaxRank> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  std::string str() const;  // "(4, 8)"
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(void* data, Shape shape, DType dtype, Device device);  // contiguous

  void* raw() const { return data_; }
  template <typename T>
  T* data() const;  // checks that T matches dtype()

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank; }
  int64_t dim(int i) const;
  int64_t stride(int i) const;
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return data_ != nullptr || numel() == 0; }
  bool is_contiguous() const;

  // Same memory, new shape; requires a contiguous tensor and equal numel.
  Tensor reshape(Shape shape) const;
  // Elements [begin, end) along dim.
  Tensor slice(int dim, int64_t begin, int64_t end) const;
  // Swaps two dimensions (strided view).
  Tensor transpose(int d0, int d1) const;

 private:
  void* data_ = nullptr;
  Shape shape_;
  std::array<int64_t, kMaxRank> strides_{};
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::F32;
};
template <>
struct DTypeOf<bf16> {
  static constexpr DType value = DType::BF16;
};

template <typename T>
T* Tensor::data() const {
  SY_REQUIRE(dtype_ == DTypeOf<T>::value,
             "tensor holds " << dtype_name(dtype_) << ", accessed as " << dtype_name(DTypeOf<T>::value));
  return static_cast<T*>(data_);
}

}  // namespace sy
