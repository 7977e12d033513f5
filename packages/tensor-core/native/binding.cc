// @dsa/tensor-core's own addon: matmul and packWeights for tests and benchmarks, allocateLarge for
// streamed buffers, and the probes that measure and describe this machine for the benchmarks.
// Kernels live in native/runtime (shared by every addon).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <cstring>
#include <thread>
#include <vector>

#include "dsa/gemm.h"
#include "dsa/large_alloc.h"
#include "dsa/napi_tensor.h"
#include "dsa/thread_pool.h"
#include "dequant.h"
#include "machine.h"
#include "probe.h"

using namespace dsa;
using namespace dsa::napi;

namespace {

// The result tensor: info[3] when given (the caller's, checked against dtype and shape; the JS side
// has ruled out overlap with the inputs), else a new one.
Napi::Object output(Napi::Env env, const Napi::CallbackInfo& info, DType dtype, const std::vector<int64_t>& shape,
                    void** data) {
  if (info.Length() < 4 || info[3].IsUndefined()) return new_tensor(env, dtype, shape, data);
  TensorArg o = get_tensor(env, info[3], "out", dtype, static_cast<int>(shape.size()));
  if (o.shape != shape) throw_error(env, Code::Shape, "out: expected shape " + shape_str(shape) + ", got " + shape_str(o.shape));
  *data = o.ptr<void>();
  return info[3].As<Napi::Object>();
}

// matmul(x [M,K] bf16, w [K,N] bf16 ND|NZ|PACKED or FP8 NT|ND|PACKED, outDtype 'float32'|'bfloat16', out?) -> y [M,N]
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorArg x = get_tensor(env, info[0], "x", DType::BF16, 2);
  TensorArg w = get_weight(env, info[1], "w");
  const std::string out = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "float32";
  if (out != "float32" && out != "bfloat16") throw_error(env, Code::Argument, "outDtype: expected float32 or bfloat16, got " + out);
  if (x.dim(1) != w.dim(0))
    throw_error(env, Code::Shape, "w: expected shape[0] (K) = " + std::to_string(x.dim(1)) + " as given by x.shape[1], got " +
                                      std::to_string(w.dim(0)));
  const DType odt = out == "float32" ? DType::F32 : DType::BF16;
  void* yp = nullptr;
  Napi::Object y = output(env, info, odt, {x.dim(0), w.dim(1)}, &yp);
  GemmOut go;
  go.data = yp;
  go.ld = w.dim(1);
  go.type = odt == DType::F32 ? OutType::F32 : OutType::BF16;
  if (!matmul(x.ptr<const bf16_t>(), x.dim(1), x.dim(0), w.weight(), go))
    throw_error(env, Code::Internal, "matmul: inconsistent arguments");
  return y;
}

// matmulBatched(x [B,M,K] bf16, w [B,K,N] bf16 ND or FP8 ND|PACKED, outDtype, out?) -> y [B,M,N].
Napi::Value MatmulBatched(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorArg x = get_tensor(env, info[0], "x", DType::BF16, 3);
  const bool fp8 = info[1].IsObject() && info[1].As<Napi::Object>().Get("dtype").ToString().Utf8Value() == "float8_e4m3fn";
  TensorArg w = fp8 ? get_fp8_weight(env, info[1], "w", 3) : get_tensor(env, info[1], "w", DType::BF16, 3);
  const std::string out = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "float32";
  if (out != "float32" && out != "bfloat16") throw_error(env, Code::Argument, "outDtype: expected float32 or bfloat16, got " + out);
  if (x.dim(0) != w.dim(0) || x.dim(2) != w.dim(1))
    throw_error(env, Code::Shape, "w: expected shape [" + std::to_string(x.dim(0)) + ", " + std::to_string(x.dim(2)) +
                                      ", N] as given by x, got " + shape_str(w.shape));
  const int64_t B = x.dim(0), M = x.dim(1), K = x.dim(2), N = w.dim(2);
  const DType odt = out == "float32" ? DType::F32 : DType::BF16;
  void* yp = nullptr;
  Napi::Object y = output(env, info, odt, {B, M, N}, &yp);
  const WeightView wv = w.weight();
  const int64_t w_stride = fp8 ? fp8_bytes(wv.format, K, N) : K * N;
  GemmOut go{yp, N, odt == DType::F32 ? OutType::F32 : OutType::BF16, false};
  if (!matmul_batched(B, x.ptr<const bf16_t>(), K, M * K, M, wv, w_stride, go, M * N))
    throw_error(env, Code::Internal, "matmulBatched: inconsistent arguments");
  return y;
}

