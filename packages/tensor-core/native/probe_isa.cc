// Machine ceilings for the benchmarks, compiled per ISA: a streaming read of a large buffer and the
// peak rate of bf16 dot products (vdpbf16ps on AVX-512 BF16, the fp32 FMA pair on AVX2, scalar
// multiply-adds otherwise) with all operands in registers.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "probe.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsa {
namespace DSA_ISA_NS {

// Aligned loads, 8 cache lines in flight per iteration (the buffer is 2 MiB-aligned, `bytes` a
// multiple of 4 KiB), as the GEMV kernels issue them.
uint64_t probe_read(const uint8_t* p, size_t bytes) {
#if defined(__AVX512F__)
  __m512i a[8];
  for (auto& v : a) v = _mm512_setzero_si512();
  for (size_t i = 0; i + 512 <= bytes; i += 512) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] = _mm512_xor_si512(a[j], _mm512_load_si512(p + i + 64 * j));
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm512_xor_si512(a[0], a[j]);
  uint64_t lanes[8];
  _mm512_storeu_si512(lanes, a[0]);
  uint64_t r = 0;
  for (uint64_t v : lanes) r ^= v;
  return r;
#elif defined(__AVX2__)
  __m256i a[8];
  for (auto& v : a) v = _mm256_setzero_si256();
  for (size_t i = 0; i + 256 <= bytes; i += 256) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] = _mm256_xor_si256(a[j], _mm256_load_si256((const __m256i*)(p + i + 32 * j)));
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm256_xor_si256(a[0], a[j]);
  uint64_t lanes[4];
  _mm256_storeu_si256((__m256i*)lanes, a[0]);
  return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
#else
  uint64_t r = 0;
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    r ^= v;
  }
  return r;
#endif
}

// Returns the multiply-adds performed (each counts as 2 FLOP); `seed` keeps the loop from folding.
double probe_dot(int64_t iters, float seed) {
#if defined(__AVX512BF16__)
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(seed * i);
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3f003f00);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return static_cast<double>(iters) * 24 * 32;
#elif defined(__AVX2__)
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(seed * i);
  const __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(0.5f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(a, b, acc[i]);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  volatile float sink = lanes[0];
  (void)sink;
  return static_cast<double>(iters) * 12 * 8;
#else
  float acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = seed * i;
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) acc[i] = acc[i] * 0.999f + 0.5f;
  volatile float sink = acc[0] + acc[7];
  (void)sink;
  return static_cast<double>(iters) * 8;
#endif
}

}  // namespace DSA_ISA_NS
}  // namespace dsa
