// Node-API binding of @dsa/fused: a Layer object that prepares the weights once (fused::prepare) and
// runs the whole operator per call (fused::run), synchronously or on a worker thread. Calls on one
// Layer are serialized (they share its workspace); the caches are the caller's.
#include <memory>
#include <mutex>

#include "dsa/fp8_cache.h"
#include "dsa/napi_tensor.h"
#include "fused_kernel.h"

using namespace dsa;
using namespace dsa::napi;

namespace {

struct LayerState {
  fused::Prepared prepared;
  fused::Workspace workspace;
  std::mutex mutex;
  bool disposed = false;
};

double num(Napi::Object o, const char* key) { return o.Get(key).As<Napi::Number>().DoubleValue(); }

class Layer : public Napi::ObjectWrap<Layer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Layer",
                       {InstanceMethod("forward", &Layer::Forward), InstanceMethod("forwardAsync", &Layer::ForwardAsync),
                        InstanceMethod("dispose", &Layer::Dispose), InstanceAccessor("bytes", &Layer::Bytes, nullptr)});
  }

  explicit Layer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Layer>(info), state_(std::make_shared<LayerState>()) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_error(env, Code::Argument, "weights: expected an object of tensors");
    Napi::Object w = info[0].As<Napi::Object>();
    fused::WeightsIn in;
    // 2-D weights: bf16 (ND, NZ, PACKED) or block-scaled FP8 (NT, ND, PACKED); wUk bf16 ND or FP8 ND/PACKED.
    TensorArg wdq = get_weight(env, w.Get("wDq"), "wDq");
    TensorArg wuqqr = get_weight(env, w.Get("wUqQr"), "wUqQr");
    const bool uk_fp8 = w.Get("wUk").IsObject() && w.Get("wUk").As<Napi::Object>().Get("dtype").ToString().Utf8Value() == "float8_e4m3fn";
    TensorArg wuk = uk_fp8 ? get_fp8_weight(env, w.Get("wUk"), "wUk", 3) : get_tensor(env, w.Get("wUk"), "wUk", DType::BF16, 3);
    if (uk_fp8 && wuk.format == WeightFormat::Fp8NT) throw_error(env, Code::Format, "wUk: expected format ND or PACKED for a float8_e4m3fn wUk, got NT");
    TensorArg wdkvkr = get_weight(env, w.Get("wDkvKr"), "wDkvKr");
    TensorArg gcq = get_tensor(env, w.Get("gammaCq"), "gammaCq", DType::BF16, 1);
    TensorArg gckv = get_tensor(env, w.Get("gammaCkv"), "gammaCkv", DType::BF16, 1);
    TensorArg wqb = get_weight(env, w.Get("wIdxQb"), "wIdxQb");
    TensorArg wk = get_weight(env, w.Get("wIdxK"), "wIdxK");
    TensorArg wp = get_weight(env, w.Get("wIdxProj"), "wIdxProj");
    TensorArg gk = get_tensor(env, w.Get("inGammaK"), "inGammaK", DType::BF16, 1);
    TensorArg bk = get_tensor(env, w.Get("inBetaK"), "inBetaK", DType::BF16, 1);
    fused::Dims& d = in.d;
    d.h = wdq.dim(0);
    d.q_lora = wdq.dim(1);
    d.n = wuk.dim(0);
    d.qk_nope = wuk.dim(1);
    d.kv_lora = wuk.dim(2);
    d.rope = wdkvkr.dim(1) - d.kv_lora;
    d.idx_dim = wk.dim(1);
    d.idx_heads = wp.dim(1);
    if (gcq.dim(0) != d.q_lora) throw_error(env, Code::Shape, "gammaCq: expected [q_lora] = [" + std::to_string(d.q_lora) + "]");
    if (gckv.dim(0) != d.kv_lora) throw_error(env, Code::Shape, "gammaCkv: expected [kv_lora] = [" + std::to_string(d.kv_lora) + "]");
    if (gk.dim(0) != d.idx_dim || bk.dim(0) != d.idx_dim)
      throw_error(env, Code::Shape, "inGammaK: expected [idx_dim] = [" + std::to_string(d.idx_dim) + "] (and inBetaK)");
    in.w_dq = wdq.weight();
    in.w_uq_qr = wuqqr.weight();
    in.w_dkv_kr = wdkvkr.weight();
    in.w_idx_qb = wqb.weight();
    in.w_idx_k = wk.weight();
    in.w_idx_proj = wp.weight();
    if (uk_fp8) {
      in.w_uk_fp8 = wuk.ptr<const uint8_t>();
      in.w_uk_scale = wuk.scale;
    } else {
      in.w_uk = wuk.ptr<const bf16_t>();
    }
    in.w_uk_format = wuk.format;
    in.gamma_cq = gcq.ptr<const bf16_t>();
    in.gamma_ckv = gckv.ptr<const bf16_t>();
    in.gamma_k = gk.ptr<const bf16_t>();
    in.beta_k = bk.ptr<const bf16_t>();
    throw_if_error(env, fused::prepare(in, &state_->prepared));
  }

 private:
  struct Call {
    fused::Step step;
    Napi::Object result;
    std::vector<Napi::Value> keep;
  };

  // Read the step tensors and options, allocate the outputs (owned by JS).
  Call prepare_call(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_->disposed) throw_error(env, Code::State, "layer: this layer was disposed");
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject())
      throw_error(env, Code::Argument, "forward: expected (inputs, options)");
    Napi::Object in = info[0].As<Napi::Object>();
    Napi::Object o = info[1].As<Napi::Object>();
    const fused::Dims& d = state_->prepared.d;
    Call c;
    fused::Step& s = c.step;
    TensorArg x = get_tensor(env, in.Get("x"), "x", DType::BF16, 3);
    TensorArg sin = get_tensor(env, in.Get("sin"), "sin", DType::BF16, 3);
    TensorArg cos = get_tensor(env, in.Get("cos"), "cos", DType::BF16, 3);
    TensorArg ci = get_tensor(env, in.Get("cacheIndex"), "cacheIndex", DType::I32, 2);
    // FP8 caches are uint8 rows (dsa/fp8_cache.h); an FP8 kvCache holds the rope part (no krCache).
    const bool kv8 = tensor_dtype(in.Get("kvCache")) == "uint8", ik8 = tensor_dtype(in.Get("indexKCache")) == "uint8";
    const bool has_kr = !in.Get("krCache").IsUndefined() && !in.Get("krCache").IsNull();
    if (kv8 && has_kr) throw_error(env, Code::Argument, "krCache: expected none with an FP8 (uint8) kvCache, whose rows hold the rope part");
    if (!kv8 && !has_kr) throw_error(env, Code::Argument, "krCache: expected a bfloat16 tensor (only an FP8 kvCache goes without)");
    TensorArg kv = get_tensor(env, in.Get("kvCache"), "kvCache", kv8 ? DType::U8 : DType::BF16, 4);
    TensorArg kr = kv8 ? TensorArg{} : get_tensor(env, in.Get("krCache"), "krCache", DType::BF16, 4);
    TensorArg bt = get_tensor(env, in.Get("blockTable"), "blockTable", DType::I32, 2);
    TensorArg act = get_tensor(env, in.Get("actSeqs"), "actSeqs", DType::I32, 1);
    TensorArg ik = get_tensor(env, in.Get("indexKCache"), "indexKCache", ik8 ? DType::U8 : DType::BF16, 4);
    s.b = x.dim(0);
    s.s1 = x.dim(1);
    s.block_num = kv.dim(0);
    s.block_size = kv.dim(1);
    s.max_blocks = bt.dim(1);
    auto expect = [&](const TensorArg& t, std::vector<int64_t> shape) {
      if (t.shape != shape) throw_error(env, Code::Shape, t.name + ": expected shape " + shape_str(shape) + ", got " + shape_str(t.shape));
    };
    expect(x, {s.b, s.s1, d.h});
    expect(sin, {s.b, s.s1, d.rope});
    expect(cos, {s.b, s.s1, d.rope});
    expect(ci, {s.b, s.s1});
    if (kv8 && d.kv_lora % kFp8Block != 0)
      throw_error(env, Code::Shape, "kvCache: an FP8 latent cache needs kv_lora % 128 == 0, got " + std::to_string(d.kv_lora));
    if (ik8 && d.idx_dim != kFp8Block)
      throw_error(env, Code::Shape, "indexKCache: an FP8 key cache needs an indexer head dim of 128 (the Hadamard size), got " +
                                        std::to_string(d.idx_dim));
    expect(kv, {s.block_num, s.block_size, 1, kv8 ? fp8_kv_row_bytes(d.kv_lora, d.rope) : d.kv_lora});
    if (!kv8) expect(kr, {s.block_num, s.block_size, 1, d.rope});
    expect(ik, {s.block_num, s.block_size, 1, ik8 ? fp8_index_row_bytes(d.idx_dim) : d.idx_dim});
    expect(bt, {s.b, s.max_blocks});
    expect(act, {s.b});
    s.x = x.ptr<const bf16_t>();
    s.sin = sin.ptr<const bf16_t>();
    s.cos = cos.ptr<const bf16_t>();
    s.cache_index = ci.ptr<const int32_t>();
    if (kv8) s.kv_cache8 = kv.ptr<uint8_t>();
    else {
      s.kv_cache = kv.ptr<bf16_t>();
      s.kr_cache = kr.ptr<bf16_t>();
    }
    s.block_table = bt.ptr<const int32_t>();
    s.act_seqs = act.ptr<const int32_t>();
    if (ik8) s.index_k_cache8 = ik.ptr<uint8_t>();
    else s.index_k_cache = ik.ptr<bf16_t>();
    s.softmax_scale = num(o, "softmaxScale");
    s.rms_norm_eps = num(o, "rmsNormEps");
    s.layer_norm_eps = num(o, "layerNormEps");
    s.indexer_rope = o.Get("indexerRope").As<Napi::String>().Utf8Value() == "half" ? 1 : 0;
    s.topk = static_cast<int64_t>(num(o, "topk"));
    s.sparse_mode = static_cast<int>(num(o, "sparseMode"));
    if (s.topk < 1) throw_error(env, Code::Argument, "topk: expected >= 1, got " + std::to_string(s.topk));
    c.result = Napi::Object::New(env);
    void* out = nullptr;
    c.result.Set("out", new_tensor(env, DType::BF16, {s.b, s.s1, d.n, d.kv_lora}, &out));
    s.out = static_cast<bf16_t*>(out);
    if (o.Get("returnIndices").ToBoolean()) {
      void* idx = nullptr;
      c.result.Set("indices", new_tensor(env, DType::I32, {s.b, s.s1, s.topk}, &idx));
      s.indices = static_cast<int32_t*>(idx);
    }
    c.keep = {info[0], c.result, info.This()};
    if (info.Length() > 2 && info[2].IsTypedArray()) {
      Napi::TypedArray cell = info[2].As<Napi::TypedArray>();
      if (cell.TypedArrayType() != napi_int32_array || cell.ElementLength() < 1)
        throw_error(env, Code::Argument, "signal: expected an Int32Array cancel cell");
      s.cancel = reinterpret_cast<const int32_t*>(static_cast<uint8_t*>(cell.ArrayBuffer().Data()) + cell.ByteOffset());
      c.keep.push_back(cell);
    }
    return c;
  }

  static Napi::Object times_object(Napi::Env env, const fused::Times& t) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("projections", t.projections);
    o.Set("mlaProlog", t.mla_prolog);
    o.Set("indexerProlog", t.indexer_prolog);
    o.Set("lightningIndexer", t.lightning_indexer);
    o.Set("sparseFlashAttention", t.sparse_flash_attention);
    return o;
  }

  static Status execute(LayerState& st, const fused::Step& s, fused::Times* t) {
    std::lock_guard<std::mutex> lock(st.mutex);
    if (st.disposed) return Status::Error(Code::State, "layer: this layer was disposed");
    return fused::run(st.prepared, s, st.workspace, t);
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Call c = prepare_call(info);
    fused::Times t;
    throw_if_error(info.Env(), execute(*state_, c.step, &t));
    c.result.Set("times", times_object(info.Env(), t));
    return c.result;
  }

  Napi::Value ForwardAsync(const Napi::CallbackInfo& info) {
    Call c = prepare_call(info);
    auto state = state_;
    auto times = std::make_shared<fused::Times>();
    auto result = std::make_shared<Napi::ObjectReference>(Napi::Persistent(c.result));
    fused::Step step = c.step;
    return KernelWorker::Start(
        info.Env(), c.keep, [state, step, times]() { return execute(*state, step, times.get()); },
        [result, times](Napi::Env env) -> Napi::Value {
          Napi::Object r = result->Value();
          r.Set("times", times_object(env, *times));
          return r;
        });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->disposed = true;
    state_->prepared = fused::Prepared();
    state_->workspace = fused::Workspace();
    return info.Env().Undefined();
  }

  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(state_->prepared.bytes()));
  }

  std::shared_ptr<LayerState> state_;
};

#if defined(__ELF__)
// Also readable without loading the addon (scripts/check-binaries.mjs: readelf -p .dsa_stage_versions).
extern "C" __attribute__((used, section(".dsa_stage_versions"))) const char dsa_stage_versions[] = DSA_STAGE_VERSIONS;
#endif

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_common(env, exports, DSA_ADDON_VERSION);
  // "mla-prolog=0.1.0,indexer-prolog=0.1.0,...": the stage sources this addon was compiled from.
  exports.Set("stageVersions", Napi::String::New(env, DSA_STAGE_VERSIONS));
  exports.Set("Layer", Layer::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(dsa_fused, Init)
