// Hot loops of the sparse flash attention, compiled once per ISA (layouts: sparse_flash_attn_isa.h).
// AVX-512 BF16: vdpbf16ps on pair-interleaved operands. AVX2: fp32 FMAs, queries split into even and
// odd halves in the loop, keys, probabilities and values from fp32 copies. Portable: plain loops.
#include <cmath>
#include <cstring>
#include <vector>

#include "sparse_flash_attn_isa.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsa {
namespace sfa {
namespace DSA_ISA_NS {
namespace {

static inline uint32_t load_pair(const bf16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Register tiles: MR rows (keys for the logits, heads for P·V) by NB vectors of 16 columns.
constexpr int kMR = 6;
constexpr int kNB = 4;

#if defined(__AVX512BF16__)

// exp(x) for x <= 0 (logit minus running max): Cody-Waite reduction and a degree-6 Taylor
// polynomial (relative error ~1e-7, far below the bf16 rounding of P that follows).
static inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);  // a NaN stays NaN (max_ps returns its 2nd operand)
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// bf16 bits of x (round to nearest even), zero-extended into 32-bit lanes.
static inline __m512i bf16_bits(__m512 x) { return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x)); }

template <int MR, int NB>
void scores_tile(const bf16_t* keys, int64_t ldk, const uint32_t* q, int64_t dp2, int64_t hpad, float scale, float* s) {
  __m512 acc[MR][NB];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < dp2; ++p) {
    __m512bh w[NB];
    for (int j = 0; j < NB; ++j) w[j] = (__m512bh)_mm512_loadu_si512(q + p * hpad + j * 16);
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(load_pair(keys + i * ldk + 2 * p)));
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a, w[j]);
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) _mm512_storeu_ps(s + i * hpad + j * 16, _mm512_mul_ps(acc[i][j], sc));
}

template <int MR, int NB>
void pv_tile(const uint32_t* ppair, int64_t hpad, int64_t np, const uint32_t* vint, int64_t dv16, const float* alpha,
             float* o) {
  __m512 acc[MR][NB];
  for (int i = 0; i < MR; ++i) {
    const __m512 a = _mm512_set1_ps(alpha[i]);
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_mul_ps(_mm512_loadu_ps(o + i * dv16 + j * 16), a);
  }
  for (int64_t jp = 0; jp < np; ++jp) {
    __m512bh w[NB];
    for (int j = 0; j < NB; ++j) w[j] = (__m512bh)_mm512_loadu_si512(vint + jp * dv16 + j * 16);
    for (int i = 0; i < MR; ++i) {
      const __m512bh p = (__m512bh)_mm512_set1_epi32(static_cast<int>(ppair[jp * hpad + i]));
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], p, w[j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) _mm512_storeu_ps(o + i * dv16 + j * 16, acc[i][j]);
}

#elif defined(__AVX2__)

static inline __m256 exp_ps(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);  // a NaN stays NaN (max_ps returns its 2nd operand)
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// bf16 bits of x (round to nearest even, NaN kept quiet) in the low half of 32-bit lanes.
static inline __m256i bf16_bits(__m256 x) {
  const __m256i b = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return _mm256_and_si256(_mm256_blendv_epi8(r, nan, is_nan), _mm256_set1_epi32(0xffff));
}

// Even and odd bf16 of each 32-bit pair as fp32.
static inline __m256 even_ps(__m256i v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
static inline __m256 odd_ps(__m256i v) {
  return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}

// Without a bf16 dot, the broadcast operands (keys, probabilities) come as fp32 copies, so that each
// broadcast is a load (widening and broadcasting a scalar pair cost more than the FMAs it feeds); the
// queries are widened in the loop (two ops per 8 pairs), the values once per 16 columns.

// s[t][h] for MR keys (fp32 rows, ldk apart, 2 * dp2 values) and 16 heads of q pairs [dp2][hpad].
template <int MR>
void scores_tile(const float* k, int64_t ldk, const uint32_t* q, int64_t dp2, int64_t hpad, float scale, float* s) {
  __m256 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t p = 0; p < dp2; ++p) {
    const __m256i w0 = _mm256_loadu_si256((const __m256i*)(q + p * hpad));
    const __m256i w1 = _mm256_loadu_si256((const __m256i*)(q + p * hpad + 8));
    const __m256 e0 = even_ps(w0), o0 = odd_ps(w0), e1 = even_ps(w1), o1 = odd_ps(w1);
    for (int i = 0; i < MR; ++i) {
      const __m256 ae = _mm256_broadcast_ss(k + i * ldk + 2 * p), ao = _mm256_broadcast_ss(k + i * ldk + 2 * p + 1);
      acc[i][0] = _mm256_fmadd_ps(ao, o0, _mm256_fmadd_ps(ae, e0, acc[i][0]));
      acc[i][1] = _mm256_fmadd_ps(ao, o1, _mm256_fmadd_ps(ae, e1, acc[i][1]));
    }
  }
  // Unrolled loops around the accumulators keep them in registers (else gcc stores them every step).
  const __m256 sc = _mm256_set1_ps(scale);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_ps(s + i * hpad, _mm256_mul_ps(acc[i][0], sc));
    _mm256_storeu_ps(s + i * hpad + 8, _mm256_mul_ps(acc[i][1], sc));
  }
}

