#include "core/dtype.hpp"

#include "core/error.hpp"

namespace sy {

const char* dtype_name(DType t) { return t == DType::F32 ? "fp32" : "bf16"; }

DType parse_dtype(const std::string& name) {
  if (name == "fp32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  throw ConfigError("unknown dtype '" + name + "': expected fp32 or bf16");
}

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

void convert_f32_to_bf16(const float* src, bf16* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

void convert_bf16_to_f32(const bf16* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

}  // namespace sy
