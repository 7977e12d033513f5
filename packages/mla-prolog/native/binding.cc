// Node-API binding of @dsa/mla-prolog: JS tensors -> dsa::mla::Args, then validate and run (sync, or
// on a worker with every buffer held until the promise settles). Shapes are checked again here; the
// TypeScript layer has already given friendlier messages for the same conditions.
#include <memory>
#include <string>
#include <vector>

#include "dsa/fp8_cache.h"
#include "dsa/napi_tensor.h"
#include "mla_prolog_kernel.h"

namespace {

using dsa::bf16_t;
using dsa::Code;
using dsa::WeightFormat;
using dsa::napi::DType;
using dsa::napi::TensorArg;
using dsa::napi::get_tensor;
using dsa::napi::shape_str;
using dsa::napi::throw_error;

void expect_shape(Napi::Env env, const TensorArg& t, const std::vector<int64_t>& want) {
  if (t.shape != want) throw_error(env, Code::Shape, t.name + ": expected shape " + shape_str(want) + ", got " + shape_str(t.shape));
}

// wUk is ND [n, qk_nope, kv_lora], or the packed per-head form made by packWUk (format 'PACKED'), or
// FP8 [n, qk_nope, kv_lora] ND (kv_b_proj's rows) or PACKED (packWeights of it).
TensorArg get_w_uk(Napi::Env env, Napi::Value v, std::vector<Napi::Value>* keep) {
  if (!v.IsObject()) throw_error(env, Code::Argument, "wUk: expected a tensor object");
  Napi::Object o = v.As<Napi::Object>();
  if (o.Get("dtype").ToString().Utf8Value() == "float8_e4m3fn") return dsa::napi::get_fp8_weight(env, v, "wUk", 3, keep);
  keep->push_back(o.Get("data"));
  Napi::Value fm = o.Get("format");
  if (!fm.IsString() || fm.As<Napi::String>().Utf8Value() != "PACKED") return get_tensor(env, v, "wUk", DType::BF16, 3);
  Napi::Value sv = o.Get("shape");
  std::vector<int64_t> s;
  if (sv.IsArray()) {
    Napi::Array arr = sv.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      const double d = arr.Get(i).IsNumber() ? arr.Get(i).As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 1 && d <= 1e9 && d == static_cast<double>(static_cast<int64_t>(d)))) break;
      s.push_back(static_cast<int64_t>(d));
    }
  }
  if (!sv.IsArray() || s.size() != 3 || sv.As<Napi::Array>().Length() != 3)
    throw_error(env, Code::Shape, "wUk: expected a packed shape [n, qk_nope, kv_lora] of positive integers");
  Napi::Object c = Napi::Object::New(env);
  c.Set("dtype", o.Get("dtype"));
  c.Set("data", o.Get("data"));
  Napi::Array flat = Napi::Array::New(env, 1);
  flat.Set(0u, Napi::Number::New(env, static_cast<double>(dsa::mla::packed_w_uk_elements(s[0], s[1], s[2]))));
  c.Set("shape", flat);
  TensorArg t = get_tensor(env, c, "wUk", DType::BF16, 1);
  t.shape = s;
  t.format = WeightFormat::Packed;
  return t;
}

// One parsed call: the kernel arguments, the JS values to keep alive, and the result object.
struct Call {
  dsa::mla::Args args;
  std::vector<int32_t> slots;  // a private copy: JS cannot change a validated slot under the kernel
  std::vector<Napi::Value> keep;
  Napi::ObjectReference result;
};