// Pairs [rows][ld] (cols of them) -> fp32 [2 * rows][cols]: the even halves, then the odd ones.
static void split_pairs(const uint32_t* src, int64_t rows, int64_t ld, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; c += 8) {
      const __m256i v = _mm256_loadu_si256((const __m256i*)(src + r * ld + c));
      _mm256_storeu_ps(dst + 2 * r * cols + c, even_ps(v));
      _mm256_storeu_ps(dst + (2 * r + 1) * cols + c, odd_ps(v));
    }
}

// o[h][16 columns] = alpha[h] o + Σ_t P[t][h] V[t] for MR heads; P fp32 [nt][hpad], V fp32 [nt][16]
// (16 columns widened once for every head tile): one FMA per accumulator per key.
template <int MR>
void pv_tile(const float* p, int64_t hpad, int64_t nt, const float* v, const float* alpha, float* o, int64_t dv16) {
  __m256 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m256 a = _mm256_set1_ps(alpha[i]);
    acc[i][0] = _mm256_mul_ps(_mm256_loadu_ps(o + i * dv16), a);
    acc[i][1] = _mm256_mul_ps(_mm256_loadu_ps(o + i * dv16 + 8), a);
  }
  for (int64_t t = 0; t < nt; ++t) {
    const __m256 v0 = _mm256_loadu_ps(v + t * 16), v1 = _mm256_loadu_ps(v + t * 16 + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 pv = _mm256_broadcast_ss(p + t * hpad + i);
      acc[i][0] = _mm256_fmadd_ps(pv, v0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(pv, v1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_ps(o + i * dv16, acc[i][0]);
    _mm256_storeu_ps(o + i * dv16 + 8, acc[i][1]);
  }
}

// Keys per scores tile: 2 * kRows accumulators, four widened operands and two broadcasts fit the 16
// registers. Heads per P·V tile: 12 accumulators, two value vectors and a broadcast.
constexpr int kRows = 4;
constexpr int kPvRows = 6;
using ScoresRows = void (*)(const float*, int64_t, const uint32_t*, int64_t, int64_t, float, float*);
using PvRows = void (*)(const float*, int64_t, int64_t, const float*, const float*, float*, int64_t);
constexpr ScoresRows scores_by_rows[kRows] = {scores_tile<1>, scores_tile<2>, scores_tile<3>, scores_tile<4>};
constexpr PvRows pv_by_rows[kPvRows] = {pv_tile<1>, pv_tile<2>, pv_tile<3>, pv_tile<4>, pv_tile<5>, pv_tile<6>};

#else  // portable

template <int MR, int NB>
void scores_tile(const bf16_t* keys, int64_t ldk, const uint32_t* q, int64_t dp2, int64_t hpad, float scale, float* s) {
  for (int i = 0; i < MR; ++i) {
    for (int h = 0; h < NB * 16; ++h) {
      float acc = 0.0f;
      for (int64_t p = 0; p < dp2; ++p) {
        const uint32_t k = load_pair(keys + i * ldk + 2 * p), w = q[p * hpad + h];
        acc += bf16_to_f32(static_cast<bf16_t>(k)) * bf16_to_f32(static_cast<bf16_t>(w)) +
               bf16_to_f32(static_cast<bf16_t>(k >> 16)) * bf16_to_f32(static_cast<bf16_t>(w >> 16));
      }
      s[i * hpad + h] = acc * scale;
    }
  }
}

template <int MR, int NB>
void pv_tile(const uint32_t* ppair, int64_t hpad, int64_t np, const uint32_t* vint, int64_t dv16, const float* alpha,
             float* o) {
  for (int i = 0; i < MR; ++i) {
    for (int c = 0; c < NB * 16; ++c) {
      float acc = o[i * dv16 + c] * alpha[i];
      for (int64_t jp = 0; jp < np; ++jp) {
        const uint32_t p = ppair[jp * hpad + i], v = vint[jp * dv16 + c];
        acc += bf16_to_f32(static_cast<bf16_t>(p)) * bf16_to_f32(static_cast<bf16_t>(v)) +
               bf16_to_f32(static_cast<bf16_t>(p >> 16)) * bf16_to_f32(static_cast<bf16_t>(v >> 16));
      }
      o[i * dv16 + c] = acc;
    }
  }
}

#endif

#if !defined(__AVX2__) || defined(__AVX512BF16__)
using ScoresFn = void (*)(const bf16_t*, int64_t, const uint32_t*, int64_t, int64_t, float, float*);
using PvFn = void (*)(const uint32_t*, int64_t, int64_t, const uint32_t*, int64_t, const float*, float*);

template <int MR>
constexpr ScoresFn scores_row[kNB] = {scores_tile<MR, 1>, scores_tile<MR, 2>, scores_tile<MR, 3>, scores_tile<MR, 4>};
constexpr const ScoresFn* scores_table[kMR] = {scores_row<1>, scores_row<2>, scores_row<3>,
                                               scores_row<4>, scores_row<5>, scores_row<6>};
template <int MR>
constexpr PvFn pv_row[kNB] = {pv_tile<MR, 1>, pv_tile<MR, 2>, pv_tile<MR, 3>, pv_tile<MR, 4>};
constexpr const PvFn* pv_table[kMR] = {pv_row<1>, pv_row<2>, pv_row<3>, pv_row<4>, pv_row<5>, pv_row<6>};
#endif

}  // namespace

void sfa_scores(const bf16_t* keys, int64_t ldk, int64_t nt, const uint32_t* qpack, int64_t dp2, int64_t hv,
                float scale, float* s) {
  const int64_t hpad = hv * 16;
#if defined(__AVX2__) && !defined(__AVX512BF16__)
  // Keys kRows rows at a time as fp32 (in L1 while every head vector passes over them).
  const int64_t d2 = 2 * dp2;
  thread_local std::vector<float> kf;
  kf.resize(static_cast<size_t>(kRows * d2));
  for (int64_t t0 = 0; t0 < nt; t0 += kRows) {
    const int mr = static_cast<int>(nt - t0 < kRows ? nt - t0 : kRows);
    for (int i = 0; i < mr; ++i) {
      const bf16_t* kr = keys + (t0 + i) * ldk;
      float* kd = kf.data() + i * d2;
      int64_t d = 0;
      for (; d + 8 <= d2; d += 8)
        _mm256_storeu_ps(kd + d, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(kr + d))), 16)));
      for (; d < d2; ++d) kd[d] = bf16_to_f32(kr[d]);
    }
    for (int64_t v0 = 0; v0 < hv; ++v0)
      scores_by_rows[mr - 1](kf.data(), d2, qpack + v0 * 16, dp2, hpad, scale, s + t0 * hpad + v0 * 16);
  }
