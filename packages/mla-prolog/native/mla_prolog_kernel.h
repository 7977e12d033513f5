// MLA prolog (stage 1 of DSA) as a plain C++ kernel: x -> absorbed queries, rope queries, the
// normalized query latent, and the latent/rope cache rows of the new tokens. No Node-API here: the
// binding and the fused package call these functions directly.
//
// Math (spec background.md §3.1, §3.2, §6), per token t:
//   qa = bf16(x @ W_DQ); q_norm = bf16(RMSNorm(qa) * gamma_cq); q = bf16(q_norm @ W_UQQR)
//   per head h: q_nope[h] = bf16(q[h, :qk_nope] @ W_UK[h]); q_rope[h] = bf16(RoPE(q[h, qk_nope:]))
//   kva = bf16(x @ W_DKVKR); kv_cache[slot] = bf16(RMSNorm(kva[:kv_lora]) * gamma_ckv);
//   kr_cache[slot] = bf16(RoPE(kva[kv_lora:]))           (slot = cache_index[t]; slot < 0: no write)
// FP8 cache (kv_cache8 instead of kv_cache and kr_cache): the same bf16 latent, quantized per tile of
// 128 (dsa/fp8_cache.h), then the bf16 rope values, in one 656-byte row per slot.
// RoPE is the interleaved form with element-wise cos/sin, output de-interleaved:
//   out[j] = x[2j] c[j] - x[2j+1] s[j],  out[r/2 + j] = x[2j+1] c[r/2 + j] + x[2j] s[r/2 + j].
#pragma once
#include <cstdint>

#include "dsa/gemm.h"
#include "dsa/status.h"

namespace dsa {
namespace mla {

struct Args {
  // Dimensions. T = b * s1 tokens; the caches hold block_num * block_size rows.
  int64_t T = 0, h = 0, q_lora = 0, n = 0, qk_nope = 0, rope = 0, kv_lora = 0;
  int64_t block_num = 0, block_size = 0;

  const bf16_t* x = nullptr;  // [T, h]
  WeightView w_dq;            // [h, q_lora]               ND | NZ | Packed | Fp8NT | Fp8ND | Fp8Packed
  WeightView w_uq_qr;         // [q_lora, n*(qk_nope+rope)] likewise (per head: nope then rope)
  WeightView w_dkv_kr;        // [h, kv_lora+rope]          likewise (latent then rope)
  // W_UK: n matrices [qk_nope, kv_lora]. ND: one [n, qk_nope, kv_lora] array. Packed: head i's packed
  // matrix (dsa::pack_weights of W_UK[i]) starts at w_uk + i * packed_elements(qk_nope, kv_lora).
  // Fp8ND / Fp8Packed: head i's bytes at w_uk_fp8 + i * fp8_bytes(format, qk_nope, kv_lora) and its
  // scales at w_uk_scale + i * fp8_scales(format, qk_nope, kv_lora) (kv_b_proj's rows as stored).
  const bf16_t* w_uk = nullptr;
  const uint8_t* w_uk_fp8 = nullptr;
  const float* w_uk_scale = nullptr;
  WeightFormat w_uk_format = WeightFormat::ND;
  const bf16_t* gamma_cq = nullptr;   // [q_lora]
  const bf16_t* gamma_ckv = nullptr;  // [kv_lora]
  const bf16_t* sin = nullptr;        // [T, rope]
  const bf16_t* cos = nullptr;        // [T, rope]
  const int32_t* cache_index = nullptr;  // [T] global slots; negative = skip

  bf16_t* kv_cache = nullptr;  // [block_num * block_size, kv_lora], updated in place
  bf16_t* kr_cache = nullptr;  // [block_num * block_size, rope], updated in place
  // FP8 latent cache [block_num * block_size, fp8_kv_row_bytes(kv_lora, rope)] (needs kv_lora % 128 == 0);
  // when set, kv_cache and kr_cache must be null.
  uint8_t* kv_cache8 = nullptr;
  bf16_t* q_nope = nullptr;    // out [T, n, kv_lora]
  bf16_t* q_rope = nullptr;    // out [T, n, rope]
  bf16_t* q_norm = nullptr;    // out [T, q_lora]

  double rms_norm_eps = 1e-5;
};

// Every dimension, pointer, weight shape/format and cache slot check (slots in range, no two tokens
// on one slot). Writes nothing. Messages start with the argument's API name ("cacheIndex: ...").
Status validate(const Args& a) noexcept;

// The whole stage: validate, then qa/kva products, then run_from_projections. Multi-threaded on the
// dsa pool; scratch is per calling thread, reused, and bounded by a fixed token chunk.
Status run(const Args& a) noexcept;

// Everything after the two input products, for callers that computed x @ W_DQ and x @ W_DKVKR
// themselves (the fused op does x @ [W_DQ | W_DKVKR | ...] in one pass). qa_f32 is [T, q_lora] with
// rows ld_qa floats apart, kva_f32 is [T, kv_lora + rope] with rows ld_kva apart; both unrounded
// fp32 products (rounded to bf16 here, as the spec says). a.x, a.w_dq and a.w_dkv_kr are not read.
// Validates a first; the x, W_DQ and W_DKVKR checks are skipped when a.x is null.
Status run_from_projections(const Args& a, const float* qa_f32, int64_t ld_qa, const float* kva_f32,
                            int64_t ld_kva) noexcept;

// Elements of the packed W_UK buffer for w_uk_format == Packed, and the packing itself (multi-threaded).
int64_t packed_w_uk_elements(int64_t n, int64_t qk_nope, int64_t kv_lora);
void pack_w_uk(const bf16_t* w_uk_nd, int64_t n, int64_t qk_nope, int64_t kv_lora, bf16_t* dst) noexcept;

}  // namespace mla
}  // namespace dsa
