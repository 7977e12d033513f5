// Micro-kernels of the bf16 GEMM, one copy per ISA (gemm_isa.cc). Internal to the runtime.
#pragma once
#include <cstdint>
#include "dsa/bf16.h"
#include "dsa/gemm.h"
#include "dsa/isa.h"

namespace dsa {

// Tile limits the driver respects.
constexpr int kPackedMaxRows = 8;     // rows of x per packed-kernel call
static_assert(kGemvMaxRows <= kPackedMaxRows, "a GEMV tile holds every row of x");
constexpr int kPackedMaxPanels = 3;   // 16-column panels per packed-kernel call
constexpr int kDirectMaxRows = 4;
constexpr int kDirectMaxPanels = 4;
constexpr int64_t kScaleBlockPairs = 64;  // k-pairs of one 128-k block scale (gemm_packed_tile_scaled)

// c[mr, np*16] (+)= a[mr, 2*kp2] @ B, B in the packed layout: panel p's k-pair kk is the 32 values at
// b + p*panel_stride + kk*32. a rows are lda apart and must hold 2*kp2 readable values.
DSA_DECLARE_ISA_FN(void, gemm_packed_tile,
                   (const bf16_t* a, int64_t lda, int mr, const bf16_t* b, int64_t panel_stride, int np,
                    int64_t kp2, float* c, int64_t ldc, bool accumulate))

// c[mr, np*16] = sum over 128-k blocks kb of (a[mr, block] @ B[block]) * scale[p*scale_stride + kb] for
// panel p: block-scaled weights whose scales are applied in fp32 (not folded into the bf16 values).
// Each block's product is formed in registers and scaled into c while c is in L1.
DSA_DECLARE_ISA_FN(void, gemm_packed_tile_scaled,
                   (const bf16_t* a, int64_t lda, int mr, const bf16_t* b, int64_t panel_stride, int np,
                    int64_t kp2, const float* scale, int64_t scale_stride, float* c, int64_t ldc))

// c[mr, np*16] (+)= a[mr, K] @ W for 16-wide panels read in place: (k, p*16 + j) at
// w[p*panel_stride + k*row_stride + j] (ND: row_stride N, panel_stride 16; NZ: 16 and K*16).
DSA_DECLARE_ISA_FN(void, gemm_direct_tile,
                   (const bf16_t* a, int64_t lda, int mr, const bf16_t* w, int64_t row_stride,
                    int64_t panel_stride, int np, int64_t K, float* c, int64_t ldc, bool accumulate))

// Pack one full 16-column panel whose row k is the 16 values at src + k*row_stride (ND: row_stride N;
// NZ: 16) into the packed layout (K rounded up to even, the pad row zero): Kp/2 lines of 32 values.
DSA_DECLARE_ISA_FN(void, pack_panel16, (const bf16_t* src, int64_t row_stride, int64_t K, bf16_t* dst))

// dst[i] = f32_to_bf16(src[i]) for i < n (the same rounding and NaN rule, vectorized).
DSA_DECLARE_ISA_FN(void, f32_to_bf16_row, (const float* src, int64_t n, bf16_t* dst))

}  // namespace dsa