#else
  for (int64_t v0 = 0; v0 < hv; v0 += kNB) {
    const int nb = static_cast<int>(hv - v0 < kNB ? hv - v0 : kNB);
    for (int64_t t0 = 0; t0 < nt; t0 += kMR) {
      const int mr = static_cast<int>(nt - t0 < kMR ? nt - t0 : kMR);
      scores_table[mr - 1][nb - 1](keys + t0 * ldk, ldk, qpack + v0 * 16, dp2, hpad, scale, s + t0 * hpad + v0 * 16);
    }
  }
#endif
}

void sfa_softmax(const float* s, int64_t nt, int64_t hv, float* m, float* l, float* alpha, uint32_t* ppair) {
  const int64_t hpad = hv * 16, np = (nt + 1) / 2;
#if defined(__AVX512BF16__)
  for (int64_t h = 0; h < hpad; h += 16) {
    __m512 mt = _mm512_set1_ps(-INFINITY);
    for (int64_t t = 0; t < nt; ++t) mt = _mm512_max_ps(mt, _mm512_loadu_ps(s + t * hpad + h));
    const __m512 mold = _mm512_loadu_ps(m + h), mnew = _mm512_max_ps(mold, mt);
    // The first tile has m = -inf: alpha is exactly 0 there (the accumulators start at 0 anyway).
    const __mmask16 first = _mm512_cmp_ps_mask(mold, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
    const __m512 a = _mm512_maskz_mov_ps(static_cast<__mmask16>(~first), exp_ps(_mm512_sub_ps(mold, mnew)));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t jp = 0; jp < np; ++jp) {
      const int64_t t = 2 * jp;
      const __m512i lo = bf16_bits(exp_ps(_mm512_sub_ps(_mm512_loadu_ps(s + t * hpad + h), mnew)));
      const __m512i hi = t + 1 < nt ? bf16_bits(exp_ps(_mm512_sub_ps(_mm512_loadu_ps(s + (t + 1) * hpad + h), mnew)))
                                    : _mm512_setzero_si512();
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)));
      _mm512_storeu_si512(ppair + jp * hpad + h, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    _mm512_storeu_ps(m + h, mnew);
    _mm512_storeu_ps(l + h, _mm512_fmadd_ps(_mm512_loadu_ps(l + h), a, sum));
    _mm512_storeu_ps(alpha + h, a);
  }
