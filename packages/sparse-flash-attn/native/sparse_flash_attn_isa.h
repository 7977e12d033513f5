// Per-ISA hot loops of the sparse flash attention (sparse_flash_attn_isa.cc, compiled once per ISA).
// Internal to the kernel. Layouts (hpad = 16 * hv heads, zero padded; pairs are two bf16 in one
// 32-bit word, the lower index in the low half, which is what vdpbf16ps multiplies pairwise):
//   keys   [nt][ldk]            gathered key rows (kv ‖ kr, zero padded to an even width 2*dp2)
//   qpack  [dp2][hpad] pairs    (q[h][2p], q[h][2p+1])
//   s      [nt][hpad] fp32      scaled logits, one row per key
//   ppair  [np][hpad] pairs     (P[h][2j], P[h][2j+1]) in bf16, np = ceil(nt / 2)
//   vint   [np][dv16] pairs     (v[2j][c], v[2j+1][c]), dv16 = kv_lora rounded up to 16
//   o      [nh][dv16] fp32      unnormalized output accumulator
#pragma once
#include <cstdint>

#include "dsa/bf16.h"
#include "dsa/isa.h"

namespace dsa {
namespace sfa {

DSA_DECLARE_ISA_FN(void, sfa_scores,
                   (const bf16_t* keys, int64_t ldk, int64_t nt, const uint32_t* qpack, int64_t dp2, int64_t hv,
                    float scale, float* s))

// Online-softmax step for one tile: per head, m' = max(m, max_t s), alpha = exp(m - m'),
// P = bf16(exp(s - m')) written as pairs (a missing odd key gets 0), l = l * alpha + Σ P.
DSA_DECLARE_ISA_FN(void, sfa_softmax,
                   (const float* s, int64_t nt, int64_t hv, float* m, float* l, float* alpha, uint32_t* ppair))

// o[h] = alpha[h] * o[h] + Σ_j P-pair[j][h] · V-pair[j], for the first nh heads.
DSA_DECLARE_ISA_FN(void, sfa_pv,
                   (const uint32_t* ppair, int64_t hpad, int64_t np, const uint32_t* vint, int64_t dv16,
                    const float* alpha, float* o, int64_t nh))

// dst[c] = (r0[c], r1[c]) pairs for c < dv, zero pairs up to dv16. r1 == nullptr reads zeros.
DSA_DECLARE_ISA_FN(void, sfa_interleave, (const bf16_t* r0, const bf16_t* r1, int64_t dv, int64_t dv16, uint32_t* dst))

// One FP8 latent row (sparse_flash_attn_fp8_isa.cc) into a bf16 key row: kv_lora values, each times
// its tile's scale (exact), then the rope values.
DSA_DECLARE_ISA_FN(void, sfa_dequant_row, (const uint8_t* row, int64_t kv_lora, int64_t rope, bf16_t* dst))

}  // namespace sfa
}  // namespace dsa
