#include "dequant.h"

#include <algorithm>

#include "dsa/bf16.h"
#include "dsa/fp8.h"
#include "dsa/thread_pool.h"

namespace dsa {

void e4m3_rows_to_bf16(const E4m3Rows& a) {
  if (a.rows <= 0 || a.cols <= 0) return;
  const int64_t br = a.block_rows, bc = a.block_cols;
  const int64_t scale_cols = (a.cols + bc - 1) / bc;
  const int64_t first = a.row0 / br, last = (a.row0 + a.rows - 1) / br;
  parallel_tasks((last - first + 1) * scale_cols, [&](int64_t task, int) {
    const int64_t rb = first + task / scale_cols, cb = task % scale_cols;
    const int64_t r0 = std::max(rb * br, a.row0) - a.row0, r1 = std::min((rb + 1) * br, a.row0 + a.rows) - a.row0;
    const int64_t c0 = cb * bc, c1 = std::min(c0 + bc, a.cols);
    const float s = a.scale[rb * scale_cols + cb];
    uint16_t lut[256];
    for (int b = 0; b < 256; ++b) lut[b] = f32_to_bf16(e4m3_to_f32(static_cast<uint8_t>(b)) * s);
    if (a.transposed) {
      // 8 source rows at a time: each pass over the columns reads 8 cache lines and writes 8
      // consecutive bf16 of each destination row.
      int64_t r = r0;
      for (; r + 8 <= r1; r += 8) {
        const uint8_t* sp = a.src + r * a.cols;
        for (int64_t c = c0; c < c1; ++c) {
          uint16_t* d = a.dst + c * a.ld + r;
          for (int k = 0; k < 8; ++k) d[k] = lut[sp[k * a.cols + c]];
        }
      }
      for (; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) a.dst[c * a.ld + r] = lut[a.src[r * a.cols + c]];
    } else {
      for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* sp = a.src + r * a.cols;
        uint16_t* d = a.dst + r * a.ld;
        for (int64_t c = c0; c < c1; ++c) d[c] = lut[sp[c]];
      }
    }
  });
}

}  // namespace dsa
