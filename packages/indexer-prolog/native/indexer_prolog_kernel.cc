// Orchestration of the indexer prolog: checks, the bf16 products on the shared GEMM (which picks the
// per-ISA micro-kernels), and the per-token epilogue (RoPE, LayerNorm, rounding, cache scatter).
#include "indexer_prolog_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "dsa/fp8_cache.h"
#include "dsa/thread_pool.h"

namespace dsa {
namespace ip {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

Status shape_error(const std::string& m) { return Status::Error(Code::Shape, m); }

Status check_weight(const char* name, const WeightView& w, int64_t K, int64_t N) {
  if (w.K != K || w.N != N)
    return shape_error(std::string(name) + ": expected shape [" + str(K) + ", " + str(N) + "], got [" + str(w.K) + ", " +
                       str(w.N) + "]");
  if (w.format == WeightFormat::NT)
    return Status::Error(Code::Format, std::string(name) + ": expected format ND, NZ or PACKED, got NT");
  if (w.format == WeightFormat::NZ && (K % 16 != 0 || N % 16 != 0))
    return shape_error(std::string(name) + ": NZ needs K % 16 == 0 and N % 16 == 0, got [" + str(K) + ", " + str(N) + "]");
  if (!w.present() && K * N > 0) return Status::Error(Code::Argument, std::string(name) + ": null data");
  return Status::Ok();
}

Status check_ptr(const char* name, const void* p, int64_t elements) {
  if (p == nullptr && elements > 0) return Status::Error(Code::Argument, std::string(name) + ": null data");
  return Status::Ok();
}

// Slots must lie below cache_rows and be distinct (negative ones are skipped). Sorting a copy keeps
// this O(T log T) for prefill chunks.
Status check_slots(const Args& a) {
  thread_local std::vector<int64_t> seen;  // slot * tokens + token, so a duplicate can name both tokens
  seen.clear();
  for (int64_t t = 0; t < a.tokens; ++t) {
    const int64_t s = a.cache_index[t];
    if (s < 0) continue;
    if (s >= a.cache_rows)
      return Status::Error(Code::Range, "cacheIndex[" + str(t) + "]: expected a slot below " + str(a.cache_rows) +
                                            " (indexKCache blocks * block_size) or a negative value (skip), got " + str(s));
    seen.push_back(s * a.tokens + t);
  }
  std::sort(seen.begin(), seen.end());
  for (size_t i = 1; i < seen.size(); ++i) {
    if (seen[i] / a.tokens == seen[i - 1] / a.tokens)
      return Status::Error(Code::Value, "cacheIndex[" + str(seen[i] % a.tokens) + "]: slot " + str(seen[i] / a.tokens) +
                                            " is also written by token " + str(seen[i - 1] % a.tokens) +
                                            "; each slot may be written once per call");
  }
  return Status::Ok();
}

Status check_common(const Args& a) {
  const int64_t dims[] = {a.tokens, a.q_lora, a.heads, a.head_dim, a.rope, a.cache_rows};
  const char* names[] = {"tokens", "q_lora", "heads", "head_dim", "rope", "cache_rows"};
  for (int i = 0; i < 6; ++i)
    if (dims[i] < 0) return shape_error(std::string(names[i]) + ": expected a non-negative size, got " + str(dims[i]));
  if (a.rope % 2 != 0) return shape_error("sin: expected an even RoPE width, got " + str(a.rope));
  if (a.rope > a.head_dim)
    return shape_error("sin: RoPE width " + str(a.rope) + " exceeds the indexer head dim " + str(a.head_dim) +
                       " (wIdxK.shape[1]); an indexer head must be at least as wide as the RoPE part");
  if (!(a.layer_norm_eps > 0.0f) || !std::isfinite(a.layer_norm_eps))
    return Status::Error(Code::Argument, "layerNormEps: expected a finite positive number, got " + std::to_string(a.layer_norm_eps));
  if (a.rope_mode != RopeMode::Interleaved && a.rope_mode != RopeMode::Half)
    return Status::Error(Code::Argument, "indexerRope: expected interleaved or half");
  DSA_RETURN_IF_ERROR(check_weight("wIdxQb", a.w_qb, a.q_lora, a.heads * a.head_dim));
  DSA_RETURN_IF_ERROR(check_ptr("qNorm", a.q_norm, a.tokens * a.q_lora));
  DSA_RETURN_IF_ERROR(check_ptr("inGammaK", a.gamma_k, a.head_dim));
  DSA_RETURN_IF_ERROR(check_ptr("inBetaK", a.beta_k, a.head_dim));
  DSA_RETURN_IF_ERROR(check_ptr("sin", a.sin, a.tokens * a.rope));
  DSA_RETURN_IF_ERROR(check_ptr("cos", a.cos, a.tokens * a.rope));
  DSA_RETURN_IF_ERROR(check_ptr("cacheIndex", a.cache_index, a.tokens));
  if (a.index_k_cache8) {
    if (a.index_k_cache) return Status::Error(Code::Argument, "indexKCache: expected either the bf16 or the FP8 form, got both");
    if (a.head_dim != kFp8Block)
      return shape_error("indexKCache: an FP8 key cache needs an indexer head dim of 128 (the Hadamard size), got " + str(a.head_dim));
  } else {
    DSA_RETURN_IF_ERROR(check_ptr("indexKCache", a.index_k_cache, a.cache_rows * a.head_dim));
  }
  DSA_RETURN_IF_ERROR(check_ptr("query", a.query, a.tokens * a.heads * a.head_dim));
  DSA_RETURN_IF_ERROR(check_ptr("weights", a.weights, a.tokens * a.heads));
  return check_slots(a);
}

// In-place RoPE on the first `rope` values of v (bf16): fp32 math, one rounding. tmp holds rope floats.
inline void rope_bf16(bf16_t* v, const bf16_t* sn, const bf16_t* cs, int64_t rope, RopeMode mode, float* tmp) {
  const int64_t half = rope / 2;
  for (int64_t j = 0; j < rope; ++j) tmp[j] = bf16_to_f32(v[j]);
  for (int64_t j = 0; j < half; ++j) {
    // (re, im) of pair j: interleaved (2j, 2j+1), half (j, j + half); stored as [re..., im...] either way.
    const float re = mode == RopeMode::Interleaved ? tmp[2 * j] : tmp[j];
    const float im = mode == RopeMode::Interleaved ? tmp[2 * j + 1] : tmp[half + j];
    v[j] = f32_to_bf16(re * bf16_to_f32(cs[j]) - im * bf16_to_f32(sn[j]));
    v[half + j] = f32_to_bf16(im * bf16_to_f32(cs[half + j]) + re * bf16_to_f32(sn[half + j]));
  }
}

// The FP8 key row: bf16(H · key) in fp32, one ue8m0 group, then its scale.
void write_fp8_key(const bf16_t* key, int64_t dim, uint8_t* row) {
  float f[kFp8Block];
  for (int64_t d = 0; d < dim; ++d) f[d] = bf16_to_f32(key[d]);
  hadamard_f32(f, dim);
  for (int64_t d = 0; d < dim; ++d) f[d] = round_bf16(f[d]);
  fp8_store_scale(row + dim, fp8_quantize_group(f, dim, row));
}

// One token: RoPE on each query head, LayerNorm + RoPE of the key and its scatter, weights to bf16.
void epilogue_token(const Args& a, int64_t t, const float* k, const float* w, float* tmp, bf16_t* key) {
  const bf16_t* sn = a.sin + t * a.rope;
  const bf16_t* cs = a.cos + t * a.rope;
  if (a.rope > 0) {
    bf16_t* q = a.query + t * a.heads * a.head_dim;
    for (int64_t h = 0; h < a.heads; ++h) rope_bf16(q + h * a.head_dim, sn, cs, a.rope, a.rope_mode, tmp);
  }
  for (int64_t j = 0; j < a.heads; ++j) a.weights[t * a.heads + j] = f32_to_bf16(w[j]);

  const int64_t slot = a.cache_index[t];
  if (slot < 0 || a.head_dim == 0) return;  // the key only feeds the cache
  // fp32 LayerNorm (the sums in double: cheap at this width and closer to the float64 reference).
  double sum = 0;
  for (int64_t d = 0; d < a.head_dim; ++d) sum += k[d];
  const float mean = static_cast<float>(sum / a.head_dim);
  double sq = 0;
  for (int64_t d = 0; d < a.head_dim; ++d) {
    const float c = k[d] - mean;
    sq += static_cast<double>(c) * c;
  }
  const float rstd = 1.0f / std::sqrt(static_cast<float>(sq / a.head_dim) + a.layer_norm_eps);
  for (int64_t d = 0; d < a.head_dim; ++d)
    key[d] = f32_to_bf16((k[d] - mean) * rstd * bf16_to_f32(a.gamma_k[d]) + bf16_to_f32(a.beta_k[d]));
  rope_bf16(key, sn, cs, a.rope, a.rope_mode, tmp);
  if (a.index_k_cache8) {
    write_fp8_key(key, a.head_dim, a.index_k_cache8 + slot * fp8_index_row_bytes(a.head_dim));
    return;
  }
  std::memcpy(a.index_k_cache + slot * a.head_dim, key, static_cast<size_t>(a.head_dim) * sizeof(bf16_t));
}

// Decode-sized calls (few tokens) are bound by reading the weights. With weights that slice by columns
// (NZ, Packed: each 16-column panel is contiguous) every product runs in one parallel region of
// column slices, so the small x products share the weight stream with q_norm @ w_qb instead of each
// ending in a barrier with idle threads. The slicing depends on the shapes only (results do not
// change with the thread count).
constexpr int64_t kGemvMaxTokens = 4;
// 512 columns of w_qb per task: enough 16-column groups that the serial GEMM does not split K.
constexpr int64_t kQbSlicePanels = 32;
// 64 columns of the x products per task: the micro-kernels amortize their x broadcasts over 4 panels.
constexpr int64_t kXSlicePanels = 4;

bool sliceable(const WeightView& w) {
  return w.format == WeightFormat::NZ || w.format == WeightFormat::Packed || w.format == WeightFormat::Fp8Packed;
}

WeightView panel_slice(const WeightView& w, int64_t p0, int64_t np) {
  WeightView v = w;
  if (w.format == WeightFormat::Fp8Packed) {
    v.fp8 = w.fp8 + p0 * fp8_packed_k(w.K) * 16;
    v.scale = w.scale + p0 * fp8_kblocks(w.K);
    v.N = std::min(np * 16, w.N - p0 * 16);
    return v;
  }
  const int64_t panel_elems = w.format == WeightFormat::NZ ? w.K * 16 : packed_k(w.K) * 16;
  v.data = w.data + p0 * panel_elems;
  v.N = std::min(np * 16, w.N - p0 * 16);
  return v;
}

struct Slice {
  const bf16_t* x;
  int64_t ldx;
  WeightView w;
  GemmOut out;
};

// One task per slice of `w` (`panels` 16-column panels each); out is column 0 of y.
void add_slices(std::vector<Slice>& jobs, const bf16_t* x, int64_t ldx, const WeightView& w, int64_t panels, GemmOut out) {
  const int64_t total = (w.N + 15) / 16;
  for (int64_t p = 0; p < total; p += panels) {
    GemmOut o = out;
    o.data = out.type == OutType::F32 ? static_cast<void*>(static_cast<float*>(out.data) + p * 16)
                                      : static_cast<void*>(static_cast<bf16_t*>(out.data) + p * 16);
    jobs.push_back({x, ldx, panel_slice(w, p, panels), o});
  }
}

// All products of a decode-sized call in one region; false (nothing done) when the shape or the weight
// formats do not suit it. proj == nullptr: only q_norm @ w_qb (the x products come from the caller).
bool gemv_region(const Args& a, float* proj, int64_t ld) {
  const bool with_x = proj != nullptr;
  if (a.tokens > kGemvMaxTokens || !sliceable(a.w_qb)) return false;
  if (with_x && !(a.w_kproj.present() ? sliceable(a.w_kproj) : sliceable(a.w_k) && sliceable(a.w_proj))) return false;
  thread_local std::vector<Slice> job_list;  // reused; the tasks below see it through this reference
  std::vector<Slice>& jobs = job_list;
  jobs.clear();
  if (with_x) {
    // First, so that the long-K x slices do not form the tail of the region.
    const GemmOut po{proj, ld, OutType::F32, false};
    if (a.w_kproj.present()) {
      add_slices(jobs, a.x, a.hidden, a.w_kproj, kXSlicePanels, po);
    } else {
      add_slices(jobs, a.x, a.hidden, a.w_k, kXSlicePanels, po);
      add_slices(jobs, a.x, a.hidden, a.w_proj, kXSlicePanels, GemmOut{proj + a.head_dim, ld, OutType::F32, false});
    }
  }
  add_slices(jobs, a.q_norm, a.q_lora, a.w_qb, kQbSlicePanels, GemmOut{a.query, a.heads * a.head_dim, OutType::BF16, false});
  parallel_tasks(static_cast<int64_t>(jobs.size()), [&](int64_t j, int) {
    const Slice& s = jobs[j];
    matmul_serial(s.x, s.ldx, a.tokens, s.w, s.out);
  });
  return true;
}

// RoPE, LayerNorm, rounding and scatter for every token, over the pool.
void epilogue(const Args& a, const float* k_f32, int64_t ld_k, const float* w_f32, int64_t ld_w) {
  // Enough tokens per task that the tiny per-token work does not drown in scheduling.
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, a.heads * a.rope + 4 * a.head_dim));
  parallel_for(a.tokens, grain, [&](int64_t t0, int64_t t1, int) {
    thread_local std::vector<float> tmp;
    thread_local std::vector<bf16_t> key;
    tmp.resize(static_cast<size_t>(a.rope));
    key.resize(static_cast<size_t>(a.head_dim));
    for (int64_t t = t0; t < t1; ++t) epilogue_token(a, t, k_f32 + t * ld_k, w_f32 + t * ld_w, tmp.data(), key.data());
  });
}

