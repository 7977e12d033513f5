// Stored FP8 e4m3 weight rows (128×128-style block scales, multiply) to bf16, as stored or
// transposed: the conversion a checkpoint loader runs on every strip of rows it reads.
#pragma once
#include <cstdint>

namespace dsa {

struct E4m3Rows {
  const uint8_t* src;    // rows × cols bytes, row-major: rows row0 .. row0 + rows − 1 of the matrix
  int64_t row0, rows, cols;
  const float* scale;    // the whole matrix's scales [ceil(R / block_rows), ceil(cols / block_cols)]
  int64_t block_rows, block_cols;
  uint16_t* dst;         // row r (0-based in the strip), column c at c·ld + r (transposed) or r·ld + c
  int64_t ld;
  bool transposed;
};

// Each value becomes bf16(f32(e4m3 · scale)), through one 256-entry table per block; blocks run on
// the thread pool (they write disjoint parts of dst).
void e4m3_rows_to_bf16(const E4m3Rows& a);

}  // namespace dsa
