// Binding helpers shared by every addon: tensors from JS objects (checked again here: never trust a
// pointer, a length or an index from JS), errors with DSA_E_* codes, the common exports (version,
// configure, cpuFeatures), and an AsyncWorker that keeps its inputs alive until it settles.
// Only bindings include this header; kernels never see Node-API.
#pragma once
#include <napi.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dsa/cpu.h"
#include "dsa/gemm.h"
#include "dsa/large_alloc.h"
#include "dsa/status.h"
#include "dsa/thread_pool.h"

namespace dsa {
namespace napi {

[[noreturn]] inline void throw_error(Napi::Env env, Code code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code_name(code)));
  throw e;
}

inline void throw_if_error(Napi::Env env, const Status& st) {
  if (!st.ok()) throw_error(env, st.code, st.message);
}

// FP8: e4m3 weights; U8: byte rows of mixed content (FP8 cache rows).
enum class DType { BF16, F32, I32, FP8, U8 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::BF16: return "bfloat16";
    case DType::F32: return "float32";
    case DType::FP8: return "float8_e4m3fn";
    case DType::U8: return "uint8";
    default: return "int32";
  }
}

struct TensorArg {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  WeightFormat format = WeightFormat::ND;
  void* data = nullptr;
  int64_t length = 0;  // elements in data
  const float* scale = nullptr;  // FP8 weights: the block scales

  int64_t dim(size_t i) const { return shape[i]; }
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  template <class T>
  T* ptr() const { return static_cast<T*>(data); }
  // The matrix view of a 2-D weight, or of item 0 of a 3-D one ([items, K, N]).
  WeightView weight() const {
    WeightView w;
    w.K = shape.size() >= 2 ? shape[shape.size() - 2] : 0;
    w.N = shape.size() >= 2 ? shape[shape.size() - 1] : 0;
    w.format = format;
    if (w.is_fp8()) {
      w.fp8 = static_cast<const uint8_t*>(data);
      w.scale = scale;
    } else {
      w.data = static_cast<const bf16_t*>(data);
    }
    return w;
  }
};

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// The dtype string of a tensor object ("" when it has none): lets a binding accept either cache form.
inline std::string tensor_dtype(Napi::Value v) {
  if (!v.IsObject()) return "";
  Napi::Value dt = v.As<Napi::Object>().Get("dtype");
  return dt.IsString() ? dt.As<Napi::String>().Utf8Value() : "";
}

// Read a tensor object {dtype, shape, data, format?}. rank < 0 accepts any rank.
// allow_weight_formats lets NZ and PACKED through (2-D bf16 weights only).
inline TensorArg get_tensor(Napi::Env env, Napi::Value v, const std::string& name, DType want, int rank = -1,
                            bool allow_weight_formats = false) {
  if (!v.IsObject()) throw_error(env, Code::Argument, name + ": expected a tensor object");
  Napi::Object o = v.As<Napi::Object>();
  TensorArg t;
  t.name = name;
  Napi::Value dt = o.Get("dtype");
  const std::string dts = dt.IsString() ? dt.As<Napi::String>().Utf8Value() : std::string("(not a string)");
  if (dts != dtype_name(want)) throw_error(env, Code::Dtype, name + ": expected dtype " + dtype_name(want) + ", got " + dts);
  t.dtype = want;
  Napi::Value sh = o.Get("shape");
  if (!sh.IsArray()) throw_error(env, Code::Shape, name + ": expected shape to be an array");
  Napi::Array arr = sh.As<Napi::Array>();
  int64_t count = 1;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value d = arr.Get(i);
    double dv = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(dv >= 0) || dv != static_cast<double>(static_cast<int64_t>(dv)) || dv > 9.0e15)
      throw_error(env, Code::Shape, name + ": shape entries must be non-negative integers");
    t.shape.push_back(static_cast<int64_t>(dv));
    count *= t.shape.back();
  }
  if (rank >= 0 && static_cast<int>(t.shape.size()) != rank)
    throw_error(env, Code::Shape, name + ": expected rank " + std::to_string(rank) + ", got shape " + shape_str(t.shape));
  Napi::Value fm = o.Get("format");
  std::string fms = fm.IsString() ? fm.As<Napi::String>().Utf8Value() : "ND";
  if (fms == "ND") {
    t.format = WeightFormat::ND;
  } else if (allow_weight_formats && (fms == "NZ" || fms == "PACKED") && t.shape.size() == 2 && want == DType::BF16) {
    t.format = fms == "NZ" ? WeightFormat::NZ : WeightFormat::Packed;
    if (t.format == WeightFormat::NZ && (t.shape[0] % 16 != 0 || t.shape[1] % 16 != 0))
      throw_error(env, Code::Shape, name + ": NZ needs K % 16 == 0 and N % 16 == 0, got " + shape_str(t.shape));
    if (t.format == WeightFormat::Packed) count = packed_elements(t.shape[0], t.shape[1]);
  } else {
    throw_error(env, Code::Format, name + ": format " + fms + " is not accepted here");
  }
  Napi::Value data = o.Get("data");
  if (!data.IsTypedArray()) throw_error(env, Code::Dtype, name + ": expected data to be a typed array");
  Napi::TypedArray ta = data.As<Napi::TypedArray>();
  const napi_typedarray_type need = want == DType::BF16                       ? napi_uint16_array
                                    : want == DType::F32                      ? napi_float32_array
                                    : want == DType::FP8 || want == DType::U8 ? napi_uint8_array
                                                                              : napi_int32_array;
  if (ta.TypedArrayType() != need) throw_error(env, Code::Dtype, name + ": data has the wrong typed array type for " + dtype_name(want));
  t.length = static_cast<int64_t>(ta.ElementLength());
  if (t.length != count)
    throw_error(env, Code::Shape, name + ": shape " + shape_str(t.shape) + " needs " + std::to_string(count) +
                                      " elements, data has " + std::to_string(t.length));
  t.data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return t;
}

