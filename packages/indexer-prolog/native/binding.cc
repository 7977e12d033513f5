// Node-API binding of @dsa/indexer-prolog (skeleton: the common exports only).
#include "dsa/napi_tensor.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  dsa::napi::register_common(env, exports, DSA_ADDON_VERSION);
  return exports;
}
}  // namespace

NODE_API_MODULE(dsa_indexer_prolog, Init)
