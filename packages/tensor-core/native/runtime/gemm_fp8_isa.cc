// FP8-weight GEMM micro-kernels, compiled once per ISA (see dsa/isa.h and gemm_fp8_kernels.h).
//   AVX-512: two 128-entry byte-table lookups (vpermi2b, VBMI) give the low and high bytes of each
//     weight's bf16 value (e4m3 subnormals become normal bf16 values, NaN codes a bf16 NaN: vdpbf16ps
//     would read bf16 subnormals as zero); one unpack makes two k-pair lines for vdpbf16ps. CPUs with
//     AVX-512 BF16 but no VBMI run the AVX2 kernels.
//   AVX2: each byte, sign-extended and shifted, is an fp32 of 2^-120 times its value (subnormals
//     included, exactly: three shifts and two ANDs per 16 weights); x is scaled by 2^120 once per call.
//     A NaN code makes its column NaN: blocks holding one note the columns (a cheap check per block).
//   Scalar: the 256-entry value table.
// Each block of 128 k is summed on its own, then added times its scale (fp32), so no weight is
// rounded: the result is the product with the exactly dequantized weight up to fp32 summation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

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

// 16 e4m3 bytes -> their fp32 values times 2^-120, even bytes in *even, odd bytes in *odd: sign-extended
// to words, each dword holds an (even, odd) pair; shifted so a byte's 7 magnitude bits land in the low
// exponent and top mantissa bits of an fp32 (e4m3 subnormals become fp32 subnormals, exactly) and its
// sign fills bits 27..31, of which the mask keeps bit 31. The 2^120 is on x (see scaled_x). NaN codes
// come out finite: the panel notes their columns instead (a NaN weight makes its column NaN).
inline void convert16(const uint8_t* src, __m256* even, __m256* odd) {
  const __m256i d = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(0x87F00000u));
  *even = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(d, 20), mask));
  *odd = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(d, 4), mask));
}

// NaN codes (0x7F, 0xFF) are the bytes whose value with the top bit set is 0xFF, the largest: a
// running byte-wise max of (byte | 0x80) over a block's groups holds 0xFF somewhere iff one is there.
inline __m256i max_nan_probe(__m256i acc, const uint8_t* g) {
  const __m256i top = _mm256_set1_epi8(static_cast<char>(0x80));
  acc = _mm256_max_epu8(acc, _mm256_or_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)), top));
  return _mm256_max_epu8(acc, _mm256_or_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32)), top));
}
inline bool probe_found_nan(__m256i acc) {
  return _mm256_movemask_epi8(_mm256_cmpeq_epi8(acc, _mm256_set1_epi8(-1))) != 0;
}

// The columns (bit per column of the panel) that hold a NaN code in this group (the rare path).
__attribute__((noinline)) unsigned group_nan_columns(const uint8_t* g) {
  unsigned cols = 0;
  for (int pos = 0; pos < 64; ++pos)
    if ((g[pos] & 0x7f) == 0x7f) cols |= 1u << group_col(pos);
  return cols;
}

