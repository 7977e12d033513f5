// GEMM driver for block-scaled FP8 weights (dsa/gemm.h):
//   - M <= 8: the FP8 GEMV kernel streams the Fp8Packed bytes (half the bytes of bf16), column groups
//     of 4 panels, K split like the bf16 driver when there are too few groups (at 128-k block edges).
//   - larger M: each task converts its column group to the bf16 Packed layout once and runs the bf16
//     tile on a chunk of row blocks. With a bf16 dot (AVX-512), power-of-two block scales (DeepSeek's ue8m0) are folded into
//     the bf16 values exactly; otherwise, and for other scales, they are applied in fp32 per 128-k block.
//   - Fp8NT / Fp8ND weights are packed per task on the fly (prepare them once with pack_fp8_weights).
#include <cmath>
#include <cstring>
#include <vector>

#include "dsa/fp8.h"
#include "gemm_driver.h"
#include "gemm_fp8_kernels.h"

namespace dsa {

const Fp8Lut& fp8_lut() {
  static const Fp8Lut lut = [] {
    Fp8Lut t{};
    for (int b = 0; b < 256; ++b) {
      t.f32[b] = e4m3_to_f32(static_cast<uint8_t>(b));
      t.bf16[b] = f32_to_bf16(t.f32[b]);
    }
    return t;
  }();
  return lut;
}

int64_t fp8_bytes(WeightFormat format, int64_t K, int64_t N) {
  return format == WeightFormat::Fp8Packed ? fp8_packed_bytes(K, N) : K * N;
}

int64_t fp8_scales(WeightFormat format, int64_t K, int64_t N) {
  if (format == WeightFormat::Fp8Packed) return packed_n(N) / 16 * fp8_kblocks(K);
  return fp8_kblocks(K) * fp8_kblocks(N);
}

namespace {

constexpr int64_t kMBlock = 192;        // rows per task when M is large (as the bf16 driver)
constexpr int64_t kKBlockPairs = 256;   // k-pairs per bf16 tile call when scales are folded

uint8_t byte_at(const WeightView& w, int64_t k, int64_t n) {
  return w.format == WeightFormat::Fp8NT ? w.fp8[n * w.K + k] : w.fp8[k * w.N + n];
}

float scale_at(const WeightView& w, int64_t k, int64_t n) {
  const int64_t kb = k / kFp8ScaleBlock, nb = n / kFp8ScaleBlock;
  return w.format == WeightFormat::Fp8NT ? w.scale[nb * fp8_kblocks(w.K) + kb] : w.scale[kb * fp8_kblocks(w.N) + nb];
}

// Panels [p0, p0 + np) of w in the Fp8Packed layout: in place when w is packed, else packed into the
// calling thread's buffers.
struct Panels {
  const uint8_t* bytes;
  const float* scale;
};
Panels fp8_panels(const WeightView& w, int64_t p0, int64_t np) {
  const int64_t kb = fp8_kblocks(w.K), ps = fp8_packed_k(w.K) * 16;
  if (w.format == WeightFormat::Fp8Packed) return {w.fp8 + p0 * ps, w.scale + p0 * kb};
  thread_local std::vector<uint8_t> bytes;
  thread_local std::vector<float> scales;
  bytes.resize(static_cast<size_t>(np * ps));
  scales.resize(static_cast<size_t>(np * kb));
  pack_fp8_panels(w, p0, np, bytes.data(), scales.data());
  return {bytes.data(), scales.data()};
}

// x with rows padded to Kp (zeros) when K is not a multiple of 4; else x itself.
const bf16_t* padded_x(const bf16_t* x, int64_t ldx, int64_t M, int64_t K, std::vector<bf16_t>& buf, int64_t* lda) {
  const int64_t Kp = fp8_packed_k(K);
  *lda = ldx;
  if (Kp == K) return x;
  buf.assign(static_cast<size_t>(M * Kp), 0);
  for (int64_t m = 0; m < M; ++m) std::copy(x + m * ldx, x + m * ldx + K, buf.data() + m * Kp);
  *lda = Kp;
  return buf.data();
}

void gemv(const bf16_t* a, int64_t lda, int64_t M, const WeightView& w, const GemmOut& y, const detail::Runner& run) {
  const int64_t K = w.K, N = w.N, kblocks = fp8_kblocks(K), groups = fp8_packed_k(K) / 4;
  const int64_t panels = packed_n(N) / 16, col_groups = (panels + kFp8MaxPanels - 1) / kFp8MaxPanels;
  const int64_t ps = fp8_packed_k(K) * 16;
  auto tile_fn = DSA_DISPATCH(fp8_gemv_tile);
  // Rows widened once for every task where the ISA's kernel wants it (AVX2: fp32, 16 bytes per k).
  // (The tasks use the pointer: in a lambda, the thread_local's name means the running thread's own.)
  thread_local std::vector<float> wide_buf;
  float unit[kGemvMaxRows];
  const int64_t Kp = 4 * groups;
  const float* wide = DSA_DISPATCH(fp8_gemv_widen_x)(a, lda, static_cast<int>(M), Kp, wide_buf, unit) ? wide_buf.data() : nullptr;
  detail::run_small_m(M, col_groups, kFp8MaxPanels * 16, N, K, kFp8ScaleBlock, y, run,
                      [&](int64_t g, int64_t next_g, int64_t k0, int64_t k1, float* tile, int64_t ldt) {
                        const int64_t p0 = g * kFp8MaxPanels;
                        const int np = static_cast<int>(std::min<int64_t>(kFp8MaxPanels, panels - p0));
                        const Panels src = fp8_panels(w, p0, np);
                        const int64_t kb0 = k0 / kFp8ScaleBlock, kb1 = (k1 + kFp8ScaleBlock - 1) / kFp8ScaleBlock;
                        // What this thread reads after the tile: the next group of its run, else the
                        // caller's next weight after the last group (prepacked weights only).
                        const uint8_t* next = nullptr;
                        if (w.format == WeightFormat::Fp8Packed) {
                          if (next_g >= 0) next = w.fp8 + next_g * kFp8MaxPanels * ps;
                          else if (g == col_groups - 1 && k0 == 0) next = w.fp8_next;
                        }
                        for (int64_t r = 0; r < M; r += kFp8MaxRows) {
                          const int mr = static_cast<int>(std::min<int64_t>(kFp8MaxRows, M - r));
                          // Rows past the first four read the tile again (from cache).
                          Fp8GemvRows x{a + r * lda, lda};
                          if (wide != nullptr) {
                            x.ld_wide = 4 * Kp;
                            x.wide = wide + r * x.ld_wide;
                            x.unit = unit + r;
                          }
                          tile_fn(x, mr, src.bytes, ps, src.scale, kblocks, np, kb0, kb1, groups,
                                  r + mr >= M ? next : src.bytes, tile + r * ldt, ldt);
                        }
                      });
}

// Exponents of the scales of np panels when every one is a power of two that keeps each e4m3 value
// (2^-9 .. 448) a normal bf16 after scaling; false otherwise.
bool pow2_exponents(const float* scale, int64_t count, std::vector<int>& exps) {
  exps.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    int e = 0;
    const float s = scale[i];
    if (!(s > 0.0f) || std::frexp(s, &e) != 0.5f || e - 1 < -117 || e - 1 > 118) return false;
    exps[i] = e - 1;
  }
  return true;
}

void gemm(const bf16_t* a, int64_t lda, int64_t M, const WeightView& w, const GemmOut& y, const detail::Runner& run) {
  const int64_t K = w.K, N = w.N, kblocks = fp8_kblocks(K), groups = fp8_packed_k(K) / 4, kp2 = 2 * groups;
  const int64_t panels = packed_n(N) / 16, panel_stride = kp2 * 32;
  constexpr int64_t G = kPackedMaxPanels;
  const int64_t col_groups = (panels + G - 1) / G;
  const int64_t mb = std::min(M, kMBlock), mblocks = (M + mb - 1) / mb;
  // A task converts its column group once and runs a chunk of row blocks on it: chunks of every row
  // block when the groups alone give about 32 tasks per thread, else fewer rows per task so the
  // threads end together (47 whole-M tasks on 2 threads left one idle for 2% of the call).
  // (Rows are independent: the split does not change any result.)
  const int64_t want = 32 * static_cast<int64_t>(run.parallel ? num_threads() : 1);
  const int64_t split = std::min(mblocks, (want + col_groups - 1) / col_groups);
  const int64_t per_chunk = (mblocks + split - 1) / split, chunks = (mblocks + per_chunk - 1) / per_chunk;
  const int64_t tasks = col_groups * chunks;
  auto tile_fn = DSA_DISPATCH(gemm_packed_tile);
  auto convert_fn = DSA_DISPATCH(fp8_panel_to_bf16);
  const bool bf16_dot = active_isa() == Isa::Avx512;
  auto scaled_fn = DSA_DISPATCH(gemm_packed_tile_scaled);
  run(tasks, [&](int64_t t, int) {
    const int64_t p0 = (t % col_groups) * G;
    const int np = static_cast<int>(std::min<int64_t>(G, panels - p0));
    const Panels src = fp8_panels(w, p0, np);
    thread_local std::vector<int> exps;
    // Folding pays where the tile is a bf16 dot (AVX-512): the tile then runs over 512 k at a time.
    // Without one, the scaled tile is as exact and makes one pass over K (AVX2: 3-10% faster).
    const bool folded = bf16_dot && pow2_exponents(src.scale, np * kblocks, exps);
    thread_local std::vector<bf16_t> b;
    b.resize(static_cast<size_t>(np * panel_stride));
    for (int p = 0; p < np; ++p)
      convert_fn(src.bytes + p * groups * 64, groups, folded ? exps.data() + p * kblocks : nullptr, b.data() + p * panel_stride);
    const int64_t ldt = np * 16;
    thread_local std::vector<float> ctile;
    const int64_t mb0 = (t / col_groups) * per_chunk, mb1 = std::min(mblocks, mb0 + per_chunk);
    for (int64_t mbi = mb0; mbi < mb1; ++mbi) {
      const int64_t m0 = mbi * mb, rows = std::min(mb, M - m0);
      ctile.resize(static_cast<size_t>(rows * ldt));
      if (folded) {
        for (int64_t kb = 0; kb < kp2; kb += kKBlockPairs) {
          const int64_t kn = std::min(kKBlockPairs, kp2 - kb);
          for (int64_t r = 0; r < rows; r += kPackedMaxRows) {
            const int mr = static_cast<int>(std::min<int64_t>(kPackedMaxRows, rows - r));
            tile_fn(a + (m0 + r) * lda + 2 * kb, lda, mr, b.data() + kb * 32, panel_stride, np, kn, ctile.data() + r * ldt,
                    ldt, kb > 0);
          }
        }
      } else {
        // Scales applied in fp32 per 128-k block, inside the register tile's pass over K.
        for (int64_t r = 0; r < rows; r += kPackedMaxRows) {
          const int mr = static_cast<int>(std::min<int64_t>(kPackedMaxRows, rows - r));
          scaled_fn(a + (m0 + r) * lda, lda, mr, b.data(), panel_stride, np, kp2, src.scale, kblocks,
                    ctile.data() + r * ldt, ldt);
        }
      }
      detail::store_tile(ctile.data(), ldt, rows, std::min(ldt, N - p0 * 16), y, m0, p0 * 16);
    }
  });
}

}  // namespace

