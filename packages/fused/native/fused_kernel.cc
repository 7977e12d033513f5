#include "fused_kernel.h"

#include <algorithm>
#include <chrono>

#include "dsa/fp8_cache.h"
#include "dsa/thread_pool.h"
#include "indexer_prolog_kernel.h"
#include "lightning_indexer_kernel.h"
#include "mla_prolog_kernel.h"
#include "sparse_flash_attn_kernel.h"

namespace dsa {
namespace fused {
namespace {

bf16_t element(const WeightView& w, int64_t k, int64_t n) {
  switch (w.format) {
    case WeightFormat::ND: return w.data[k * w.N + n];
    case WeightFormat::NZ: return w.data[(n >> 4) * w.K * 16 + k * 16 + (n & 15)];
    case WeightFormat::NT: return w.data[n * w.K + k];
    case WeightFormat::Packed:
      return w.data[((n >> 4) * (packed_k(w.K) / 2) + (k >> 1)) * 32 + (n & 15) * 2 + (k & 1)];
    default: break;  // FP8 weights are packed by pack_fp8_weights
  }
  return 0;
}

Status check_weight(const char* name, const WeightView& w, int64_t K, int64_t N) {
  if (!w.present() || w.K != K || w.N != N)
    return Status::Error(Code::Shape, std::string(name) + ": expected [" + std::to_string(K) + ", " + std::to_string(N) +
                                          "], got [" + std::to_string(w.K) + ", " + std::to_string(w.N) + "]");
  return Status::Ok();
}

// Room for `panels` 16-column panels of a [K, *] weight in the kernels' layout (bf16 or FP8).
PackedWeight packed_storage(bool fp8, int64_t K, int64_t N) {
  PackedWeight p;
  p.view.K = K;
  p.view.N = N;
  if (fp8) {
    p.fp8.resize(static_cast<size_t>(fp8_packed_bytes(K, N)));
    p.scale.resize(static_cast<size_t>(fp8_scales(WeightFormat::Fp8Packed, K, N)));
    p.view.format = WeightFormat::Fp8Packed;
    p.view.fp8 = p.fp8.data();
    p.view.scale = p.scale.data();
  } else {
    p.bf16.resize(static_cast<size_t>(packed_elements(K, N)));
    p.view.format = WeightFormat::Packed;
    p.view.data = p.bf16.data();
  }
  return p;
}

PackedWeight packed(const WeightView& w) {
  PackedWeight p = packed_storage(w.is_fp8(), w.K, w.N);
  if (w.is_fp8()) {
    pack_fp8_weights(w, p.fp8.data(), p.scale.data());
  } else {
    pack_weights(w, p.bf16.data());
  }
  return p;
}

// Join consecutive weights [K, N_i] column-wise into one packed weight: bf16 element by element,
// FP8 panel by panel (every width but the last a multiple of 16, so each panel has one source).
PackedWeight joined(const std::vector<const WeightView*>& parts) {
  const int64_t K = parts[0]->K;
  int64_t cols = 0;
  for (const WeightView* w : parts) cols += w->N;
  if (parts.size() == 1) return packed(*parts[0]);
  if (parts[0]->is_fp8()) {
    PackedWeight p = packed_storage(true, K, cols);
    const int64_t ps = fp8_packed_k(K) * 16, kb = fp8_kblocks(K);
    int64_t c = 0;
    for (const WeightView* w : parts) {
      pack_fp8_weights(*w, p.fp8.data() + c / 16 * ps, p.scale.data() + c / 16 * kb);
      c += w->N;
    }
    return p;
  }
  std::vector<bf16_t> nd(static_cast<size_t>(K * cols));
  parallel_for(K, 64, [&](int64_t k0, int64_t k1, int) {
    for (int64_t k = k0; k < k1; ++k) {
      int64_t c = 0;
      for (const WeightView* w : parts)
        for (int64_t n = 0; n < w->N; ++n) nd[k * cols + c++] = element(*w, k, n);
    }
  });
  return packed(WeightView{nd.data(), K, cols, WeightFormat::ND});
}

template <class T>
void grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

bool cancelled(const int32_t* cell) { return cell && __atomic_load_n(cell, __ATOMIC_RELAXED) != 0; }

// Copy the rows of the written slots out of (save) or back into (restore) the caches.
void swap_rows(const Step& s, const Dims& d, std::vector<uint8_t>& saved, bool save) {
  const int64_t T = s.b * s.s1;
  // Row bytes and base of each cache (an FP8 latent cache has no separate rope cache: width 0).
  const int64_t widths[3] = {s.kv_cache8 ? fp8_kv_row_bytes(d.kv_lora, d.rope) : 2 * d.kv_lora, s.kv_cache8 ? 0 : 2 * d.rope,
                             s.index_k_cache8 ? fp8_index_row_bytes(d.idx_dim) : 2 * d.idx_dim};
  uint8_t* caches[3] = {s.kv_cache8 ? s.kv_cache8 : reinterpret_cast<uint8_t*>(s.kv_cache), reinterpret_cast<uint8_t*>(s.kr_cache),
                        s.index_k_cache8 ? s.index_k_cache8 : reinterpret_cast<uint8_t*>(s.index_k_cache)};
  if (save) saved.resize(static_cast<size_t>(T * (widths[0] + widths[1] + widths[2])));
  uint8_t* p = saved.data();
  for (int64_t t = 0; t < T; ++t) {
    const int32_t slot = s.cache_index[t];
    for (int c = 0; c < 3; ++c) {
      if (widths[c] == 0) continue;
      uint8_t* row = caches[c] + static_cast<int64_t>(slot) * widths[c];
      if (slot >= 0) {
        if (save) std::copy(row, row + widths[c], p);
        else std::copy(p, p + widths[c], row);
      }
      p += widths[c];
    }
  }
}

// Rows of the batch handled per indexer/attention call when the call can be cancelled.
int64_t chunk_rows(const Step& s) {
  if (!s.cancel) return s.b;
  return std::max<int64_t>(1, 8 / std::max<int64_t>(1, s.s1));
}

double ms_since(std::chrono::steady_clock::time_point& t) {
  auto now = std::chrono::steady_clock::now();
  double ms = std::chrono::duration<double, std::milli>(now - t).count();
  t = now;
  return ms;
}

}  // namespace

int64_t PackedWeight::bytes() const {
  return static_cast<int64_t>(2 * bf16.size() + fp8.size() + 4 * scale.size());
}

int64_t Prepared::bytes() const {
  int64_t b = w_uq_qr.bytes() + w_uk.bytes() + w_idx_qb.bytes();
  for (const XPart& p : x_parts) b += p.w.bytes();
  return b + 2 * static_cast<int64_t>(gamma_cq.size() + gamma_ckv.size() + gamma_k.size() + beta_k.size());
}

Status prepare(const WeightsIn& in, Prepared* out) noexcept {
  const Dims& d = in.d;
  if (d.h <= 0 || d.q_lora <= 0 || d.n <= 0 || d.qk_nope <= 0 || d.kv_lora <= 0 || d.rope <= 0 || d.rope % 2 ||
      d.idx_heads <= 0 || d.idx_dim < d.rope)
    return Status::Error(Code::Shape, "weights: inconsistent layer dimensions");
  DSA_RETURN_IF_ERROR(check_weight("wDq", in.w_dq, d.h, d.q_lora));
  DSA_RETURN_IF_ERROR(check_weight("wUqQr", in.w_uq_qr, d.q_lora, d.n * (d.qk_nope + d.rope)));
  DSA_RETURN_IF_ERROR(check_weight("wDkvKr", in.w_dkv_kr, d.h, d.kv_lora + d.rope));
  DSA_RETURN_IF_ERROR(check_weight("wIdxQb", in.w_idx_qb, d.q_lora, d.idx_heads * d.idx_dim));
  DSA_RETURN_IF_ERROR(check_weight("wIdxK", in.w_idx_k, d.h, d.idx_dim));
  DSA_RETURN_IF_ERROR(check_weight("wIdxProj", in.w_idx_proj, d.h, d.idx_heads));
  const WeightFormat uk = in.w_uk_format;
  const bool uk_fp8 = uk == WeightFormat::Fp8ND || uk == WeightFormat::Fp8Packed;
  if ((uk_fp8 ? !in.w_uk_fp8 || !in.w_uk_scale : uk != WeightFormat::ND || !in.w_uk) || !in.gamma_cq || !in.gamma_ckv ||
      !in.gamma_k || !in.beta_k)
    return Status::Error(Code::Argument, "weights: a weight is missing");
  try {
    Prepared p;
    p.d = d;
    // The x-side weights, joined where the dtypes allow (see Prepared::x_parts).
    const WeightView* parts[] = {&in.w_dq, &in.w_dkv_kr, &in.w_idx_k, &in.w_idx_proj};
    std::vector<const WeightView*> run;
    int64_t col = 0, run_col = 0;
    for (const WeightView* w : parts) {
      const bool joins = !run.empty() && run.back()->is_fp8() == w->is_fp8() && (!w->is_fp8() || run.back()->N % 16 == 0);
      if (!run.empty() && !joins) {
        p.x_parts.push_back({run_col, joined(run)});
        run.clear();
        run_col = col;
      }
      run.push_back(w);
      col += w->N;
    }
    p.x_parts.push_back({run_col, joined(run)});
    p.w_uq_qr = packed(in.w_uq_qr);
    p.w_idx_qb = packed(in.w_idx_qb);
    if (uk_fp8) {
      // Each head packed on its own (mla::Args' Fp8Packed W_UK layout).
      PackedWeight& w = p.w_uk;
      const int64_t in_bytes = fp8_bytes(uk, d.qk_nope, d.kv_lora), in_scales = fp8_scales(uk, d.qk_nope, d.kv_lora);
      const int64_t out_bytes = fp8_packed_bytes(d.qk_nope, d.kv_lora);
      const int64_t out_scales = fp8_scales(WeightFormat::Fp8Packed, d.qk_nope, d.kv_lora);
      w.fp8.resize(static_cast<size_t>(d.n * out_bytes));
      w.scale.resize(static_cast<size_t>(d.n * out_scales));
      parallel_tasks(d.n, [&](int64_t h, int) {
        WeightView src{nullptr, d.qk_nope, d.kv_lora, uk, in.w_uk_fp8 + h * in_bytes, in.w_uk_scale + h * in_scales};
        pack_fp8_panels(src, 0, packed_n(d.kv_lora) / 16, w.fp8.data() + h * out_bytes, w.scale.data() + h * out_scales);
      });
      w.view = WeightView{nullptr, d.qk_nope, d.kv_lora, WeightFormat::Fp8Packed, w.fp8.data(), w.scale.data()};
    } else {
      PackedWeight& w = p.w_uk;
      w.bf16.resize(static_cast<size_t>(mla::packed_w_uk_elements(d.n, d.qk_nope, d.kv_lora)));
      mla::pack_w_uk(in.w_uk, d.n, d.qk_nope, d.kv_lora, w.bf16.data());
      w.view = WeightView{w.bf16.data(), d.qk_nope, d.kv_lora, WeightFormat::Packed};
    }
    p.gamma_cq.assign(in.gamma_cq, in.gamma_cq + d.q_lora);
    p.gamma_ckv.assign(in.gamma_ckv, in.gamma_ckv + d.kv_lora);
    p.gamma_k.assign(in.gamma_k, in.gamma_k + d.idx_dim);
    p.beta_k.assign(in.beta_k, in.beta_k + d.idx_dim);
    *out = std::move(p);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Internal, "weights: out of memory while preparing the layer");
  }
  return Status::Ok();
}

namespace {
Status run_impl(const Prepared& p, const Step& s, Workspace& ws, Times* times);
}  // namespace

Status run(const Prepared& p, const Step& s, Workspace& ws, Times* times) noexcept {
  try {
    return run_impl(p, s, ws, times);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Internal, "inputs: out of memory during the call");
  } catch (...) {
    return Status::Error(Code::Internal, "inputs: unexpected failure during the call");
  }
}

