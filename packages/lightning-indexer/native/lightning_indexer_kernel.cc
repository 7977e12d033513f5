// Orchestration of the lightning indexer: validation, the split of the s1 x act score matrix into
// (row, key chunk) tasks, and the per-row merge of the chunks' top-k candidates.
//
// Rows are processed in waves whose candidate buffers stay under kWaveCandidates, so long prefill
// never materializes the whole score matrix. Within a wave, phase 1 scores every chunk (into the
// caller's `scores` row when asked for, else a thread-local chunk buffer) and keeps the chunk's best
// topk; phase 2 selects the row's topk among its chunks' candidates and sorts them. Each key's score
// depends only on the key and the query row, and the selection is a total order, so results do not
// depend on the chunking or the thread count.
#include "lightning_indexer_kernel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <string>
#include <vector>

#include "dsa/fp8_cache.h"
#include "dsa/thread_pool.h"
#include "lightning_indexer_isa.h"
#include "lightning_indexer_topk.h"

namespace dsa {
namespace li {
namespace {

constexpr int64_t kMinChunk = 1024;             // keys per task, at least (~ 60 us of scoring at 64 x 128)
constexpr int64_t kMaxChunk = 16384;            // and at most (the thread-local score buffer is 64 KB)
constexpr int64_t kWaveCandidates = 2 << 20;    // candidates held per wave (16 MB)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t eff_of(const Args& a, int64_t bi, int64_t i) {
  const int64_t act = a.act_seqs[bi];
  return a.sparse_mode == 3 ? act - (a.s1 - 1 - i) : act;
}

Status err(Code c, std::string m) { return Status::Error(c, std::move(m)); }

// Nanoseconds since an arbitrary epoch, read only when a Timing is wanted.
inline int64_t now_ns(bool on) {
  return on ? std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count() : 0;
}

std::atomic<uint64_t> g_call{0};  // tells a thread's cached packed query of another call apart

struct Workspace {
  std::vector<uint8_t> qpack;
  std::vector<bf16_t> q8, w8;  // the FP8 query of the packed row (FP8 key cache)
  std::vector<float> q8_scratch;
  uint64_t call = 0;
  int64_t row = -1;
  std::vector<float> scores;
  SelectScratch select;
};

Workspace& workspace() {
  static thread_local Workspace ws;
  return ws;
}

struct Task {
  int64_t row;     // flat query row bi * s1 + i
  int64_t c0, c1;  // key range
  int64_t out;     // offset of its candidates in the wave buffer
};

struct RowSpan {
  int64_t row, out, count;
};

// Scores of keys [c0, c1) of flat row `row` into dst, block run by block run.
void score_chunk(const Args& a, const void* qpack, int64_t row, int64_t c0, int64_t c1, float* dst) {
  if (a.index_k_cache8) {
    const auto fn8 = LI_DISPATCH(score_run_fp8);
    const int64_t rb = fp8_index_row_bytes(a.dim);
    const int32_t* table = a.block_table + (row / a.s1) * a.max_blocks;
    auto run_of = [&](int64_t j, int64_t* n) {  // the block run that starts at key j
      const int64_t blk = j / a.block_size, off = j % a.block_size;
      *n = std::min(c1 - j, a.block_size - off);
      return a.index_k_cache8 + (static_cast<int64_t>(table[blk]) * a.block_size + off) * rb;
    };
    int64_t n = 0, next_n = 0;
    const uint8_t* rows = run_of(c0, &n);
    for (int64_t j = c0; j < c1; j += n, n = next_n) {
      const uint8_t* next = j + n < c1 ? run_of(j + n, &next_n) : nullptr;
      if (!next) next_n = 0;
      fn8(qpack, a.heads, a.dim, rows, n, next, next_n, dst + (j - c0));
      rows = next;
    }
    return;
  }
  const auto fn = LI_DISPATCH(score_run);
  const int64_t bi = row / a.s1;
  const int32_t* table = a.block_table + bi * a.max_blocks;
  for (int64_t j = c0; j < c1;) {
    const int64_t blk = j / a.block_size, off = j % a.block_size;
    const int64_t n = std::min(c1 - j, a.block_size - off);
    const int64_t slot = static_cast<int64_t>(table[blk]) * a.block_size + off;
    fn(qpack, a.heads, a.dim, a.index_k_cache + slot * a.dim, n, dst + (j - c0));
    j += n;
  }
}

// State shared by the tasks of one call.
struct Pass {
  uint64_t call = 0;
  int64_t qbytes = 0, chunk = 0;
  uint64_t* cand = nullptr;
  bool timed = false;
  std::atomic<int64_t> score_ns{0}, select_ns{0};
  std::atomic<bool> failed{false};
};

// Phase 1: score one key chunk of one row and keep its best topk as candidates.
void chunk_task(const Args& a, Pass& p, const Task& task) {
  Workspace& ws = workspace();
  try {
    if (ws.call != p.call || ws.row != task.row) {  // consecutive chunks of a row reuse the packed query
      ws.qpack.resize(static_cast<size_t>(p.qbytes));
      const bf16_t* q = a.query + task.row * a.heads * a.dim;
      const bf16_t* w = a.weights + task.row * a.heads;
      if (a.index_k_cache8) {
        ws.q8.resize(static_cast<size_t>(a.heads * a.dim));
        ws.w8.resize(static_cast<size_t>(a.heads));
        ws.q8_scratch.resize(static_cast<size_t>(a.heads * a.dim));
        LI_DISPATCH(fp8_query)(q, w, a.heads, a.dim, ws.q8_scratch.data(), ws.q8.data(), ws.w8.data());
        q = ws.q8.data();
        w = ws.w8.data();
      }
      LI_DISPATCH(pack_query)(q, w, a.heads, a.dim, ws.qpack.data());
      ws.call = p.call;
      ws.row = task.row;
    }
    const int64_t n = task.c1 - task.c0;
    float* dst;
    if (a.scores) {
      dst = a.scores + task.row * a.scores_len + task.c0;
    } else {
      if (static_cast<int64_t>(ws.scores.size()) < n) ws.scores.resize(static_cast<size_t>(p.chunk));
      dst = ws.scores.data();
    }
    const int64_t t0 = now_ns(p.timed);
    score_chunk(a, ws.qpack.data(), task.row, task.c0, task.c1, dst);
    const int64_t t1 = now_ns(p.timed);
    select_scores(dst, n, static_cast<int32_t>(task.c0), a.topk, p.cand + task.out, ws.select);
    if (p.timed) {
      p.score_ns += t1 - t0;
      p.select_ns += now_ns(true) - t1;
    }
  } catch (...) {  // a pool task must not throw: report after the join
    p.failed = true;
    ws.row = -1;
  }
}

// Phase 2: the row's topk among its chunks' candidates (in position order), sorted, -1 padded.
void merge_task(const Args& a, Pass& p, const RowSpan& sp) {
  Workspace& ws = workspace();
  uint64_t* c = p.cand + sp.out;
  int32_t* out = a.indices + sp.row * a.topk;
  try {
    const int64_t t0 = now_ns(p.timed);
    const int64_t n = select_candidates(c, sp.count, a.topk, ws.select);
    sort_candidates(c, n, ws.select);
    for (int64_t i = 0; i < n; ++i) out[i] = candidate_pos(c[i]);
    std::fill(out + n, out + a.topk, -1);
    if (p.timed) p.select_ns += now_ns(true) - t0;
  } catch (...) {
    p.failed = true;
  }
}

}  // namespace

int64_t max_act(const Args& a) noexcept {
  int64_t m = 0;
  for (int64_t bi = 0; bi < a.b; ++bi) m = std::max<int64_t>(m, a.act_seqs[bi]);
  return m;
}

Status validate(const Args& a) noexcept {
  try {
    if (a.b < 0 || a.s1 < 0) return err(Code::Shape, "query: expected non-negative b and s1");
    if (a.heads < 1) return err(Code::Shape, "query: expected at least 1 head, got " + std::to_string(a.heads));
    if (a.dim < 1) return err(Code::Shape, "query: expected a head dim of at least 1, got " + std::to_string(a.dim));
    if (a.index_k_cache8 && a.index_k_cache)
      return err(Code::Argument, "indexKCache: expected either the bf16 or the FP8 form, got both");
    if (a.index_k_cache8 && a.dim != kFp8Block)
      return err(Code::Shape, "indexKCache: an FP8 key cache needs a head dim of 128 (the Hadamard size), got " + std::to_string(a.dim));
    if (a.block_size < 1)
      return err(Code::Shape, "indexKCache: expected a block size of at least 1, got " + std::to_string(a.block_size));
    if (a.block_num < 0 || a.max_blocks < 0) return err(Code::Shape, "blockTable: expected non-negative dimensions");
    if (a.topk < 1 || a.topk > std::numeric_limits<int32_t>::max())
      return err(Code::Argument, "topk: expected an integer in [1, 2147483647], got " + std::to_string(a.topk));
    if (a.sparse_mode != 0 && a.sparse_mode != 3)
      return err(Code::Argument, "sparseMode: expected 0 or 3, got " + std::to_string(a.sparse_mode));
    const int64_t rows = a.b * a.s1;
    if (a.b > 0 && !a.act_seqs) return err(Code::Argument, "actSeqs: null data");
    if (rows > 0 && (!a.query || !a.weights || !a.indices))
      return err(Code::Argument, "query: null data for a non-empty call");
    const int64_t covers = a.max_blocks * a.block_size;
    for (int64_t bi = 0; bi < a.b; ++bi) {
      const int64_t act = a.act_seqs[bi];
      if (act < 0 || act > covers)
        return err(Code::Range, "actSeqs[" + std::to_string(bi) + "]: expected a value in [0, " + std::to_string(covers) +
                                    "] (blockTable covers " + std::to_string(a.max_blocks) + " blocks of " +
                                    std::to_string(a.block_size) + "), got " + std::to_string(act));
      const int64_t used = ceil_div(act, a.block_size);
      if (used > 0 && (!a.block_table || (!a.index_k_cache && !a.index_k_cache8))) return err(Code::Argument, "indexKCache: null data");
      for (int64_t j = 0; j < used; ++j) {
        const int64_t id = a.block_table[bi * a.max_blocks + j];
        if (id < 0 || id >= a.block_num)
          return err(Code::Range, "blockTable[" + std::to_string(bi) + ", " + std::to_string(j) +
                                      "]: expected a block id in [0, " + std::to_string(a.block_num - 1) +
                                      "] (read for actSeqs[" + std::to_string(bi) + "] = " + std::to_string(act) +
                                      "), got " + std::to_string(id));
      }
    }
    if (a.scores && rows > 0 && a.scores_len < max_act(a))
      return err(Code::Shape, "scores: expected rows of at least " + std::to_string(max_act(a)) + " (max actSeqs), got " +
                                  std::to_string(a.scores_len));
    return Status::Ok();
  } catch (...) {
    return err(Code::Internal, "lightningIndexer: out of memory while validating");
  }
}

Status run(const Args& a) noexcept {
  DSA_RETURN_IF_ERROR(validate(a));
  try {
    const int64_t rows = a.b * a.s1;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    std::vector<int64_t> active;
    int64_t total_keys = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t eff = eff_of(a, r / a.s1, r % a.s1);
      if (eff > 0) {
        active.push_back(r);
        total_keys += eff;
      } else {
        std::fill(a.indices + r * a.topk, a.indices + (r + 1) * a.topk, -1);
      }
      if (a.scores) std::fill(a.scores + r * a.scores_len + std::max<int64_t>(eff, 0), a.scores + (r + 1) * a.scores_len, neg_inf);
    }
    if (active.empty()) return Status::Ok();

    Pass p;
    p.call = ++g_call;
    p.qbytes = LI_DISPATCH(query_bytes)(a.heads, a.dim);
    // Enough tasks to balance the threads, few enough that each amortizes its query packing.
    p.chunk = std::clamp<int64_t>(ceil_div(ceil_div(total_keys, num_threads() * 8), 16) * 16, kMinChunk, kMaxChunk);
    p.timed = a.timing != nullptr;
    static thread_local std::vector<uint64_t> cands;  // owned by the calling thread, reused across calls
    std::vector<Task> tasks;
    std::vector<RowSpan> spans;
    int64_t merge_ns = 0;

    for (size_t first = 0; first < active.size();) {
      // One wave: as many rows as fit in kWaveCandidates (at least one).
      tasks.clear();
      spans.clear();
      int64_t held = 0;
      for (; first < active.size(); ++first) {
        const int64_t r = active[first];
        const int64_t eff = eff_of(a, r / a.s1, r % a.s1);
        int64_t need = 0;
        for (int64_t c0 = 0; c0 < eff; c0 += p.chunk) need += std::min(std::min(p.chunk, eff - c0), a.topk);
        if (held > 0 && held + need > kWaveCandidates) break;
        spans.push_back({r, held, need});
        for (int64_t c0 = 0; c0 < eff; c0 += p.chunk) {
          const int64_t c1 = std::min(eff, c0 + p.chunk);
          tasks.push_back({r, c0, c1, held});
          held += std::min(c1 - c0, a.topk);
        }
      }
      if (static_cast<int64_t>(cands.size()) < held) cands.resize(static_cast<size_t>(held));
      p.cand = cands.data();

      parallel_tasks(static_cast<int64_t>(tasks.size()), [&](int64_t t, int) { chunk_task(a, p, tasks[static_cast<size_t>(t)]); });
      if (p.failed) return err(Code::Internal, "lightningIndexer: out of memory for the score buffers");
      const int64_t t0 = now_ns(p.timed);
      parallel_tasks(static_cast<int64_t>(spans.size()), [&](int64_t t, int) { merge_task(a, p, spans[static_cast<size_t>(t)]); });
      merge_ns += now_ns(p.timed) - t0;
      if (p.failed) return err(Code::Internal, "lightningIndexer: out of memory for the selection buffers");
    }
    if (p.timed) {
      a.timing->score_seconds += static_cast<double>(p.score_ns.load()) * 1e-9;
      a.timing->select_seconds += static_cast<double>(p.select_ns.load()) * 1e-9;
      a.timing->merge_wall_seconds += static_cast<double>(merge_ns) * 1e-9;
    }
    return Status::Ok();
  } catch (...) {
    return err(Code::Internal, "lightningIndexer: out of memory for the task lists");
  }
}

}  // namespace li
}  // namespace dsa
