// @dsa/tensor-core's own addon: matmul and packWeights for tests and benchmarks, and the probes that
// measure this machine's ceilings. Kernels live in native/runtime (shared by every addon).
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "dsa/gemm.h"
#include "dsa/napi_tensor.h"
#include "dsa/thread_pool.h"
#include "probe.h"

using namespace dsa;
using namespace dsa::napi;

namespace {

// matmul(x [M,K] bf16, w [K,N] bf16 ND|NZ|PACKED or FP8 NT|ND|PACKED, outDtype 'float32'|'bfloat16') -> y [M,N]
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorArg x = get_tensor(env, info[0], "x", DType::BF16, 2);
  TensorArg w = get_weight(env, info[1], "w");
  const std::string out = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "float32";
  if (out != "float32" && out != "bfloat16") throw_error(env, Code::Argument, "outDtype: expected float32 or bfloat16, got " + out);
  if (x.dim(1) != w.dim(0))
    throw_error(env, Code::Shape, "w: expected shape[0] (K) = " + std::to_string(x.dim(1)) + " as given by x.shape[1], got " +
                                      std::to_string(w.dim(0)));
  void* yp = nullptr;
  const DType odt = out == "float32" ? DType::F32 : DType::BF16;
  Napi::Object y = new_tensor(env, odt, {x.dim(0), w.dim(1)}, &yp);
  GemmOut go;
  go.data = yp;
  go.ld = w.dim(1);
  go.type = odt == DType::F32 ? OutType::F32 : OutType::BF16;
  if (!matmul(x.ptr<const bf16_t>(), x.dim(1), x.dim(0), w.weight(), go))
    throw_error(env, Code::Internal, "matmul: inconsistent arguments");
  return y;
}

// matmulBatched(x [B,M,K] bf16, w [B,K,N] bf16 ND or FP8 ND|PACKED, outDtype) -> y [B,M,N]: one task per item.
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
  void* yp = nullptr;
  const DType odt = out == "float32" ? DType::F32 : DType::BF16;
  Napi::Object y = new_tensor(env, odt, {B, M, N}, &yp);
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
    Napi::Object out = new_tensor(env, DType::FP8, w.shape, &dst, "PACKED", items * out_bytes);
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
  Napi::Object out = new_tensor(env, DType::BF16, w.shape, &dst, "PACKED", packed_elements(w.dim(0), w.dim(1)));
  pack_weights(w.weight(), static_cast<bf16_t*>(dst));
  return out;
}

// probeRead(bytes, threads, reps) -> seconds for `reps` passes over a fresh buffer of `bytes`
Napi::Value ProbeRead(const Napi::CallbackInfo& info) {
  const size_t bytes = static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue());
  const int threads = info[1].As<Napi::Number>().Int32Value();
  const int reps = info[2].As<Napi::Number>().Int32Value();
  std::vector<uint8_t> buf(bytes);
  for (size_t i = 0; i < bytes; i += 4096) buf[i] = static_cast<uint8_t>(i);  // fault every page in
  auto read_fn = DSA_DISPATCH(probe_read);
  const size_t chunk = (bytes / threads) & ~size_t(255);
  std::atomic<uint64_t> sink{0};
  auto pass = [&] {
    std::vector<std::thread> ts;
    for (int t = 1; t < threads; ++t) ts.emplace_back([&, t] { sink ^= read_fn(buf.data() + t * chunk, chunk); });
    sink ^= read_fn(buf.data(), chunk);
    for (auto& th : ts) th.join();
  };
  pass();  // warm-up (page tables, frequency)
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) pass();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("seconds", s);
  o.Set("bytes", static_cast<double>(chunk) * threads * reps);
  o.Set("sink", static_cast<double>(sink.load() & 1));
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_common(env, exports, DSA_ADDON_VERSION);
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("matmulBatched", Napi::Function::New(env, MatmulBatched));
  exports.Set("packWeights", Napi::Function::New(env, PackWeights));
  exports.Set("probeRead", Napi::Function::New(env, ProbeRead));
  exports.Set("probeDot", Napi::Function::New(env, ProbeDot));
  exports.Set("activeIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& i) -> Napi::Value {
                return Napi::String::New(i.Env(), isa_name(active_isa()));
              }));
  return exports;
}

}  // namespace

NODE_API_MODULE(dsa_tensor_core, Init)