namespace {
Status run_impl(const Prepared& p, const Step& s, Workspace& ws, Times* times) {
  const Dims& d = p.d;
  const int64_t T = s.b * s.s1;
  if (s.b < 0 || s.s1 < 0 || s.block_num < 0 || s.block_size <= 0 || s.max_blocks < 0 || !s.out)
    return Status::Error(Code::Argument, "inputs: inconsistent call dimensions");
  if (T == 0) return Status::Ok();
  if (!s.x || !s.sin || !s.cos || !s.cache_index || !s.block_table || !s.act_seqs ||
      !(s.kv_cache8 || (s.kv_cache && s.kr_cache)) || !(s.index_k_cache || s.index_k_cache8))
    return Status::Error(Code::Argument, "inputs: a tensor is missing");
  try {
    grow(ws.proj, T * d.x_cols());
    grow(ws.q_nope, T * d.n * d.kv_lora);
    grow(ws.q_rope, T * d.n * d.rope);
    grow(ws.q_norm, T * d.q_lora);
    grow(ws.query, T * d.idx_heads * d.idx_dim);
    grow(ws.weights, T * d.idx_heads);
    if (!s.indices) grow(ws.indices, T * s.topk);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Internal, "inputs: out of memory for the workspace");
  }
  const int64_t cache_rows = s.block_num * s.block_size;

