// GEMM micro-kernels, compiled once per ISA (see dsa/isa.h). The AVX-512 path multiplies k-pairs with
// vdpbf16ps; AVX2 splits each 32-bit (k, k+1) pair into two fp32 values with a shift and a mask; the
// scalar path does the same arithmetic one element at a time. All accumulate in fp32.
#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm_kernels.h"

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

#if defined(__AVX512BF16__)

template <int MR, int NB>
void packed_kernel(const bf16_t* a, int64_t lda, const bf16_t* b, int64_t ps, int64_t kp2, float* c, int64_t ldc,
                   bool accumulate) {
  __m512 acc[MR][NB];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NB; ++n) acc[m][n] = accumulate ? _mm512_loadu_ps(c + m * ldc + n * 16) : _mm512_setzero_ps();
  int64_t kk = 0;
  if constexpr (MR * NB <= 4) {
    // Few accumulators: a second set for odd k-pairs hides the vdpbf16ps latency (GEMV case).
    __m512 acc2[MR][NB];
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NB; ++n) acc2[m][n] = _mm512_setzero_ps();
    for (; kk + 2 <= kp2; kk += 2) {
      for (int n = 0; n < NB; ++n) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + n * ps + kk * 32);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + n * ps + kk * 32 + 32);
        for (int m = 0; m < MR; ++m) {
          acc[m][n] = _mm512_dpbf16_ps(acc[m][n], (__m512bh)_mm512_set1_epi32(load_pair(a + m * lda + 2 * kk)), b0);
          acc2[m][n] = _mm512_dpbf16_ps(acc2[m][n], (__m512bh)_mm512_set1_epi32(load_pair(a + m * lda + 2 * kk + 2)), b1);
        }
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NB; ++n) acc[m][n] = _mm512_add_ps(acc[m][n], acc2[m][n]);
  }
  for (; kk < kp2; ++kk) {
    __m512bh bv[NB];
    for (int n = 0; n < NB; ++n) bv[n] = (__m512bh)_mm512_loadu_si512(b + n * ps + kk * 32);
    for (int m = 0; m < MR; ++m) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(load_pair(a + m * lda + 2 * kk));
      for (int n = 0; n < NB; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], av, bv[n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NB; ++n) _mm512_storeu_ps(c + m * ldc + n * 16, acc[m][n]);
}

// Block-scaled weights: each 128-k block (64 k-pairs) is summed in registers, then added into c
// (in L1) times its panel's scale: c = sum over blocks of acc * scale[n * ss + block].
template <int MR, int NB>
void packed_kernel_scaled(const bf16_t* a, int64_t lda, const bf16_t* b, int64_t ps, int64_t kp2, const float* scale,
                          int64_t ss, float* c, int64_t ldc) {
  for (int64_t k0 = 0, kb = 0; k0 < kp2; k0 += kScaleBlockPairs, ++kb) {
    __m512 acc[MR][NB];
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NB; ++n) acc[m][n] = _mm512_setzero_ps();
    const int64_t k1 = std::min(kp2, k0 + kScaleBlockPairs);
    for (int64_t kk = k0; kk < k1; ++kk) {
      __m512bh bv[NB];
      for (int n = 0; n < NB; ++n) bv[n] = (__m512bh)_mm512_loadu_si512(b + n * ps + kk * 32);
      for (int m = 0; m < MR; ++m) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32(load_pair(a + m * lda + 2 * kk));
        for (int n = 0; n < NB; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], av, bv[n]);
      }
    }
    for (int n = 0; n < NB; ++n) {
      const __m512 sv = _mm512_set1_ps(scale[n * ss + kb]);
      for (int m = 0; m < MR; ++m) {
        float* cp = c + m * ldc + n * 16;
        _mm512_storeu_ps(cp, kb == 0 ? _mm512_mul_ps(acc[m][n], sv) : _mm512_fmadd_ps(acc[m][n], sv, _mm512_loadu_ps(cp)));
      }
    }
  }
}

