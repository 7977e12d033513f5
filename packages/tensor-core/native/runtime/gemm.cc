// GEMM driver: picks the kernel for the weight layout and M, splits the work into tasks for the pool,
// and writes fp32 or bf16 output.
//   - ND/NZ weights with M <= 4: read in place by the direct kernel (bandwidth-bound GEMV), split
//     over column groups and, when there are too few groups to fill the threads, over K.
//   - packed weights: the packed kernel over 16-column panels, K blocked so a B block stays in L2.
//   - ND/NZ/NT weights with larger M: each task packs its column group once, then as above.
#include <algorithm>
#include <atomic>
#include <vector>

#include "dsa/gemm.h"
#include "dsa/thread_pool.h"
#include "gemm_driver.h"

namespace dsa {
namespace {

constexpr int64_t kKBlockPairs = 256;  // 512 k: a 3-panel B block is 48 KB
constexpr int64_t kMBlock = 192;       // rows per task when M is large
constexpr int64_t kDirectMaxM = 8;     // ND/NZ weights are read in place up to this many rows
constexpr int64_t kPrefetchBytes = 512 * 1024;  // small ND weights: well inside L2

inline bf16_t weight_at(const WeightView& w, int64_t k, int64_t n) {
  switch (w.format) {
    case WeightFormat::ND: return w.data[k * w.N + n];
    case WeightFormat::NZ: return w.data[(n >> 4) * w.K * 16 + k * 16 + (n & 15)];
    case WeightFormat::NT: return w.data[n * w.K + k];
    case WeightFormat::Packed: {
      const int64_t kp2 = packed_k(w.K) / 2;
      return w.data[((n >> 4) * kp2 + (k >> 1)) * 32 + (n & 15) * 2 + (k & 1)];
    }
    default: break;  // FP8 formats never reach the bf16 packing
  }
  return 0;
}

}  // namespace

namespace detail {

// Write an fp32 tile [rows, cols] (ld = ldt) into y at (r0, c0).
void store_tile(const float* tile, int64_t ldt, int64_t rows, int64_t cols, const GemmOut& y, int64_t r0, int64_t c0) {
  if (y.type == OutType::BF16) {
    auto* out = static_cast<bf16_t*>(y.data);
    auto row_fn = DSA_DISPATCH(f32_to_bf16_row);
    for (int64_t r = 0; r < rows; ++r) row_fn(tile + r * ldt, cols, out + (r0 + r) * y.ld + c0);
  } else {
    auto* out = static_cast<float*>(y.data);
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = out + (r0 + r) * y.ld + c0;
      const float* src = tile + r * ldt;
      if (y.accumulate) {
        for (int64_t c = 0; c < cols; ++c) dst[c] += src[c];
      } else {
        std::copy(src, src + cols, dst);
      }
    }
  }
}

}  // namespace detail

namespace {

using detail::Runner;
using detail::run_small_m;
using detail::store_tile;

void gemm_direct(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y, const Runner& run) {
  const int64_t K = w.K, N = w.N;
  const int64_t full = N / 16;  // NZ always has N % 16 == 0; an ND tail is done below
  const bool nz = w.format == WeightFormat::NZ;
  const int64_t rs = nz ? 16 : N, ps = nz ? K * 16 : 16;
  auto tile_fn = DSA_DISPATCH(gemm_direct_tile);
  const int64_t groups = (full + kDirectMaxPanels - 1) / kDirectMaxPanels;
  // A small ND weight (e.g. one head of W_UK) is read a column group at a time, a slice of every
  // row: request it whole, in order, first, so the groups find it in L2.
  if (!nz && !run.parallel && K * N * 2 <= kPrefetchBytes)
    for (int64_t i = 0; i < K * N; i += 32) __builtin_prefetch(w.data + i, 0, 2);
  run_small_m(M, groups, kDirectMaxPanels * 16, full * 16, K, 1, y, run, [&](int64_t g, int64_t, int64_t k0, int64_t k1, float* tile, int64_t ldt) {
    const int64_t p0 = g * kDirectMaxPanels;
    const int np = static_cast<int>(std::min<int64_t>(kDirectMaxPanels, full - p0));
    // Rows go through in fours; the second pass over the group's weights is served by L2.
    for (int64_t r = 0; r < M; r += kDirectMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kDirectMaxRows, M - r));
      tile_fn(x + r * ldx + k0, ldx, mr, w.data + p0 * ps + k0 * rs, rs, ps, np, k1 - k0, tile + r * ldt, ldt, false);
    }
  });
  const int64_t cols = full * 16;
  if (cols < N) {  // ND columns past the last full panel
    std::vector<float> tail(static_cast<size_t>(M * (N - cols)), 0.0f);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        const float a = bf16_to_f32(x[m * ldx + k]);
        for (int64_t n = cols; n < N; ++n) tail[m * (N - cols) + n - cols] += a * bf16_to_f32(w.data[k * N + n]);
      }
    store_tile(tail.data(), N - cols, M, N - cols, y, 0, cols);
  }
}