  mla::Args m;
  m.T = T; m.h = d.h; m.q_lora = d.q_lora; m.n = d.n; m.qk_nope = d.qk_nope; m.rope = d.rope; m.kv_lora = d.kv_lora;
  m.block_num = s.block_num; m.block_size = s.block_size;
  m.w_uq_qr = p.w_uq_qr.view;
  m.w_uk = p.w_uk.view.data; m.w_uk_fp8 = p.w_uk.view.fp8; m.w_uk_scale = p.w_uk.view.scale;
  m.w_uk_format = p.w_uk.view.format;
  m.gamma_cq = p.gamma_cq.data(); m.gamma_ckv = p.gamma_ckv.data();
  m.sin = s.sin; m.cos = s.cos; m.cache_index = s.cache_index;
  m.kv_cache = s.kv_cache; m.kr_cache = s.kr_cache; m.kv_cache8 = s.kv_cache8;
  m.q_nope = ws.q_nope.data(); m.q_rope = ws.q_rope.data(); m.q_norm = ws.q_norm.data();
  m.rms_norm_eps = s.rms_norm_eps;

  ip::Args q;
  q.tokens = T; q.hidden = d.h; q.q_lora = d.q_lora; q.heads = d.idx_heads; q.head_dim = d.idx_dim; q.rope = d.rope;
  q.cache_rows = cache_rows; q.q_norm = ws.q_norm.data();
  q.w_qb = p.w_idx_qb.view;
  q.gamma_k = p.gamma_k.data(); q.beta_k = p.beta_k.data();
  q.sin = s.sin; q.cos = s.cos; q.cache_index = s.cache_index; q.index_k_cache = s.index_k_cache;
  q.index_k_cache8 = s.index_k_cache8;
  q.query = ws.query.data(); q.weights = ws.weights.data();
  q.layer_norm_eps = static_cast<float>(s.layer_norm_eps);
  q.rope_mode = s.indexer_rope == 1 ? ip::RopeMode::Half : ip::RopeMode::Interleaved;