// A zeroed ArrayBuffer in large_alloc memory (2 MiB-aligned, huge pages advised), freed by V8's
// finalizer. Falls back to an ordinary ArrayBuffer where the memory or external buffers (e.g. a
// V8 sandbox) are refused.
inline Napi::ArrayBuffer large_array_buffer(Napi::Env env, size_t bytes) {
  void* p = bytes >= kHugePage ? large_alloc(bytes) : nullptr;
  if (p == nullptr) return Napi::ArrayBuffer::New(env, bytes);
  std::memset(p, 0, bytes);
  napi_value ab;
  auto finalize = [](napi_env e, void* data, void* hint) {
    int64_t ignored;
    napi_adjust_external_memory(e, -static_cast<int64_t>(reinterpret_cast<uintptr_t>(hint)), &ignored);
    large_free(data, static_cast<size_t>(reinterpret_cast<uintptr_t>(hint)));
  };
  if (napi_create_external_arraybuffer(env, p, bytes, finalize, reinterpret_cast<void*>(static_cast<uintptr_t>(bytes)), &ab) !=
      napi_ok) {
    large_free(p, bytes);
    return Napi::ArrayBuffer::New(env, bytes);
  }
  int64_t ignored;
  napi_adjust_external_memory(env, static_cast<int64_t>(bytes), &ignored);  // so the GC sees its weight
  return Napi::ArrayBuffer(env, ab);
}

