// FP8 e4m3 ("e4m3fn") scalar codec and the ue8m0 group scale, bit-identical to tensor-core's fp8.ts
// (shared/spec/checkpoint.md). Byte `s eeee mmm`, bias 7, e = 0 subnormal, 0x7F/0xFF NaN, max 448.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace dsa {

constexpr float kE4m3Max = 448.0f;
constexpr int kFp8Block = 128;  // checkpoint block scales, ue8m0 groups, Hadamard size

static inline float e4m3_to_f32(uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  float v;
  if (e == 15 && m == 7) v = NAN;
  else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);
  else v = std::ldexp(static_cast<float>(8 + m), e - 10);
  return (b & 0x80) ? -v : v;
}

// Round to nearest even; finite values beyond ±448 saturate to ±448; NaN -> 0x7F.
static inline uint8_t f32_to_e4m3(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return 0x7f;
  if (abs >= 0x43e00000u) return sign | 0x7e;  // >= 448 (or Inf)
  if (abs < 0x3c800000u) {                      // < 2^-6: subnormal grid of 2^-9
    float a;
    std::memcpy(&a, &abs, 4);
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));  // 8 rounds up to the smallest normal
  }
  // Keep 3 mantissa bits with round-to-nearest-even on the exponent|mantissa field, then rebias 127 -> 7.
  const uint32_t r = (abs + 0x7ffffu + ((abs >> 20) & 1u)) >> 20;
  const uint32_t code = r - (120u << 3);
  return sign | static_cast<uint8_t>(code > 0x7eu ? 0x7eu : code);
}

// 2^ceil(log2(max(amax, 1e-4) / 448)) with the division in fp32 (as torch and fp8.ts compute it).
static inline float ue8m0_scale(float amax) {
  const float x = (amax > 1e-4f ? amax : 1e-4f) / kE4m3Max;
  int e;
  const float f = std::frexp(x, &e);  // x = f * 2^e, f in [0.5, 1)
  return std::ldexp(1.0f, f == 0.5f ? e - 1 : e);
}

}  // namespace dsa
