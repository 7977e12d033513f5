// FP8 key rows for the lightning indexer's score kernels (compiled once per ISA): a few keys at a time
// are widened to bf16 (exact) in a stack buffer that stays in L1, scored by this ISA's score_run
// against the packed FP8 query, and multiplied by their power-of-two scales.
#include "dsa/fp8_cache.h"
#include "dsa/fp8_simd.h"
#include "lightning_indexer_isa.h"

namespace dsa {
namespace li {
namespace DSA_ISA_NS {

void score_run_fp8(const void* qpack, int64_t heads, int64_t dim, const uint8_t* rows, int64_t n, float* out) {
  constexpr int64_t kKeys = 32;  // 8 KB of bf16 keys at dim 128
  bf16_t keys[kKeys * kFp8Block];
  const int64_t rb = fp8_index_row_bytes(dim);
  for (int64_t j = 0; j < n; j += kKeys) {
    const int64_t m = n - j < kKeys ? n - j : kKeys;
    e4m3_rows_to_bf16(rows + j * rb, rb, m, dim, keys, dim);
    score_run(qpack, heads, dim, keys, m, out + j);
    for (int64_t i = 0; i < m; ++i) out[j + i] *= fp8_load_scale(rows + (j + i) * rb + dim);
  }
}

}  // namespace DSA_ISA_NS
}  // namespace li
}  // namespace dsa
