// Sparse flash attention: validation, work split and the per-(row, head group) flash loop.
// Each task packs its heads' queries once, then walks the row's valid indices in tiles of kTile keys:
// gather the rows through the block table (shared by every head of the task), logits for all heads,
// online softmax, P·V. The hot loops are per ISA (sparse_flash_attn_isa.cc).
// A row's index positions are cut into splits (two halves once topk >= 2 * kTile), each its own online
// softmax, merged at the end: with many rows one task runs all splits of its heads and merges them;
// with fewer rows than threads (decode at b = 1) the splits are separate tasks, so no two threads
// gather the same rows, and a merge pass follows. The splits depend on topk only, so the output bits
// do not depend on the thread count or on how a call's rows are chunked.
#include "sparse_flash_attn_kernel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dsa/fp8_cache.h"
#include "dsa/thread_pool.h"
#include "sparse_flash_attn_isa.h"

namespace dsa {
namespace sfa {
namespace {

constexpr int64_t kTile = 128;          // keys per tile: 144 KB of keys + 128 KB of value pairs at DeepSeek widths (L2)
constexpr int64_t kMinGroupHeads = 16; // one vector of heads: below this a split costs more gathers than it saves
constexpr int64_t kMaxSplits = 2;      // index splits of a row (merged online-softmax states)

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

std::string at(int64_t a, int64_t b) { return "[" + std::to_string(a) + ", " + std::to_string(b) + "]"; }
std::string at(int64_t a, int64_t b, int64_t c) {
  return "[" + std::to_string(a) + ", " + std::to_string(b) + ", " + std::to_string(c) + "]";
}

Status err(Code c, const std::string& m) { return Status::Error(c, m); }

int64_t row_eff(const Args& a, int64_t bi, int64_t i) {
  const int64_t act = a.act_seqs[bi];
  return a.sparse_mode == 3 ? act - (a.s1 - 1 - i) : act;
}

// Sizes of one task's scratch, in 64-byte aligned pieces.
struct Plan {
  int64_t d, dp2, dv16, hg, hpad_max;
  int64_t keys, vint, qpack, s, ppair, o, vec;  // bytes of each piece
  int64_t total() const { return keys + vint + qpack + s + ppair + kMaxSplits * (o + 2 * vec) + vec; }
};

Plan make_plan(const Args& a, int64_t hg) {
  Plan p;
  p.d = a.kv_lora + a.rope;
  p.dp2 = (p.d + 1) / 2;
  p.dv16 = round_up(a.kv_lora, 16);
  p.hg = hg;
  p.hpad_max = round_up(hg, 16);
  p.keys = round_up(kTile * p.dp2 * 4, 64);
  p.vint = round_up(kTile / 2 * p.dv16 * 4, 64);
  p.qpack = round_up(p.dp2 * p.hpad_max * 4, 64);
  p.s = round_up(kTile * p.hpad_max * 4, 64);
  p.ppair = round_up(kTile / 2 * p.hpad_max * 4, 64);
  p.o = round_up(hg * p.dv16 * 4, 64);
  p.vec = round_up(p.hpad_max * 4, 64);
  return p;
}

// Per-thread scratch that grows to the largest plan seen and is then reused (pool threads persist).
struct Scratch {
  void* base = nullptr;
  int64_t size = 0;
  ~Scratch() { std::free(base); }
  uint8_t* get(int64_t bytes) {
    if (bytes > size) {
      std::free(base);
      base = std::aligned_alloc(64, static_cast<size_t>(round_up(bytes, 64)));
      size = base ? bytes : 0;
    }
    return static_cast<uint8_t*>(base);
  }
};
thread_local Scratch t_scratch;

struct Kernels {
  decltype(&scalar::sfa_scores) scores;
  decltype(&scalar::sfa_softmax) softmax;
  decltype(&scalar::sfa_pv) pv;
  decltype(&scalar::sfa_interleave) interleave;
  decltype(&scalar::sfa_dequant_row) dequant;
};

Kernels pick_kernels() {
  return {dispatch(&scalar::sfa_scores, &avx2::sfa_scores, &avx512::sfa_scores),
          dispatch(&scalar::sfa_softmax, &avx2::sfa_softmax, &avx512::sfa_softmax),
          dispatch(&scalar::sfa_pv, &avx2::sfa_pv, &avx512::sfa_pv),
          dispatch(&scalar::sfa_interleave, &avx2::sfa_interleave, &avx512::sfa_interleave),
          dispatch(&scalar::sfa_dequant_row, &avx2::sfa_dequant_row, &avx512::sfa_dequant_row)};
}

// Head groups per row: enough tasks to keep every thread busy (each split of a row repeats its gather).
int64_t head_groups(int64_t rows, int64_t n, int threads) {
  const int64_t gmax = (n + kMinGroupHeads - 1) / kMinGroupHeads;
  int64_t g = 1;
  while (g < gmax && rows * g < 8 * threads && (rows * g) % threads != 0) ++g;
  return g;
}

using Clock = std::chrono::steady_clock;
int64_t ns_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

constexpr int64_t kAhead = 6;  // FP8 rows prefetched this many indices ahead of the gather

// Index splits of a row and the positions [begin, end) of split i.
int64_t split_count(const Args& a) { return a.topk >= 2 * kTile ? kMaxSplits : 1; }
int64_t split_begin(const Args& a, int64_t splits, int64_t i) { return a.topk * i / splits; }

// The online-softmax state of one split for a task's heads: o [nh][dv16] before the division by l,
// relative to the running max m; seen counts the split's valid keys.
struct SplitState {
  float* o;
  float* m;
  float* l;
  int64_t seen;
};

// out[h] (heads [0, nh), rows kv_lora apart) from the splits' states: each split weighted by
// exp(m_s - M), M the largest m among the splits that saw keys. A NaN in a split's state reaches the
// output through its weight or its sums; no split with keys gives zeros. With one split this is
// bf16(o * (1 / l)).
void merge_states(const SplitState* st, int64_t splits, int64_t nh, int64_t dv16, int64_t kv_lora, bf16_t* out) {
  for (int64_t h = 0; h < nh; ++h) {
    float mx = -INFINITY, w[kMaxSplits];
    bool any = false;
    for (int64_t i = 0; i < splits; ++i)
      if (st[i].seen > 0) {
        any = true;
        mx = std::fmax(mx, st[i].m[h]);
      }
    if (!any) {
      std::memset(out + h * kv_lora, 0, static_cast<size_t>(kv_lora) * 2);  // a row without keys: zeros, never NaN
      continue;
    }
    float l = 0.0f;
    for (int64_t i = 0; i < splits; ++i) {
      w[i] = st[i].seen > 0 ? std::exp(st[i].m[h] - mx) : 0.0f;
      if (st[i].seen > 0) l += w[i] * st[i].l[h];
    }
    const float inv = 1.0f / l;
    constexpr int64_t kCols = 512;  // columns summed per pass, in a stack buffer (vectorized loops)
    float v[kCols];
    for (int64_t c0 = 0; c0 < kv_lora; c0 += kCols) {
      const int64_t nc = std::min(kCols, kv_lora - c0);
      std::fill(v, v + nc, 0.0f);
      for (int64_t i = 0; i < splits; ++i) {
        if (st[i].seen == 0) continue;
        const float wi = w[i];
        const float* o = st[i].o + h * dv16 + c0;
        for (int64_t c = 0; c < nc; ++c) v[c] += wi * o[c];
      }
      for (int64_t c = 0; c < nc; ++c) out[h * kv_lora + c0 + c] = f32_to_bf16(v[c] * inv);
    }
  }
}

// One task: heads [h0, h0 + nh) of `row` over its splits [s0, s1), each a fresh online softmax. With
// `dst` null the splits' states are merged into a.out here; else split s's state is copied into
// dst[s - s0] at head offset h0 (the caller merges). Returns false only when scratch cannot be allocated.
bool attend(const Args& a, const Kernels& k, const Plan& pl, float scale, int64_t row, int64_t h0, int64_t s0,
            int64_t s1, const SplitState* dst) {
  const Clock::time_point t_start = Clock::now();
  int64_t gather_ns = 0;
  const int64_t bi = row / a.s1, nh = std::min(pl.hg, a.n - h0), hv = (nh + 15) / 16, hpad = hv * 16;
  const int64_t ldk = 2 * pl.dp2, splits = split_count(a);

  uint8_t* mem = t_scratch.get(pl.total());
  if (!mem) return false;
  bf16_t* keys = reinterpret_cast<bf16_t*>(mem);
  uint32_t* vint = reinterpret_cast<uint32_t*>(mem += pl.keys);
  uint32_t* qpack = reinterpret_cast<uint32_t*>(mem += pl.vint);
  float* s = reinterpret_cast<float*>(mem += pl.qpack);
  uint32_t* ppair = reinterpret_cast<uint32_t*>(mem += pl.s);
  float* alpha = reinterpret_cast<float*>(mem += pl.ppair);
  mem += pl.vec;
  SplitState st[kMaxSplits];
  for (int64_t i = 0; i < s1 - s0; ++i) {
    st[i].o = reinterpret_cast<float*>(mem);
    st[i].m = reinterpret_cast<float*>(mem += pl.o);
    st[i].l = reinterpret_cast<float*>(mem += pl.vec);
    mem += pl.vec;
  }

  // q̃ = q_nope ‖ q_rope as pairs [dp2][hpad]; padding heads and the odd tail are zero.
  std::memset(qpack, 0, static_cast<size_t>(pl.dp2 * hpad * 4));
  bf16_t* q16 = reinterpret_cast<bf16_t*>(qpack);
  for (int64_t h = 0; h < nh; ++h) {
    const bf16_t* qn = a.q_nope + (row * a.n + h0 + h) * a.kv_lora;
    const bf16_t* qr = a.q_rope + (row * a.n + h0 + h) * a.rope;
    for (int64_t d = 0; d < pl.d; ++d) q16[((d >> 1) * hpad + h) * 2 + (d & 1)] = d < a.kv_lora ? qn[d] : qr[d - a.kv_lora];
  }

  const int64_t row8 = fp8_kv_row_bytes(a.kv_lora, a.rope);
  const int32_t* idx = a.indices + row * a.topk;
  const int32_t* table = a.block_table + bi * a.max_blocks;
  auto slot_of = [&](int64_t p) { return static_cast<int64_t>(table[p / a.block_size]) * a.block_size + p % a.block_size; };
  for (int64_t sp = s0; sp < s1; ++sp) {
    SplitState& cur = st[sp - s0];
    float *o = cur.o, *m = cur.m, *l = cur.l;
    for (int64_t h = 0; h < hpad; ++h) {
      m[h] = -INFINITY;
      l[h] = 0.0f;
    }
    std::memset(o, 0, static_cast<size_t>(nh * pl.dv16 * 4));
    const int64_t end = split_begin(a, splits, sp + 1);
    int64_t pos = split_begin(a, splits, sp), seen = 0;
    for (;;) {
      const Clock::time_point t_gather = Clock::now();
      int64_t nt = 0;
      for (; pos < end && nt < kTile; ++pos) {
        const int64_t p = idx[pos];
        if (p < 0) continue;
        const int64_t slot = slot_of(p);
        bf16_t* kd = keys + nt * ldk;
        if (a.kv_cache8) {
          // The dequantization is longer than a copy, so fewer rows' loads are in flight: fetch the row
          // kAhead indices on (indices were validated, so its block table entry can be read).
          if (pos + kAhead < a.topk) {
            const int64_t q = idx[pos + kAhead];
            if (q >= 0) {
              const uint8_t* r = a.kv_cache8 + slot_of(q) * row8;
              for (int64_t off = 0; off < row8; off += 64) __builtin_prefetch(r + off);
              __builtin_prefetch(r + row8 - 1);
            }
          }
          k.dequant(a.kv_cache8 + slot * row8, a.kv_lora, a.rope, kd);
        } else {
          std::memcpy(kd, a.kv_cache + slot * a.kv_lora, static_cast<size_t>(a.kv_lora) * 2);
          if (a.rope) std::memcpy(kd + a.kv_lora, a.kr_cache + slot * a.rope, static_cast<size_t>(a.rope) * 2);
        }
        if (pl.d & 1) kd[pl.d] = 0;
        ++nt;
      }
      if (nt == 0) break;
      const int64_t np = (nt + 1) / 2;
      for (int64_t jp = 0; jp < np; ++jp) {
        const bf16_t* r1 = 2 * jp + 1 < nt ? keys + (2 * jp + 1) * ldk : nullptr;
        k.interleave(keys + 2 * jp * ldk, r1, a.kv_lora, pl.dv16, vint + jp * pl.dv16);
      }
      if (a.profile) gather_ns += ns_since(t_gather);
      seen += nt;

      k.scores(keys, ldk, nt, qpack, pl.dp2, hv, scale, s);
      k.softmax(s, nt, hv, m, l, alpha, ppair);
      k.pv(ppair, hpad, np, vint, pl.dv16, alpha, o, nh);
    }
    cur.seen = seen;
    if (dst) {
      const SplitState& d = dst[sp - s0];
      std::memcpy(d.o + h0 * pl.dv16, o, static_cast<size_t>(nh * pl.dv16) * 4);
      std::memcpy(d.m + h0, m, static_cast<size_t>(nh) * 4);
      std::memcpy(d.l + h0, l, static_cast<size_t>(nh) * 4);
    }
  }
  if (!dst) merge_states(st, s1 - s0, nh, pl.dv16, a.kv_lora, a.out + (row * a.n + h0) * a.kv_lora);
  if (a.profile) {
    a.profile->gather_ns += gather_ns;
    a.profile->total_ns += ns_since(t_start);
  }
  return true;
}

}  // namespace

float default_softmax_scale(int64_t kv_lora, int64_t rope) noexcept {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(kv_lora + rope)));
}

