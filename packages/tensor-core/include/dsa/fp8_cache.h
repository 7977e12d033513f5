// FP8 paged-cache rows (shared/spec/checkpoint.md, "FP8 as the model computes it"), shared by the
// prologs that write them, the indexer and the attention that read them, and the fused operator.
// TypeScript twin: src/fp8-cache.ts.
//   latent row, kv_lora + 4 * kv_lora / 128 + 2 * rope bytes (656 at kv_lora 512, rope 64):
//     kv_lora e4m3 (tiles of 128) ‖ one fp32 ue8m0 scale per tile ‖ rope bf16 (the rope part stays bf16)
//   index key row, dim + 4 bytes (132 at dim 128): dim e4m3 of the Hadamard-rotated key ‖ its fp32 scale
// Group quantization: amax = max |v| over the group, ignoring NaN (so a NaN is stored as the NaN code
// 0x7F and its neighbours keep their scale); an infinite amax counts as the largest finite float, so the
// scale stays finite (2^120) and ±Inf saturates to ±448. scale = ue8m0(amax), byte = e4m3(v / scale).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "dsa/bf16.h"
#include "dsa/fp8.h"

namespace dsa {

inline int64_t fp8_kv_row_bytes(int64_t kv_lora, int64_t rope) { return kv_lora + 4 * (kv_lora / kFp8Block) + 2 * rope; }
inline int64_t fp8_index_row_bytes(int64_t dim) { return dim + 4; }

// One group of n fp32 values: bytes into dst, returns the scale.
static inline float fp8_quantize_group(const float* v, int64_t n, uint8_t* dst) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    if (a > amax) amax = a;  // false for NaN
  }
  const float scale = ue8m0_scale(amax > FLT_MAX ? FLT_MAX : amax);
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_e4m3(v[i] / scale);
  return scale;
}

static inline void fp8_store_scale(uint8_t* dst, float scale) { std::memcpy(dst, &scale, 4); }
static inline float fp8_load_scale(const uint8_t* src) {
  float s;
  std::memcpy(&s, src, 4);
  return s;
}

// v (n a power of two) times the normalized Sylvester–Hadamard matrix, in fp32, in place.
static inline void hadamard_f32(float* v, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
  const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  for (int64_t i = 0; i < n; ++i) v[i] *= s;
}

}  // namespace dsa
