// Node-API binding of @dsa/sparse-flash-attn: JS tensors -> sfa::Args, shapes checked again here,
// then sfa::run (which validates every index before writing). The only file that sees Node-API.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsa/fp8_cache.h"
#include "dsa/napi_tensor.h"
#include "sparse_flash_attn_kernel.h"

namespace {

using namespace dsa;
using namespace dsa::napi;

// Symbolic dimensions shared across arguments; the first tensor that names one fixes it.
class DimBinder {
 public:
  void match(Napi::Env env, const TensorArg& t, const std::vector<std::string>& pattern) {
    if (t.shape.size() != pattern.size())
      throw_error(env, Code::Shape, t.name + ": expected rank " + std::to_string(pattern.size()) + ", got shape " + shape_str(t.shape));
    for (size_t i = 0; i < pattern.size(); ++i) {
      const std::string& p = pattern[i];
      const int64_t actual = t.shape[i];
      if (p == "1") {
        if (actual != 1)
          throw_error(env, Code::Shape, t.name + ": expected shape[" + std::to_string(i) + "] = 1, got " + std::to_string(actual) +
                                            " (shape " + shape_str(t.shape) + ")");
        continue;
      }
      auto it = dims_.find(p);
      if (it == dims_.end()) {
        dims_[p] = {actual, t.name + ".shape[" + std::to_string(i) + "]"};
      } else if (it->second.value != actual) {
        throw_error(env, Code::Shape, t.name + ": expected shape[" + std::to_string(i) + "] (" + p + ") = " +
                                          std::to_string(it->second.value) + " as given by " + it->second.from + ", got " +
                                          std::to_string(actual) + " (shape " + shape_str(t.shape) + ")");
      }
    }
  }
  int64_t operator[](const std::string& name) const { return dims_.at(name).value; }

 private:
  struct Dim {
    int64_t value;
    std::string from;
  };
  std::map<std::string, Dim> dims_;
};

struct Call {
  sfa::Args args;
  Napi::Object out;
  std::vector<Napi::Value> keep;  // JS objects whose buffers the kernel reads or writes
};

// The optional 4th argument of the native calls (an empty object when absent).
Napi::Object extra(const Napi::CallbackInfo& info) {
  if (info.Length() > 3 && info[3].IsObject()) return info[3].As<Napi::Object>();
  return Napi::Object::New(info.Env());
}

// (inputs {qNope, qRope, kvCache, krCache, indices, blockTable, actSeqs}, softmaxScale, sparseMode)
Call prepare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_error(env, Code::Argument, "inputs: expected an object of tensors");
  Napi::Object in = info[0].As<Napi::Object>();
  Call c;
  auto tensor = [&](const char* name, DType dt) {
    Napi::Value v = in.Get(name);
    c.keep.push_back(v);
    return get_tensor(env, v, name, dt);
  };
  TensorArg q_nope = tensor("qNope", DType::BF16), q_rope = tensor("qRope", DType::BF16);
  // FP8 latent cache: uint8 rows of kv_lora e4m3 ‖ tile scales ‖ bf16 rope (dsa/fp8_cache.h), no krCache.
  const bool fp8 = tensor_dtype(in.Get("kvCache")) == "uint8";
  const bool has_kr = !in.Get("krCache").IsUndefined() && !in.Get("krCache").IsNull();
  if (fp8 && has_kr) throw_error(env, Code::Argument, "krCache: expected none with an FP8 (uint8) kvCache, whose rows hold the rope part");
  if (!fp8 && !has_kr) throw_error(env, Code::Argument, "krCache: expected a bfloat16 tensor (only an FP8 kvCache goes without)");
  TensorArg kv = tensor("kvCache", fp8 ? DType::U8 : DType::BF16);
  TensorArg kr = fp8 ? TensorArg{} : tensor("krCache", DType::BF16);
  TensorArg idx = tensor("indices", DType::I32), table = tensor("blockTable", DType::I32), act = tensor("actSeqs", DType::I32);
  DimBinder d;
  d.match(env, q_nope, {"b", "s1", "n", "kvLora"});
  d.match(env, q_rope, {"b", "s1", "n", "rope"});
  if (fp8) {
    d.match(env, kv, {"blocks", "blockSize", "1", "rowBytes"});
    if (d["kvLora"] % kFp8Block != 0)
      throw_error(env, Code::Shape, "kvCache: an FP8 latent cache needs kv_lora % 128 == 0, got qNope.shape[3] = " + std::to_string(d["kvLora"]));
    if (d["rowBytes"] != fp8_kv_row_bytes(d["kvLora"], d["rope"]))
      throw_error(env, Code::Shape, "kvCache: expected FP8 rows of " + std::to_string(fp8_kv_row_bytes(d["kvLora"], d["rope"])) +
                                        " bytes (kv_lora e4m3 + 4 per 128-value tile + 2 * rope), got shape " + shape_str(kv.shape));
  } else {
    d.match(env, kv, {"blocks", "blockSize", "1", "kvLora"});
    d.match(env, kr, {"blocks", "blockSize", "1", "rope"});
  }
  d.match(env, idx, {"b", "s1", "topk"});
  d.match(env, table, {"b", "maxBlocks"});
  d.match(env, act, {"b"});