Status validate(const Args& a) noexcept {
  const struct { const char* name; int64_t v; } dims[] = {
      {"b", a.b}, {"s1", a.s1}, {"n", a.n}, {"kv_lora", a.kv_lora}, {"rope", a.rope}, {"blocks", a.blocks},
      {"block_size", a.block_size}, {"topk", a.topk}, {"max_blocks", a.max_blocks}};
  for (const auto& d : dims)
    if (d.v < 0) return err(Code::Shape, std::string(d.name) + ": expected a non-negative dimension, got " + std::to_string(d.v));
  if (a.kv_lora < 1) return err(Code::Shape, "kv_lora: expected at least 1 latent column, got " + std::to_string(a.kv_lora));
  if (a.block_size < 1) return err(Code::Shape, "block_size: expected at least 1, got " + std::to_string(a.block_size));
  if (a.sparse_mode != 0 && a.sparse_mode != 3)
    return err(Code::Argument, "sparseMode: expected 0 or 3, got " + std::to_string(a.sparse_mode));
  if (!std::isfinite(a.softmax_scale) || a.softmax_scale < 0)
    return err(Code::Argument, "softmaxScale: expected a finite positive number (0 = default), got " + std::to_string(a.softmax_scale));

  if (a.kv_cache8 && (a.kv_cache || a.kr_cache))
    return err(Code::Argument, "krCache: expected no kvCache/krCache bf16 pair with an FP8 kvCache");
  if (a.kv_cache8 && a.kv_lora % kFp8Block != 0)
    return err(Code::Shape, "kvCache: an FP8 latent cache needs kv_lora % 128 == 0, got " + std::to_string(a.kv_lora));
  const int64_t rows = a.b * a.s1;
  const struct { const char* name; const void* p; int64_t count; } bufs[] = {
      {"qNope", a.q_nope, rows * a.n * a.kv_lora}, {"qRope", a.q_rope, rows * a.n * a.rope},
      {"kvCache", a.kv_cache8 ? static_cast<const void*>(a.kv_cache8) : a.kv_cache, a.blocks * a.block_size * a.kv_lora},
      {"krCache", a.kv_cache8 ? static_cast<const void*>(a.kv_cache8) : a.kr_cache, a.blocks * a.block_size * a.rope},
      {"indices", a.indices, rows * a.topk}, {"blockTable", a.block_table, a.b * a.max_blocks},
      {"actSeqs", a.act_seqs, a.b}, {"out", a.out, rows * a.n * a.kv_lora}};
  for (const auto& buf : bufs)
    if (buf.count > 0 && buf.p == nullptr) return err(Code::Argument, std::string(buf.name) + ": expected a buffer, got null");

  for (int64_t bi = 0; bi < a.b; ++bi)
    if (a.act_seqs[bi] < 0)
      return err(Code::Range, "actSeqs: expected a non-negative key count at [" + std::to_string(bi) + "], got " +
                                  std::to_string(a.act_seqs[bi]));

  const int64_t capacity = a.max_blocks * a.block_size;
  for (int64_t bi = 0; bi < a.b; ++bi) {
    for (int64_t i = 0; i < a.s1; ++i) {
      const int64_t eff = row_eff(a, bi, i), limit = eff > 0 ? eff : 0;
      const int32_t* idx = a.indices + (bi * a.s1 + i) * a.topk;
      for (int64_t t = 0; t < a.topk; ++t) {
        const int64_t p = idx[t];
        if (p == -1) continue;
        if (p < -1 || p >= limit)
          return err(Code::Range, "indices: expected -1 or a position in [0, " + std::to_string(limit) + ") at " + at(bi, i, t) +
                                      " (row eff = " + std::to_string(eff) + "), got " + std::to_string(p));
        if (p >= capacity)
          return err(Code::Range, "indices: position " + std::to_string(p) + " at " + at(bi, i, t) + " is past blockTable (" +
                                      std::to_string(a.max_blocks) + " blocks of " + std::to_string(a.block_size) + " = " +
                                      std::to_string(capacity) + " positions)");
        const int64_t j = p / a.block_size, blk = a.block_table[bi * a.max_blocks + j];
        if (blk < 0 || blk >= a.blocks)
          return err(Code::Range, "blockTable: expected a block id in [0, " + std::to_string(a.blocks) + ") at " + at(bi, j) +
                                      " (read for indices" + at(bi, i, t) + " = " + std::to_string(p) + "), got " +
                                      std::to_string(blk));
      }
    }
  }
  return Status::Ok();
}

