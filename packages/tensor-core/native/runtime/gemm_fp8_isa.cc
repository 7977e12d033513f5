// FP8-weight GEMM micro-kernels, compiled once per ISA (see dsa/isa.h and gemm_fp8_kernels.h).
//   AVX-512: two 128-entry byte-table lookups (vpermi2b, VBMI) give the low and high bytes of each
//     weight's bf16 value (e4m3 subnormals become normal bf16 values, NaN codes a bf16 NaN: vdpbf16ps
//     would read bf16 subnormals as zero); one unpack makes two k-pair lines for vdpbf16ps. CPUs with
//     AVX-512 BF16 but no VBMI run the AVX2 kernels.
//   AVX2: e4m3 -> fp16 bits (magnitude << 7, NaN forced) -> vcvtph2ps, which is exact for fp16
//     subnormals; the values are 2^-8 of the real ones, folded into the block scale.
//   Scalar: the 256-entry value table.
// Each block of 128 k is summed on its own, then added times its scale (fp32), so no weight is
// rounded: the result is the product with the exactly dequantized weight up to fp32 summation.
#include <algorithm>
#include <cstring>

#include "dsa/cpu.h"
#include "dsa/fp8_simd.h"
#include "gemm_fp8_kernels.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsa {
namespace DSA_ISA_NS {
namespace {

inline int32_t load_pair(const bf16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Where byte `pos` of a 64-byte group sits: column (0..15) and k offset (0..3) within the group.
inline int group_col(int pos) { return (pos >> 4) * 4 + ((pos & 7) >> 1); }
inline int group_k(int pos) { return ((pos >> 3) & 1) * 2 + (pos & 1); }

#if defined(__AVX512F__)
#define DSA_VBMI __attribute__((target("avx512vbmi")))

struct Tables {
  __m512i lo0, lo1, hi0, hi1, sign;
};

DSA_VBMI inline Tables load_tables() {
  const E4m3ByteTables& t = kE4m3ByteTables;
  return {_mm512_load_si512(t.lo), _mm512_load_si512(t.lo + 64), _mm512_load_si512(t.hi), _mm512_load_si512(t.hi + 64),
          _mm512_set1_epi8(static_cast<char>(0x80))};
}

// 64 e4m3 bytes of one group -> the bf16 k-pair lines of its two k-pairs.
DSA_VBMI inline void convert_group(const Tables& t, const uint8_t* src, __m512i* w0, __m512i* w1) {
  const __m512i raw = _mm512_loadu_si512(src);
  const __m512i lo = _mm512_permutex2var_epi8(t.lo0, raw, t.lo1);
  __m512i hi = _mm512_permutex2var_epi8(t.hi0, raw, t.hi1);
  hi = _mm512_ternarylogic_epi32(hi, raw, t.sign, 0xF8);  // hi | (raw & 0x80): the sign
  *w0 = _mm512_unpacklo_epi8(lo, hi);
  *w1 = _mm512_unpackhi_epi8(lo, hi);
}

constexpr int64_t kGemvAhead = 16;  // groups (64-byte lines) prefetched ahead in each panel

template <int MR, int NB>
DSA_VBMI void gemv_kernel(const bf16_t* a, int64_t lda, const uint8_t* w, int64_t ps, const float* sc, int64_t ss,
                          int64_t kb0, int64_t kb1, int64_t groups, const uint8_t* next, float* c, int64_t ldc) {
  const Tables t = load_tables();
  // Each panel is its own stream, fetched kGemvAhead lines ahead; near its end the stream goes on
  // into the same panel of the next tile (a short panel is otherwise read cold, one miss after another).
  const int64_t gs = kb0 * kFp8GroupsPerBlock, ge = std::min(groups, kb1 * kFp8GroupsPerBlock);
  const auto ahead = [&](int n, int64_t g) -> const uint8_t* {
    const int64_t l = g + kGemvAhead;
    if (l < ge) return w + n * ps + l * 64;
    return next != nullptr ? next + n * ps + (l - ge + gs) * 64 : nullptr;
  };
  // Few accumulators: a second set for the odd k-pair hides the vdpbf16ps latency (GEMV case).
  constexpr bool kTwo = MR * NB <= 4;
  __m512 tot[MR][NB];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NB; ++n) tot[m][n] = _mm512_setzero_ps();
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const int64_t g0 = kb * kFp8GroupsPerBlock, g1 = std::min(groups, g0 + kFp8GroupsPerBlock);
    __m512 acc[MR][NB], acc2[MR][NB];
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NB; ++n) acc[m][n] = acc2[m][n] = _mm512_setzero_ps();
    for (int64_t g = g0; g < g1; ++g) {
      for (int n = 0; n < NB; ++n) {
        if (const uint8_t* p = ahead(n, g)) _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
        __m512i w0, w1;
        convert_group(t, w + n * ps + g * 64, &w0, &w1);
        for (int m = 0; m < MR; ++m) {
          const bf16_t* am = a + m * lda + 4 * g;
          acc[m][n] = _mm512_dpbf16_ps(acc[m][n], (__m512bh)_mm512_set1_epi32(load_pair(am)), (__m512bh)w0);
          __m512& second = kTwo ? acc2[m][n] : acc[m][n];
          second = _mm512_dpbf16_ps(second, (__m512bh)_mm512_set1_epi32(load_pair(am + 2)), (__m512bh)w1);
        }
      }
    }
    for (int n = 0; n < NB; ++n) {
      const __m512 s = _mm512_set1_ps(sc[n * ss + kb]);
      for (int m = 0; m < MR; ++m)
        tot[m][n] = _mm512_fmadd_ps(kTwo ? _mm512_add_ps(acc[m][n], acc2[m][n]) : acc[m][n], s, tot[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NB; ++n) _mm512_storeu_ps(c + m * ldc + n * 16, tot[m][n]);
}

DSA_VBMI void panel_to_bf16_vbmi(const uint8_t* src, int64_t groups, const int* exp2, bf16_t* dst) {
  const Tables t = load_tables();
  const __m512i mag = _mm512_set1_epi16(0x7fff), inf = _mm512_set1_epi16(0x7f80);
  for (int64_t g = 0; g < groups; ++g) {
    __m512i w[2];
    convert_group(t, src + g * 64, &w[0], &w[1]);
    if (exp2 != nullptr) {
      // Scale by a power of two: add to the exponent of every finite non-zero value.
      const __m512i e = _mm512_set1_epi16(static_cast<int16_t>(exp2[g / kFp8GroupsPerBlock] * 128));
      for (__m512i& v : w) {
        const __m512i a = _mm512_and_si512(v, mag);
        const __mmask32 k = _mm512_test_epi16_mask(a, a) & _mm512_cmplt_epu16_mask(a, inf);
        v = _mm512_mask_add_epi16(v, k, v, e);
      }
    }
    _mm512_storeu_si512(dst + g * 64, w[0]);
    _mm512_storeu_si512(dst + g * 64 + 32, w[1]);
  }
}

using GemvFn = void (*)(const bf16_t*, int64_t, const uint8_t*, int64_t, const float*, int64_t, int64_t, int64_t,
                        int64_t, const uint8_t*, float*, int64_t);
template <int MR>
constexpr GemvFn gemv_row[kFp8MaxPanels] = {gemv_kernel<MR, 1>, gemv_kernel<MR, 2>, gemv_kernel<MR, 3>,
                                            gemv_kernel<MR, 4>};
constexpr const GemvFn* gemv_table[kFp8MaxRows] = {gemv_row<1>, gemv_row<2>, gemv_row<3>, gemv_row<4>};

#elif defined(__AVX2__)

// 16 e4m3 bytes -> 16 fp32 values times 2^-8 (two ymm, bytes 0-7 and 8-15).
inline void convert16(const uint8_t* src, __m256* lo, __m256* hi) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi16(0x7f));
  __m256i h = _mm256_slli_epi16(mag, 7);
  const __m256i nan = _mm256_cmpeq_epi16(mag, _mm256_set1_epi16(0x7f));
  h = _mm256_or_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x7c00)));  // exponent all ones: NaN
  h = _mm256_or_si256(h, _mm256_and_si256(_mm256_slli_epi16(b, 8), _mm256_set1_epi16(static_cast<int16_t>(0x8000))));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// (x[k], x[k+1]) as fp32, repeated four times.
