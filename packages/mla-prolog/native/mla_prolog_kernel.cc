// MLA prolog orchestration: the GEMMs run on dsa::matmul (per-ISA micro-kernels in tensor-core);
// the element-wise steps (RMSNorm, RoPE, scatter) are a few hundred operations per token and run in
// double, so they round exactly like the float64 reference (one rounding to fp32, then to bf16).
#include "mla_prolog_kernel.h"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "dsa/fp8_cache.h"
#include "dsa/thread_pool.h"

namespace dsa {
namespace mla {
namespace {

// Tokens per pass: bounds the scratch (at DeepSeek sizes 2.2 MB of fp32 products and 12.6 MB of q)
// while keeping every GEMM large enough to run at the dot rate.
constexpr int64_t kTokenChunk = 256;
// Rows of one absorption task when W_UK is packed bf16 (no per-task packing cost, so split finely).
constexpr int64_t kHeadRows = 64;
// dsa::matmul reads ND weights in place (GEMV kernel) up to this many rows and packs them beyond.
constexpr int64_t kDirectRows = 4;

Status fail(Code c, std::string m) { return Status::Error(c, std::move(m)); }

std::string dims2(int64_t a, int64_t b) { return "[" + std::to_string(a) + ", " + std::to_string(b) + "]"; }

Status check_weight(const char* name, const WeightView& w, int64_t K, int64_t N) {
  if (w.format == WeightFormat::NT) return fail(Code::Format, std::string(name) + ": expected format ND, NZ or PACKED");
  if (w.K != K || w.N != N)
    return fail(Code::Shape, std::string(name) + ": expected shape " + dims2(K, N) + ", got " + dims2(w.K, w.N));
  if (w.format == WeightFormat::NZ && (K % 16 != 0 || N % 16 != 0))
    return fail(Code::Shape, std::string(name) + ": NZ needs K % 16 == 0 and N % 16 == 0, got " + dims2(K, N));
  if (!w.present()) return fail(Code::Argument, std::string(name) + ": missing data");
  return Status::Ok();
}

Status need(const void* p, int64_t elements, const char* name) {
  if (elements > 0 && p == nullptr) return fail(Code::Argument, std::string(name) + ": missing data");
  return Status::Ok();
}

// with_inputs: also check x, W_DQ and W_DKVKR (run() reads them; run_from_projections does not).
Status validate_impl(const Args& a, bool with_inputs) {
  if (a.T < 0) return fail(Code::Shape, "x: expected b * s1 >= 0 tokens, got " + std::to_string(a.T));
  const std::pair<const char*, int64_t> positive[] = {{"x: hidden size h", a.h},
                                                      {"wDq: q_lora", a.q_lora},
                                                      {"wUk: heads n", a.n},
                                                      {"wUk: qk_nope", a.qk_nope},
                                                      {"wUk: kv_lora", a.kv_lora}};
  for (const auto& p : positive)
    if (p.second < 1) return fail(Code::Shape, std::string(p.first) + " must be >= 1, got " + std::to_string(p.second));
  if (a.rope < 0 || a.rope % 2 != 0)
    return fail(Code::Shape, "cos: expected an even rope width, got " + std::to_string(a.rope));
  if (a.block_num < 0 || a.block_size < 0)
    return fail(Code::Shape, "kvCache: expected non-negative block_num and block_size, got " + dims2(a.block_num, a.block_size));
  if (!(a.rms_norm_eps > 0.0) || !std::isfinite(a.rms_norm_eps))
    return fail(Code::Argument, "rmsNormEps: expected a finite positive number, got " + std::to_string(a.rms_norm_eps));

  if (with_inputs) {
    DSA_RETURN_IF_ERROR(need(a.x, a.T * a.h, "x"));
    DSA_RETURN_IF_ERROR(check_weight("wDq", a.w_dq, a.h, a.q_lora));
    DSA_RETURN_IF_ERROR(check_weight("wDkvKr", a.w_dkv_kr, a.h, a.kv_lora + a.rope));
  }
  DSA_RETURN_IF_ERROR(check_weight("wUqQr", a.w_uq_qr, a.q_lora, a.n * (a.qk_nope + a.rope)));
  const WeightFormat uk = a.w_uk_format;
  if (uk != WeightFormat::ND && uk != WeightFormat::Packed && uk != WeightFormat::Fp8ND && uk != WeightFormat::Fp8Packed)
    return fail(Code::Format, "wUk: expected format ND (or the prepared packed form), bf16 or FP8");
  if (uk == WeightFormat::Fp8ND || uk == WeightFormat::Fp8Packed) {
    DSA_RETURN_IF_ERROR(need(a.w_uk_fp8, 1, "wUk"));
    DSA_RETURN_IF_ERROR(need(a.w_uk_scale, 1, "wUk.blockScale"));
  } else {
    DSA_RETURN_IF_ERROR(need(a.w_uk, 1, "wUk"));
  }
  DSA_RETURN_IF_ERROR(need(a.gamma_cq, 1, "gammaCq"));
  DSA_RETURN_IF_ERROR(need(a.gamma_ckv, 1, "gammaCkv"));
  DSA_RETURN_IF_ERROR(need(a.sin, a.T * a.rope, "sin"));
  DSA_RETURN_IF_ERROR(need(a.cos, a.T * a.rope, "cos"));
  DSA_RETURN_IF_ERROR(need(a.cache_index, a.T, "cacheIndex"));
  const int64_t rows = a.block_num * a.block_size;
  if (a.kv_cache8) {
    if (a.kv_cache || a.kr_cache)
      return fail(Code::Argument, "krCache: expected no krCache with an FP8 kvCache (its rows hold the rope part)");
    if (a.kv_lora % kFp8Block != 0)
      return fail(Code::Shape, "kvCache: an FP8 latent cache needs kv_lora % 128 == 0, got kv_lora " + std::to_string(a.kv_lora));
  } else {
    DSA_RETURN_IF_ERROR(need(a.kv_cache, rows, "kvCache"));
    DSA_RETURN_IF_ERROR(need(a.kr_cache, rows * a.rope, "krCache"));
  }
  DSA_RETURN_IF_ERROR(need(a.q_nope, a.T, "qNope"));
  DSA_RETURN_IF_ERROR(need(a.q_rope, a.T * a.rope, "qRope"));
  DSA_RETURN_IF_ERROR(need(a.q_norm, a.T, "qNorm"));

  // Slots: in range, and no two tokens on one slot (the write order would decide the result).
  std::vector<std::pair<int32_t, int64_t>> used;
  used.reserve(static_cast<size_t>(a.T));
  for (int64_t t = 0; t < a.T; ++t) {
    const int32_t s = a.cache_index[t];
    if (s < 0) continue;
    if (s >= rows)
      return fail(Code::Range, "cacheIndex: token " + std::to_string(t) + " has slot " + std::to_string(s) +
                                   ", expected < block_num * block_size = " + std::to_string(rows) + " (or negative to skip)");
    used.emplace_back(s, t);
  }
  std::sort(used.begin(), used.end());
  for (size_t i = 1; i < used.size(); ++i)
    if (used[i].first == used[i - 1].first)
      return fail(Code::Value, "cacheIndex: tokens " + std::to_string(used[i - 1].second) + " and " +
                                   std::to_string(used[i].second) + " both write slot " + std::to_string(used[i].first) +
                                   ", expected distinct slots");
  return Status::Ok();
}

// out[i] = bf16(v[i] * gamma[i] / sqrt(mean(v^2) + eps)) for bf16-rounded v.
void rms_norm(const float* v, const bf16_t* gamma, int64_t d, double eps, bf16_t* out) {
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) {
    const double x = round_bf16(v[i]);
    ss += x * x;
  }
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
  for (int64_t i = 0; i < d; ++i)
    out[i] = f32_to_bf16(static_cast<float>(static_cast<double>(round_bf16(v[i])) * inv * bf16_to_f32(gamma[i])));
}

// Interleaved RoPE of the `rope` values x(0..rope-1) (bf16 values), output de-interleaved.
template <class Load>
void rope_rotate(Load x, const bf16_t* c, const bf16_t* s, int64_t rope, bf16_t* out) {
  const int64_t half = rope / 2;
  for (int64_t j = 0; j < half; ++j) {
    const double x0 = x(2 * j), x1 = x(2 * j + 1);
    out[j] = f32_to_bf16(static_cast<float>(x0 * bf16_to_f32(c[j]) - x1 * bf16_to_f32(s[j])));
    out[half + j] = f32_to_bf16(static_cast<float>(x1 * bf16_to_f32(c[half + j]) + x0 * bf16_to_f32(s[half + j])));
  }
}

// One FP8 latent row: the bf16 latent the bf16 cache would hold, quantized per tile of 128, its
// tile scales, then the bf16 rope values (dsa/fp8_cache.h).
template <class Rope>
void write_fp8_row(const Args& a, const float* kv, double eps, Rope rope, uint8_t* row) {
  thread_local std::vector<bf16_t> lat, rp;
  thread_local std::vector<float> f;
  lat.resize(static_cast<size_t>(a.kv_lora));
  rp.resize(static_cast<size_t>(a.rope));
  f.resize(static_cast<size_t>(a.kv_lora));
  rms_norm(kv, a.gamma_ckv, a.kv_lora, eps, lat.data());
  for (int64_t i = 0; i < a.kv_lora; ++i) f[i] = bf16_to_f32(lat[i]);
  const int64_t tiles = a.kv_lora / kFp8Block;
  for (int64_t g = 0; g < tiles; ++g)
    fp8_store_scale(row + a.kv_lora + 4 * g, fp8_quantize_group(f.data() + g * kFp8Block, kFp8Block, row + g * kFp8Block));
  rope(rp.data());
  std::memcpy(row + a.kv_lora + 4 * tiles, rp.data(), static_cast<size_t>(a.rope) * 2);
}

// Per-calling-thread scratch, grown on demand and reused by later calls.
struct Scratch {
  std::vector<float> proj;  // [chunk, q_lora + kv_lora + rope] products (run() only)
  std::vector<bf16_t> q;    // [chunk, n * (qk_nope + rope)]
};
thread_local Scratch t_scratch;

// Tokens [t0, t1): q_norm, cache rows, q = q_norm @ W_UQQR, then per head the rope and the absorption.
void process_chunk(const Args& a, int64_t t0, int64_t t1, const float* qa, int64_t ld_qa, const float* kva,
                   int64_t ld_kva, bf16_t* q) {
  const int64_t tc = t1 - t0, dq = a.qk_nope + a.rope, ldq = a.n * dq;
  const double eps = a.rms_norm_eps;
  parallel_for(tc, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t t = t0 + i;
      rms_norm(qa + i * ld_qa, a.gamma_cq, a.q_lora, eps, a.q_norm + t * a.q_lora);
      const int32_t slot = a.cache_index[t];
      if (slot < 0) continue;
      const float* kv = kva + i * ld_kva;
      auto rope = [&](bf16_t* dst) {
        rope_rotate([&](int64_t j) { return static_cast<double>(round_bf16(kv[a.kv_lora + j])); }, a.cos + t * a.rope,
                    a.sin + t * a.rope, a.rope, dst);
      };
      if (a.kv_cache8) {
        write_fp8_row(a, kv, eps, rope, a.kv_cache8 + static_cast<int64_t>(slot) * fp8_kv_row_bytes(a.kv_lora, a.rope));
      } else {
        rms_norm(kv, a.gamma_ckv, a.kv_lora, eps, a.kv_cache + slot * a.kv_lora);
        rope(a.kr_cache + static_cast<int64_t>(slot) * a.rope);
      }
    }
  });