std::shared_ptr<Call> parse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsNumber())
    throw_error(env, Code::Argument, "mlaProlog: expected (inputs, rmsNormEps[, out])");
  Napi::Object in = info[0].As<Napi::Object>();
  auto call = std::make_shared<Call>();
  auto tensor = [&](const char* name, DType dt, int rank) {
    TensorArg t = get_tensor(env, in.Get(name), name, dt, rank);
    call->keep.push_back(in.Get(name).As<Napi::Object>().Get("data"));
    return t;
  };
  auto weight = [&](const char* name) { return dsa::napi::get_weight(env, in.Get(name), name, &call->keep); };
  TensorArg x = tensor("x", DType::BF16, 3);
  TensorArg w_dq = weight("wDq");
  TensorArg w_uq_qr = weight("wUqQr");
  TensorArg w_uk = get_w_uk(env, in.Get("wUk"), &call->keep);
  TensorArg w_dkv_kr = weight("wDkvKr");
  TensorArg gamma_cq = tensor("gammaCq", DType::BF16, 1);
  TensorArg gamma_ckv = tensor("gammaCkv", DType::BF16, 1);
  TensorArg sin = tensor("sin", DType::BF16, 3);
  TensorArg cos = tensor("cos", DType::BF16, 3);
  TensorArg cache_index = tensor("cacheIndex", DType::I32, 2);
  // FP8 latent cache: uint8 [blocks, block_size, 1, 656]-style rows that hold the rope part too (no krCache).
  const bool fp8 = dsa::napi::tensor_dtype(in.Get("kvCache")) == "uint8";
  TensorArg kv_cache = tensor("kvCache", fp8 ? DType::U8 : DType::BF16, 4);
  const bool has_kr = !in.Get("krCache").IsUndefined() && !in.Get("krCache").IsNull();
  if (fp8 && has_kr)
    throw_error(env, Code::Argument, "krCache: expected none with an FP8 (uint8) kvCache, whose rows hold the rope part");
  if (!fp8 && !has_kr) throw_error(env, Code::Argument, "krCache: expected a bfloat16 tensor (only an FP8 kvCache goes without)");
  TensorArg kr_cache = fp8 ? TensorArg{} : tensor("krCache", DType::BF16, 4);

  const int64_t b = x.dim(0), s1 = x.dim(1), h = x.dim(2);
  const int64_t q_lora = w_dq.dim(1), n = w_uk.dim(0), qk_nope = w_uk.dim(1), kv_lora = w_uk.dim(2);
  const int64_t rope = cos.dim(2), blocks = kv_cache.dim(0), block_size = kv_cache.dim(1);
  expect_shape(env, gamma_cq, {q_lora});
  expect_shape(env, gamma_ckv, {kv_lora});
  expect_shape(env, cos, {b, s1, rope});
  expect_shape(env, sin, {b, s1, rope});
  expect_shape(env, cache_index, {b, s1});
  if (fp8) {
    if (kv_lora % dsa::kFp8Block != 0)
      throw_error(env, Code::Shape, "kvCache: an FP8 latent cache needs kv_lora % 128 == 0, got kv_lora " + std::to_string(kv_lora));
    expect_shape(env, kv_cache, {blocks, block_size, 1, dsa::fp8_kv_row_bytes(kv_lora, rope)});
  } else {
    expect_shape(env, kv_cache, {blocks, block_size, 1, kv_lora});
    expect_shape(env, kr_cache, {blocks, block_size, 1, rope});
  }

  dsa::mla::Args& a = call->args;
  a.T = b * s1;
  a.h = h;
  a.q_lora = q_lora;
  a.n = n;
  a.qk_nope = qk_nope;
  a.rope = rope;
  a.kv_lora = kv_lora;
  a.block_num = blocks;
  a.block_size = block_size;
  a.x = x.ptr<const bf16_t>();
  a.w_dq = w_dq.weight();
  a.w_uq_qr = w_uq_qr.weight();
  a.w_dkv_kr = w_dkv_kr.weight();
  if (w_uk.weight().is_fp8()) {
    a.w_uk_fp8 = w_uk.ptr<const uint8_t>();
    a.w_uk_scale = w_uk.scale;
  } else {
    a.w_uk = w_uk.ptr<const bf16_t>();
  }
  a.w_uk_format = w_uk.format;
  a.gamma_cq = gamma_cq.ptr<const bf16_t>();
  a.gamma_ckv = gamma_ckv.ptr<const bf16_t>();
  a.sin = sin.ptr<const bf16_t>();
  a.cos = cos.ptr<const bf16_t>();
  call->slots.assign(cache_index.ptr<const int32_t>(), cache_index.ptr<const int32_t>() + a.T);
  a.cache_index = call->slots.data();
  if (fp8) a.kv_cache8 = kv_cache.ptr<uint8_t>();
  else {
    a.kv_cache = kv_cache.ptr<bf16_t>();
    a.kr_cache = kr_cache.ptr<bf16_t>();
  }
  a.rms_norm_eps = info[1].As<Napi::Number>().DoubleValue();

  // Outputs: caller-provided tensors from `out` (checked like inputs) or new ones.
  Napi::Object out = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
  Napi::Object result = Napi::Object::New(env);
  auto output = [&](const char* name, const std::vector<int64_t>& shape) {
    void* p = nullptr;
    Napi::Value given = out.Get(name);
    if (given.IsUndefined()) {
      result.Set(name, dsa::napi::new_tensor(env, DType::BF16, shape, &p));
    } else {
      TensorArg t = get_tensor(env, given, std::string("out.") + name, DType::BF16, static_cast<int>(shape.size()));
      expect_shape(env, t, shape);
      p = t.data;
      result.Set(name, given);
      call->keep.push_back(given.As<Napi::Object>().Get("data"));
    }
    return static_cast<bf16_t*>(p);
  };
  a.q_nope = output("qNope", {b, s1, n, kv_lora});
  a.q_rope = output("qRope", {b, s1, n, rope});
  a.q_norm = output("qNorm", {b, s1, q_lora});
  call->result = Napi::Persistent(result);
  dsa::napi::throw_if_error(env, dsa::mla::validate(a));
  return call;
}

Napi::Value MlaProlog(const Napi::CallbackInfo& info) {
  auto call = parse(info);
  dsa::napi::throw_if_error(info.Env(), dsa::mla::run(call->args));
  return call->result.Value();
}

Napi::Value MlaPrologAsync(const Napi::CallbackInfo& info) {
  auto call = parse(info);
  return dsa::napi::KernelWorker::Start(
      info.Env(), call->keep, [call] { return dsa::mla::run(call->args); },
      [call](Napi::Env) -> Napi::Value { return call->result.Value(); });
}

// packWUk(wUk ND [n, qk_nope, kv_lora]) -> the same weight in the packed per-head form.
Napi::Value PackWUk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorArg w = get_tensor(env, info[0], "wUk", DType::BF16, 3);
  void* dst = nullptr;
  Napi::Object out = dsa::napi::new_tensor(env, DType::BF16, w.shape, &dst, "PACKED",
                                           dsa::mla::packed_w_uk_elements(w.dim(0), w.dim(1), w.dim(2)), /*large=*/true);
  dsa::mla::pack_w_uk(w.ptr<const bf16_t>(), w.dim(0), w.dim(1), w.dim(2), static_cast<bf16_t*>(dst));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  dsa::napi::register_common(env, exports, DSA_ADDON_VERSION);
  exports.Set("mlaProlog", Napi::Function::New(env, MlaProlog));
  exports.Set("mlaPrologAsync", Napi::Function::New(env, MlaPrologAsync));
  exports.Set("packWUk", Napi::Function::New(env, PackWUk));
  return exports;
}

}  // namespace

NODE_API_MODULE(dsa_mla_prolog, Init)
