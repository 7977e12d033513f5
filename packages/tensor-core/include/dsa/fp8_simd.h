// e4m3 -> bf16 conversion for kernels, with a fast path for the ISA the including file is compiled
// for (include it from *_isa.cc sources: everything here has internal linkage, so each ISA copy gets
// its own body). e4m3 subnormals become normal bf16 (vdpbf16ps treats bf16 denormals as zero); the
// NaN codes 0x7F/0xFF become a bf16 NaN. Every e4m3 value is exact in bf16, and so is a value times a
// power-of-two (ue8m0) scale unless it overflows to Inf.
#pragma once
#include <cstdint>
#include <cstring>

#include "dsa/bf16.h"
#include "dsa/cpu.h"

#if defined(__AVX512BW__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsa {
namespace {

// bf16 bits of the 8 subnormal magnitudes m * 2^-9 (m = 0..7); 32 entries for vpermw.
alignas(64) constexpr uint16_t kE4m3SubBf16[32] = {0, 0x3B00, 0x3B80, 0x3BC0, 0x3C00, 0x3C20, 0x3C40, 0x3C60};

constexpr bf16_t e4m3_to_bf16_bits(uint8_t b) {
  const uint16_t mag = b & 0x7f;
  // Normal: the exponent rebias 7 -> 127 adds 120 << 7; the 3 mantissa bits move up by 4.
  const uint16_t r = mag == 0x7f ? 0x7FC0 : mag >= 8 ? static_cast<uint16_t>((mag << 4) + 0x3C00) : kE4m3SubBf16[mag];
  return static_cast<bf16_t>(r | ((b & 0x80) << 8));
}

#if defined(__AVX512BW__)
// 32 e4m3 bytes -> 32 bf16 (register form, for kernels that convert in their inner loop).
inline __m512i e4m3x32_to_bf16(__m256i bytes) {
  const __m512i x = _mm512_cvtepu8_epi16(bytes);
  const __m512i mag = _mm512_and_si512(x, _mm512_set1_epi16(0x7f));
  __m512i r = _mm512_add_epi16(_mm512_slli_epi16(mag, 4), _mm512_set1_epi16(0x3C00));
  const __m512i sub = _mm512_permutexvar_epi16(mag, _mm512_load_si512(kE4m3SubBf16));
  r = _mm512_mask_blend_epi16(_mm512_cmplt_epu16_mask(mag, _mm512_set1_epi16(8)), r, sub);
  r = _mm512_mask_blend_epi16(_mm512_cmpeq_epi16_mask(mag, _mm512_set1_epi16(0x7f)), r, _mm512_set1_epi16(0x7FC0));
  // r | (x << 8 & 0x8000): the sign bit, in one ternary-logic op.
  return _mm512_ternarylogic_epi32(r, _mm512_slli_epi16(x, 8), _mm512_set1_epi16(static_cast<short>(0x8000)), 0xF8);
}
#elif defined(__AVX2__)
// 16 e4m3 bytes -> 16 bf16.
inline __m256i e4m3x16_to_bf16(__m128i bytes) {
  const __m256i x = _mm256_cvtepu8_epi16(bytes);
  const __m256i mag = _mm256_and_si256(x, _mm256_set1_epi16(0x7f));
  __m256i r = _mm256_add_epi16(_mm256_slli_epi16(mag, 4), _mm256_set1_epi16(0x3C00));
  // Subnormals by byte shuffles: the low byte indexes the table, the zero high byte reads entry 0 (= 0).
  const __m256i lo = _mm256_setr_epi8(0, 0, -128, -64, 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0,
                                      0, 0, -128, -64, 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i hi = _mm256_setr_epi8(0, 0x3B, 0x3B, 0x3B, 0x3C, 0x3C, 0x3C, 0x3C, 0, 0, 0, 0, 0, 0, 0, 0,
                                      0, 0x3B, 0x3B, 0x3B, 0x3C, 0x3C, 0x3C, 0x3C, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i sub = _mm256_or_si256(_mm256_shuffle_epi8(lo, mag), _mm256_slli_epi16(_mm256_shuffle_epi8(hi, mag), 8));
  r = _mm256_blendv_epi8(r, sub, _mm256_cmpgt_epi16(_mm256_set1_epi16(8), mag));
  r = _mm256_blendv_epi8(r, _mm256_set1_epi16(0x7FC0), _mm256_cmpeq_epi16(mag, _mm256_set1_epi16(0x7f)));
  return _mm256_or_si256(r, _mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi16(0x80)), 8));
}
#endif

// The exponent e of a power-of-two scale 2^e that keeps every e4m3 value (2^-9 .. 448) a normal bf16
// after scaling, so scaling is an integer add of e << 7 to the bf16 bits; false for any other scale.
inline bool e4m3_pow2_shift(float scale, int* e) {
  uint32_t bits;
  std::memcpy(&bits, &scale, 4);
  const int exp = static_cast<int>((bits >> 23) & 0xff) - 127;
  if ((bits & 0x807fffffu) != 0 || exp < -117 || exp > 118) return false;
  *e = exp;
  return true;
}

#if defined(__AVX512F__)
// AVX-512 VBMI (checked at run time: some AVX-512 BF16 CPUs lack it): two 128-entry byte tables give
// the low and high byte of each value's bf16 bits by magnitude, the sign is ORed into the high byte,
// and a byte unpack makes the words. 64 values in ~8 instructions (the arithmetic form needs ~26).
#define DSA_FP8_VBMI __attribute__((target("avx512f,avx512bw,avx512vbmi")))

struct E4m3ByteTables {
  alignas(64) uint8_t lo[128];
  alignas(64) uint8_t hi[128];
};
constexpr E4m3ByteTables make_e4m3_byte_tables() {
  E4m3ByteTables t{};
  for (int m = 0; m < 128; ++m) {
    const bf16_t v = e4m3_to_bf16_bits(static_cast<uint8_t>(m));
    t.lo[m] = static_cast<uint8_t>(v & 0xff);
    t.hi[m] = static_cast<uint8_t>(v >> 8);
  }
  return t;
}
alignas(64) constexpr E4m3ByteTables kE4m3ByteTables = make_e4m3_byte_tables();

// Byte order for the unpack: word i of the low output comes from byte i of the source (likewise the
// high output from bytes 32..63), although the unpack works within 16-byte lanes.
alignas(64) constexpr uint8_t kE4m3UnpackOrder[64] = {
    0,  1,  2,  3,  4,  5,  6,  7,  32, 33, 34, 35, 36, 37, 38, 39, 8,  9,  10, 11, 12, 13, 14, 15, 40, 41, 42, 43, 44, 45, 46, 47,
    16, 17, 18, 19, 20, 21, 22, 23, 48, 49, 50, 51, 52, 53, 54, 55, 24, 25, 26, 27, 28, 29, 30, 31, 56, 57, 58, 59, 60, 61, 62, 63};

inline bool e4m3_vbmi() {
  static const bool v = cpu_features().avx512vbmi;
  return v;
}

// `rows` rows of n values each (n a multiple of 64), row r read at src + r * src_stride and written at
// dst + r * dst_stride. With `shifts`, value i of row r is also scaled by 2^shifts[r * ceil(n / block)
// + i / block] (shifts from e4m3_pow2_shift; zero and NaN words are left as they are). One call per
// run of rows: the tables stay in registers.
DSA_FP8_VBMI inline void e4m3_rows_to_bf16_vbmi(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t n,
                                                const int* shifts, int64_t block, bf16_t* dst, int64_t dst_stride) {
  const __m512i lo0 = _mm512_load_si512(kE4m3ByteTables.lo), lo1 = _mm512_load_si512(kE4m3ByteTables.lo + 64);
  const __m512i hi0 = _mm512_load_si512(kE4m3ByteTables.hi), hi1 = _mm512_load_si512(kE4m3ByteTables.hi + 64);
  const __m512i order = _mm512_load_si512(kE4m3UnpackOrder), sign = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i mag_mask = _mm512_set1_epi16(0x7fff), nan = _mm512_set1_epi16(0x7FC0);
  const int64_t blocks = shifts ? (n + block - 1) / block : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src + r * src_stride;
    bf16_t* d = dst + r * dst_stride;
    for (int64_t i = 0; i < n; i += 64) {
      // (the maskz form: gcc 12's plain one passes an undefined source that -Wuninitialized flags)
      const __m512i raw = _mm512_maskz_permutexvar_epi8(~__mmask64(0), order, _mm512_loadu_si512(s + i));
      const __m512i lo = _mm512_permutex2var_epi8(lo0, raw, lo1);
      const __m512i hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(hi0, raw, hi1), raw, sign, 0xF8);
      __m512i w0 = _mm512_unpacklo_epi8(lo, hi), w1 = _mm512_unpackhi_epi8(lo, hi);
      const int shift = shifts ? shifts[r * blocks + i / block] : 0;
      if (shift != 0) {
        const __m512i add = _mm512_set1_epi16(static_cast<short>(shift * 128));
        const __m512i m0 = _mm512_and_si512(w0, mag_mask), m1 = _mm512_and_si512(w1, mag_mask);
        w0 = _mm512_mask_add_epi16(w0, _mm512_test_epi16_mask(m0, m0) & _mm512_cmpneq_epi16_mask(m0, nan), w0, add);
        w1 = _mm512_mask_add_epi16(w1, _mm512_test_epi16_mask(m1, m1) & _mm512_cmpneq_epi16_mask(m1, nan), w1, add);
      }
      _mm512_storeu_si512(d + i, w0);
      _mm512_storeu_si512(d + i + 32, w1);
    }
  }
}
#endif