// ND/NZ weights in place: rows k and k+1 of a 16-column panel are interleaved in a register into
// one vdpbf16ps operand (the packed layout, built on the fly), so a pass does one dot per k-pair and
// row of x instead of two fp32 FMAs and two conversions. Strided ND rows are prefetched a few rows
// ahead: each task reads only its panels' slice of every row, a pattern the hardware does not follow.
template <int MR, int NB>
void direct_kernel(const bf16_t* a, int64_t lda, const bf16_t* w, int64_t rs, int64_t ps, int64_t K, float* c,
                   int64_t ldc, bool accumulate) {
  constexpr int64_t kPfRows = 8;
  const __m512i pair_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                                            37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const bool prefetch = rs > 16;
  __m512 acc[MR][NB];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NB; ++n) acc[m][n] = accumulate ? _mm512_loadu_ps(c + m * ldc + n * 16) : _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    if (prefetch && k + kPfRows + 1 < K) {
      for (int n = 0; n < NB; ++n) {
        _mm_prefetch(reinterpret_cast<const char*>(w + n * ps + (k + kPfRows) * rs), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(w + n * ps + (k + kPfRows + 1) * rs), _MM_HINT_T0);
      }
    }
    __m512bh wv[NB];
    for (int n = 0; n < NB; ++n) {
      const __m512i r0 = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)(w + n * ps + k * rs)));
      const __m512i r1 = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)(w + n * ps + (k + 1) * rs)));
      wv[n] = (__m512bh)_mm512_permutex2var_epi16(r0, pair_idx, r1);
    }
    for (int m = 0; m < MR; ++m) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(load_pair(a + m * lda + k));
      for (int n = 0; n < NB; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], av, wv[n]);
    }
  }
  if (k < K) {  // odd K: the last row pairs with zeros
    __m512bh wv[NB];
    for (int n = 0; n < NB; ++n)
      wv[n] = (__m512bh)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(w + n * ps + k * rs)));
    for (int m = 0; m < MR; ++m) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(a[m * lda + k]);
      for (int n = 0; n < NB; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], av, wv[n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NB; ++n) _mm512_storeu_ps(c + m * ldc + n * 16, acc[m][n]);
}

#elif defined(__AVX2__)

// One 16-column panel and up to 4 rows at a time: 8 accumulators, the panel's widened (even, odd)
// halves and two broadcasts fit the 16 registers. x comes as fp32 (widened once per call), so each
// broadcast is a load; loops around the accumulators are unrolled so they stay registers.
// acc[m] += a[m, pairs k0..k1) @ one 16-column panel (its k-pair kk at bp + kk * 32).
template <int MR>
inline void add_pairs(const float* a, int64_t lda, const bf16_t* bp, int64_t k0, int64_t k1, __m256 (&acc)[MR][2]) {
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t kk = k0; kk < k1; ++kk) {
    const __m256i v0 = _mm256_loadu_si256((const __m256i*)(bp + kk * 32));
    const __m256i v1 = _mm256_loadu_si256((const __m256i*)(bp + kk * 32 + 16));
    const __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
    const __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi_mask));
    const __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
    const __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi_mask));
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      const __m256 a0 = _mm256_broadcast_ss(a + m * lda + 2 * kk), a1 = _mm256_broadcast_ss(a + m * lda + 2 * kk + 1);
      acc[m][0] = _mm256_fmadd_ps(a1, o0, _mm256_fmadd_ps(a0, e0, acc[m][0]));
      acc[m][1] = _mm256_fmadd_ps(a1, o1, _mm256_fmadd_ps(a0, e1, acc[m][1]));
    }
  }
}

template <int MR>
void packed_rows(const float* a, int64_t lda, const bf16_t* bp, int64_t kp2, float* cp, int64_t ldc, bool accumulate) {
  __m256 acc[MR][2];
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m)
    for (int h = 0; h < 2; ++h) acc[m][h] = accumulate ? _mm256_loadu_ps(cp + m * ldc + h * 8) : _mm256_setzero_ps();
  add_pairs<MR>(a, lda, bp, 0, kp2, acc);
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m)
    for (int h = 0; h < 2; ++h) _mm256_storeu_ps(cp + m * ldc + h * 8, acc[m][h]);
}

// mr rows of a (2 * kp2 values each) as fp32 in the calling thread's buffer, rows 2 * kp2 apart.
const float* widen_rows(const bf16_t* a, int64_t lda, int mr, int64_t kp2) {
  thread_local std::vector<float> af;
  const int64_t k2 = 2 * kp2;
  af.resize(static_cast<size_t>(mr * k2));
  for (int m = 0; m < mr; ++m) {
    int64_t k = 0;
    for (; k + 8 <= k2; k += 8)
      _mm256_storeu_ps(af.data() + m * k2 + k, _mm256_castsi256_ps(_mm256_slli_epi32(
                                                   _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(a + m * lda + k))), 16)));
    for (; k < k2; ++k) af[m * k2 + k] = bf16_to_f32(a[m * lda + k]);
  }
  return af.data();
}