// packWeights(w [K,N] bf16 ND|NZ, or FP8 NT|ND [K,N] / [items,K,N]) -> the same weight in the PACKED
// layout (FP8: with per-panel block scales; 3-D: each item packed on its own, one after the other).
Napi::Value PackWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info[0].IsObject() && info[0].As<Napi::Object>().Get("dtype").ToString().Utf8Value() == "float8_e4m3fn") {
    const Napi::Value sh = info[0].As<Napi::Object>().Get("shape");
    const int rank = sh.IsArray() && sh.As<Napi::Array>().Length() == 3 ? 3 : 2;
    TensorArg w = get_fp8_weight(env, info[0], "w", rank);
    const int64_t items = rank == 3 ? w.dim(0) : 1;
    WeightView src = w.weight();
    const int64_t K = src.K, N = src.N, in_bytes = fp8_bytes(src.format, K, N), in_scales = fp8_scales(src.format, K, N);
    const int64_t out_bytes = fp8_packed_bytes(K, N), out_scales = fp8_scales(WeightFormat::Fp8Packed, K, N);
    void* dst = nullptr;
    void* sdst = nullptr;
    Napi::Object out = new_tensor(env, DType::FP8, w.shape, &dst, "PACKED", items * out_bytes, /*large=*/true);
    std::vector<int64_t> grid{packed_n(N) / 16, fp8_kblocks(K)};
    if (rank == 3) grid.insert(grid.begin(), items);
    out.Set("blockScale", new_tensor(env, DType::F32, grid, &sdst));
    for (int64_t i = 0; i < items; ++i) {
      WeightView wi = src;
      wi.fp8 += i * in_bytes;
      wi.scale += i * in_scales;
      pack_fp8_weights(wi, static_cast<uint8_t*>(dst) + i * out_bytes, static_cast<float*>(sdst) + i * out_scales);
    }
    return out;
  }
  TensorArg w = get_tensor(env, info[0], "w", DType::BF16, 2, true);
  void* dst = nullptr;
  Napi::Object out =
      new_tensor(env, DType::BF16, w.shape, &dst, "PACKED", packed_elements(w.dim(0), w.dim(1)), /*large=*/true);
  pack_weights(w.weight(), static_cast<bf16_t*>(dst));
  return out;
}

// probeRead(bytes, threads, reps) -> {bytes, passes: [seconds]}: after one warm-up pass, `reps`
// passes over one large_alloc buffer, timed per 256 MiB segment (each thread reads its own part of
// the segment, as the streaming kernels split a weight) so a time slice lost to another process
// spoils one sample, not a whole pass. The buffer is read in order: a segment comes back only
// after the whole buffer (several times the last-level cache) has gone by.
Napi::Value ProbeRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t bytes = static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue());
  const int threads = std::max(1, info[1].As<Napi::Number>().Int32Value());
  const int reps = std::max(1, info[2].As<Napi::Number>().Int32Value());
  auto release = [bytes](uint8_t* p) { large_free(p, bytes); };
  std::unique_ptr<uint8_t, decltype(release)> buf(static_cast<uint8_t*>(large_alloc(bytes)), release);
  if (!buf) throw_error(env, Code::Internal, "probeRead: cannot allocate " + std::to_string(bytes) + " bytes");
  std::memset(buf.get(), 1, bytes);  // fault every page in
  auto read_fn = DSA_DISPATCH(probe_read);
  const size_t seg = std::min<size_t>(bytes, size_t(256) << 20) / (size_t(4096) * threads) * (size_t(4096) * threads);
  const size_t segments = seg ? bytes / seg : 0;
  if (segments == 0) throw_error(env, Code::Argument, "probeRead: bytes too small for " + std::to_string(threads) + " threads");
  const size_t chunk = seg / threads;
  std::atomic<uint64_t> sink{0};
  auto read_segment = [&](const uint8_t* p) {
    std::vector<std::thread> ts;
    for (int t = 1; t < threads; ++t) ts.emplace_back([&, t] { sink ^= read_fn(p + t * chunk, chunk); });
    sink ^= read_fn(p, chunk);
    for (auto& th : ts) th.join();
  };
  for (size_t k = 0; k < segments; ++k) read_segment(buf.get() + k * seg);  // warm-up (frequency, the TLB)
  Napi::Array passes = Napi::Array::New(env, reps * segments);
  uint32_t n = 0;
  for (int r = 0; r < reps; ++r) {
    for (size_t k = 0; k < segments; ++k) {
      auto t0 = std::chrono::steady_clock::now();
      read_segment(buf.get() + k * seg);
      passes.Set(n++, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", static_cast<double>(seg));
  o.Set("passes", passes);
  o.Set("sink", static_cast<double>(sink.load() & 1));
  return o;
}

// allocateLarge(bytes) -> a zeroed ArrayBuffer from large_alloc (see large_alloc.h)
Napi::Value AllocateLarge(const Napi::CallbackInfo& info) {
  return large_array_buffer(info.Env(), static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue()));
}

// cpuIdentity() -> {vendor, brand, family, model, stepping, caches: [{level, type, bytes, sharedBy}], cacheSource}
Napi::Value CpuIdentityJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuIdentity id = cpu_identity();
  Napi::Object o = Napi::Object::New(env);
  o.Set("vendor", id.vendor);
  o.Set("brand", id.brand);
  o.Set("family", id.family);
  o.Set("model", id.model);
  o.Set("stepping", id.stepping);
  Napi::Array caches = Napi::Array::New(env, id.caches.size());
  for (size_t i = 0; i < id.caches.size(); ++i) {
    Napi::Object c = Napi::Object::New(env);
    c.Set("level", id.caches[i].level);
    c.Set("type", id.caches[i].type);
    c.Set("bytes", static_cast<double>(id.caches[i].bytes));
    c.Set("sharedBy", id.caches[i].shared_by);
    caches.Set(static_cast<uint32_t>(i), c);
  }
  o.Set("caches", caches);
  o.Set("cacheSource", id.cache_source);
  return o;
}