// dst[i] = bf16(e4m3 src[i]) for i < n (exact).
inline void e4m3_to_bf16(const uint8_t* src, int64_t n, bf16_t* dst) {
  int64_t i = 0;
#if defined(__AVX512F__)
  if (n >= 64 && e4m3_vbmi()) {
    const int64_t head = n / 64 * 64;
    e4m3_rows_to_bf16_vbmi(src, 0, 1, head, nullptr, head, dst, 0);
    src += head;
    dst += head;
    n -= head;
  }
#endif
#if defined(__AVX512BW__)
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512(dst + i, e4m3x32_to_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#elif defined(__AVX2__)
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        e4m3x16_to_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = e4m3_to_bf16_bits(src[i]);
}

// `rows` rows of n values (row r at src + r * src_stride, written at dst + r * dst_stride), exact: one
// VBMI pass over the run when n is a multiple of 64 and the CPU has VBMI, else row by row.
inline void e4m3_rows_to_bf16(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t n, bf16_t* dst,
                              int64_t dst_stride) {
#if defined(__AVX512F__)
  if (n % 64 == 0 && e4m3_vbmi()) {
    e4m3_rows_to_bf16_vbmi(src, src_stride, rows, n, nullptr, n, dst, dst_stride);
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r) e4m3_to_bf16(src + r * src_stride, n, dst + r * dst_stride);
}

// dst[i] = bf16(e4m3 src[i] * scale) for a power-of-two scale (exact, or Inf on overflow).
inline void e4m3_to_bf16_scaled(const uint8_t* src, int64_t n, float scale, bf16_t* dst) {
  int64_t i = 0;
#if defined(__AVX512F__)
  int shift = 0;
  if (n >= 64 && e4m3_vbmi() && e4m3_pow2_shift(scale, &shift)) {
    const int64_t head = n / 64 * 64;
    e4m3_rows_to_bf16_vbmi(src, 0, 1, head, &shift, head, dst, 0);
    src += head;
    dst += head;
    n -= head;
  }
#endif
#if defined(__AVX512BW__)
  const __m512 s = _mm512_set1_ps(scale);
  for (; i + 32 <= n; i += 32) {
    const __m512i v = e4m3x32_to_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    for (int half = 0; half < 2; ++half) {
      const __m256i h = half ? _mm512_extracti64x4_epi64(v, 1) : _mm512_castsi512_si256(v);
      const __m512 f = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)), s);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 16 * half),
                          _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(f), 16)));
    }
  }
#elif defined(__AVX2__)
  const __m256 s = _mm256_set1_ps(scale);
  for (; i + 16 <= n; i += 16) {
    const __m256i v = e4m3x16_to_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    __m256i w[2];
    for (int half = 0; half < 2; ++half) {
      const __m128i h = half ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v);
      const __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)), s);
      w[half] = _mm256_srli_epi32(_mm256_castps_si256(f), 16);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permute4x64_epi64(_mm256_packus_epi32(w[0], w[1]), 0xD8));
  }
#endif
  for (; i < n; ++i) {
    const float f = bf16_to_f32(e4m3_to_bf16_bits(src[i])) * scale;
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    dst[i] = static_cast<bf16_t>(bits >> 16);
  }
}

}  // namespace
}  // namespace dsa
