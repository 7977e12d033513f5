// Per-ISA score kernels of the lightning indexer (lightning_indexer_isa.cc is compiled once per ISA,
// into dsa::li::scalar, dsa::li::avx2 and dsa::li::avx512). Internal to the package and to addons
// that compile its sources.
#pragma once
#include <cstdint>

#include "dsa/bf16.h"
#include "dsa/isa.h"

namespace dsa {
namespace li {

// Bytes of one query row packed for this ISA's score kernel: the fp32 head weights and the
// [heads, dim] query block in the layout the kernel streams (zero padded).
DSA_DECLARE_ISA_FN(int64_t, query_bytes, (int64_t heads, int64_t dim))

// Pack q [heads, dim] (row-major) and w [heads] into dst (query_bytes(heads, dim) bytes).
DSA_DECLARE_ISA_FN(void, pack_query, (const bf16_t* q, const bf16_t* w, int64_t heads, int64_t dim, void* dst))

// out[j] = sum_h w[h] * max(0, q[h, :] . keys[j * dim + :]) in fp32 for j < n: n key rows stored
// contiguously (a run inside one cache block). Reads exactly n * dim key values.
DSA_DECLARE_ISA_FN(void, score_run,
                   (const void* qpack, int64_t heads, int64_t dim, const bf16_t* keys, int64_t n, float* out))

// The FP8 form of one query row for the FP8 key cache: per head, bf16(H · q) quantized as one group
// (dsa/fp8_cache.h); q8 [heads, dim] gets the e4m3 values as (exact) bf16, w8 [heads] the head weights
// times the query scales (exact: powers of two). t: heads * dim floats of scratch. dim a power of two.
constexpr int64_t kMaxHeads = 256;  // heads per pass of fp8_query's per-head arrays
DSA_DECLARE_ISA_FN(void, fp8_query,
                   (const bf16_t* q, const bf16_t* w, int64_t heads, int64_t dim, float* t, bf16_t* q8, bf16_t* w8))

// score_run over n FP8 key rows (dim e4m3 bytes ‖ fp32 scale, dim <= 128) for a query packed from
// the quantized query (q8 as bf16, weights times the query scales): the scores times each key's scale.
// `after` (after_n rows, may be 0) is the run scored next: its first rows are prefetched.
DSA_DECLARE_ISA_FN(void, score_run_fp8,
                   (const void* qpack, int64_t heads, int64_t dim, const uint8_t* rows, int64_t n,
                    const uint8_t* after, int64_t after_n, float* out))

}  // namespace li
}  // namespace dsa

#if defined(__AVX2__) && !defined(__AVX512BF16__)
namespace dsa {
namespace li {
namespace DSA_ISA_NS {
// AVX2 only: score_run over fp32 keys (n rows of dim), which both the bf16 and the FP8 key paths widen to.
void score_run_f32(const void* qpack, int64_t heads, int64_t dim, const float* keys, int64_t n, float* out);
}  // namespace DSA_ISA_NS
}  // namespace li
}  // namespace dsa
#endif

// The copy of an li kernel for the active ISA (dsa/isa.h's DSA_DISPATCH, for the dsa::li namespaces).
#define LI_DISPATCH(name) ::dsa::dispatch(&::dsa::li::scalar::name, &::dsa::li::avx2::name, &::dsa::li::avx512::name)