  GemmOut qo;
  qo.data = q;
  qo.ld = ldq;
  qo.type = OutType::BF16;
  matmul(a.q_norm + t0 * a.q_lora, a.q_lora, tc, a.w_uq_qr, qo);

  const WeightFormat uk = a.w_uk_format;
  const bool fp8 = uk == WeightFormat::Fp8ND || uk == WeightFormat::Fp8Packed;
  // FP8 W_UK needs no packing here: the GEMM converts it (in registers up to 8 rows).
  const bool packed = uk == WeightFormat::Packed || fp8;
  const int64_t uk_stride = fp8 ? fp8_bytes(uk, a.qk_nope, a.kv_lora)
                            : packed ? packed_elements(a.qk_nope, a.kv_lora) : a.qk_nope * a.kv_lora;
  const int64_t uk_scales = fp8 ? fp8_scales(uk, a.qk_nope, a.kv_lora) : 0;
  // ND W_UK with more than kDirectRows rows is packed by the task itself, once per head and chunk;
  // the GEMM would otherwise repack it for every 192-row block and column group. An FP8 head is widened
  // to bf16 by every GEMM call past kGemvMaxRows rows, so it too gets one task per head and chunk.
  const int64_t rb = packed && !fp8 ? kHeadRows : tc;
  const int64_t row_blocks = (tc + rb - 1) / rb;
  // Rope of head h's q rows in row block rb_i, then its absorption into the latent space.
  const auto absorb_head = [&](int64_t h, int64_t rb_i, bool then_next_head) {
    const int64_t r0 = rb_i * rb, rows = std::min(rb, tc - r0);
    const bf16_t* qh = q + r0 * ldq + h * dq;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = t0 + r0 + r;
      const bf16_t* pe = qh + r * ldq + a.qk_nope;
      rope_rotate([&](int64_t j) { return static_cast<double>(bf16_to_f32(pe[j])); }, a.cos + t * a.rope,
                  a.sin + t * a.rope, a.rope, a.q_rope + (t * a.n + h) * a.rope);
    }
    WeightView w;
    if (fp8) {
      w.fp8 = a.w_uk_fp8 + h * uk_stride;
      w.scale = a.w_uk_scale + h * uk_scales;
      if (then_next_head) w.fp8_next = w.fp8 + uk_stride;
    } else {
      w.data = a.w_uk + h * uk_stride;
    }
    w.K = a.qk_nope;
    w.N = a.kv_lora;
    w.format = uk;
    thread_local std::vector<bf16_t> packbuf;
    if (!packed && rows > kDirectRows) {
      packbuf.resize(static_cast<size_t>(packed_elements(w.K, w.N)));
      pack_panels(w, 0, packed_n(w.N) / 16, packbuf.data());
      w.data = packbuf.data();
      w.format = WeightFormat::Packed;
    }
    GemmOut y;
    y.data = a.q_nope + ((t0 + r0) * a.n + h) * a.kv_lora;
    y.ld = a.n * a.kv_lora;
    y.type = OutType::BF16;
    matmul_serial(qh, ldq, rows, w, y);
  };
  // Decode (one row block, rows <= 8): a task takes a run of consecutive heads (about four runs per
  // thread), so that the FP8 GEMV of one head prefetches the start of the next (a head is 64 KB).
  const bool runs_of_heads = fp8 && row_blocks == 1 && tc <= kGemvMaxRows;
  const int64_t span = runs_of_heads ? std::max<int64_t>(1, a.n / (4 * static_cast<int64_t>(num_threads()))) : 1;
  const int64_t runs = (a.n + span - 1) / span;
  parallel_tasks(runs * row_blocks, [&](int64_t task, int) {
    const int64_t h0 = task / row_blocks * span, h1 = std::min(a.n, h0 + span);
    for (int64_t h = h0; h < h1; ++h) absorb_head(h, task % row_blocks, h + 1 < h1);
  });
}

