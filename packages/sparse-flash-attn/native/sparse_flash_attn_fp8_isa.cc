// FP8 latent rows for the sparse attention's gather, one copy per ISA: each 128-value tile widened to
// bf16 and multiplied by its power-of-two scale in registers (exact), the bf16 rope part copied.
#include <cstring>

#include "dsa/fp8_cache.h"
#include "dsa/fp8_simd.h"
#include "sparse_flash_attn_isa.h"

namespace dsa {
namespace sfa {
namespace DSA_ISA_NS {

void sfa_dequant_row(const uint8_t* row, int64_t kv_lora, int64_t rope, bf16_t* dst) {
  const int64_t tiles = kv_lora / kFp8Block;
#if defined(__AVX512F__)
  // Power-of-two tile scales (as the prolog writes them): the whole row in one table pass.
  constexpr int64_t kMaxTiles = 16;
  int shifts[kMaxTiles];
  bool pow2 = tiles <= kMaxTiles && e4m3_vbmi();
  for (int64_t g = 0; pow2 && g < tiles; ++g) pow2 = e4m3_pow2_shift(fp8_load_scale(row + kv_lora + 4 * g), &shifts[g]);
  if (pow2) {
    e4m3_rows_to_bf16_vbmi(row, 0, 1, kv_lora, shifts, kFp8Block, dst, 0);
    if (rope) std::memcpy(dst + kv_lora, row + kv_lora + 4 * tiles, static_cast<size_t>(rope) * 2);
    return;
  }
#endif
  for (int64_t g = 0; g < tiles; ++g)
    e4m3_to_bf16_scaled(row + g * kFp8Block, kFp8Block, fp8_load_scale(row + kv_lora + 4 * g), dst + g * kFp8Block);
  if (rope) std::memcpy(dst + kv_lora, row + kv_lora + 4 * tiles, static_cast<size_t>(rope) * 2);
}

}  // namespace DSA_ISA_NS
}  // namespace sfa
}  // namespace dsa