inline __m256 pair_bcast(const bf16_t* p) {
  const __m128 v = _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(_mm_cvtsi32_si128(load_pair(p))), 16));
  return _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(v)));
}

// One panel, MR rows. Lane L of a group holds columns 4L..4L+3 with (k, k+1) interleaved in its
// first 8 bytes and (k+2, k+3) in the next 8, so acc[m][L] sums columns' even and odd k separately.
template <int MR>
void gemv_panel(const bf16_t* a, int64_t lda, const uint8_t* w, const float* sc, int64_t kb0, int64_t kb1,
                int64_t groups, float* c, int64_t ldc) {
  __m256 tot[MR][4];
  for (int m = 0; m < MR; ++m)
    for (int l = 0; l < 4; ++l) tot[m][l] = _mm256_setzero_ps();
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const int64_t g0 = kb * kFp8GroupsPerBlock, g1 = std::min(groups, g0 + kFp8GroupsPerBlock);
    __m256 acc[MR][4];
    for (int m = 0; m < MR; ++m)
      for (int l = 0; l < 4; ++l) acc[m][l] = _mm256_setzero_ps();
    for (int64_t g = g0; g < g1; ++g) {
      __m256 xa[MR], xb[MR];
      for (int m = 0; m < MR; ++m) {
        xa[m] = pair_bcast(a + m * lda + 4 * g);
        xb[m] = pair_bcast(a + m * lda + 4 * g + 2);
      }
      for (int l = 0; l < 4; ++l) {
        __m256 wa, wb;
        convert16(w + g * 64 + l * 16, &wa, &wb);
        for (int m = 0; m < MR; ++m) acc[m][l] = _mm256_fmadd_ps(wa, xa[m], _mm256_fmadd_ps(wb, xb[m], acc[m][l]));
      }
    }
    const __m256 s = _mm256_set1_ps(sc[kb]), unit = _mm256_set1_ps(256.0f);
    for (int m = 0; m < MR; ++m)
      for (int l = 0; l < 4; ++l) tot[m][l] = _mm256_fmadd_ps(_mm256_mul_ps(acc[m][l], unit), s, tot[m][l]);
  }
  for (int m = 0; m < MR; ++m)
    for (int l = 0; l < 4; l += 2) {
      // Even + odd k of each column; hadd interleaves the two lanes' columns by 128-bit half.
      const __m256 sum = _mm256_hadd_ps(tot[m][l], tot[m][l + 1]);
      _mm256_storeu_ps(c + m * ldc + l * 4, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(sum), 0xD8)));
    }
}