// A block-scaled FP8 weight {dtype 'float8_e4m3fn', shape [K, N] (or [items, K, N] when rank is 3),
// format 'NT' | 'ND' | 'PACKED', data Uint8Array, blockScale {dtype 'float32', shape, data}} (the
// layouts of dsa/gemm.h). Appends the two typed arrays to `keep` when given.
inline TensorArg get_fp8_weight(Napi::Env env, Napi::Value v, const std::string& name, int rank,
                                std::vector<Napi::Value>* keep = nullptr) {
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value fm = o.Get("format");
  const std::string fms = fm.IsString() ? fm.As<Napi::String>().Utf8Value() : "(none)";
  WeightFormat f;
  if (fms == "NT") f = WeightFormat::Fp8NT;
  else if (fms == "ND") f = WeightFormat::Fp8ND;
  else if (fms == "PACKED") f = WeightFormat::Fp8Packed;
  else throw_error(env, Code::Format, name + ": expected format NT, ND or PACKED for a float8_e4m3fn weight, got " + fms);
  // Read the bytes as a flat tensor, then check the count against the shape and layout.
  Napi::Object flat = Napi::Object::New(env);
  flat.Set("dtype", o.Get("dtype"));
  flat.Set("data", o.Get("data"));
  Napi::Value data = o.Get("data");
  const double len = data.IsTypedArray() ? static_cast<double>(data.As<Napi::TypedArray>().ElementLength()) : 0;
  Napi::Array one = Napi::Array::New(env, 1);
  one.Set(0u, Napi::Number::New(env, len));
  flat.Set("shape", one);
  TensorArg t = get_tensor(env, flat, name, DType::FP8, 1);
  std::vector<int64_t> shape;
  {
    Napi::Value sh = o.Get("shape");
    if (!sh.IsArray()) throw_error(env, Code::Shape, name + ": expected shape to be an array");
    Napi::Array arr = sh.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      const double d = arr.Get(i).IsNumber() ? arr.Get(i).As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d)) || d > 1.0e9)
        throw_error(env, Code::Shape, name + ": shape entries must be non-negative integers");
      shape.push_back(static_cast<int64_t>(d));
    }
  }
  if (static_cast<int>(shape.size()) != rank)
    throw_error(env, Code::Shape, name + ": expected rank " + std::to_string(rank) + ", got shape " + shape_str(shape));
  const int64_t items = rank == 3 ? shape[0] : 1, K = shape[rank - 2], N = shape[rank - 1];
  const int64_t bytes = items * fp8_bytes(f, K, N);
  if (t.length != bytes)
    throw_error(env, Code::Shape, name + ": shape " + shape_str(shape) + " (" + fms + ") needs " + std::to_string(bytes) +
                                      " bytes, data has " + std::to_string(t.length));
  std::vector<int64_t> grid;
  if (rank == 3) grid.push_back(items);
  if (f == WeightFormat::Fp8NT) grid.insert(grid.end(), {fp8_kblocks(N), fp8_kblocks(K)});
  else if (f == WeightFormat::Fp8ND) grid.insert(grid.end(), {fp8_kblocks(K), fp8_kblocks(N)});
  else grid.insert(grid.end(), {packed_n(N) / 16, fp8_kblocks(K)});
  Napi::Value bs = o.Get("blockScale");
  if (!bs.IsObject()) throw_error(env, Code::Argument, name + ".blockScale: expected a float32 tensor of block scales");
  TensorArg s = get_tensor(env, bs, name + ".blockScale", DType::F32);
  if (s.shape != grid)
    throw_error(env, Code::Shape, name + ".blockScale: expected shape " + shape_str(grid) + " for " + fms + " " +
                                      shape_str(shape) + ", got " + shape_str(s.shape));
  t.shape = shape;
  t.format = f;
  t.scale = s.ptr<const float>();
  if (keep) {
    keep->push_back(data);
    keep->push_back(bs.As<Napi::Object>().Get("data"));
  }
  return t;
}

// A 2-D weight: bf16 (ND, NZ or PACKED) or block-scaled FP8 (see get_fp8_weight). Appends the typed
// arrays to read to `keep` when given.
inline TensorArg get_weight(Napi::Env env, Napi::Value v, const std::string& name, std::vector<Napi::Value>* keep = nullptr) {
  if (v.IsObject()) {
    Napi::Value dt = v.As<Napi::Object>().Get("dtype");
    if (dt.IsString() && dt.As<Napi::String>().Utf8Value() == "float8_e4m3fn") return get_fp8_weight(env, v, name, 2, keep);
  }
  TensorArg t = get_tensor(env, v, name, DType::BF16, 2, true);
  if (keep) keep->push_back(v.As<Napi::Object>().Get("data"));
  return t;
}