// packed_rows with a scale per kScaleBlockPairs k-pairs: each block's sum is formed in the
// accumulators, then added times its scale into c (in L1), which holds the running total.
template <int MR>
void packed_rows_scaled(const float* a, int64_t lda, const bf16_t* bp, int64_t kp2, const float* scale, float* cp,
                        int64_t ldc) {
  for (int64_t k0 = 0, kb = 0; k0 < kp2; k0 += kScaleBlockPairs, ++kb) {
    __m256 acc[MR][2];
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    add_pairs<MR>(a, lda, bp, k0, std::min(kp2, k0 + kScaleBlockPairs), acc);
    const __m256 s = _mm256_set1_ps(scale[kb]);
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m)
      for (int h = 0; h < 2; ++h) {
        float* cm = cp + m * ldc + h * 8;
        _mm256_storeu_ps(cm, kb == 0 ? _mm256_mul_ps(acc[m][h], s) : _mm256_fmadd_ps(acc[m][h], s, _mm256_loadu_ps(cm)));
      }
  }
}

template <int MR, int NB>
void packed_kernel(const bf16_t* a, int64_t lda, const bf16_t* b, int64_t ps, int64_t kp2, float* c, int64_t ldc,
                   bool accumulate) {
  const int64_t k2 = 2 * kp2;
  const float* af = widen_rows(a, lda, MR, kp2);
  for (int n = 0; n < NB; ++n)
    for (int m = 0; m < MR; m += 4) {
      const float* am = af + m * k2;
      float* cp = c + m * ldc + n * 16;
      switch (MR - m < 4 ? MR - m : 4) {
        case 1: packed_rows<1>(am, k2, b + n * ps, kp2, cp, ldc, accumulate); break;
        case 2: packed_rows<2>(am, k2, b + n * ps, kp2, cp, ldc, accumulate); break;
        case 3: packed_rows<3>(am, k2, b + n * ps, kp2, cp, ldc, accumulate); break;
        default: packed_rows<4>(am, k2, b + n * ps, kp2, cp, ldc, accumulate); break;
      }
    }
}

template <int MR, int NB>
void direct_kernel(const bf16_t* a, int64_t lda, const bf16_t* w, int64_t rs, int64_t ps, int64_t K, float* c,
                   int64_t ldc, bool accumulate) {
  for (int n = 0; n < NB; ++n) {
    const bf16_t* wp = w + n * ps;
    float* cp = c + n * 16;
    __m256 acc[MR][2];
    for (int m = 0; m < MR; ++m)
      for (int h = 0; h < 2; ++h) acc[m][h] = accumulate ? _mm256_loadu_ps(cp + m * ldc + h * 8) : _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const __m256i raw = _mm256_loadu_si256((const __m256i*)(wp + k * rs));
      const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(raw)), 16));
      const __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(raw, 1)), 16));
      for (int m = 0; m < MR; ++m) {
        const __m256 av = _mm256_set1_ps(bf16_to_f32(a[m * lda + k]));
        acc[m][0] = _mm256_fmadd_ps(av, w0, acc[m][0]);
        acc[m][1] = _mm256_fmadd_ps(av, w1, acc[m][1]);
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int h = 0; h < 2; ++h) _mm256_storeu_ps(cp + m * ldc + h * 8, acc[m][h]);
  }
}

#else  // portable

template <int MR, int NB>
void packed_kernel(const bf16_t* a, int64_t lda, const bf16_t* b, int64_t ps, int64_t kp2, float* c, int64_t ldc,
                   bool accumulate) {
  for (int n = 0; n < NB; ++n) {
    for (int m = 0; m < MR; ++m) {
      float acc[16];
      for (int j = 0; j < 16; ++j) acc[j] = accumulate ? c[m * ldc + n * 16 + j] : 0.0f;
      for (int64_t kk = 0; kk < kp2; ++kk) {
        const float a0 = bf16_to_f32(a[m * lda + 2 * kk]), a1 = bf16_to_f32(a[m * lda + 2 * kk + 1]);
        const bf16_t* bp = b + n * ps + kk * 32;
        for (int j = 0; j < 16; ++j) acc[j] += a0 * bf16_to_f32(bp[2 * j]) + a1 * bf16_to_f32(bp[2 * j + 1]);
      }
      for (int j = 0; j < 16; ++j) c[m * ldc + n * 16 + j] = acc[j];
    }
  }
}