// probeDot(iters, threads) -> {seconds, flops}
Napi::Value ProbeDot(const Napi::CallbackInfo& info) {
  const int64_t iters = info[0].As<Napi::Number>().Int64Value();
  const int threads = info[1].As<Napi::Number>().Int32Value();
  auto dot_fn = DSA_DISPATCH(probe_dot);
  std::atomic<double> macs{0};
  auto run = [&] {
    std::vector<std::thread> ts;
    std::vector<double> per(threads, 0.0);
    for (int t = 1; t < threads; ++t) ts.emplace_back([&, t] { per[t] = dot_fn(iters, 1.0f + t); });
    per[0] = dot_fn(iters, 1.0f);
    for (auto& th : ts) th.join();
    double s = 0;
    for (double v : per) s += v;
    macs = s;
  };
  dot_fn(iters / 10 + 1, 0.5f);
  auto t0 = std::chrono::steady_clock::now();
  run();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("seconds", s);
  o.Set("flops", macs.load() * 2);
  return o;
}

// A typed array argument of the given type: its data pointer and element count.
template <class T>
T* typed_array(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char* name, int64_t* length) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw_error(env, Code::Dtype, std::string(name) + ": expected a typed array of the right type");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  *length = static_cast<int64_t>(ta.ElementLength());
  return reinterpret_cast<T*>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
}

int64_t int_arg(Napi::Env env, Napi::Value v, const char* name, int64_t lo) {
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
  if (!(d >= static_cast<double>(lo)) || d > 9.0e15 || d != static_cast<double>(static_cast<int64_t>(d)))
    throw_error(env, Code::Argument, std::string(name) + ": expected an integer >= " + std::to_string(lo));
  return static_cast<int64_t>(d);
}

// e4m3RowsToBf16(src u8, row0, rows, cols, scale f32, blockRows, blockCols, dst u16, offset, ld, transposed)
// Every index the kernel will touch is checked against the arrays first.
Napi::Value E4m3RowsToBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t src_len = 0, scale_len = 0, dst_len = 0;
  E4m3Rows a{};
  a.src = typed_array<const uint8_t>(env, info[0], napi_uint8_array, "src", &src_len);
  a.row0 = int_arg(env, info[1], "row0", 0);
  a.rows = int_arg(env, info[2], "rows", 0);
  a.cols = int_arg(env, info[3], "cols", 0);
  a.scale = typed_array<const float>(env, info[4], napi_float32_array, "scale", &scale_len);
  a.block_rows = int_arg(env, info[5], "blockRows", 1);
  a.block_cols = int_arg(env, info[6], "blockCols", 1);
  uint16_t* dst = typed_array<uint16_t>(env, info[7], napi_uint16_array, "dst", &dst_len);
  const int64_t offset = int_arg(env, info[8], "offset", 0);
  a.ld = int_arg(env, info[9], "ld", 0);
  a.transposed = info[10].ToBoolean().Value();
  if (a.rows == 0 || a.cols == 0) return env.Undefined();
  // Divisions instead of products: no overflow whatever the arguments.
  if (a.cols > src_len / a.rows) throw_error(env, Code::Shape, "src: fewer bytes than rows × cols");
  const int64_t scale_cols = (a.cols + a.block_cols - 1) / a.block_cols;
  if ((a.row0 + a.rows - 1) / a.block_rows + 1 > scale_len / scale_cols) throw_error(env, Code::Shape, "scale: too few block scales for these rows");
  const int64_t inner = a.transposed ? a.rows : a.cols, outer = a.transposed ? a.cols : a.rows;
  if (a.ld < inner || offset > dst_len || inner > dst_len - offset || outer - 1 > (dst_len - offset - inner) / a.ld)
    throw_error(env, Code::Shape, "dst: the target range does not fit");
  a.dst = dst + offset;
  e4m3_rows_to_bf16(a);
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_common(env, exports, DSA_ADDON_VERSION);
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("matmulBatched", Napi::Function::New(env, MatmulBatched));
  exports.Set("packWeights", Napi::Function::New(env, PackWeights));
  exports.Set("probeRead", Napi::Function::New(env, ProbeRead));
  exports.Set("probeDot", Napi::Function::New(env, ProbeDot));
  exports.Set("e4m3RowsToBf16", Napi::Function::New(env, E4m3RowsToBf16));
  exports.Set("allocateLarge", Napi::Function::New(env, AllocateLarge));
  exports.Set("cpuIdentity", Napi::Function::New(env, CpuIdentityJs));
  exports.Set("activeIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& i) -> Napi::Value {
                return Napi::String::New(i.Env(), isa_name(active_isa()));
              }));
  return exports;
}

}  // namespace

NODE_API_MODULE(dsa_tensor_core, Init)