// A new tensor object owned by JS: {dtype, shape, data, format: 'ND'}; *out points at its storage.
// Storage of 2 MiB or more (or any size with `large`) comes from large_array_buffer: where transparent
// huge pages are only given on advice, a V8 buffer of that size costs one page fault per 4 KiB when the
// kernel first writes it (measured on a VM: 170 ms for 50 MB against 7 ms with huge pages).
inline Napi::Object new_tensor(Napi::Env env, DType dt, const std::vector<int64_t>& shape, void** out,
                               const char* format = "ND", int64_t elements = -1, bool large = false) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (elements >= 0) n = elements;
  const size_t esize = dt == DType::BF16 ? 2 : (dt == DType::FP8 || dt == DType::U8) ? 1 : 4;
  const size_t bytes = static_cast<size_t>(n) * esize;
  Napi::ArrayBuffer ab = large || bytes >= kHugePage ? large_array_buffer(env, bytes) : Napi::ArrayBuffer::New(env, bytes);
  Napi::Value arr;
  if (dt == DType::BF16) arr = Napi::Uint16Array::New(env, n, ab, 0);
  else if (dt == DType::FP8 || dt == DType::U8) arr = Napi::Uint8Array::New(env, n, ab, 0);
  else if (dt == DType::F32) arr = Napi::Float32Array::New(env, n, ab, 0);
  else arr = Napi::Int32Array::New(env, n, ab, 0);
  Napi::Object o = Napi::Object::New(env);
  o.Set("dtype", dtype_name(dt));
  Napi::Array sh = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) sh.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  o.Set("shape", sh);
  o.Set("data", arr);
  o.Set("format", format);
  *out = ab.Data();
  return o;
}

// Runs `work` on a libuv thread (which hands it to the kernel pool), keeps `keep` alive meanwhile,
// then resolves with `finish(env)` or rejects with the Status as a coded error.
class KernelWorker : public Napi::AsyncWorker {
 public:
  KernelWorker(Napi::Env env, std::vector<Napi::Value> keep, std::function<Status()> work,
               std::function<Napi::Value(Napi::Env)> finish)
      : Napi::AsyncWorker(env, "dsa-kernel"), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        finish_(std::move(finish)) {
    for (auto& v : keep) {
      if (v.IsObject()) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    }
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  // Queue `work` on a worker thread and return the promise of `finish(env)` (the usual use).
  static Napi::Promise Start(Napi::Env env, std::vector<Napi::Value> keep, std::function<Status()> work,
                             std::function<Napi::Value(Napi::Env)> finish) {
    auto* worker = new KernelWorker(env, std::move(keep), std::move(work), std::move(finish));
    Napi::Promise p = worker->promise();
    worker->Queue();  // the worker deletes itself once it has settled
    return p;
  }

 protected:
  void Execute() override { status_ = work_(); }
  void OnOK() override {
    Napi::Env env = Env();
    if (!status_.ok()) {
      Napi::Error e = Napi::Error::New(env, status_.message);
      e.Set("code", Napi::String::New(env, code_name(status_.code)));
      deferred_.Reject(e.Value());
      return;
    }
    try {
      deferred_.Resolve(finish_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<Status()> work_;
  std::function<Napi::Value(Napi::Env)> finish_;
  std::vector<Napi::ObjectReference> refs_;
  Status status_;
};

inline Napi::Object cpu_features_object(Napi::Env env) {
  const CpuFeatures& f = cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("avx2", f.avx2);
  o.Set("fma", f.fma);
  o.Set("f16c", f.f16c);
  o.Set("avx512f", f.avx512f);
  o.Set("avx512bw", f.avx512bw);
  o.Set("avx512vl", f.avx512vl);
  o.Set("avx512bf16", f.avx512bf16);
  o.Set("best", isa_name(best_isa()));
  return o;
}

// version, configure(threads, isa) and cpuFeatures(): what tensor-core's loader expects of every addon.
inline void register_common(Napi::Env env, Napi::Object exports, const char* version) {
  exports.Set("version", Napi::String::New(env, version));
  exports.Set("configure", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                Napi::Env e = info.Env();
                if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString())
                  throw_error(e, Code::Argument, "configure: expected (threads, isa)");
                set_num_threads(info[0].As<Napi::Number>().Int32Value());
                const std::string name = info[1].As<Napi::String>().Utf8Value();
                Isa isa = best_isa();
                if (name != "auto" && !parse_isa(name.c_str(), &isa))
                  throw_error(e, Code::Argument, "isa: expected scalar, avx2, avx512 or auto, got " + name);
                if (!set_active_isa(isa))
                  throw_error(e, Code::Argument, std::string("isa: this CPU cannot run the ") + name + " path");
                return Napi::String::New(e, isa_name(active_isa()));
              }));
  exports.Set("cpuFeatures", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                return cpu_features_object(info.Env());
              }));
}

}  // namespace napi
}  // namespace dsa