#elif defined(__AVX2__)
  for (int64_t h = 0; h < hpad; h += 8) {
    __m256 mt = _mm256_set1_ps(-INFINITY);
    for (int64_t t = 0; t < nt; ++t) mt = _mm256_max_ps(mt, _mm256_loadu_ps(s + t * hpad + h));
    const __m256 mold = _mm256_loadu_ps(m + h), mnew = _mm256_max_ps(mold, mt);
    const __m256 first = _mm256_cmp_ps(mold, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
    const __m256 a = _mm256_andnot_ps(first, exp_ps(_mm256_sub_ps(mold, mnew)));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t jp = 0; jp < np; ++jp) {
      const int64_t t = 2 * jp;
      const __m256i lo = bf16_bits(exp_ps(_mm256_sub_ps(_mm256_loadu_ps(s + t * hpad + h), mnew)));
      const __m256i hi = t + 1 < nt ? bf16_bits(exp_ps(_mm256_sub_ps(_mm256_loadu_ps(s + (t + 1) * hpad + h), mnew)))
                                    : _mm256_setzero_si256();
      sum = _mm256_add_ps(sum, _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16)));
      sum = _mm256_add_ps(sum, _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16)));
      _mm256_storeu_si256((__m256i*)(ppair + jp * hpad + h), _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16)));
    }
    _mm256_storeu_ps(m + h, mnew);
    _mm256_storeu_ps(l + h, _mm256_fmadd_ps(_mm256_loadu_ps(l + h), a, sum));
    _mm256_storeu_ps(alpha + h, a);
  }
