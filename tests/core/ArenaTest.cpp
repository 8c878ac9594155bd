#include "core/arena.hpp"

#include <gtest/gtest.h>

#include <cstdint>

#include "core/cpu/cpu_backend.hpp"

namespace sy {
namespace {

TEST(Arena, OneAllocationForAllNamedBuffers) {
  CpuBackend cpu;
  ArenaLayout layout;
  layout.add("weights", Shape{64, 32});
  layout.add("grads", Shape{64, 32});
  layout.add("tokens_bf16", Shape{10, 3}, DType::BF16);
  layout.reserve_scratch(4096);
  const uint64_t before = Arena::allocation_count();
  Arena arena(cpu, layout);
  EXPECT_EQ(Arena::allocation_count(), before + 1);

  Tensor w = arena.get("weights"), g = arena.get("grads"), t = arena.get("tokens_bf16");
  EXPECT_EQ(w.shape(), (Shape{64, 32}));
  EXPECT_EQ(t.dtype(), DType::BF16);
  // Buffers are aligned and disjoint.
  for (const Tensor& x : {w, g, t}) EXPECT_EQ(reinterpret_cast<uintptr_t>(x.raw()) % Backend::kAlignment, 0u);
  EXPECT_GE(static_cast<char*>(g.raw()), static_cast<char*>(w.raw()) + w.nbytes());
  EXPECT_GE(static_cast<char*>(t.raw()), static_cast<char*>(g.raw()) + g.nbytes());
  EXPECT_LE(static_cast<char*>(t.raw()) + t.nbytes(), static_cast<char*>(w.raw()) + arena.bytes());

  arena.zero_buffers();
  for (int64_t i = 0; i < w.numel(); ++i) ASSERT_EQ(w.data<float>()[i], 0.0f);
}

TEST(Arena, ScratchIsReusedEveryStepWithoutAllocating) {
  CpuBackend cpu;
  ArenaLayout layout;
  layout.reserve_scratch(3 * 1024);
  Arena arena(cpu, layout);
  const uint64_t before = Arena::allocation_count();
  void* first = nullptr;
  for (int step = 0; step < 5; ++step) {
    arena.reset_scratch();
    Tensor a = arena.scratch(Shape{100});
    Tensor b = arena.scratch(Shape{100});
    if (step == 0) first = a.raw();
    EXPECT_EQ(a.raw(), first);
    EXPECT_NE(a.raw(), b.raw());
  }
  EXPECT_EQ(Arena::allocation_count(), before);
}

TEST(Arena, ErrorsNameTheBuffer) {
  CpuBackend cpu;
  ArenaLayout layout;
  layout.add("router_logits", Shape{4, 4});
  EXPECT_THROW(layout.add("router_logits", Shape{1}), InvalidArgument);
  layout.reserve_scratch(256);
  Arena arena(cpu, layout);
  try {
    arena.get("router_probs");
    FAIL() << "expected a throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("router_probs"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("router_logits"), std::string::npos);
  }
  EXPECT_THROW(arena.scratch(Shape{1000}), InvalidArgument);
}

}  // namespace
}  // namespace sy