void gemm_packed(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y, const Runner& run) {
  const int64_t K = w.K, N = w.N, Kp = packed_k(K), kp2 = Kp / 2;
  const int64_t panels = packed_n(N) / 16, panel_stride = kp2 * 32;
  const bool prepacked = w.format == WeightFormat::Packed;
  // Odd K: the kernels read x in pairs, so give them a copy with a zero column.
  std::vector<bf16_t> xpad;
  const bf16_t* a = x;
  int64_t lda = ldx;
  if (K & 1) {
    xpad.assign(static_cast<size_t>(M * Kp), 0);
    for (int64_t m = 0; m < M; ++m) std::copy(x + m * ldx, x + m * ldx + K, xpad.data() + m * Kp);
    a = xpad.data();
    lda = Kp;
  }
  auto tile_fn = DSA_DISPATCH(gemm_packed_tile);
  constexpr int64_t G = kPackedMaxPanels;  // several weight streams at once keep more reads in flight
  const int64_t groups = (panels + G - 1) / G;

  if (prepacked && M <= kGemvMaxRows) {
    run_small_m(M, groups, G * 16, N, Kp, 2, y, run, [&](int64_t g, int64_t, int64_t k0, int64_t k1, float* tile, int64_t ldt) {
      const int np = static_cast<int>(std::min<int64_t>(G, panels - g * G));
      const int64_t kb0 = k0 / 2, kb1 = k1 / 2;
      for (int64_t kb = kb0; kb < kb1; kb += kKBlockPairs) {
        const int64_t kn = std::min(kKBlockPairs, kb1 - kb);
        tile_fn(a + 2 * kb, lda, static_cast<int>(M), w.data + g * G * panel_stride + kb * 32, panel_stride, np, kn, tile,
                ldt, kb > kb0);
      }
    });
    return;
  }

  const int64_t mb = std::min(M, kMBlock), mblocks = (M + mb - 1) / mb;
  // Weights packed on the fly: with enough column groups to share out, a task packs its group once
  // and runs every row block on it; otherwise (narrow weights) tasks are group x row block.
  const bool whole_m = !prepacked && groups >= 8;
  const int64_t tasks = whole_m ? groups : groups * mblocks;
  run(tasks, [&](int64_t t, int) {
    const int64_t g = t % groups;
    const int64_t p0 = g * G;
    const int np = static_cast<int>(std::min<int64_t>(G, panels - p0));
    const bf16_t* b;
    thread_local std::vector<bf16_t> packbuf;
    if (prepacked) {
      b = w.data + p0 * panel_stride;
    } else {
      packbuf.resize(static_cast<size_t>(np * panel_stride));
      pack_panels(w, p0, np, packbuf.data());
      b = packbuf.data();
    }
    thread_local std::vector<float> ctile;
    const int64_t ldt = np * 16;
    const int64_t mb0 = whole_m ? 0 : t / groups, mb1 = whole_m ? mblocks : mb0 + 1;
    for (int64_t mbi = mb0; mbi < mb1; ++mbi) {
      const int64_t m0 = mbi * mb, rows = std::min(mb, M - m0);
      ctile.resize(static_cast<size_t>(rows * ldt));
      for (int64_t kb = 0; kb < kp2; kb += kKBlockPairs) {
        const int64_t kn = std::min(kKBlockPairs, kp2 - kb);
        for (int64_t r = 0; r < rows; r += kPackedMaxRows) {
          const int mr = static_cast<int>(std::min<int64_t>(kPackedMaxRows, rows - r));
          tile_fn(a + (m0 + r) * lda + 2 * kb, lda, mr, b + kb * 32, panel_stride, np, kn, ctile.data() + r * ldt, ldt,
                  kb > 0);
        }
      }
      store_tile(ctile.data(), ldt, rows, std::min(ldt, N - p0 * 16), y, m0, p0 * 16);
    }
  });
}

bool valid(const bf16_t* x, int64_t M, const WeightView& w, const GemmOut& y) {
  if (M < 0 || w.K < 0 || w.N < 0) return false;
  if (M > 0 && w.N > 0 && (x == nullptr || !w.present() || y.data == nullptr)) return w.K == 0 && y.data != nullptr;
  if (y.type == OutType::BF16 && y.accumulate) return false;
  if (w.format == WeightFormat::NZ && (w.K % 16 != 0 || w.N % 16 != 0)) return false;
  return true;
}