Status from_projections(const Args& a, const float* k_f32, int64_t ld_k, const float* w_f32, int64_t ld_w) {
  if (a.tokens == 0) return Status::Ok();
  if (!gemv_region(a, nullptr, 0)) {
    // q = bf16(q_norm @ w_qb) straight into the output; RoPE then rewrites the first `rope` dims of each head.
    const GemmOut qo{a.query, a.heads * a.head_dim, OutType::BF16, false};
    if (!matmul(a.q_norm, a.q_lora, a.tokens, a.w_qb, qo)) return Status::Error(Code::Internal, "wIdxQb: matmul refused its arguments");
  }
  epilogue(a, k_f32, ld_k, w_f32, ld_w);
  return Status::Ok();
}

}  // namespace

Status validate_from_projections(const Args& a) noexcept {
  try {
    return check_common(a);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Internal, "indexerProlog: out of memory");
  }
}

Status validate(const Args& a) noexcept {
  try {
    if (a.hidden < 0) return shape_error("x: expected a non-negative hidden size, got " + str(a.hidden));
    DSA_RETURN_IF_ERROR(check_ptr("x", a.x, a.tokens * a.hidden));
    if (a.w_kproj.present()) {
      DSA_RETURN_IF_ERROR(check_weight("wIdxKProj", a.w_kproj, a.hidden, a.head_dim + a.heads));
    } else {
      DSA_RETURN_IF_ERROR(check_weight("wIdxK", a.w_k, a.hidden, a.head_dim));
      DSA_RETURN_IF_ERROR(check_weight("wIdxProj", a.w_proj, a.hidden, a.heads));
    }
    return check_common(a);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Internal, "indexerProlog: out of memory");
  }
}

