#include "core/tensor.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace sy {
namespace {

TEST(Tensor, ContiguousStridesAndNumel) {
  std::vector<float> mem(24);
  Tensor t(mem.data(), Shape{2, 3, 4}, DType::F32, Device::CPU);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.stride(0), 12);
  EXPECT_EQ(t.stride(1), 4);
  EXPECT_EQ(t.stride(2), 1);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.shape().str(), "(2, 3, 4)");
}

TEST(Tensor, SliceAndTransposeAreViews) {
  std::vector<float> mem(12);
  for (int i = 0; i < 12; ++i) mem[i] = static_cast<float>(i);
  Tensor t(mem.data(), Shape{3, 4}, DType::F32, Device::CPU);
  Tensor rows = t.slice(0, 1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 4}));
  EXPECT_EQ(rows.data<float>()[0], 4.0f);
  EXPECT_TRUE(rows.is_contiguous());
  Tensor cols = t.slice(1, 1, 3);
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(cols.data<float>()[0], 1.0f);
  Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), (Shape{4, 3}));
  EXPECT_EQ(tt.stride(0), 1);
  EXPECT_EQ(tt.stride(1), 4);
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_THROW(tt.reshape(Shape{12}), InvalidArgument);
}

TEST(Tensor, ReshapeChecksElementCount) {
  std::vector<float> mem(12);
  Tensor t(mem.data(), Shape{3, 4}, DType::F32, Device::CPU);
  EXPECT_EQ(t.reshape(Shape{2, 6}).shape(), (Shape{2, 6}));
  EXPECT_THROW(t.reshape(Shape{5, 2}), InvalidArgument);
}

TEST(Tensor, TypedAccessChecksDtype) {
  std::vector<bf16> mem(4);
  Tensor t(mem.data(), Shape{4}, DType::BF16, Device::CPU);
  EXPECT_NO_THROW(t.data<bf16>());
  EXPECT_THROW(t.data<float>(), InvalidArgument);
  EXPECT_EQ(t.nbytes(), 8u);
}

TEST(Tensor, BadShapesAndIndicesAreRejected) {
  EXPECT_THROW((Shape{1, 2, 3, 4, 5}), InvalidArgument);
  EXPECT_THROW((Shape{2, -1}), InvalidArgument);
  std::vector<float> mem(6);
  Tensor t(mem.data(), Shape{2, 3}, DType::F32, Device::CPU);
  EXPECT_THROW(t.slice(1, 2, 4), InvalidArgument);
  EXPECT_THROW(t.dim(2), InvalidArgument);
}

}  // namespace
}  // namespace sy