  li::Args l;
  l.query = ws.query.data(); l.weights = ws.weights.data(); l.index_k_cache = s.index_k_cache;
  l.index_k_cache8 = s.index_k_cache8;
  l.block_table = s.block_table; l.act_seqs = s.act_seqs;
  l.b = s.b; l.s1 = s.s1; l.heads = d.idx_heads; l.dim = d.idx_dim;
  l.block_num = s.block_num; l.block_size = s.block_size; l.max_blocks = s.max_blocks;
  l.topk = s.topk; l.sparse_mode = s.sparse_mode;
  l.indices = s.indices ? s.indices : ws.indices.data();

  sfa::Args a;
  a.q_nope = ws.q_nope.data(); a.q_rope = ws.q_rope.data(); a.kv_cache = s.kv_cache; a.kr_cache = s.kr_cache;
  a.kv_cache8 = s.kv_cache8;
  a.indices = l.indices; a.block_table = s.block_table; a.act_seqs = s.act_seqs; a.out = s.out;
  a.b = s.b; a.s1 = s.s1; a.n = d.n; a.kv_lora = d.kv_lora; a.rope = d.rope;
  a.blocks = s.block_num; a.block_size = s.block_size; a.topk = s.topk; a.max_blocks = s.max_blocks;
  a.softmax_scale = static_cast<float>(s.softmax_scale); a.sparse_mode = s.sparse_mode;

