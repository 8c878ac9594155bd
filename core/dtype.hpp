// Element types and devices.
//
// fp32 is the compute type of every CPU op; bf16 is a storage type (weights,
// activations, communication buffers) converted at the edges with
// round-to-nearest-even, as hardware does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace sy {

enum class DType : uint8_t { F32, BF16 };
enum class Device : uint8_t { CPU, CUDA };

inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
const char* dtype_name(DType t);
DType parse_dtype(const std::string& name);  // "fp32" | "bf16"; throws ConfigError otherwise
const char* device_name(Device d);

// bfloat16: the top 16 bits of an IEEE float.
struct bf16 {
  uint16_t bits = 0;
};

inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};  // keep NaN a (quiet) NaN
  }
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);  // ties to even
  return bf16{static_cast<uint16_t>((u + rounding) >> 16)};
}

inline float bf16_to_float(bf16 h) {
  const uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void convert_f32_to_bf16(const float* src, bf16* dst, size_t n);
void convert_bf16_to_f32(const bf16* src, float* dst, size_t n);

}  // namespace sy