  sfa::Args& a = c.args;
  a.q_nope = q_nope.ptr<const bf16_t>();
  a.q_rope = q_rope.ptr<const bf16_t>();
  if (fp8) a.kv_cache8 = kv.ptr<const uint8_t>();
  else {
    a.kv_cache = kv.ptr<const bf16_t>();
    a.kr_cache = kr.ptr<const bf16_t>();
  }
  a.indices = idx.ptr<const int32_t>();
  a.block_table = table.ptr<const int32_t>();
  a.act_seqs = act.ptr<const int32_t>();
  a.b = d["b"], a.s1 = d["s1"], a.n = d["n"], a.kv_lora = d["kvLora"], a.rope = d["rope"];
  a.blocks = d["blocks"], a.block_size = d["blockSize"], a.topk = d["topk"], a.max_blocks = d["maxBlocks"];
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsNumber()) throw_error(env, Code::Argument, "softmaxScale: expected a number");
    a.softmax_scale = info[1].As<Napi::Number>().FloatValue();
  }
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsNumber()) throw_error(env, Code::Argument, "sparseMode: expected 0 or 3");
    const double mode = info[2].As<Napi::Number>().DoubleValue();
    if (mode != 0 && mode != 3) throw_error(env, Code::Argument, "sparseMode: expected 0 or 3, got " + std::to_string(mode));
    a.sparse_mode = static_cast<int>(mode);
  }
  // extra.out: write into this tensor instead of a new one (tests poison it to catch unwritten elements)
  Napi::Value given = extra(info).Get("out");
  if (given.IsUndefined()) {
    void* out = nullptr;
    c.out = new_tensor(env, DType::BF16, {a.b, a.s1, a.n, a.kv_lora}, &out);
    a.out = static_cast<bf16_t*>(out);
  } else {
    TensorArg o = get_tensor(env, given, "out", DType::BF16);
    if (o.shape != std::vector<int64_t>{a.b, a.s1, a.n, a.kv_lora})
      throw_error(env, Code::Shape, "out: expected shape " + shape_str({a.b, a.s1, a.n, a.kv_lora}) + ", got " + shape_str(o.shape));
    c.out = given.As<Napi::Object>();
    a.out = o.ptr<bf16_t>();
  }
  c.keep.push_back(c.out);
  throw_if_error(env, sfa::validate(a));  // every index, before anything runs or is queued
  return c;
}

// sparseFlashAttention(inputs, softmaxScale?, sparseMode?, extra?) -> out; extra {out?, profile?}.
// With profile: {out, gatherSeconds, threadSeconds} (the gather's share, for benchmarks).
Napi::Value SparseFlashAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = prepare(info);
  const bool profile = extra(info).Get("profile").ToBoolean().Value();
  sfa::Profile prof;
  if (profile) c.args.profile = &prof;
  throw_if_error(env, sfa::run(c.args));
  if (!profile) return c.out;
  Napi::Object r = Napi::Object::New(env);
  r.Set("out", c.out);
  r.Set("gatherSeconds", static_cast<double>(prof.gather_ns.load()) * 1e-9);
  r.Set("threadSeconds", static_cast<double>(prof.total_ns.load()) * 1e-9);
  return r;
}

// The same on a worker thread (extra.out accepted): resolves with out; inputs and out stay
// referenced until it settles.
Napi::Value SparseFlashAttentionAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = prepare(info);
  auto out = std::make_shared<Napi::ObjectReference>(Napi::Persistent(c.out));
  const sfa::Args args = c.args;
  return KernelWorker::Start(
      env, c.keep, [args] { return sfa::run(args); }, [out](Napi::Env) -> Napi::Value { return out->Value(); });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_common(env, exports, DSA_ADDON_VERSION);
  exports.Set("sparseFlashAttention", Napi::Function::New(env, SparseFlashAttention));
  exports.Set("sparseFlashAttentionAsync", Napi::Function::New(env, SparseFlashAttentionAsync));
  return exports;
}

}  // namespace

NODE_API_MODULE(dsa_sparse_flash_attn, Init)
