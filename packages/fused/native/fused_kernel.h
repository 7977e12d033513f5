// The whole DSA operator as one native call over the four stages' kernels (compiled into this
// addon): one pass over x for the four products that read it (x @ [W_DQ | W_DKVKR | W_idx_k |
// W_idx_proj], one packed weight prepared once), then the two prologs from those products, the
// lightning indexer and the sparse attention, with every intermediate in a reused workspace.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "dsa/gemm.h"
#include "dsa/large_alloc.h"
#include "dsa/status.h"

namespace dsa {
namespace fused {

struct Dims {
  int64_t h = 0, q_lora = 0, n = 0, qk_nope = 0, kv_lora = 0, rope = 0, idx_heads = 0, idx_dim = 0;
  int64_t x_cols() const { return q_lora + kv_lora + rope + idx_dim + idx_heads; }
};

// The layer's weights as given: the 2-D ones in any bf16 format (ND, NZ, Packed) or block-scaled FP8
// (Fp8NT, Fp8ND, Fp8Packed); W_UK bf16 ND, or FP8 Fp8ND / Fp8Packed per head (mla::Args' layout).
struct WeightsIn {
  Dims d;
  WeightView w_dq, w_uq_qr, w_dkv_kr, w_idx_qb, w_idx_k, w_idx_proj;
  const bf16_t* w_uk = nullptr;  // [n, qk_nope, kv_lora] ND
  const uint8_t* w_uk_fp8 = nullptr;
  const float* w_uk_scale = nullptr;
  WeightFormat w_uk_format = WeightFormat::ND;
  const bf16_t *gamma_cq = nullptr, *gamma_ckv = nullptr, *gamma_k = nullptr, *beta_k = nullptr;
};

// A weight in the kernels' layout, owned here: bf16 Packed, or FP8 Fp8Packed (half the bytes). The
// streamed bytes live in large_alloc memory (2 MiB-aligned, huge pages advised).
struct PackedWeight {
  WeightView view;  // points into the vectors below
  large_vector<bf16_t> bf16;
  large_vector<uint8_t> fp8;
  large_vector<float> scale;
  int64_t bytes() const;
};

// The weights in the kernels' layouts, owned here (the caller's buffers are not needed afterwards).
struct Prepared {
  Dims d;
  // x @ [W_DQ | W_DKVKR | W_idx_k | W_idx_proj] as few products as the dtypes allow: consecutive
  // weights of one dtype are joined column-wise (FP8 ones where the widths are multiples of 16), so
  // all-bf16 weights are one packed [h, x_cols] weight and x is read once. `col`: first column.
  struct XPart {
    int64_t col = 0;
    PackedWeight w;
  };
  std::vector<XPart> x_parts;
  PackedWeight w_uq_qr;   // [q_lora, n*(qk_nope+rope)]
  PackedWeight w_idx_qb;  // [q_lora, idx_heads*idx_dim]
  PackedWeight w_uk;      // n heads: bf16 in mla::pack_w_uk's layout, or FP8 packed per head
  std::vector<bf16_t> gamma_cq, gamma_ckv, gamma_k, beta_k;
  int64_t bytes() const;
};

Status prepare(const WeightsIn& in, Prepared* out) noexcept;

struct Step {
  int64_t b = 0, s1 = 0, block_num = 0, block_size = 0, max_blocks = 0;
  const bf16_t *x = nullptr, *sin = nullptr, *cos = nullptr;  // [b,s1,h], [b,s1,rope] x2
  const int32_t* cache_index = nullptr;                       // [b, s1]
  const int32_t* block_table = nullptr;                       // [b, max_blocks]
  const int32_t* act_seqs = nullptr;                          // [b]
  bf16_t *kv_cache = nullptr, *kr_cache = nullptr, *index_k_cache = nullptr;  // updated in place
  // FP8 caches (dsa/fp8_cache.h), each instead of its bf16 form: the 656-byte latent rows replace
  // kv_cache and kr_cache, the 132-byte key rows replace index_k_cache. Either may be used alone.
  uint8_t *kv_cache8 = nullptr, *index_k_cache8 = nullptr;
  double softmax_scale = 0, rms_norm_eps = 1e-5, layer_norm_eps = 1e-6;
  int indexer_rope = 0;  // 0 interleaved, 1 half
  int64_t topk = 2048;
  int sparse_mode = 3;
  bf16_t* out = nullptr;       // [b, s1, n, kv_lora]
  int32_t* indices = nullptr;  // optional [b, s1, topk]; null: kept in the workspace
  // Optional cancel cell (an Int32Array element set by JS from an AbortSignal). When non-zero at a
  // check point (between phases, between row chunks of the indexer and the attention), run()
  // restores the cache rows it wrote and returns Code::Aborted.
  const int32_t* cancel = nullptr;
};

// Milliseconds per phase of the last run.
struct Times {
  double projections = 0, mla_prolog = 0, indexer_prolog = 0, lightning_indexer = 0, sparse_flash_attention = 0;
};

// Intermediates reused from call to call (grown, never shrunk).
struct Workspace {
  std::vector<float> proj;
  std::vector<bf16_t> q_nope, q_rope, q_norm, query, weights;
  std::vector<int32_t> indices;
  std::vector<uint8_t> saved_rows;  // cache rows a cancellable call overwrites, to put back on abort
};

// Validates everything the four stages will read or write before anything is written, then runs.
Status run(const Prepared& p, const Step& s, Workspace& ws, Times* times) noexcept;

}  // namespace fused
}  // namespace dsa