Status out_of_memory() { return fail(Code::Internal, "mlaProlog: out of memory for scratch buffers"); }

}  // namespace

Status validate(const Args& a) noexcept {
  try {
    return validate_impl(a, true);
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  }
}

Status run(const Args& a) noexcept {
  try {
    DSA_RETURN_IF_ERROR(validate_impl(a, true));
    if (a.T == 0) return Status::Ok();
    const int64_t chunk = std::min(a.T, kTokenChunk), ldp = a.q_lora + a.kv_lora + a.rope;
    Scratch& s = t_scratch;
    s.proj.resize(static_cast<size_t>(chunk * ldp));
    s.q.resize(static_cast<size_t>(chunk * a.n * (a.qk_nope + a.rope)));
    for (int64_t t0 = 0; t0 < a.T; t0 += chunk) {
      const int64_t t1 = std::min(a.T, t0 + chunk);
      GemmOut qa;
      qa.data = s.proj.data();
      qa.ld = ldp;
      GemmOut kva = qa;
      kva.data = s.proj.data() + a.q_lora;
      matmul(a.x + t0 * a.h, a.h, t1 - t0, a.w_dq, qa);
      matmul(a.x + t0 * a.h, a.h, t1 - t0, a.w_dkv_kr, kva);
      process_chunk(a, t0, t1, s.proj.data(), ldp, s.proj.data() + a.q_lora, ldp, s.q.data());
    }
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  }
}

