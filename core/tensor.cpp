#include "core/tensor.hpp"

#include <sstream>
#include <utility>

namespace sy {

Shape::Shape(std::initializer_list<int64_t> d) {
  SY_REQUIRE(d.size() <= static_cast<size_t>(kMaxRank), "at most " << kMaxRank << " dimensions, got " << d.size());
  for (int64_t v : d) {
    SY_REQUIRE(v >= 0, "dimension sizes must be non-negative, got " << v);
    dims[rank++] = v;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < rank; ++i) os << (i ? ", " : "") << dims[i];
  os << ")";
  return os.str();
}

Tensor::Tensor(void* data, Shape shape, DType dtype, Device device)
    : data_(data), shape_(shape), dtype_(dtype), device_(device) {
  int64_t s = 1;
  for (int i = shape_.rank - 1; i >= 0; --i) {
    strides_[i] = s;
    s *= shape_.dims[i];
  }
}

int64_t Tensor::dim(int i) const {
  SY_REQUIRE(i >= 0 && i < rank(), "dimension " << i << " out of range for shape " << shape_.str());
  return shape_.dims[i];
}

int64_t Tensor::stride(int i) const {
  SY_REQUIRE(i >= 0 && i < rank(), "dimension " << i << " out of range for shape " << shape_.str());
  return strides_[i];
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (int i = rank() - 1; i >= 0; --i) {
    if (shape_.dims[i] != 1 && strides_[i] != s) return false;
    s *= shape_.dims[i];
  }
  return true;
}

Tensor Tensor::reshape(Shape shape) const {
  SY_REQUIRE(is_contiguous(), "reshape needs a contiguous tensor, got a strided view of shape " << shape_.str());
  SY_REQUIRE(shape.numel() == numel(), "cannot reshape " << shape_.str() << " to " << shape.str());
  return Tensor(data_, shape, dtype_, device_);
}

Tensor Tensor::slice(int d, int64_t begin, int64_t end) const {
  SY_REQUIRE(d >= 0 && d < rank(), "slice dimension " << d << " out of range for shape " << shape_.str());
  SY_REQUIRE(0 <= begin && begin <= end && end <= shape_.dims[d],
             "slice [" << begin << ", " << end << ") out of range for dimension " << d << " of " << shape_.str());
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + begin * strides_[d] * static_cast<int64_t>(dtype_size(dtype_));
  t.shape_.dims[d] = end - begin;
  return t;
}

Tensor Tensor::transpose(int d0, int d1) const {
  SY_REQUIRE(d0 >= 0 && d0 < rank() && d1 >= 0 && d1 < rank(),
             "transpose dimensions " << d0 << ", " << d1 << " out of range for " << shape_.str());
  Tensor t = *this;
  std::swap(t.shape_.dims[d0], t.shape_.dims[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

}  // namespace sy