bool matmul_impl(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y, bool parallel) {
  if (!valid(x, M, w, y)) return false;
  if (M == 0 || w.N == 0) return true;
  // Under ~10 µs of work (0.5 MFLOP; a GEMV streaming 250K weights) the pool's hand-off costs more
  // than it saves. GEMVs are bound by memory, not FLOPs: a 4 MFLOP bound kept 60-90 µs ones on one thread.
  const bool big = 2.0 * M * w.K * w.N >= 5.0e5;
  const Runner run{parallel && big};
  if (w.K == 0) {
    std::vector<float> z(static_cast<size_t>(w.N), 0.0f);
    for (int64_t m = 0; m < M; ++m) store_tile(z.data(), w.N, 1, w.N, y, m, 0);
    return true;
  }
  const bool direct = (w.format == WeightFormat::ND || w.format == WeightFormat::NZ) && M <= kDirectMaxM;
  if (w.is_fp8()) {
    detail::gemm_fp8(x, ldx, M, w, y, run);
  } else if (direct) {
    gemm_direct(x, ldx, M, w, y, run);
  } else {
    gemm_packed(x, ldx, M, w, y, run);
  }
  return true;
}

}  // namespace

void pack_panels(const WeightView& src, int64_t panel0, int64_t panels, bf16_t* dst) {
  const int64_t K = src.K, N = src.N, kp2 = packed_k(K) / 2;
  auto pack_fn = DSA_DISPATCH(pack_panel16);
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = (panel0 + p) * 16;
    bf16_t* d = dst + p * kp2 * 32;
    const int64_t ncols = std::min<int64_t>(16, N - n0);
    if (src.format == WeightFormat::Packed) {
      std::copy(src.data + (panel0 + p) * kp2 * 32, src.data + (panel0 + p + 1) * kp2 * 32, d);
      continue;
    }
    if (ncols == 16 && (src.format == WeightFormat::ND || src.format == WeightFormat::NZ)) {
      const bool nz = src.format == WeightFormat::NZ;
      pack_fn(nz ? src.data + (n0 >> 4) * K * 16 : src.data + n0, nz ? 16 : N, K, d);
      continue;
    }
    for (int64_t kk = 0; kk < kp2; ++kk) {
      bf16_t* line = d + kk * 32;
      for (int64_t h = 0; h < 2; ++h) {
        const int64_t k = 2 * kk + h;
        if (k >= K) {
          for (int64_t j = 0; j < 16; ++j) line[j * 2 + h] = 0;
          continue;
        }
        if (src.format == WeightFormat::ND) {
          const bf16_t* row = src.data + k * N + n0;
          for (int64_t j = 0; j < ncols; ++j) line[j * 2 + h] = row[j];
        } else if (src.format == WeightFormat::NZ) {
          const bf16_t* row = src.data + (n0 >> 4) * K * 16 + k * 16;
          for (int64_t j = 0; j < 16; ++j) line[j * 2 + h] = row[j];
        } else {
          for (int64_t j = 0; j < ncols; ++j) line[j * 2 + h] = weight_at(src, k, n0 + j);
        }
        for (int64_t j = ncols; j < 16; ++j) line[j * 2 + h] = 0;
      }
    }
  }
}

void pack_weights(const WeightView& src, bf16_t* dst) {
  const int64_t panels = packed_n(src.N) / 16, kp2 = packed_k(src.K) / 2;
  parallel_for(panels, 1, [&](int64_t p0, int64_t p1, int) { pack_panels(src, p0, p1 - p0, dst + p0 * kp2 * 32); });
}

bool matmul(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y) {
  return matmul_impl(x, ldx, M, w, y, true);
}

bool matmul_serial(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y) {
  return matmul_impl(x, ldx, M, w, y, false);
}

bool matmul_batched(int64_t batch, const bf16_t* x, int64_t ldx, int64_t x_stride, int64_t M, const WeightView& w,
                    int64_t w_stride, const GemmOut& y, int64_t y_stride) {
  if (batch < 0) return false;
  std::atomic<bool> ok{true};
  const size_t esize = y.type == OutType::F32 ? 4 : 2;
  // Runs of consecutive items per task (about four per thread), so that an item's kernel can
  // prefetch the start of the next one.
  const int64_t span = std::max<int64_t>(1, batch / (4 * static_cast<int64_t>(num_threads())));
  parallel_tasks((batch + span - 1) / span, [&](int64_t task, int) {
    const int64_t i1 = std::min(batch, (task + 1) * span);
    for (int64_t i = task * span; i < i1; ++i) {
      WeightView wi = w;
      if (w.is_fp8()) {
        wi.fp8 = w.fp8 + i * w_stride;
        wi.scale = w.scale + i * fp8_scales(w.format, w.K, w.N);
        wi.fp8_next = i + 1 < i1 ? wi.fp8 + w_stride : nullptr;
      } else {
        wi.data = w.data + i * w_stride;
      }
      GemmOut yi = y;
      yi.data = static_cast<char*>(y.data) + i * y_stride * esize;
      if (!matmul_impl(x + i * x_stride, ldx, M, wi, yi, false)) ok = false;
    }
  });
  return ok;
}

}  // namespace dsa
