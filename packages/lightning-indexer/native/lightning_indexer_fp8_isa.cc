// FP8 key rows for the lightning indexer's score kernels (compiled once per ISA): a few keys at a time
// are widened to bf16 (AVX2: fp32), exactly, in a stack buffer that stays in L1, scored by this ISA's score_run
// against the packed FP8 query, and multiplied by their power-of-two scales; the keys after them are
// prefetched meanwhile.
#include <cfloat>
#include <cstring>
#include <limits>

#include "dsa/fp8_cache.h"
#include "dsa/fp8_simd.h"
#include "lightning_indexer_isa.h"

namespace dsa {
namespace li {
namespace DSA_ISA_NS {
namespace {

inline uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
inline float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The bf16 bits of e4m3(v) (dsa/fp8.h's f32_to_e4m3, then widened) without branches, so that a loop
// of it vectorizes: subnormals round on the 2^-9 grid by adding and removing 2^14 (whose ulp that is),
// normals keep 3 mantissa bits by round-to-nearest-even on the bits, |v| >= 448 saturates, NaN gives
// the NaN code's bf16 (unsigned).
inline uint16_t e4m3_round_bf16(float v) {
  const uint32_t bits = bits_of(v), sign = bits & 0x80000000u, abs = bits & 0x7fffffffu;
  const uint32_t sub = bits_of((float_of(abs) + 16384.0f) - 16384.0f);
  const uint32_t normal = (abs + 0x7ffffu + ((abs >> 20) & 1u)) & 0xfff00000u;
  uint32_t r = abs < 0x3c800000u ? sub : normal;
  r = abs >= 0x43e00000u ? 0x43e00000u : r;
  r = abs > 0x7f800000u ? 0x7fc00000u : r | sign;
  return static_cast<uint16_t>(r >> 16);
}

#if defined(__AVX2__) && !defined(__AVX512BF16__)
// `rows` FP8 key rows (dim e4m3 bytes each, stride rb) -> fp32 [rows][dim], exact: a sign-extended byte
// shifted so its 7 magnitude bits land in the low exponent and top mantissa bits is 2^-120 times its
// value (subnormals included), and a multiply by 2^120 makes it the value. A row holding a NaN code
// (0x7F / 0xFF) gets NaN there (rare: checked per row).
void e4m3_rows_to_f32(const uint8_t* src, int64_t rb, int64_t rows, int64_t dim, float* dst) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(0x87F00000u)), top = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256 unit = _mm256_set1_ps(1.329227995784916e36f);  // 2^120
  const unsigned csr = _mm_getcsr();  // DAZ would read the subnormals as zero: off for the conversion
  if (csr & 0x40u) _mm_setcsr(csr & ~0x40u);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src + r * rb;
    float* d = dst + r * dim;
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) {
      const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)));
      _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(v, 20), mask)), unit));
    }
    for (; i < dim; ++i) d[i] = bf16_to_f32(e4m3_to_bf16_bits(s[i]));
    bool nan = false;
    for (i = 0; i + 32 <= dim; i += 32) {
      const __m256i b = _mm256_or_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)), top);
      nan |= _mm256_movemask_epi8(_mm256_cmpeq_epi8(b, _mm256_set1_epi8(-1))) != 0;
    }
    for (; i < dim; ++i) nan |= (s[i] & 0x7f) == 0x7f;
    if (nan)
      for (i = 0; i < dim; ++i)
        if ((s[i] & 0x7f) == 0x7f) d[i] = std::numeric_limits<float>::quiet_NaN();
  }
  if (csr & 0x40u) _mm_setcsr(csr);
}
#endif

}  // namespace