template <int MR, int NB>
void direct_kernel(const bf16_t* a, int64_t lda, const bf16_t* w, int64_t rs, int64_t ps, int64_t K, float* c,
                   int64_t ldc, bool accumulate) {
  for (int n = 0; n < NB; ++n) {
    for (int m = 0; m < MR; ++m) {
      float acc[16];
      for (int j = 0; j < 16; ++j) acc[j] = accumulate ? c[m * ldc + n * 16 + j] : 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float av = bf16_to_f32(a[m * lda + k]);
        const bf16_t* wp = w + n * ps + k * rs;
        for (int j = 0; j < 16; ++j) acc[j] += av * bf16_to_f32(wp[j]);
      }
      for (int j = 0; j < 16; ++j) c[m * ldc + n * 16 + j] = acc[j];
    }
  }
}

#endif

using PackedFn = void (*)(const bf16_t*, int64_t, const bf16_t*, int64_t, int64_t, float*, int64_t, bool);
using DirectFn = void (*)(const bf16_t*, int64_t, const bf16_t*, int64_t, int64_t, int64_t, float*, int64_t, bool);

template <int MR>
constexpr PackedFn packed_row[kPackedMaxPanels] = {packed_kernel<MR, 1>, packed_kernel<MR, 2>, packed_kernel<MR, 3>};
constexpr const PackedFn* packed_table[kPackedMaxRows] = {packed_row<1>, packed_row<2>, packed_row<3>, packed_row<4>,
                                                          packed_row<5>, packed_row<6>, packed_row<7>, packed_row<8>};
#if defined(__AVX512BF16__)
using ScaledFn = void (*)(const bf16_t*, int64_t, const bf16_t*, int64_t, int64_t, const float*, int64_t, float*, int64_t);
template <int MR>
constexpr ScaledFn scaled_row[kPackedMaxPanels] = {packed_kernel_scaled<MR, 1>, packed_kernel_scaled<MR, 2>,
                                                   packed_kernel_scaled<MR, 3>};
constexpr const ScaledFn* scaled_table[kPackedMaxRows] = {scaled_row<1>, scaled_row<2>, scaled_row<3>, scaled_row<4>,
                                                          scaled_row<5>, scaled_row<6>, scaled_row<7>, scaled_row<8>};
#endif
template <int MR>
constexpr DirectFn direct_row[kDirectMaxPanels] = {direct_kernel<MR, 1>, direct_kernel<MR, 2>, direct_kernel<MR, 3>,
                                                   direct_kernel<MR, 4>};
constexpr const DirectFn* direct_table[kDirectMaxRows] = {direct_row<1>, direct_row<2>, direct_row<3>, direct_row<4>};

}  // namespace