#endif

#if !defined(__AVX2__)
void gemv_scalar(const bf16_t* a, int64_t lda, int mr, const uint8_t* w, int64_t ps, const float* sc, int64_t ss, int np,
                 int64_t kb0, int64_t kb1, int64_t groups, float* c, int64_t ldc) {
  const Fp8Lut& t = fp8_lut();
  for (int n = 0; n < np; ++n)
    for (int m = 0; m < mr; ++m) {
      float tot[16] = {};
      for (int64_t kb = kb0; kb < kb1; ++kb) {
        const int64_t g0 = kb * kFp8GroupsPerBlock, g1 = std::min(groups, g0 + kFp8GroupsPerBlock);
        float acc[16] = {};
        for (int64_t g = g0; g < g1; ++g) {
          const uint8_t* src = w + n * ps + g * 64;
          float x[4];
          for (int i = 0; i < 4; ++i) x[i] = bf16_to_f32(a[m * lda + 4 * g + i]);
          for (int pos = 0; pos < 64; ++pos) acc[group_col(pos)] += x[group_k(pos)] * t.f32[src[pos]];
        }
        const float s = sc[n * ss + kb];
        for (int j = 0; j < 16; ++j) tot[j] += acc[j] * s;
      }
      for (int j = 0; j < 16; ++j) c[m * ldc + n * 16 + j] = tot[j];
    }
}
#endif