Status run(const Args& a) noexcept {
  DSA_RETURN_IF_ERROR(validate(a));
  const int64_t rows = a.b * a.s1;
  if (rows == 0 || a.n == 0) return Status::Ok();
  const float scale = a.softmax_scale > 0 ? a.softmax_scale : default_softmax_scale(a.kv_lora, a.rope);
  const Kernels k = pick_kernels();
  const int threads = num_threads();
  const int64_t splits = split_count(a);
  std::atomic<bool> failed{false};
  if (splits > 1 && rows < threads) {
    // Each (row, split) is its own set of tasks; their states meet in the calling thread's buffer.
    const int64_t groups = head_groups(rows * splits, a.n, threads);
    const int64_t hg = groups == 1 ? a.n : round_up((a.n + groups - 1) / groups, 16);
    const int64_t per = (a.n + hg - 1) / hg;
    const Plan plan = make_plan(a, hg);
    const int64_t each = a.n * plan.dv16 + 2 * a.n;
    static thread_local std::vector<float> t_states;  // reused: no page faults per call
    std::vector<float>& states = t_states;            // (bound here: the tasks run on pool threads)
    std::vector<SplitState> st(static_cast<size_t>(rows * splits));
    try {
      if (states.size() < static_cast<size_t>(rows * splits * each)) states.resize(static_cast<size_t>(rows * splits * each));
    } catch (const std::bad_alloc&) {
      return err(Code::Internal, "sparseFlashAttention: out of memory for the split states");
    }
    for (int64_t i = 0; i < rows * splits; ++i) {
      float* b = states.data() + i * each;
      st[static_cast<size_t>(i)] = {b, b + a.n * plan.dv16, b + a.n * plan.dv16 + a.n, 0};
    }
    parallel_tasks(rows * splits * per, [&](int64_t task, int) {
      const int64_t rs = task / per, row = rs / splits, sp = rs % splits;
      if (!attend(a, k, plan, scale, row, task % per * hg, sp, sp + 1, &st[static_cast<size_t>(rs)])) failed = true;
    });
    if (failed) return err(Code::Internal, "sparseFlashAttention: out of memory for the per-thread scratch");
    // seen is the same for every head group of a split: count it here rather than race on it.
    for (int64_t rs = 0; rs < rows * splits; ++rs) {
      const int64_t row = rs / splits, sp = rs % splits;
      int64_t seen = 0;
      for (int64_t t = split_begin(a, splits, sp); t < split_begin(a, splits, sp + 1); ++t) seen += a.indices[row * a.topk + t] >= 0;
      st[static_cast<size_t>(rs)].seen = seen;
    }
    const int64_t chunks = (a.n + 15) / 16;
    parallel_tasks(rows * chunks, [&](int64_t task, int) {
      const int64_t row = task / chunks, h0 = task % chunks * 16;
      SplitState part[kMaxSplits];
      for (int64_t i = 0; i < splits; ++i) {
        const SplitState& s0 = st[static_cast<size_t>(row * splits + i)];
        part[i] = {s0.o + h0 * plan.dv16, s0.m + h0, s0.l + h0, s0.seen};
      }
      merge_states(part, splits, std::min<int64_t>(16, a.n - h0), plan.dv16, a.kv_lora, a.out + (row * a.n + h0) * a.kv_lora);
    });
    return Status::Ok();
  }
  const int64_t groups = head_groups(rows, a.n, threads);
  const int64_t hg = groups == 1 ? a.n : round_up((a.n + groups - 1) / groups, 16);
  const int64_t per_row = (a.n + hg - 1) / hg;
  const Plan plan = make_plan(a, hg);
  parallel_tasks(rows * per_row, [&](int64_t task, int) {
    if (!attend(a, k, plan, scale, task / per_row, task % per_row * hg, 0, splits, nullptr)) failed = true;
  });
  if (failed) return err(Code::Internal, "sparseFlashAttention: out of memory for the per-thread scratch");
  return Status::Ok();
}

}  // namespace sfa
}  // namespace dsa