// One panel, MR rows, x as scaled_x lays it out (xs, from block kb0 on). Lane L (16 bytes) of a group
// holds columns 4L..4L+3 with (k, k+1) interleaved in its first 8 bytes and (k+2, k+3) in the next 8:
// its even bytes meet x (x0 x0 x0 x0 x2 x2 x2 x2), its odd bytes (x1 x1 x1 x1 x3 x3 x3 x3), and
// acc[m][L] lane j and j + 4 are column 4L + j's two k halves. With one row, even and odd bytes have
// their own accumulators, so each FMA chain advances once per group.
// The panel is read kAhead lines ahead; near the end of its k range the prefetch goes on into
// `after`, the first line the thread reads next (the next panel's range, or null): with K split
// into chunks, the line past a panel's chunk belongs to another task.
constexpr int64_t kAhead = 16;
template <int MR>
void gemv_panel(const float* xs, int64_t ldx, const uint8_t* w, const float* sc, int64_t kb0, int64_t kb1,
                int64_t groups, const uint8_t* after, const float* unit, float* c, int64_t ldc) {
  const int64_t ahead_end = std::min(groups, kb1 * kFp8GroupsPerBlock) - kAhead;
  constexpr bool kTwo = MR == 1;
  __m256 tot[MR][4];
  for (int m = 0; m < MR; ++m)
    for (int l = 0; l < 4; ++l) tot[m][l] = _mm256_setzero_ps();
  unsigned nan_cols = 0;
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const int64_t g0 = kb * kFp8GroupsPerBlock, g1 = std::min(groups, g0 + kFp8GroupsPerBlock);
    __m256 acc[MR][4], acc2[MR][4];
    for (int m = 0; m < MR; ++m)
      for (int l = 0; l < 4; ++l) acc[m][l] = acc2[m][l] = _mm256_setzero_ps();
    __m256i probe = _mm256_setzero_si256();  // checked once per block (a check per group cost ~10% more instructions)
    for (int64_t g = g0; g < g1; ++g) {
      const uint8_t* wg = w + g * 64;
      if (g < ahead_end) _mm_prefetch(reinterpret_cast<const char*>(wg + kAhead * 64), _MM_HINT_T0);
      else if (after != nullptr) _mm_prefetch(reinterpret_cast<const char*>(after + (g - ahead_end) * 64), _MM_HINT_T0);
      probe = max_nan_probe(probe, wg);
      const float* xg = xs + 16 * (g - kb0 * kFp8GroupsPerBlock);
      __m256 xe[MR], xo[MR];
      for (int m = 0; m < MR; ++m) {
        xe[m] = _mm256_loadu_ps(xg + m * ldx);
        xo[m] = _mm256_loadu_ps(xg + m * ldx + 8);
      }
      for (int l = 0; l < 4; ++l) {
        __m256 we, wo;
        convert16(wg + l * 16, &we, &wo);
        for (int m = 0; m < MR; ++m) {
          acc[m][l] = _mm256_fmadd_ps(we, xe[m], acc[m][l]);
          __m256& odd = kTwo ? acc2[m][l] : acc[m][l];
          odd = _mm256_fmadd_ps(wo, xo[m], odd);
        }
      }
    }
    if (probe_found_nan(probe))
      for (int64_t g = g0; g < g1; ++g) nan_cols |= group_nan_columns(w + g * 64);
    const __m256 s = _mm256_set1_ps(sc[kb]);
    for (int m = 0; m < MR; ++m)
      for (int l = 0; l < 4; ++l) tot[m][l] = _mm256_fmadd_ps(kTwo ? _mm256_add_ps(acc[m][l], acc2[m][l]) : acc[m][l], s, tot[m][l]);
  }
  for (int m = 0; m < MR; ++m) {
    const __m256 u = _mm256_set1_ps(unit[m]);
    for (int l = 0; l < 4; l += 2) {
      // Lanes j and j + 4 of tot[l] (columns 4l + j) side by side with tot[l + 1]'s, then added.
      const __m256 lo = _mm256_permute2f128_ps(tot[m][l], tot[m][l + 1], 0x20);
      const __m256 hi = _mm256_permute2f128_ps(tot[m][l], tot[m][l + 1], 0x31);
      _mm256_storeu_ps(c + m * ldc + l * 4, _mm256_mul_ps(_mm256_add_ps(lo, hi), u));
    }
    for (unsigned cols = nan_cols; cols != 0; cols &= cols - 1)
      c[m * ldc + __builtin_ctz(cols)] = std::numeric_limits<float>::quiet_NaN();
  }
}

