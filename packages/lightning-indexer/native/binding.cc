// Node-API binding of @dsa/lightning-indexer: converts the JS tensors, checks that their shapes
// agree, and calls dsa::li::validate then run, synchronously or on a KernelWorker.
//
//   run(query, weights, indexKCache, blockTable, actSeqs, indices, scores | null, topk, sparseMode, timing?)
//   runAsync(the first nine) -> Promise<void>
// timing (benchmarks): a Float64Array(3) that receives li::Timing (score s, select s, merge wall s).
// The outputs are caller-allocated: indices int32 [b, s1, topk], scores float32 [b, s1, maxAct].
#include <string>
#include <vector>

#include "dsa/fp8_cache.h"
#include "dsa/napi_tensor.h"
#include "lightning_indexer_kernel.h"

using namespace dsa;
using namespace dsa::napi;

namespace {

void expect_dim(Napi::Env env, const TensorArg& t, size_t axis, int64_t want, const std::string& what, const std::string& from) {
  if (t.dim(axis) != want)
    throw_error(env, Code::Shape, t.name + ": expected shape[" + std::to_string(axis) + "] (" + what + ") = " +
                                      std::to_string(want) + " as given by " + from + ", got " + std::to_string(t.dim(axis)) +
                                      " (shape " + shape_str(t.shape) + ")");
}

int64_t int_arg(Napi::Env env, const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) throw_error(env, Code::Argument, std::string(name) + ": expected an integer");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < -9.0e15 || d > 9.0e15)
    throw_error(env, Code::Argument, std::string(name) + ": expected an integer, got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

struct Call {
  li::Args args;
  std::vector<Napi::Value> keep;
};

Call prepare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 9) throw_error(env, Code::Argument, "lightningIndexer: expected 9 arguments");
  TensorArg q = get_tensor(env, info[0], "query", DType::BF16, 4);
  TensorArg w = get_tensor(env, info[1], "weights", DType::BF16, 3);
  // FP8 key cache: uint8 rows of dim e4m3 bytes + an fp32 scale (dsa/fp8_cache.h).
  const bool fp8 = tensor_dtype(info[2]) == "uint8";
  TensorArg k = get_tensor(env, info[2], "indexKCache", fp8 ? DType::U8 : DType::BF16, 4);
  TensorArg table = get_tensor(env, info[3], "blockTable", DType::I32, 2);
  TensorArg act = get_tensor(env, info[4], "actSeqs", DType::I32, 1);
  TensorArg idx = get_tensor(env, info[5], "indices", DType::I32, 3);
  const bool want_scores = !info[6].IsNull() && !info[6].IsUndefined();

  Call c;
  li::Args& a = c.args;
  a.b = q.dim(0);
  a.s1 = q.dim(1);
  a.heads = q.dim(2);
  a.dim = q.dim(3);
  a.block_num = k.dim(0);
  a.block_size = k.dim(1);
  a.max_blocks = table.dim(1);
  a.topk = int_arg(env, info[7], "topk");
  a.sparse_mode = static_cast<int>(int_arg(env, info[8], "sparseMode"));
  expect_dim(env, w, 0, a.b, "b", "query.shape[0]");
  expect_dim(env, w, 1, a.s1, "s1", "query.shape[1]");
  expect_dim(env, w, 2, a.heads, "heads", "query.shape[2]");
  expect_dim(env, k, 2, 1, "kv heads", "the PA_BSND layout");
  if (fp8 && a.dim != kFp8Block)
    throw_error(env, Code::Shape, "indexKCache: an FP8 key cache needs a head dim of 128 (the Hadamard size), got query.shape[3] = " +
                                      std::to_string(a.dim));
  expect_dim(env, k, 3, fp8 ? fp8_index_row_bytes(a.dim) : a.dim, fp8 ? "dim + 4 bytes (FP8 row)" : "dim", "query.shape[3]");
  expect_dim(env, table, 0, a.b, "b", "query.shape[0]");
  expect_dim(env, act, 0, a.b, "b", "query.shape[0]");
  expect_dim(env, idx, 0, a.b, "b", "query.shape[0]");
  expect_dim(env, idx, 1, a.s1, "s1", "query.shape[1]");
  expect_dim(env, idx, 2, a.topk, "topk", "the topk option");
  a.query = q.ptr<const bf16_t>();
  a.weights = w.ptr<const bf16_t>();
  if (fp8) a.index_k_cache8 = k.ptr<const uint8_t>();
  else a.index_k_cache = k.ptr<const bf16_t>();
  a.block_table = table.ptr<const int32_t>();
  a.act_seqs = act.ptr<const int32_t>();
  a.indices = idx.ptr<int32_t>();
  // validate() before the scores shape check: max_act needs act_seqs, and validate reads only inputs.
  throw_if_error(env, li::validate(a));
  if (want_scores) {
    TensorArg s = get_tensor(env, info[6], "scores", DType::F32, 3);
    const int64_t m = li::max_act(a);
    expect_dim(env, s, 0, a.b, "b", "query.shape[0]");
    expect_dim(env, s, 1, a.s1, "s1", "query.shape[1]");
    expect_dim(env, s, 2, m, "max act", "max(actSeqs)");
    a.scores = s.ptr<float>();
    a.scores_len = m;
  }
  for (size_t i = 0; i < 7; ++i) c.keep.push_back(info[i]);
  return c;
}

Napi::Value Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = prepare(info);
  li::Timing timing;
  const bool timed = info.Length() > 9 && !info[9].IsUndefined();
  if (timed && !(info[9].IsTypedArray() && info[9].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array &&
                 info[9].As<Napi::Float64Array>().ElementLength() >= 3))
    throw_error(env, Code::Argument, "timing: expected a Float64Array of 3 elements");
  if (timed) c.args.timing = &timing;
  throw_if_error(env, li::run(c.args));
  if (timed) {
    Napi::Float64Array t = info[9].As<Napi::Float64Array>();
    t[0] = timing.score_seconds;
    t[1] = timing.select_seconds;
    t[2] = timing.merge_wall_seconds;
  }
  return env.Undefined();
}

Napi::Value RunAsync(const Napi::CallbackInfo& info) {
  Call c = prepare(info);
  const li::Args args = c.args;
  return KernelWorker::Start(
      info.Env(), std::move(c.keep), [args] { return li::run(args); },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_common(env, exports, DSA_ADDON_VERSION);
  exports.Set("run", Napi::Function::New(env, Run));
  exports.Set("runAsync", Napi::Function::New(env, RunAsync));
  return exports;
}

}  // namespace

NODE_API_MODULE(dsa_lightning_indexer, Init)
