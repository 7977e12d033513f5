// Micro-kernels of the FP8-weight GEMM, one copy per ISA (gemm_fp8_isa.cc), over the Fp8Packed layout
// of dsa/gemm.h. Internal to the runtime.
#pragma once
#include <cstdint>
#include <vector>

#include "dsa/bf16.h"
#include "dsa/isa.h"

namespace dsa {

constexpr int kFp8MaxRows = 4;    // rows of x per GEMV-kernel call
constexpr int kFp8MaxPanels = 4;  // 16-column panels per GEMV-kernel call
constexpr int64_t kFp8GroupsPerBlock = 32;  // 4-k groups per 128-k scale block

// e4m3 byte -> value, as fp32 and as bf16 bits (exact: 3 mantissa bits fit in bf16). The AVX-512
// byte tables are dsa/fp8_simd.h's, shared with the FP8 cache kernels.
struct Fp8Lut {
  float f32[256];
  bf16_t bf16[256];
};
const Fp8Lut& fp8_lut();

// The rows of x a GEMV tile reads: bf16 rows a (lda apart, 4*groups readable values each, zero
// padded past K), and, where fp8_gemv_widen_x made it, the same rows in the kernel's own fp32 layout
// for the whole K (wide, ld_wide apart, with unit), so column groups and K chunks share one copy.
struct Fp8GemvRows {
  const bf16_t* a;
  int64_t lda;
  const float* wide = nullptr;
  int64_t ld_wide = 0;
  const float* unit = nullptr;
};

// Where the ISA's GEMV kernel reads x widened (AVX2), mr rows of a (Kp values each, a multiple of 4)
// into wide (resized; rows 4*Kp apart) and unit[mr], and true; false where it reads the bf16 rows as
// they are (AVX-512 with VBMI, scalar), which the tile then gets with wide null.
DSA_DECLARE_ISA_FN(bool, fp8_gemv_widen_x,
                   (const bf16_t* a, int64_t lda, int mr, int64_t Kp, std::vector<float>& wide, float* unit))

// c[mr, np*16] = x[mr, :] @ W over the scale blocks [kb0, kb1): panel p's group g is the 64 bytes at
// w + p*panel_stride + g*64 and its block kb's scale is scale[p*scale_stride + kb]; `groups` is the
// panel's group count (Kp/4), which ends the last block. mr <= kFp8MaxRows, np <= kFp8MaxPanels.
// `next`, when not null, is the tile (same panel stride and k range) that this thread reads next:
// its first lines are prefetched while this tile ends.
DSA_DECLARE_ISA_FN(void, fp8_gemv_tile,
                   (const Fp8GemvRows& x, int mr, const uint8_t* w, int64_t panel_stride, const float* scale,
                    int64_t scale_stride, int np, int64_t kb0, int64_t kb1, int64_t groups, const uint8_t* next,
                    float* c, int64_t ldc))

// One Fp8Packed panel (`groups` groups) -> the bf16 Packed layout (2*groups k-pair lines of 32 values).
// exp2 == nullptr: the e4m3 values as they are; otherwise block kb's values times 2^exp2[kb] (exact:
// the caller checked that every result stays a normal bf16).
DSA_DECLARE_ISA_FN(void, fp8_panel_to_bf16, (const uint8_t* src, int64_t groups, const int* exp2, bf16_t* dst))

}  // namespace dsa
