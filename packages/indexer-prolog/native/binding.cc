// Node-API binding of @dsa/indexer-prolog: JS tensors -> dsa::ip::Args, validate, run (sync or on a
// KernelWorker). Shapes are checked again here; the kernel's validate() checks slots and sizes.
#include <memory>
#include <string>

#include "dsa/fp8_cache.h"
#include "dsa/napi_tensor.h"
#include "indexer_prolog_kernel.h"

using namespace dsa;
using namespace dsa::napi;

namespace {

void expect_dim(Napi::Env env, const TensorArg& t, size_t axis, int64_t want, const std::string& what) {
  if (t.dim(axis) != want)
    throw_error(env, Code::Shape, t.name + ": expected shape[" + std::to_string(axis) + "] = " + std::to_string(want) + " (" +
                                      what + "), got " + std::to_string(t.dim(axis)) + " (shape " + shape_str(t.shape) + ")");
}

struct Call {
  ip::Args args;
  std::vector<Napi::Value> keep;  // every JS object the kernel reads or writes
  Napi::Object result;
};

// indexerProlog(inputs, layerNormEps, indexerRope, wIdxKProj?) — inputs as in the public API.
Call prepare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsNumber() || !info[2].IsString())
    throw_error(env, Code::Argument, "indexerProlog: expected (inputs, layerNormEps, indexerRope[, wIdxKProj])");
  Napi::Object in = info[0].As<Napi::Object>();
  Call c;
  auto get = [&](const char* name, DType dt, int rank, bool weight = false) {
    Napi::Value v = in.Get(name);
    c.keep.push_back(v);
    return get_tensor(env, v, name, dt, rank, weight);
  };
  TensorArg x = get("x", DType::BF16, 3);
  TensorArg qn = get("qNorm", DType::BF16, 3);
  auto weight = [&](const char* name) { return dsa::napi::get_weight(env, in.Get(name), name, &c.keep); };
  TensorArg wqb = weight("wIdxQb");
  TensorArg wk = weight("wIdxK");
  TensorArg wp = weight("wIdxProj");
  TensorArg gk = get("inGammaK", DType::BF16, 1);
  TensorArg bk = get("inBetaK", DType::BF16, 1);
  TensorArg sn = get("sin", DType::BF16, 3);
  TensorArg cs = get("cos", DType::BF16, 3);
  TensorArg ci = get("cacheIndex", DType::I32, 2);
  // FP8 key cache: uint8 rows of dim e4m3 bytes + an fp32 scale (dsa/fp8_cache.h).
  const bool fp8 = tensor_dtype(in.Get("indexKCache")) == "uint8";
  TensorArg cache = get("indexKCache", fp8 ? DType::U8 : DType::BF16, 4);

  const int64_t b = x.dim(0), s1 = x.dim(1), h = x.dim(2);
  const int64_t di = wk.dim(1), heads = wp.dim(1), rope = sn.dim(2);
  expect_dim(env, qn, 0, b, "b from x");
  expect_dim(env, qn, 1, s1, "s1 from x");
  expect_dim(env, wk, 0, h, "h from x");
  expect_dim(env, wp, 0, h, "h from x");
  expect_dim(env, wqb, 0, qn.dim(2), "q_lora from qNorm");
  expect_dim(env, wqb, 1, heads * di, "idx_heads * idx_dim from wIdxProj and wIdxK");
  expect_dim(env, gk, 0, di, "idx_dim from wIdxK");
  expect_dim(env, bk, 0, di, "idx_dim from wIdxK");
  for (const TensorArg* t : {&sn, &cs, &ci}) {
    expect_dim(env, *t, 0, b, "b from x");
    expect_dim(env, *t, 1, s1, "s1 from x");
  }
  expect_dim(env, cs, 2, rope, "rope from sin");
  expect_dim(env, cache, 2, 1, "one key head");
  if (fp8 && di != kFp8Block)
    throw_error(env, Code::Shape, "indexKCache: an FP8 key cache needs an indexer head dim of 128 (the Hadamard size), got " +
                                      std::to_string(di) + " (wIdxK.shape[1])");
  expect_dim(env, cache, 3, fp8 ? fp8_index_row_bytes(di) : di, fp8 ? "idx_dim + 4 bytes (FP8 row)" : "idx_dim from wIdxK");

  ip::Args& a = c.args;
  a.tokens = b * s1;
  a.hidden = h;
  a.q_lora = qn.dim(2);
  a.heads = heads;
  a.head_dim = di;
  a.rope = rope;
  a.cache_rows = cache.dim(0) * cache.dim(1);
  a.x = x.ptr<const bf16_t>();
  a.q_norm = qn.ptr<const bf16_t>();
  a.w_qb = wqb.weight();
  a.w_k = wk.weight();
  a.w_proj = wp.weight();
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    c.keep.push_back(info[3]);
    TensorArg wkp = get_tensor(env, info[3], "wIdxKProj", DType::BF16, 2, true);
    expect_dim(env, wkp, 0, h, "h from x");
    expect_dim(env, wkp, 1, di + heads, "idx_dim + idx_heads");
    a.w_kproj = wkp.weight();
  }
  a.gamma_k = gk.ptr<const bf16_t>();
  a.beta_k = bk.ptr<const bf16_t>();
  a.sin = sn.ptr<const bf16_t>();
  a.cos = cs.ptr<const bf16_t>();
  a.cache_index = ci.ptr<const int32_t>();
  if (fp8) a.index_k_cache8 = cache.ptr<uint8_t>();
  else a.index_k_cache = cache.ptr<bf16_t>();
  a.layer_norm_eps = static_cast<float>(info[1].As<Napi::Number>().DoubleValue());
  const std::string mode = info[2].As<Napi::String>().Utf8Value();
  if (mode == "interleaved") a.rope_mode = ip::RopeMode::Interleaved;
  else if (mode == "half") a.rope_mode = ip::RopeMode::Half;
  else throw_error(env, Code::Argument, "indexerRope: expected \"interleaved\" or \"half\", got \"" + mode + "\"");

  void* qp = nullptr;
  void* wp_out = nullptr;
  Napi::Object query = new_tensor(env, DType::BF16, {b, s1, heads, di}, &qp);
  Napi::Object weights = new_tensor(env, DType::BF16, {b, s1, heads}, &wp_out);
  a.query = static_cast<bf16_t*>(qp);
  a.weights = static_cast<bf16_t*>(wp_out);
  c.result = Napi::Object::New(env);
  c.result.Set("query", query);
  c.result.Set("weights", weights);
  c.keep.push_back(c.result);
  throw_if_error(env, ip::validate(a));
  return c;
}

Napi::Value IndexerProlog(const Napi::CallbackInfo& info) {
  Call c = prepare(info);
  throw_if_error(info.Env(), ip::run(c.args));
  return c.result;
}

Napi::Value IndexerPrologAsync(const Napi::CallbackInfo& info) {
  Call c = prepare(info);
  auto result = std::make_shared<Napi::ObjectReference>(Napi::Persistent(c.result));
  const ip::Args args = c.args;
  return KernelWorker::Start(
      info.Env(), std::move(c.keep), [args] { return ip::run(args); },
      [result](Napi::Env) -> Napi::Value { return result->Value(); });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_common(env, exports, DSA_ADDON_VERSION);
  exports.Set("indexerProlog", Napi::Function::New(env, IndexerProlog));
  exports.Set("indexerPrologAsync", Napi::Function::New(env, IndexerPrologAsync));
  return exports;
}

}  // namespace

NODE_API_MODULE(dsa_indexer_prolog, Init)