void pack_fp8_panels(const WeightView& src, int64_t panel0, int64_t panels, uint8_t* dst, float* dst_scale) {
  const int64_t K = src.K, N = src.N, kblocks = fp8_kblocks(K), groups = fp8_packed_k(K) / 4, ps = groups * 64;
  if (src.format == WeightFormat::Fp8Packed) {
    std::copy(src.fp8 + panel0 * ps, src.fp8 + (panel0 + panels) * ps, dst);
    std::copy(src.scale + panel0 * kblocks, src.scale + (panel0 + panels) * kblocks, dst_scale);
    return;
  }
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = (panel0 + p) * 16;
    uint8_t* d = dst + p * ps;
    if (src.format == WeightFormat::Fp8NT && n0 + 16 <= N && 4 * groups == K) {
      // Whole panel of a checkpoint-layout weight: each of the 16 rows read once, in order, as k-pairs
      // (2 bytes), into the 64-byte groups of the panel (which stays in L2). A group-by-group loop
      // over 16 rows ran at 0.45 GB/s.
      for (int c = 0; c < 16; ++c) {
        const uint8_t* row = src.fp8 + (n0 + c) * K;
        uint8_t* o = d + (c >> 2) * 16 + (c & 3) * 2;
        for (int64_t g = 0; g < groups; ++g) {
          std::memcpy(o + g * 64, row + 4 * g, 2);
          std::memcpy(o + g * 64 + 8, row + 4 * g + 2, 2);
        }
      }
    } else if (src.format == WeightFormat::Fp8ND && n0 + 16 <= N && 4 * groups == K) {
      // Whole panel of a row-major weight (e.g. a W_UK head): 16 consecutive columns of 4 rows per group.
      for (int64_t g = 0; g < groups; ++g)
        for (int kk = 0; kk < 4; ++kk) {
          const uint8_t* row = src.fp8 + (4 * g + kk) * N + n0;
          uint8_t* o = d + g * 64 + (kk >> 1) * 8 + (kk & 1);
          for (int c = 0; c < 16; ++c) o[(c >> 2) * 16 + (c & 3) * 2] = row[c];
        }
    } else {
      for (int64_t g = 0; g < groups; ++g)
        for (int pos = 0; pos < 64; ++pos) {
          const int64_t k = 4 * g + ((pos >> 3) & 1) * 2 + (pos & 1), n = n0 + (pos >> 4) * 4 + ((pos & 7) >> 1);
          d[g * 64 + pos] = k < K && n < N ? byte_at(src, k, n) : 0;
        }
    }
    // 16 divides 128: a panel lies in one block column of the source.
    for (int64_t kb = 0; kb < kblocks; ++kb) dst_scale[p * kblocks + kb] = scale_at(src, kb * kFp8ScaleBlock, n0);
  }
}

void pack_fp8_weights(const WeightView& src, uint8_t* dst, float* dst_scale) {
  const int64_t panels = packed_n(src.N) / 16, ps = fp8_packed_k(src.K) * 16, kblocks = fp8_kblocks(src.K);
  parallel_for(panels, 1, [&](int64_t p0, int64_t p1, int) {
    pack_fp8_panels(src, p0, p1 - p0, dst + p0 * ps, dst_scale + p0 * kblocks);
  });
}

namespace detail {

void gemm_fp8(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y, const Runner& run) {
  std::vector<bf16_t> xpad;
  int64_t lda = 0;
  const bf16_t* a = padded_x(x, ldx, M, w.K, xpad, &lda);
  if (M <= kGemvMaxRows) {
    gemv(a, lda, M, w, y, run);
  } else {
    gemm(a, lda, M, w, y, run);
  }
}

}  // namespace detail
}  // namespace dsa