void pack_panel16(const bf16_t* src, int64_t rs, int64_t K, bf16_t* dst) {
  int64_t kk = 0;
#if defined(__AVX2__)
  // Interleave rows 2kk and 2kk+1: unpack gives (k, k+1) pairs for columns 0-3|8-11 and 4-7|12-15
  // per 128-bit lane; the lane permutes put columns 0-7 and 8-15 in order.
  for (; 2 * kk + 1 < K; ++kk) {
    const __m256i r0 = _mm256_loadu_si256((const __m256i*)(src + (2 * kk) * rs));
    const __m256i r1 = _mm256_loadu_si256((const __m256i*)(src + (2 * kk + 1) * rs));
    const __m256i lo = _mm256_unpacklo_epi16(r0, r1), hi = _mm256_unpackhi_epi16(r0, r1);
    _mm256_storeu_si256((__m256i*)(dst + kk * 32), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i*)(dst + kk * 32 + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
  }
#endif
  for (; 2 * kk < K; ++kk) {
    for (int j = 0; j < 16; ++j) {
      dst[kk * 32 + 2 * j] = src[(2 * kk) * rs + j];
      dst[kk * 32 + 2 * j + 1] = 2 * kk + 1 < K ? src[(2 * kk + 1) * rs + j] : 0;
    }
  }
}

void f32_to_bf16_row(const float* src, int64_t n, bf16_t* dst) {
  int64_t i = 0;
#if defined(__AVX512F__)
  // Round to nearest even in the integer domain (as f32_to_bf16 does; vcvtneps2bf16 would flush
  // subnormals), then quiet any NaN instead of letting the carry turn it into Inf.
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), exp = _mm512_set1_epi32(0x7f800000);
  const __m512i quiet = _mm512_set1_epi32(0x00400000);
  for (; i + 16 <= n; i += 16) {
    const __m512i bits = _mm512_castps_si512(_mm512_loadu_ps(src + i));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
    __m512i r = _mm512_add_epi32(bits, _mm512_add_epi32(bias, lsb));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_andnot_si512(_mm512_set1_epi32(INT32_MIN), bits), exp);
    r = _mm512_mask_or_epi32(r, nan, bits, quiet);
    _mm256_storeu_si256((__m256i*)(dst + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
  }
#endif
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void gemm_packed_tile(const bf16_t* a, int64_t lda, int mr, const bf16_t* b, int64_t panel_stride, int np, int64_t kp2,
                      float* c, int64_t ldc, bool accumulate) {
  packed_table[mr - 1][np - 1](a, lda, b, panel_stride, kp2, c, ldc, accumulate);
}

void gemm_packed_tile_scaled(const bf16_t* a, int64_t lda, int mr, const bf16_t* b, int64_t panel_stride, int np,
                             int64_t kp2, const float* scale, int64_t scale_stride, float* c, int64_t ldc) {
#if defined(__AVX512BF16__)
  scaled_table[mr - 1][np - 1](a, lda, b, panel_stride, kp2, scale, scale_stride, c, ldc);
#elif defined(__AVX2__)
  const int64_t k2 = 2 * kp2;
  const float* af = widen_rows(a, lda, mr, kp2);
  for (int p = 0; p < np; ++p)
    for (int m = 0; m < mr; m += 4) {
      const float* am = af + m * k2;
      const bf16_t* bp = b + p * panel_stride;
      const float* sp = scale + p * scale_stride;
      float* cp = c + m * ldc + p * 16;
      switch (mr - m < 4 ? mr - m : 4) {
        case 1: packed_rows_scaled<1>(am, k2, bp, kp2, sp, cp, ldc); break;
        case 2: packed_rows_scaled<2>(am, k2, bp, kp2, sp, cp, ldc); break;
        case 3: packed_rows_scaled<3>(am, k2, bp, kp2, sp, cp, ldc); break;
        default: packed_rows_scaled<4>(am, k2, bp, kp2, sp, cp, ldc); break;
      }
    }
#else
  // Portable: the bf16 tile per 128-k block into a small buffer, then scaled into c.
  alignas(64) float block[kPackedMaxRows * kPackedMaxPanels * 16];
  const int64_t ldb = np * 16;
  const PackedFn tile = packed_table[mr - 1][np - 1];
  for (int64_t k0 = 0, kb = 0; k0 < kp2; k0 += kScaleBlockPairs, ++kb) {
    tile(a + 2 * k0, lda, b + k0 * 32, panel_stride, std::min(kScaleBlockPairs, kp2 - k0), block, ldb, false);
    for (int m = 0; m < mr; ++m)
      for (int p = 0; p < np; ++p) {
        const float s = scale[p * scale_stride + kb];
        float* __restrict cr = c + m * ldc + p * 16;
        const float* __restrict v = block + m * ldb + p * 16;
        if (kb == 0) {
          for (int j = 0; j < 16; ++j) cr[j] = v[j] * s;
        } else {
          for (int j = 0; j < 16; ++j) cr[j] += v[j] * s;
        }
      }
  }
#endif
}

void gemm_direct_tile(const bf16_t* a, int64_t lda, int mr, const bf16_t* w, int64_t row_stride, int64_t panel_stride,
                      int np, int64_t K, float* c, int64_t ldc, bool accumulate) {
  direct_table[mr - 1][np - 1](a, lda, w, row_stride, panel_stride, K, c, ldc, accumulate);
}

}  // namespace DSA_ISA_NS
}  // namespace dsa
