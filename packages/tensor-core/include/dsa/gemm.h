// bf16 matrix products with fp32 accumulation: y[M,N] = x[M,K] @ W[K,N].
//
// Weight layouts:
//   ND      row-major [K, N]
//   NZ      [N/16, K, 16]: (k, n) at (n>>4)*K*16 + k*16 + (n&15)   (K % 16 == 0, N % 16 == 0)
//   NT      row-major [N, K] (the transpose; e.g. cache rows used as keys)
//   Packed  [Np/16, Kp/2, 16, 2] with Kp = K rounded up to even, Np = N rounded up to 16, zero padded:
//           (k, n) at ((n>>4)*(Kp/2) + (k>>1))*32 + (n&15)*2 + (k&1).
//           One 64-byte line holds a k-pair for 16 columns: exactly one vdpbf16ps operand, and the
//           same line feeds the AVX2 and scalar paths (even/odd halves). Made once by pack_weights.
#pragma once
#include <cstdint>
#include "dsa/bf16.h"

namespace dsa {

enum class WeightFormat { ND = 0, NZ = 1, Packed = 2, NT = 3 };

struct WeightView {
  const bf16_t* data = nullptr;
  int64_t K = 0, N = 0;
  WeightFormat format = WeightFormat::ND;
};

inline int64_t packed_k(int64_t K) { return K + (K & 1); }
inline int64_t packed_n(int64_t N) { return (N + 15) / 16 * 16; }
inline int64_t packed_elements(int64_t K, int64_t N) { return packed_k(K) * packed_n(N); }

// Pack any layout into `dst` (packed_elements(K, N) elements). Multi-threaded.
void pack_weights(const WeightView& src, bf16_t* dst);
// Pack columns [n0, n0 + 16*panels) of src into dst on the calling thread (a slice of a packed weight).
void pack_panels(const WeightView& src, int64_t panel0, int64_t panels, bf16_t* dst);

enum class OutType { F32 = 0, BF16 = 1 };

struct GemmOut {
  void* data = nullptr;   // float* or bf16_t*
  int64_t ld = 0;         // elements between rows
  OutType type = OutType::F32;
  bool accumulate = false;  // F32 only: y += x @ W
};

// y = x @ W on the kernel thread pool. x rows are `ldx` elements apart. Returns false only when the
// arguments are inconsistent (callers validate first).
bool matmul(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y);
// The same on the calling thread only (for callers that are already inside a parallel task).
bool matmul_serial(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y);

// `batch` independent products y[i] = x[i] @ W[i] (e.g. the per-head W_UK absorption), one task per
// item on the pool. Items are x_stride / w_stride / y_stride elements apart.
bool matmul_batched(int64_t batch, const bf16_t* x, int64_t ldx, int64_t x_stride, int64_t M, const WeightView& w,
                    int64_t w_stride, const GemmOut& y, int64_t y_stride);

}  // namespace dsa