// Rows of x (n values each, n a multiple of 4) as fp32 times 2^p, laid out per group of 4 k as
// x0 x0 x0 x0 x2 x2 x2 x2 x1 x1 x1 x1 x3 x3 x3 x3 (the two x vectors of gemv_panel), so that x * (w * 2^-120) is the product
// at its own scale: p = 120 per row, lowered only where the row's largest finite |x| would overflow
// (unit[m] = 2^(120 - p) puts the result back). Inf and NaN stay as they are.
void scaled_x(const bf16_t* a, int64_t lda, int mr, int64_t n, float* xs, float* unit) {
  const __m256i even = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2), odd = _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3);
  const __m256i four = _mm256_set1_epi32(4);
  for (int m = 0; m < mr; ++m) {
    const bf16_t* row = a + m * lda;
    // The largest finite magnitude (Inf and NaN, 0x7f80 and up, count as zero).
    __m256i top16 = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
      const __m256i mag = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k)), _mm256_set1_epi16(0x7fff));
      top16 = _mm256_max_epu16(top16, _mm256_andnot_si256(_mm256_cmpgt_epi16(mag, _mm256_set1_epi16(0x7f7f)), mag));
    }
    alignas(32) uint16_t lanes[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), top16);
    uint16_t top = *std::max_element(lanes, lanes + 16);
    for (; k < n; ++k) {
      const uint16_t mag = row[k] & 0x7fff;
      if (mag < 0x7f80) top = std::max(top, mag);
    }
    const int e = (top >> 7) - 127;  // |x| < 2^(e + 1)
    const int p = std::min(120, 126 - e);
    unit[m] = std::ldexp(1.0f, 120 - p);
    const __m256 f = _mm256_set1_ps(std::ldexp(1.0f, p));
    float* out = xs + m * 4 * n;
    for (k = 0; k < n; k += 8) {
      // Eight x (the last load may read past n: rows hold 4 * groups values, a multiple of 4).
      const __m128i raw = n - k >= 8 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k))
                                     : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + k));
      const __m256 x = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16)), f);
      _mm256_storeu_ps(out + 4 * k, _mm256_permutevar8x32_ps(x, even));
      _mm256_storeu_ps(out + 4 * k + 8, _mm256_permutevar8x32_ps(x, odd));
      if (n - k >= 8) {
        _mm256_storeu_ps(out + 4 * k + 16, _mm256_permutevar8x32_ps(x, _mm256_add_epi32(even, four)));
        _mm256_storeu_ps(out + 4 * k + 24, _mm256_permutevar8x32_ps(x, _mm256_add_epi32(odd, four)));
      }
    }
  }
}

// The tile with subnormals kept: DAZ would read the e4m3 subnormals (fp32 subnormals here) as zero.
class KeepSubnormals {
 public:
  KeepSubnormals() : csr_(_mm_getcsr()) {
    if (csr_ & kDazFtz) _mm_setcsr(csr_ & ~kDazFtz);
  }
  ~KeepSubnormals() {
    if (csr_ & kDazFtz) _mm_setcsr(csr_);
  }

 private:
  static constexpr unsigned kDazFtz = 0x8040;
  unsigned csr_;
};

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

#if defined(__AVX2__) && !defined(__AVX512F__)
// Lane L of a group (16 bytes: columns 4L..4L+3, k-pairs 0 and 1) becomes 16 bf16 whose low half
// belongs to k-pair line 2g and high half to line 2g + 1, at columns 4L..4L+3.
void panel_to_bf16_avx2(const uint8_t* src, int64_t groups, const int* exp2, bf16_t* dst) {
  const __m256i mag_mask = _mm256_set1_epi16(0x7fff), inf = _mm256_set1_epi16(0x7f80);
  for (int64_t g = 0; g < groups; ++g) {
    const __m256i add = _mm256_set1_epi16(static_cast<int16_t>(exp2 ? exp2[g / kFp8GroupsPerBlock] * 128 : 0));
    bf16_t* line0 = dst + 2 * g * 32;
    for (int l = 0; l < 4; ++l) {
      __m256i v = e4m3x16_to_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + g * 64 + l * 16)));
      if (exp2 != nullptr) {
        // Scale by a power of two: add to the exponent of every finite non-zero value.
        const __m256i a = _mm256_and_si256(v, mag_mask);
        const __m256i keep = _mm256_or_si256(_mm256_cmpeq_epi16(a, _mm256_setzero_si256()), _mm256_cmpgt_epi16(a, _mm256_sub_epi16(inf, _mm256_set1_epi16(1))));
        v = _mm256_add_epi16(v, _mm256_andnot_si256(keep, add));
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(line0 + l * 8), _mm256_castsi256_si128(v));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(line0 + 32 + l * 8), _mm256_extracti128_si256(v, 1));
    }
  }
}
#endif

