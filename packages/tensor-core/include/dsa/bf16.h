// bf16 <-> fp32 conversions shared by every kernel. bf16 values are raw uint16_t bit patterns.
#pragma once
#include <cstdint>
#include <cstring>

namespace dsa {

using bf16_t = uint16_t;

static inline float bf16_to_f32(bf16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays a (quiet) NaN instead of carrying into Inf.
static inline bf16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<bf16_t>((bits >> 16) | 0x0040u);
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<bf16_t>(bits >> 16);
}

// Round an fp32 value to bf16 precision, keeping it in fp32 (the spec's rounding points).
static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

}  // namespace dsa
