// Score kernels of the lightning indexer, one copy per ISA. The query block of one row is packed once
// and stays in L1 while key rows stream past it: each step broadcasts one key's value (AVX-512: its
// (d, d+1) pair) and multiplies it into a vector of heads, so the product needs no key transpose.
//   AVX-512 BF16: query as bf16 pairs [dim/2][heads][2]; vdpbf16ps does the pair multiply-add.
//   AVX2:         query as fp32 [dim][heads]; a few keys at a time widened to fp32, one broadcast each.
//   portable:     query as fp32 [heads][dim], one dot product at a time.
// All accumulate in fp32; the ReLU-weighted head sum is fp32 too.
#include <cstring>
#include <vector>

#include "lightning_indexer_isa.h"

#if defined(__AVX512F__) || defined(__AVX2__)
// gcc 12's AVX-512 shuffle/extract intrinsics pass an "undefined" source that -Wuninitialized flags.
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#endif

namespace dsa {
namespace li {
namespace DSA_ISA_NS {
namespace {

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

inline int32_t load_pair(const bf16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#if defined(__AVX512BF16__)

constexpr int64_t kLanes = 16;  // heads per vector
constexpr int kMaxKeys = 4;     // keys per micro-tile: 4 keys x 4 head vectors = 16 accumulators
constexpr int kMaxHeadVecs = 4;

inline int64_t padded_heads(int64_t heads) { return round_up(heads, kLanes); }

// Keys [0, MK) against head vectors [hv0, hv0 + NH); adds (or stores, when `first`) their weighted
// ReLU sums into out[0, MK).
template <int MK, int NH>
void tile(const float* w, const bf16_t* q, int64_t hp, int64_t dim, int64_t hv0, const bf16_t* k, float* out,
          bool first) {
  __m512 acc[MK][NH];
  for (int m = 0; m < MK; ++m)
    for (int n = 0; n < NH; ++n) acc[m][n] = _mm512_setzero_ps();
  const bf16_t* qp = q + hv0 * kLanes * 2;
  const int64_t pairs = dim / 2;
  for (int64_t dp = 0; dp < pairs; ++dp, qp += hp * 2) {
    __m512bh qv[NH];
    for (int n = 0; n < NH; ++n) qv[n] = (__m512bh)_mm512_loadu_si512(qp + n * kLanes * 2);
    for (int m = 0; m < MK; ++m) {
      const __m512bh kb = (__m512bh)_mm512_set1_epi32(load_pair(k + m * dim + 2 * dp));
      for (int n = 0; n < NH; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], qv[n], kb);
    }
  }
  if (dim & 1) {  // the last value pairs with the zero the packed query holds there
    __m512bh qv[NH];
    for (int n = 0; n < NH; ++n) qv[n] = (__m512bh)_mm512_loadu_si512(qp + n * kLanes * 2);
    for (int m = 0; m < MK; ++m) {
      const __m512bh kb = (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(k[m * dim + dim - 1]));
      for (int n = 0; n < NH; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], qv[n], kb);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int m = 0; m < MK; ++m) {
    __m512 v = zero;
    for (int n = 0; n < NH; ++n)
      v = _mm512_fmadd_ps(_mm512_max_ps(acc[m][n], zero), _mm512_loadu_ps(w + (hv0 + n) * kLanes), v);
    const float s = _mm512_reduce_add_ps(v);
    out[m] = first ? s : out[m] + s;
  }
}

#elif defined(__AVX2__)

constexpr int64_t kLanes = 8;
// 6 keys x 2 head vectors = 12 accumulators, each advanced by one FMA per dimension (twelve chains
// keep both FMA pipes busy), 2 query and 1 key register; keys come as fp32 (see score_run).
constexpr int kMaxKeys = 6;
constexpr int kMaxHeadVecs = 2;

inline int64_t padded_heads(int64_t heads) { return round_up(heads, kLanes); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <int MK, int NH>
void tile(const float* w, const float* q, int64_t hp, int64_t dim, int64_t hv0, const float* k, float* out, bool first) {
  __m256 acc[MK][NH];
  for (int m = 0; m < MK; ++m)
    for (int n = 0; n < NH; ++n) acc[m][n] = _mm256_setzero_ps();
  const float* qp = q + hv0 * kLanes;
  for (int64_t d = 0; d < dim; ++d, qp += hp) {
    __m256 qv[NH];
    for (int n = 0; n < NH; ++n) qv[n] = _mm256_loadu_ps(qp + n * kLanes);
    for (int m = 0; m < MK; ++m) {
      const __m256 kv = _mm256_broadcast_ss(k + m * dim + d);
      for (int n = 0; n < NH; ++n) acc[m][n] = _mm256_fmadd_ps(qv[n], kv, acc[m][n]);
    }
  }
  // Unrolled, so the accumulators stay registers (a loop here made gcc store them at every step).
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int m = 0; m < MK; ++m) {
    __m256 v = zero;
#pragma GCC unroll 4
    for (int n = 0; n < NH; ++n)
      v = _mm256_fmadd_ps(_mm256_max_ps(acc[m][n], zero), _mm256_loadu_ps(w + (hv0 + n) * kLanes), v);
    const float s = hsum(v);
    out[m] = first ? s : out[m] + s;
  }
}

#endif

}  // namespace

#if defined(__AVX512BF16__) || defined(__AVX2__)

#if defined(__AVX512BF16__)
using QElem = bf16_t;
// bf16 pairs: (d, h) at ((d >> 1) * hp + h) * 2 + (d & 1).
inline int64_t q_elems(int64_t hp, int64_t dim) { return round_up(dim, 2) * hp; }
inline void q_put(QElem* q, int64_t hp, int64_t h, int64_t d, bf16_t v) { q[((d >> 1) * hp + h) * 2 + (d & 1)] = v; }
#else
using QElem = float;
// fp32 rows of heads: (d, h) at d * hp + h (dim rounded up to even: the size of earlier versions).
inline int64_t q_elems(int64_t hp, int64_t dim) { return round_up(dim, 2) * hp; }
inline void q_put(QElem* q, int64_t hp, int64_t h, int64_t d, bf16_t v) { q[d * hp + h] = bf16_to_f32(v); }
#endif

#if defined(__AVX512BF16__)
using TileFn = void (*)(const float*, const QElem*, int64_t, int64_t, int64_t, const bf16_t*, float*, bool);
template <int MK>
constexpr TileFn tile_row[kMaxHeadVecs] = {tile<MK, 1>, tile<MK, 2>, tile<MK, 3>, tile<MK, 4>};
constexpr const TileFn* tile_table[kMaxKeys] = {tile_row<1>, tile_row<2>, tile_row<3>, tile_row<4>};
#else
using TileFn = void (*)(const float*, const QElem*, int64_t, int64_t, int64_t, const float*, float*, bool);
template <int MK>
constexpr TileFn tile_row[kMaxHeadVecs] = {tile<MK, 1>, tile<MK, 2>};
constexpr const TileFn* tile_table[kMaxKeys] = {tile_row<1>, tile_row<2>, tile_row<3>, tile_row<4>, tile_row<5>, tile_row<6>};
#endif

int64_t query_bytes(int64_t heads, int64_t dim) {
  const int64_t hp = padded_heads(heads);
  return hp * static_cast<int64_t>(sizeof(float)) + q_elems(hp, dim) * static_cast<int64_t>(sizeof(QElem));
}

void pack_query(const bf16_t* q, const bf16_t* w, int64_t heads, int64_t dim, void* dst) {
  const int64_t hp = padded_heads(heads);
  auto* wf = static_cast<float*>(dst);
  auto* qp = reinterpret_cast<QElem*>(wf + hp);
  std::memset(dst, 0, static_cast<size_t>(query_bytes(heads, dim)));
  for (int64_t h = 0; h < heads; ++h) {
    wf[h] = bf16_to_f32(w[h]);
    for (int64_t d = 0; d < dim; ++d) q_put(qp, hp, h, d, q[h * dim + d]);
  }
}

// The tiles over n keys of the kernel's key type (AVX-512: bf16; AVX2: fp32).
template <typename Key>
void score_tiles(const void* qpack, int64_t heads, int64_t dim, const Key* keys, int64_t n, float* out) {
  const int64_t hp = padded_heads(heads);
  const auto* w = static_cast<const float*>(qpack);
  const auto* q = reinterpret_cast<const QElem*>(w + hp);
  const int64_t vecs = hp / kLanes;
  for (int64_t j = 0; j < n; j += kMaxKeys) {
    const int mk = static_cast<int>(n - j < kMaxKeys ? n - j : kMaxKeys);
    for (int64_t v = 0; v < vecs; v += kMaxHeadVecs) {
      const int nh = static_cast<int>(vecs - v < kMaxHeadVecs ? vecs - v : kMaxHeadVecs);
      tile_table[mk - 1][nh - 1](w, q, hp, dim, v, keys + j * dim, out + j, v == 0);
    }
  }
}

#if defined(__AVX512BF16__)
void score_run(const void* qpack, int64_t heads, int64_t dim, const bf16_t* keys, int64_t n, float* out) {
  score_tiles(qpack, heads, dim, keys, n, out);
}
#else
void score_run_f32(const void* qpack, int64_t heads, int64_t dim, const float* keys, int64_t n, float* out) {
  score_tiles(qpack, heads, dim, keys, n, out);
}

void score_run(const void* qpack, int64_t heads, int64_t dim, const bf16_t* keys, int64_t n, float* out) {
  // Without a bf16 dot, keys are widened to fp32 a tile at a time (in L1 for every head pass), so
  // each multiply takes a broadcast load and no per-pair shifts.
  thread_local std::vector<float> kf;
  kf.resize(static_cast<size_t>(kMaxKeys * dim));
  for (int64_t j = 0; j < n; j += kMaxKeys) {
    const int64_t count = (n - j < kMaxKeys ? n - j : kMaxKeys) * dim;
    const bf16_t* src = keys + j * dim;
    int64_t i = 0;
    for (; i + 8 <= count; i += 8)
      _mm256_storeu_ps(kf.data() + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                                          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))), 16)));
    for (; i < count; ++i) kf[i] = bf16_to_f32(src[i]);
    score_run_f32(qpack, heads, dim, kf.data(), count / dim, out + j);
  }
}
#endif