  // Everything is checked before the first cache write. The attention's index checks need the
  // indexer's output, which is valid by construction; its other checks run here on -1 indices.
  // mla::validate wants the x side too; it checks shapes only, so describe the joined weight's
  // columns as the two views (run_from_projections below does not read them).
  m.x = s.x;
  m.w_dq = m.w_dkv_kr = p.x_parts[0].w.view;
  m.w_dq.N = d.q_lora;
  m.w_dkv_kr.N = d.kv_lora + d.rope;
  DSA_RETURN_IF_ERROR(mla::validate(m));
  m.x = nullptr;
  m.w_dq = m.w_dkv_kr = WeightView{};
  DSA_RETURN_IF_ERROR(ip::validate_from_projections(q));
  DSA_RETURN_IF_ERROR(li::validate(l));
  std::fill(l.indices, l.indices + T * s.topk, -1);
  DSA_RETURN_IF_ERROR(sfa::validate(a));

  if (s.cancel) {
    try {
      swap_rows(s, d, ws.saved_rows, true);
    } catch (const std::bad_alloc&) {
      return Status::Error(Code::Internal, "inputs: out of memory for the workspace");
    }
  }
  auto abort = [&] {
    swap_rows(s, d, ws.saved_rows, false);
    return Status::Error(Code::Aborted, "signal: the call was aborted; the caches are as they were before it");
  };
  if (cancelled(s.cancel)) return abort();
  auto t = std::chrono::steady_clock::now();
  Times tm;
  for (const Prepared::XPart& part : p.x_parts) {
    GemmOut proj{ws.proj.data() + part.col, d.x_cols(), OutType::F32, false};
    if (!matmul(s.x, d.h, T, part.w.view, proj)) return Status::Error(Code::Internal, "x: projection failed");
  }
  tm.projections = ms_since(t);
  const float* pr = ws.proj.data();
  const int64_t ld = d.x_cols();
  DSA_RETURN_IF_ERROR(mla::run_from_projections(m, pr, ld, pr + d.q_lora, ld));
  tm.mla_prolog = ms_since(t);
  if (cancelled(s.cancel)) return abort();
  const int64_t k_off = d.q_lora + d.kv_lora + d.rope;
  DSA_RETURN_IF_ERROR(ip::run_from_projections(q, pr + k_off, ld, pr + k_off + d.idx_dim, ld));
  tm.indexer_prolog = ms_since(t);
  // The indexer and the attention run over chunks of batch rows when the call can be cancelled.
  const int64_t step = chunk_rows(s);
  for (int64_t b0 = 0; b0 < s.b; b0 += step) {
    if (cancelled(s.cancel)) return abort();
    const int64_t nb = std::min(step, s.b - b0);
    li::Args lc = l;
    lc.b = nb;
    lc.query += b0 * s.s1 * d.idx_heads * d.idx_dim;
    lc.weights += b0 * s.s1 * d.idx_heads;
    lc.block_table += b0 * s.max_blocks;
    lc.act_seqs += b0;
    lc.indices += b0 * s.s1 * s.topk;
    DSA_RETURN_IF_ERROR(li::run(lc));
  }
  tm.lightning_indexer = ms_since(t);
  for (int64_t b0 = 0; b0 < s.b; b0 += step) {
    if (cancelled(s.cancel)) return abort();
    const int64_t nb = std::min(step, s.b - b0);
    sfa::Args ac = a;
    ac.b = nb;
    ac.q_nope += b0 * s.s1 * d.n * d.kv_lora;
    ac.q_rope += b0 * s.s1 * d.n * d.rope;
    ac.indices += b0 * s.s1 * s.topk;
    ac.block_table += b0 * s.max_blocks;
    ac.act_seqs += b0;
    ac.out += b0 * s.s1 * d.n * d.kv_lora;
    DSA_RETURN_IF_ERROR(sfa::run(ac));
  }
  tm.sparse_flash_attention = ms_since(t);
  if (times) *times = tm;
  return Status::Ok();
}
}  // namespace

}  // namespace fused
}  // namespace dsa