Status run_from_projections(const Args& a, const float* k_f32, int64_t ld_k, const float* w_f32, int64_t ld_w) noexcept {
  try {
    DSA_RETURN_IF_ERROR(check_common(a));
    if (a.tokens > 0 && ((k_f32 == nullptr && a.head_dim > 0) || (w_f32 == nullptr && a.heads > 0) ||
                         ld_k < a.head_dim || ld_w < a.heads))
      return Status::Error(Code::Argument, "projections: expected k_f32/w_f32 rows of at least head_dim/heads floats");
    return from_projections(a, k_f32, ld_k, w_f32, ld_w);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Internal, "indexerProlog: out of memory");
  }
}

Status run(const Args& a) noexcept {
  try {
    DSA_RETURN_IF_ERROR(validate(a));
    if (a.tokens == 0) return Status::Ok();
    // [k | w] fp32 per token; grows to the largest call seen, then reused.
    const int64_t ld = a.head_dim + a.heads;
    thread_local std::vector<float> proj;
    proj.resize(static_cast<size_t>(a.tokens * ld));
    if (gemv_region(a, proj.data(), ld)) {
      epilogue(a, proj.data(), ld, proj.data() + a.head_dim, ld);
      return Status::Ok();
    }
    GemmOut o{proj.data(), ld, OutType::F32, false};
    bool ok;
    if (a.w_kproj.present()) {
      ok = matmul(a.x, a.hidden, a.tokens, a.w_kproj, o);
    } else {
      ok = matmul(a.x, a.hidden, a.tokens, a.w_k, o);
      o.data = proj.data() + a.head_dim;
      ok = ok && matmul(a.x, a.hidden, a.tokens, a.w_proj, o);
    }
    if (!ok) return Status::Error(Code::Internal, "wIdxK: matmul refused its arguments");
    return from_projections(a, proj.data(), ld, proj.data() + a.head_dim, ld);
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::Internal, "indexerProlog: out of memory");
  }
}

}  // namespace ip
}  // namespace dsa
