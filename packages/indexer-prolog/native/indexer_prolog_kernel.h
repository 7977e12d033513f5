// Indexer prolog (stage 2 of DSA) as a plain C++ kernel over raw pointers. Per token t:
//   query[t]   = RoPE_head(bf16(q_norm[t] @ w_qb))              -> bf16, RoPE on the first `rope` dims of each head
//   key        = RoPE(bf16(LayerNorm(f32(x[t] @ w_k))))         -> bf16, written to index_k_cache[cache_index[t]]
//   weights[t] = bf16(x[t] @ w_proj)                            (no scale)
// FP8 key cache (index_k_cache8 instead of index_k_cache, head_dim 128): the bf16 key times the
// normalized Sylvester–Hadamard matrix (fp32, rounded to bf16), quantized as one ue8m0 group:
// 128 e4m3 bytes ‖ the fp32 scale per slot (dsa/fp8_cache.h).
// Dimensions come from the caller (the binding reads them from tensor shapes). Nothing here throws:
// every function returns a Status, and validate() checks everything before run() writes anything.
//
// The fused operator computes x @ [W_DQ | W_DKVKR | w_k | w_proj] in one pass over x itself, then calls
// run_from_projections() with its fp32 columns; run() is "the x products, then run_from_projections".
#pragma once
#include <cstdint>

#include "dsa/bf16.h"
#include "dsa/gemm.h"
#include "dsa/status.h"

namespace dsa {
namespace ip {

enum class RopeMode : int {
  Interleaved = 0,  // pairs (2j, 2j+1), output stored de-interleaved (evens then odds)
  Half = 1,         // pairs (j, j + rope/2) (NeoX)
};

struct Args {
  int64_t tokens = 0;      // T = b * s1
  int64_t hidden = 0;      // h
  int64_t q_lora = 0;      // q_lora rank
  int64_t heads = 0;       // indexer heads
  int64_t head_dim = 0;    // indexer head dim
  int64_t rope = 0;        // RoPE width: even, <= head_dim
  int64_t cache_rows = 0;  // blocks * block_size (rows of index_k_cache)

  const bf16_t* x = nullptr;       // [tokens, hidden]
  const bf16_t* q_norm = nullptr;  // [tokens, q_lora]
  WeightView w_qb;                 // [q_lora, heads * head_dim]  ND, NZ, Packed or FP8 (Fp8NT/Fp8ND/Fp8Packed)
  WeightView w_k;                  // [hidden, head_dim]
  WeightView w_proj;               // [hidden, heads]
  // Optional [hidden, head_dim + heads] = [w_k | w_proj] (one pass over x). Used instead of w_k and
  // w_proj when present().
  WeightView w_kproj;
  const bf16_t* gamma_k = nullptr;   // [head_dim] LayerNorm scale
  const bf16_t* beta_k = nullptr;    // [head_dim] LayerNorm shift
  const bf16_t* sin = nullptr;       // [tokens, rope] element-wise coefficients
  const bf16_t* cos = nullptr;       // [tokens, rope]
  const int32_t* cache_index = nullptr;  // [tokens] global slot; negative: not written
  bf16_t* index_k_cache = nullptr;       // [cache_rows, head_dim], updated in place
  uint8_t* index_k_cache8 = nullptr;     // FP8 form [cache_rows, head_dim + 4]; then index_k_cache is null

  bf16_t* query = nullptr;    // out [tokens, heads, head_dim]
  bf16_t* weights = nullptr;  // out [tokens, heads]

  float layer_norm_eps = 1e-6f;
  RopeMode rope_mode = RopeMode::Interleaved;
};

// Every check run() needs (dimensions, weight views, pointers, eps, slots in range and distinct).
// Reads cache_index; writes nothing.
Status validate(const Args& a) noexcept;

// The same without the x side (x, w_k, w_proj, w_kproj, hidden are not read): what
// run_from_projections() needs.
Status validate_from_projections(const Args& a) noexcept;

// The whole stage, multi-threaded on the dsa pool. Validates first; on error nothing is written.
Status run(const Args& a) noexcept;

// The stage from the fp32 x products on: k_f32 row t holds f32(x[t] @ w_k) (head_dim values, rows
// ld_k apart), w_f32 row t holds f32(x[t] @ w_proj) (heads values, rows ld_w apart). Does
// q_norm @ w_qb, both RoPEs, the LayerNorm, the rounding to bf16 and the cache scatter.
// Validates with validate_from_projections() first.
Status run_from_projections(const Args& a, const float* k_f32, int64_t ld_k, const float* w_f32,
                            int64_t ld_w) noexcept;

}  // namespace ip
}  // namespace dsa