// The conversion to bf16 for AVX2 and scalar (it runs once per weight and prefill task).

void panel_to_bf16_scalar(const uint8_t* src, int64_t groups, const int* exp2, bf16_t* dst) {
  const Fp8Lut& t = fp8_lut();
  for (int64_t g = 0; g < groups; ++g) {
    const int16_t e = exp2 ? static_cast<int16_t>(exp2[g / kFp8GroupsPerBlock] * 128) : 0;
    for (int pos = 0; pos < 64; ++pos) {
      bf16_t v = t.bf16[src[g * 64 + pos]];
      const bf16_t a = v & 0x7fff;
      if (e != 0 && a != 0 && a < 0x7f80) v = static_cast<bf16_t>(v + e);
      // Line of k-pair 2g + (k >> 1), value slot column * 2 + (k & 1).
      const int k = group_k(pos);
      dst[(2 * g + (k >> 1)) * 32 + group_col(pos) * 2 + (k & 1)] = v;
    }
  }
}

}  // namespace

void fp8_gemv_tile(const bf16_t* a, int64_t lda, int mr, const uint8_t* w, int64_t panel_stride, const float* scale,
                   int64_t scale_stride, int np, int64_t kb0, int64_t kb1, int64_t groups, const uint8_t* next, float* c,
                   int64_t ldc) {
#if defined(__AVX512F__)
  if (!cpu_features().avx512vbmi) {
    avx2::fp8_gemv_tile(a, lda, mr, w, panel_stride, scale, scale_stride, np, kb0, kb1, groups, next, c, ldc);
    return;
  }
  // Keep rows x panels within the register file: wider calls go through in two halves of panels.
  if (mr > 2 && np > 2) {
    gemv_table[mr - 1][1](a, lda, w, panel_stride, scale, scale_stride, kb0, kb1, groups, w + 2 * panel_stride, c, ldc);
    gemv_table[mr - 1][np - 3](a, lda, w + 2 * panel_stride, panel_stride, scale + 2 * scale_stride, scale_stride, kb0,
                               kb1, groups, next, c + 32, ldc);
    return;
  }
  gemv_table[mr - 1][np - 1](a, lda, w, panel_stride, scale, scale_stride, kb0, kb1, groups, next, c, ldc);
#elif defined(__AVX2__)
  (void)next;  // one panel at a time, in address order: the hardware prefetcher follows it
  for (int n = 0; n < np; ++n) {
    const uint8_t* wp = w + n * panel_stride;
    const float* sp = scale + n * scale_stride;
    for (int m = 0; m < mr; m += 2) {
      if (mr - m >= 2) gemv_panel<2>(a + m * lda, lda, wp, sp, kb0, kb1, groups, c + m * ldc + n * 16, ldc);
      else gemv_panel<1>(a + m * lda, lda, wp, sp, kb0, kb1, groups, c + m * ldc + n * 16, ldc);
    }
  }
#else
  (void)next;
  gemv_scalar(a, lda, mr, w, panel_stride, scale, scale_stride, np, kb0, kb1, groups, c, ldc);
#endif
}

void fp8_panel_to_bf16(const uint8_t* src, int64_t groups, const int* exp2, bf16_t* dst) {
#if defined(__AVX512F__)
  if (cpu_features().avx512vbmi) {
    panel_to_bf16_vbmi(src, groups, exp2, dst);
    return;
  }
#endif
  panel_to_bf16_scalar(src, groups, exp2, dst);
}

}  // namespace DSA_ISA_NS
}  // namespace dsa
