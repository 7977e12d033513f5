// Shared pieces of the GEMM drivers (gemm.cc for bf16 weights, gemm_fp8.cc for FP8 weights).
// Internal to the runtime.
#pragma once
#include <algorithm>
#include <functional>
#include <vector>

#include "dsa/gemm.h"
#include "dsa/thread_pool.h"
#include "gemm_kernels.h"

namespace dsa {
namespace detail {

struct Runner {
  bool parallel;
  void operator()(int64_t n, const std::function<void(int64_t, int)>& fn) const {
    if (parallel) {
      parallel_tasks(n, fn);
    } else {
      for (int64_t t = 0; t < n; ++t) fn(t, 0);
    }
  }
};

// Write an fp32 tile [rows, cols] (ld = ldt) into y at (r0, c0).
void store_tile(const float* tile, int64_t ldt, int64_t rows, int64_t cols, const GemmOut& y, int64_t r0, int64_t c0);

// Small M is bound by reading W. Work = column groups x K chunks; K is split only when there are
// too few groups to keep the threads busy, in a way that depends on the shape alone (so results do
// not change with the thread count), and the chunks are summed in a fixed order. A task takes a run
// of consecutive groups, so a kernel knows what its thread reads next and can prefetch it.
// compute(g, next, k0, k1, tile, ldt) writes the fp32 product of x[:, k0:k1] and group g into tile;
// next is the group the same thread computes after g (same k range), or -1.
template <class Compute>
void run_small_m(int64_t M, int64_t groups, int64_t group_cols, int64_t cols, int64_t K, int64_t k_align,
                 const GemmOut& y, const Runner& run, Compute compute) {
  constexpr int64_t kWantTasks = 16;  // 9 groups on 2 threads left one idle a ninth of the time
  int64_t ksplit = 1;
  if (groups > 0 && groups < kWantTasks && K >= 1024) ksplit = std::min((kWantTasks + groups - 1) / groups, K / 512);
  const int64_t kchunk = ((K + ksplit - 1) / ksplit + k_align - 1) / k_align * k_align;
  // Four runs per thread, of near-equal length (groups split evenly, not in runs of a fixed span:
  // 35 groups in runs of 4 made 9 tasks, 5 + 4 on 2 threads): long enough that prefetching into the
  // next group pays, short enough to even out a thread that falls behind.
  const int64_t runs = std::min(groups, run.parallel ? 4 * static_cast<int64_t>(num_threads()) : 1);
  std::vector<float> partial(ksplit > 1 ? static_cast<size_t>(ksplit * M * cols) : 0);
  run(runs * ksplit, [&](int64_t t, int) {
    const int64_t s = t / runs, g0 = (t % runs) * groups / runs, g1 = (t % runs + 1) * groups / runs;
    const int64_t k0 = std::min(K, s * kchunk), k1 = std::min(K, k0 + kchunk);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t c0 = g * group_cols, nc = std::min(group_cols, cols - c0);
      float tile[kPackedMaxRows * 64];
      const int64_t ldt = 64;
      if (k1 > k0) {
        compute(g, g + 1 < g1 ? g + 1 : -1, k0, k1, tile, ldt);
      } else {
        std::fill(tile, tile + M * ldt, 0.0f);
      }
      if (ksplit == 1) {
        store_tile(tile, ldt, M, nc, y, 0, c0);
      } else {
        for (int64_t m = 0; m < M; ++m) std::copy(tile + m * ldt, tile + m * ldt + nc, partial.data() + (s * M + m) * cols + c0);
      }
    }
  });
  if (ksplit > 1) {
    std::vector<float> sum(static_cast<size_t>(M * cols), 0.0f);
    for (int64_t s = 0; s < ksplit; ++s)
      for (int64_t i = 0; i < M * cols; ++i) sum[i] += partial[s * M * cols + i];
    store_tile(sum.data(), cols, M, cols, y, 0, 0);
  }
}

// FP8 weights (gemm_fp8.cc), any M.
void gemm_fp8(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y, const Runner& run);

}  // namespace detail
}  // namespace dsa