Status run_from_projections(const Args& a, const float* qa_f32, int64_t ld_qa, const float* kva_f32,
                            int64_t ld_kva) noexcept {
  try {
    DSA_RETURN_IF_ERROR(validate_impl(a, a.x != nullptr));
    if (a.T == 0) return Status::Ok();
    if (qa_f32 == nullptr || kva_f32 == nullptr) return fail(Code::Argument, "qa/kva: missing projection data");
    if (ld_qa < a.q_lora || ld_kva < a.kv_lora + a.rope)
      return fail(Code::Shape, "qa/kva: row strides " + dims2(ld_qa, ld_kva) + " are shorter than the rows " +
                                   dims2(a.q_lora, a.kv_lora + a.rope));
    const int64_t chunk = std::min(a.T, kTokenChunk);
    Scratch& s = t_scratch;
    s.q.resize(static_cast<size_t>(chunk * a.n * (a.qk_nope + a.rope)));
    for (int64_t t0 = 0; t0 < a.T; t0 += chunk) {
      const int64_t t1 = std::min(a.T, t0 + chunk);
      process_chunk(a, t0, t1, qa_f32 + t0 * ld_qa, ld_qa, kva_f32 + t0 * ld_kva, ld_kva, s.q.data());
    }
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  }
}

int64_t packed_w_uk_elements(int64_t n, int64_t qk_nope, int64_t kv_lora) {
  return n * packed_elements(qk_nope, kv_lora);
}

void pack_w_uk(const bf16_t* w_uk_nd, int64_t n, int64_t qk_nope, int64_t kv_lora, bf16_t* dst) noexcept {
  const int64_t panels = packed_n(kv_lora) / 16, per_head = packed_elements(qk_nope, kv_lora);
  parallel_tasks(n, [&](int64_t h, int) {
    WeightView w;
    w.data = w_uk_nd + h * qk_nope * kv_lora;
    w.K = qk_nope;
    w.N = kv_lora;
    pack_panels(w, 0, panels, dst + h * per_head);
  });
}

}  // namespace mla
}  // namespace dsa
