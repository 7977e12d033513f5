// Lightning indexer (stage 3 of DSA): index scores over the paged key cache and the top-k selection.
//
//   eff(bi, i)  = act[bi] - (s1 - 1 - i)   (sparse_mode 3)   or   act[bi]   (sparse_mode 0)
//   S[j]        = sum_h f32(w[bi,i,h]) * max(0, q[bi,i,h,:] . key(j))      fp32, for logical j < eff
//   key(j)      = index_k_cache row  block_table[bi, j / block_size] * block_size + j % block_size
//   indices     = the topk logical positions by descending S, ties to the smaller position, -1 padded;
//                 a row with eff <= 0 gets all -1.
//
// FP8 key cache (index_k_cache8, dim 128; dsa/fp8_cache.h): each query head is rotated by the same
// normalized Hadamard matrix as the keys (fp32, rounded to bf16) and quantized as one ue8m0 group, and
//   S[j] = kscale(j) * sum_h (w[h] * qscale[h]) * max(0, q8[h] . k8(j))
// (the positive power-of-two scales commute with the ReLU; e4m3 products are exact in fp32).
//
// Plain C++ over caller-owned buffers; no Node-API. `run` splits every row into key chunks over the
// dsa thread pool (so b = 1 with 128K keys uses every thread), keeps only each chunk's top-k
// candidates, then merges them per row; memory stays bounded for any s1 x act.
#pragma once
#include <cstdint>

#include "dsa/bf16.h"
#include "dsa/status.h"

namespace dsa {
namespace li {

// Where a call's time went (for benchmarks): CPU seconds summed over threads for scoring and for
// top-k selection, and the wall time of the per-row merge phases (where threads may idle).
struct Timing {
  double score_seconds = 0;
  double select_seconds = 0;
  double merge_wall_seconds = 0;
};

struct Args {
  const bf16_t* query = nullptr;          // [b, s1, heads, dim]
  const bf16_t* weights = nullptr;        // [b, s1, heads]
  const bf16_t* index_k_cache = nullptr;  // [block_num, block_size, 1, dim]
  const uint8_t* index_k_cache8 = nullptr;  // or the FP8 form [block_num, block_size, 1, dim + 4] (dim 128)
  const int32_t* block_table = nullptr;   // [b, max_blocks]
  const int32_t* act_seqs = nullptr;      // [b]
  int64_t b = 0, s1 = 0, heads = 0, dim = 0;
  int64_t block_num = 0, block_size = 0, max_blocks = 0;
  int64_t topk = 2048;
  int sparse_mode = 3;                    // 3: right-down causal; 0: every query row sees act keys
  int32_t* indices = nullptr;             // out [b, s1, topk]
  float* scores = nullptr;                // optional out [b, s1, scores_len], -inf past eff; null: not wanted
  int64_t scores_len = 0;                 // row length of `scores`, at least max_act(args)
  Timing* timing = nullptr;               // optional: adds this call's time split (a few clock reads per task)
};

// Every shape, option, act and block-table check; reads the int32 inputs, writes nothing.
Status validate(const Args& args) noexcept;

// Validates (as above), then fills `indices` (and `scores` when given). Multi-threaded on the dsa pool.
Status run(const Args& args) noexcept;

// The largest act_seqs entry (0 when b == 0): the row length `scores` needs. Call after validate.
int64_t max_act(const Args& args) noexcept;

}  // namespace li
}  // namespace dsa
