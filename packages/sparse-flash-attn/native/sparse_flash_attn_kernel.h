// Sparse flash attention (stage 4 of DSA): each query row attends, for every head, to the cache
// entries its top-k indices select. Plain C++ over caller-owned buffers; @dsa/fused calls run()
// directly on its own buffers, this package's binding calls it on JS typed arrays.
//
// For row (bi, i) with eff = act[bi] - (s1 - 1 - i) (sparse_mode 3) or act[bi] (sparse_mode 0):
//   keys   k_t = kv_cache[slot(t)] ‖ kr_cache[slot(t)]           (kv_lora + rope wide)
//   values v_t = kv_cache[slot(t)]                                (kv_lora wide)
//   slot(t) = block_table[bi, p / block_size] * block_size + p % block_size, p = indices[bi, i, t]
//   z_{h,t} = softmax_scale * (q_nope[h] ‖ q_rope[h]) · k_t        fp32
//   out[h]  = bf16( Σ_t softmax_t(z_{h,·}) v_t )                    fp32 softmax, bf16 dot products
// over the valid t (indices != -1). A row without valid indices gets zeros.
// FP8 latent cache (kv_cache8 instead of kv_cache and kr_cache; dsa/fp8_cache.h): the gather turns
// each 656-byte row into the same bf16 key row, value times its tile scale, which bf16 holds exactly,
// so everything after the gather is the bf16 path on the exact dequantized values.
// Precision note: like the Ascend kernel, P = exp(z - running max) is rounded to bf16 before P·V and
// the row sum adds those rounded values, so the weights stay a convex combination.
#pragma once
#include <atomic>
#include <cstdint>

#include "dsa/bf16.h"
#include "dsa/status.h"

namespace dsa {
namespace sfa {

// Optional timing for benchmarks, summed over threads (nanoseconds).
struct Profile {
  std::atomic<int64_t> gather_ns{0};  // reading rows through the block table into the key/value tiles
  std::atomic<int64_t> total_ns{0};   // all task time, the gather included
};

struct Args {
  // Inputs, contiguous row-major (bf16 as raw bits).
  const bf16_t* q_nope = nullptr;       // [b, s1, n, kv_lora]
  const bf16_t* q_rope = nullptr;       // [b, s1, n, rope]
  const bf16_t* kv_cache = nullptr;     // [blocks, block_size, 1, kv_lora]
  const bf16_t* kr_cache = nullptr;     // [blocks, block_size, 1, rope]
  const uint8_t* kv_cache8 = nullptr;   // or FP8 [blocks, block_size, 1, fp8_kv_row_bytes]; then both above are null
  const int32_t* indices = nullptr;     // [b, s1, topk] logical positions, -1 = skip
  const int32_t* block_table = nullptr; // [b, max_blocks]
  const int32_t* act_seqs = nullptr;    // [b] keys per sequence, the s1 new tokens included
  // Output: every element is written when run() returns Ok; nothing is written when validation fails.
  bf16_t* out = nullptr;                // [b, s1, n, kv_lora]

  int64_t b = 0, s1 = 0, n = 0, kv_lora = 0, rope = 0;
  int64_t blocks = 0, block_size = 0, topk = 0, max_blocks = 0;
  float softmax_scale = 0.0f;  // 0 selects the default (kv_lora + rope)^-0.5
  int sparse_mode = 3;         // 3: row i sees act - (s1-1-i) keys; 0: every row sees act keys
  Profile* profile = nullptr;  // optional
};

// (kv_lora + rope)^-0.5, the default softmax scale.
float default_softmax_scale(int64_t kv_lora, int64_t rope) noexcept;

// Every dimension, option, act_seqs entry, index and block-table entry run() would read.
// Reads the inputs, writes nothing. Messages name the argument, the expected and the actual value.
Status validate(const Args& a) noexcept;

// validate(), then the attention on the dsa thread pool into a.out. Scratch is per thread, reused
// across calls, and bounded by n and the head widths (never by b, s1 or topk).
Status run(const Args& a) noexcept;

}  // namespace sfa
}  // namespace dsa