#if !defined(__AVX2__)
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
#endif

}  // namespace

bool fp8_gemv_widen_x(const bf16_t* a, int64_t lda, int mr, int64_t Kp, std::vector<float>& wide, float* unit) {
#if defined(__AVX512F__)
  return !cpu_features().avx512vbmi && avx2::fp8_gemv_widen_x(a, lda, mr, Kp, wide, unit);
#elif defined(__AVX2__)
  wide.resize(static_cast<size_t>(mr * 4 * Kp));
  scaled_x(a, lda, mr, Kp, wide.data(), unit);
  return true;
#else
  (void)a, (void)lda, (void)mr, (void)Kp, (void)wide, (void)unit;
  return false;
#endif
}

void fp8_gemv_tile(const Fp8GemvRows& x, int mr, const uint8_t* w, int64_t panel_stride, const float* scale,
                   int64_t scale_stride, int np, int64_t kb0, int64_t kb1, int64_t groups, const uint8_t* next, float* c,
                   int64_t ldc) {
#if defined(__AVX512F__)
  if (!cpu_features().avx512vbmi) {
    avx2::fp8_gemv_tile(x, mr, w, panel_stride, scale, scale_stride, np, kb0, kb1, groups, next, c, ldc);
    return;
  }
  const bf16_t* a = x.a;
  const int64_t lda = x.lda;
  // Keep rows x panels within the register file: wider calls go through in two halves of panels.
  if (mr > 2 && np > 2) {
    gemv_table[mr - 1][1](a, lda, w, panel_stride, scale, scale_stride, kb0, kb1, groups, w + 2 * panel_stride, c, ldc);
    gemv_table[mr - 1][np - 3](a, lda, w + 2 * panel_stride, panel_stride, scale + 2 * scale_stride, scale_stride, kb0,
                               kb1, groups, next, c + 32, ldc);
    return;
  }
  gemv_table[mr - 1][np - 1](a, lda, w, panel_stride, scale, scale_stride, kb0, kb1, groups, next, c, ldc);
#elif defined(__AVX2__)
  const KeepSubnormals keep;
  // x as the driver widened it once per call (fp8_gemv_widen_x), from this tile's first k on.
  const float* xs = x.wide + 4 * kb0 * kFp8GroupsPerBlock * 4;
  const float* unit = x.unit;
  const int64_t ldx = x.ld_wide;
  // One panel at a time (rows in pairs: a second pass finds the panel in cache); after the last pass
  // over a panel the thread reads the next panel's k range, or after the last, the next tile's.
  const int64_t first = kb0 * kFp8GroupsPerBlock * 64;
  for (int p = 0; p < np; ++p) {
    const uint8_t* wp = w + p * panel_stride;
    const float* sp = scale + p * scale_stride;
    const uint8_t* after = p + 1 < np ? wp + panel_stride + first : next != nullptr ? next + first : nullptr;
    for (int m = 0; m < mr; m += 2) {
      const uint8_t* then = m + 2 < mr ? nullptr : after;
      if (mr - m >= 2) gemv_panel<2>(xs + m * ldx, ldx, wp, sp, kb0, kb1, groups, then, unit + m, c + m * ldc + p * 16, ldc);
      else gemv_panel<1>(xs + m * ldx, ldx, wp, sp, kb0, kb1, groups, then, unit + m, c + m * ldc + p * 16, ldc);
    }
  }
#else
  (void)next;
  gemv_scalar(x.a, x.lda, mr, w, panel_stride, scale, scale_stride, np, kb0, kb1, groups, c, ldc);
#endif
}

void fp8_panel_to_bf16(const uint8_t* src, int64_t groups, const int* exp2, bf16_t* dst) {
#if defined(__AVX512F__)
  if (cpu_features().avx512vbmi) panel_to_bf16_vbmi(src, groups, exp2, dst);
  else avx2::fp8_panel_to_bf16(src, groups, exp2, dst);
#elif defined(__AVX2__)
  panel_to_bf16_avx2(src, groups, exp2, dst);
#else
  panel_to_bf16_scalar(src, groups, exp2, dst);
#endif
}

}  // namespace DSA_ISA_NS
}  // namespace dsa