#else
  for (int64_t h = 0; h < hpad; ++h) {
    float mt = -INFINITY;
    for (int64_t t = 0; t < nt; ++t) mt = std::fmax(mt, s[t * hpad + h]);
    const float mold = m[h], mnew = std::fmax(mold, mt);
    const float a = mold == -INFINITY ? 0.0f : std::exp(mold - mnew);
    float sum = 0.0f;
    for (int64_t jp = 0; jp < np; ++jp) {
      const int64_t t = 2 * jp;
      const bf16_t lo = f32_to_bf16(std::exp(s[t * hpad + h] - mnew));
      const bf16_t hi = t + 1 < nt ? f32_to_bf16(std::exp(s[(t + 1) * hpad + h] - mnew)) : 0;
      sum += bf16_to_f32(lo) + bf16_to_f32(hi);
      ppair[jp * hpad + h] = lo | (static_cast<uint32_t>(hi) << 16);
    }
    m[h] = mnew;
    l[h] = l[h] * a + sum;
    alpha[h] = a;
  }
#endif
}

void sfa_pv(const uint32_t* ppair, int64_t hpad, int64_t np, const uint32_t* vint, int64_t dv16, const float* alpha,
            float* o, int64_t nh) {
  const int64_t cv = dv16 / 16;
#if defined(__AVX2__) && !defined(__AVX512BF16__)
  // P as fp32 [2 * np][hpad] once per call, V as fp32 [2 * np][16] per 16 columns (a missing odd key
  // has P = 0 and zero values).
  thread_local std::vector<float> pf, vf;
  pf.resize(static_cast<size_t>(2 * np * hpad));
  vf.resize(static_cast<size_t>(2 * np * 16));
  split_pairs(ppair, np, hpad, hpad, pf.data());
  for (int64_t c0 = 0; c0 < cv; ++c0) {
    split_pairs(vint + c0 * 16, np, dv16, 16, vf.data());
    for (int64_t h0 = 0; h0 < nh; h0 += kPvRows) {
      const int mr = static_cast<int>(nh - h0 < kPvRows ? nh - h0 : kPvRows);
      pv_by_rows[mr - 1](pf.data() + h0, hpad, 2 * np, vf.data(), alpha + h0, o + h0 * dv16 + c0 * 16, dv16);
    }
  }
#else
  for (int64_t c0 = 0; c0 < cv; c0 += kNB) {
    const int nb = static_cast<int>(cv - c0 < kNB ? cv - c0 : kNB);
    for (int64_t h0 = 0; h0 < nh; h0 += kMR) {
      const int mr = static_cast<int>(nh - h0 < kMR ? nh - h0 : kMR);
      pv_table[mr - 1][nb - 1](ppair + h0, hpad, np, vint + c0 * 16, dv16, alpha + h0, o + h0 * dv16 + c0 * 16);
    }
  }
#endif
}

void sfa_interleave(const bf16_t* r0, const bf16_t* r1, int64_t dv, int64_t dv16, uint32_t* dst) {
  int64_t c = 0;
#if defined(__AVX512F__)
  for (; c + 16 <= dv; c += 16) {
    const __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(r0 + c)));
    const __m512i b = r1 ? _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(r1 + c))) : _mm512_setzero_si512();
    _mm512_storeu_si512(dst + c, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
  }
#elif defined(__AVX2__)
  for (; c + 8 <= dv; c += 8) {
    const __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(r0 + c)));
    const __m256i b = r1 ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(r1 + c))) : _mm256_setzero_si256();
    _mm256_storeu_si256((__m256i*)(dst + c), _mm256_or_si256(a, _mm256_slli_epi32(b, 16)));
  }
#endif
  for (; c < dv; ++c) dst[c] = r0[c] | (r1 ? static_cast<uint32_t>(r1[c]) << 16 : 0u);
  for (; c < dv16; ++c) dst[c] = 0;
}

}  // namespace DSA_ISA_NS
}  // namespace sfa
}  // namespace dsa
