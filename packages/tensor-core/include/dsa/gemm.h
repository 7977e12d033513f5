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
//
// Block-scaled FP8 e4m3 layouts (shared/spec/checkpoint.md; real value = byte value * its block's
// fp32 scale; blocks are 128 x 128 of the stored matrix, the edge ones partial):
//   Fp8NT      bytes [N, K] (the checkpoint's [out, in]), scales [ceil(N/128), ceil(K/128)]
//   Fp8ND      bytes [K, N], scales [ceil(K/128), ceil(N/128)] (e.g. W_UK, stored [qk_nope, kv_lora])
//   Fp8Packed  16-column panels of Kp = K rounded up to 4 (zero padded); panel p is Kp/4 groups of 64
//              bytes, group g holding k = 4g..4g+3: byte L*16 + h*8 + i (L < 4, h < 2, i < 8) is
//              (k = 4g + 2h + (i & 1), n = 16p + 4L + (i >> 1)). One scale per panel and 128-k block:
//              [Np/16, ceil(K/128)]. The byte order is the one that turns into two bf16 k-pair lines
//              (the Packed layout above) with two byte-table lookups and one unpack on AVX-512.
//              Made once by pack_fp8_weights.
#pragma once
#include <cstdint>
#include "dsa/bf16.h"

namespace dsa {

enum class WeightFormat { ND = 0, NZ = 1, Packed = 2, NT = 3, Fp8NT = 4, Fp8ND = 5, Fp8Packed = 6 };

struct WeightView {
  const bf16_t* data = nullptr;  // bf16 formats
  int64_t K = 0, N = 0;
  WeightFormat format = WeightFormat::ND;
  const uint8_t* fp8 = nullptr;  // FP8 formats: e4m3 bytes
  const float* scale = nullptr;  // FP8 formats: block scales
  // Fp8Packed, a hint: the bytes of the weight of the same shape that the calling thread multiplies
  // next (the next head of a batch), prefetched while this one ends; null when none.
  const uint8_t* fp8_next = nullptr;

  bool is_fp8() const { return format >= WeightFormat::Fp8NT; }
  bool present() const { return is_fp8() ? fp8 != nullptr && scale != nullptr : data != nullptr; }
};

inline int64_t packed_k(int64_t K) { return K + (K & 1); }
inline int64_t packed_n(int64_t N) { return (N + 15) / 16 * 16; }
inline int64_t packed_elements(int64_t K, int64_t N) { return packed_k(K) * packed_n(N); }

// Pack any layout into `dst` (packed_elements(K, N) elements). Multi-threaded.
void pack_weights(const WeightView& src, bf16_t* dst);
// Pack columns [n0, n0 + 16*panels) of src into dst on the calling thread (a slice of a packed weight).
void pack_panels(const WeightView& src, int64_t panel0, int64_t panels, bf16_t* dst);

// Up to this many rows of x the GEMMs stream the weight once (the GEMV path, bound by reading W);
// more rows go through packed tiles.
constexpr int64_t kGemvMaxRows = 8;

constexpr int64_t kFp8ScaleBlock = 128;  // = kFp8Block of dsa/fp8.h: k (and n) extent of one scale block
inline int64_t fp8_kblocks(int64_t K) { return (K + kFp8ScaleBlock - 1) / kFp8ScaleBlock; }
inline int64_t fp8_packed_k(int64_t K) { return (K + 3) / 4 * 4; }
inline int64_t fp8_packed_bytes(int64_t K, int64_t N) { return fp8_packed_k(K) * packed_n(N); }
// Bytes and scales of one [K, N] FP8 weight in `format` (Fp8NT, Fp8ND or Fp8Packed).
int64_t fp8_bytes(WeightFormat format, int64_t K, int64_t N);
int64_t fp8_scales(WeightFormat format, int64_t K, int64_t N);

// Pack an Fp8NT/Fp8ND/Fp8Packed weight into the Fp8Packed layout (fp8_packed_bytes bytes and
// fp8_scales(Fp8Packed, K, N) scales). Multi-threaded.
void pack_fp8_weights(const WeightView& src, uint8_t* dst, float* dst_scale);
// Panels [panel0, panel0 + panels) of the same on the calling thread.
void pack_fp8_panels(const WeightView& src, int64_t panel0, int64_t panels, uint8_t* dst, float* dst_scale);

enum class OutType { F32 = 0, BF16 = 1 };

struct GemmOut {
  void* data = nullptr;   // float* or bf16_t*
  int64_t ld = 0;         // elements between rows
  OutType type = OutType::F32;
  bool accumulate = false;  // F32 only: y += x @ W
};

// y = x @ W on the kernel thread pool. FP8 weights: small M converts e4m3 to bf16 in registers and
// applies each block's scale in fp32 once per 128 k; larger M converts a column group of panels to
// the bf16 packed layout once per task and runs the bf16 tile. x rows are `ldx` elements apart. Returns false only when the
// arguments are inconsistent (callers validate first).
bool matmul(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y);
// The same on the calling thread only (for callers that are already inside a parallel task).
bool matmul_serial(const bf16_t* x, int64_t ldx, int64_t M, const WeightView& w, const GemmOut& y);

// `batch` independent products y[i] = x[i] @ W[i] (e.g. the per-head W_UK absorption), one task per
// item on the pool. Items are x_stride / w_stride / y_stride elements apart (FP8 weights: w_stride
// bytes apart, their scales fp8_scales() apart).
bool matmul_batched(int64_t batch, const bf16_t* x, int64_t ldx, int64_t x_stride, int64_t M, const WeightView& w,
                    int64_t w_stride, const GemmOut& y, int64_t y_stride);

}  // namespace dsa