void fp8_query(const bf16_t* q, const bf16_t* w, int64_t heads, int64_t dim, float* t, bf16_t* q8, bf16_t* w8) {
  // t holds the row transposed, [dim][heads], so every step below is a loop over heads.
  for (int64_t d = 0; d < dim; ++d)
    for (int64_t h = 0; h < heads; ++h) t[d * heads + h] = bf16_to_f32(q[h * dim + d]);
  for (int64_t span = 1; span < dim; span *= 2)  // hadamard_f32's butterflies, in its order per value
    for (int64_t i = 0; i < dim; i += 2 * span)
      for (int64_t j = i; j < i + span; ++j) {
        float* __restrict x = t + j * heads;
        float* __restrict y = t + (j + span) * heads;
        for (int64_t h = 0; h < heads; ++h) {
          const float a = x[h], b = y[h];
          x[h] = a + b;
          y[h] = a - b;
        }
      }
  const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
  float amax[kMaxHeads];
  for (int64_t h0 = 0; h0 < heads; h0 += kMaxHeads) {
    const int64_t nh = heads - h0 < kMaxHeads ? heads - h0 : kMaxHeads;
    for (int64_t h = 0; h < nh; ++h) amax[h] = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      float* x = t + d * heads + h0;
      for (int64_t h = 0; h < nh; ++h) {
        x[h] = round_bf16(x[h] * norm);
        const float a = std::fabs(x[h]);
        amax[h] = a > amax[h] ? a : amax[h];  // NaN never counts
      }
    }
    float scale[kMaxHeads];
    for (int64_t h = 0; h < nh; ++h) {
      scale[h] = ue8m0_scale(amax[h] > FLT_MAX ? FLT_MAX : amax[h]);
      w8[h0 + h] = f32_to_bf16(bf16_to_f32(w[h0 + h]) * scale[h]);
    }
    for (int64_t d = 0; d < dim; ++d) {
      const float* x = t + d * heads + h0;
      uint16_t r[kMaxHeads];
      for (int64_t h = 0; h < nh; ++h) r[h] = e4m3_round_bf16(x[h] / scale[h]);
      for (int64_t h = 0; h < nh; ++h) q8[(h0 + h) * dim + d] = r[h];
    }
  }
}

void score_run_fp8(const void* qpack, int64_t heads, int64_t dim, const uint8_t* rows, int64_t n, const uint8_t* after,
                   int64_t after_n, float* out) {
#if defined(__AVX2__) && !defined(__AVX512BF16__)
  constexpr int64_t kKeys = 48;       // 24 KB of fp32 keys at dim 128
  constexpr int64_t kSubKeys = 12;    // keys scored between two rounds of prefetches: whole 6-key tiles
#else
  constexpr int64_t kKeys = 32;       // 8 KB of bf16 keys at dim 128
  constexpr int64_t kSubKeys = 8;     // keys scored between two rounds of prefetches
#endif
  constexpr int64_t kAheadKeys = 32;  // prefetch distance, in keys
#if defined(__AVX2__) && !defined(__AVX512BF16__)
  float keys[kKeys * kFp8Block];  // AVX2 scores fp32 keys: widened once, straight from e4m3
#else
  bf16_t keys[kKeys * kFp8Block];
#endif
  const int64_t rb = fp8_index_row_bytes(dim);
  // The keys ahead (of this run, then of the next) are fetched a few lines per kSubKeys scored keys:
  // widening them would otherwise wait for memory with no score work beside it, and a burst of
  // prefetches would stall on the core's miss buffers. The previous run's call fetched our first ones.
  const int64_t total = (n + after_n) * rb;
  int64_t fetched = (n < kAheadKeys ? n : kAheadKeys) * rb;
  auto fetch_to = [&](int64_t key) {
    const int64_t end = key * rb < total ? key * rb : total;
    for (; fetched < end; fetched += 64) __builtin_prefetch(fetched < n * rb ? rows + fetched : after + (fetched - n * rb));
  };
  for (int64_t j = 0; j < n; j += kKeys) {
    const int64_t m = n - j < kKeys ? n - j : kKeys;
#if defined(__AVX2__) && !defined(__AVX512BF16__)
    e4m3_rows_to_f32(rows + j * rb, rb, m, dim, keys);
#else
    e4m3_rows_to_bf16(rows + j * rb, rb, m, dim, keys, dim);
#endif
    for (int64_t t = 0; t < m; t += kSubKeys) {
      const int64_t mt = m - t < kSubKeys ? m - t : kSubKeys;
      fetch_to(j + t + mt + kAheadKeys);
#if defined(__AVX2__) && !defined(__AVX512BF16__)
      score_run_f32(qpack, heads, dim, keys + t * dim, mt, out + j + t);
#else
      score_run(qpack, heads, dim, keys + t * dim, mt, out + j + t);
#endif
    }
    for (int64_t i = 0; i < m; ++i) out[j + i] *= fp8_load_scale(rows + (j + i) * rb + dim);
  }
}

}  // namespace DSA_ISA_NS
}  // namespace li
}  // namespace dsa
