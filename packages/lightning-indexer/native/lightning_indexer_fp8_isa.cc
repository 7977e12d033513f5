// FP8 key rows for the lightning indexer's score kernels (compiled once per ISA): a few keys at a time
// are widened to bf16 (exact) in a stack buffer that stays in L1, scored by this ISA's score_run
// against the packed FP8 query, and multiplied by their power-of-two scales; the keys after them are
// prefetched meanwhile.
#include "dsa/fp8_cache.h"
#include "dsa/fp8_simd.h"
#include "lightning_indexer_isa.h"

namespace dsa {
namespace li {
namespace DSA_ISA_NS {

void score_run_fp8(const void* qpack, int64_t heads, int64_t dim, const uint8_t* rows, int64_t n, const uint8_t* after,
                   int64_t after_n, float* out) {
  constexpr int64_t kKeys = 32;    // 8 KB of bf16 keys at dim 128
  constexpr int64_t kSubKeys = 8;  // keys scored between two rounds of prefetches
  bf16_t keys[kKeys * kFp8Block];
  const int64_t rb = fp8_index_row_bytes(dim);
  for (int64_t j = 0; j < n; j += kKeys) {
    const int64_t m = n - j < kKeys ? n - j : kKeys;
    e4m3_rows_to_bf16(rows + j * rb, rb, m, dim, keys, dim);
    // The next keys' lines (of this run, else of the next) are fetched a few at a time while these
    // are scored: widening them would otherwise wait for memory with no score work beside it, and a
    // burst of prefetches would stall on the core's miss buffers.
    const bool last = j + m == n;
    const uint8_t* next = last ? after : rows + (j + m) * rb;
    const int64_t next_n = last ? after_n : n - j - m;
    const int64_t next_bytes = (next_n < kKeys ? next_n : kKeys) * rb;
    const int64_t step = ((next_bytes + m - 1) / m + 63) / 64 * 64 * kSubKeys;
    for (int64_t t = 0, o = 0; t < m; t += kSubKeys) {
      for (const int64_t end = o + step < next_bytes ? o + step : next_bytes; o < end; o += 64) __builtin_prefetch(next + o);
      score_run(qpack, heads, dim, keys + t * dim, m - t < kSubKeys ? m - t : kSubKeys, out + j + t);
    }
    for (int64_t i = 0; i < m; ++i) out[j + i] *= fp8_load_scale(rows + (j + i) * rb + dim);
  }
}

}  // namespace DSA_ISA_NS
}  // namespace li
}  // namespace dsa