#else  // portable

int64_t query_bytes(int64_t heads, int64_t dim) {
  return (heads + heads * dim) * static_cast<int64_t>(sizeof(float));
}

void pack_query(const bf16_t* q, const bf16_t* w, int64_t heads, int64_t dim, void* dst) {
  auto* wf = static_cast<float*>(dst);
  float* qf = wf + heads;
  for (int64_t h = 0; h < heads; ++h) wf[h] = bf16_to_f32(w[h]);
  for (int64_t i = 0; i < heads * dim; ++i) qf[i] = bf16_to_f32(q[i]);
}

void score_run(const void* qpack, int64_t heads, int64_t dim, const bf16_t* keys, int64_t n, float* out) {
  const auto* w = static_cast<const float*>(qpack);
  const float* q = w + heads;
  for (int64_t j = 0; j < n; ++j) {
    const bf16_t* k = keys + j * dim;
    float s = 0.0f;
    for (int64_t h = 0; h < heads; ++h) {
      const float* qh = q + h * dim;
      float dot = 0.0f;
      for (int64_t d = 0; d < dim; ++d) dot += qh[d] * bf16_to_f32(k[d]);
      s += w[h] * (dot > 0.0f ? dot : 0.0f);
    }
    out[j] = s;
  }
}

#endif

}  // namespace DSA_ISA_NS
}  // namespace li
}  // namespace dsa
