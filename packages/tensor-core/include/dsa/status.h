// Kernels never throw: they return a Status, and the binding turns it into a JS DsaError.
#pragma once
#include <string>
#include <utility>

namespace dsa {

enum class Code { Ok = 0, Dtype, Shape, Format, Range, Value, Argument, State, Aborted, Internal };

// The JS error code for each Code (must match tensor-core's ErrorCode).
inline const char* code_name(Code c) {
  switch (c) {
    case Code::Ok: return "DSA_E_OK";
    case Code::Dtype: return "DSA_E_DTYPE";
    case Code::Shape: return "DSA_E_SHAPE";
    case Code::Format: return "DSA_E_FORMAT";
    case Code::Range: return "DSA_E_RANGE";
    case Code::Value: return "DSA_E_VALUE";
    case Code::Argument: return "DSA_E_ARGUMENT";
    case Code::State: return "DSA_E_STATE";
    case Code::Aborted: return "DSA_E_ABORTED";
    case Code::Internal: return "DSA_E_INTERNAL";
  }
  return "DSA_E_INTERNAL";
}

struct Status {
  Code code = Code::Ok;
  std::string message;  // "argument: expected ..., got ..."

  bool ok() const { return code == Code::Ok; }
  static Status Ok() { return {}; }
  static Status Error(Code c, std::string m) { return {c, std::move(m)}; }
};

}  // namespace dsa

// Return early from a function that returns Status.
#define DSA_RETURN_IF_ERROR(expr)      \
  do {                                 \
    ::dsa::Status _st = (expr);        \
    if (!_st.ok()) return _st;         \
  } while (0)
