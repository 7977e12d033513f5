// FP8 e4m3 ("e4m3fn") as DeepSeek-V3.2 uses it (shared/spec/checkpoint.md): the one codec of the
// project. Byte `s eeee mmm`, bias 7, e = 0 subnormal, 0x7F/0xFF NaN, no infinity, largest finite 448.
import { DsaError, ErrorCode } from './errors.js';
import type { Tensor } from './tensor.js';

export const E4M3_MAX = 448;
/** Weight and activation blocks are 128 wide (checkpoint block scales, ue8m0 groups, Hadamard size). */
export const FP8_BLOCK = 128;

function decodeE4m3(byte: number): number {
  const sign = byte & 0x80 ? -1 : 1;
  const e = (byte >> 3) & 0xf;
  const m = byte & 7;
  if (e === 15 && m === 7) return NaN;
  return sign * (e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7));
}

/** Every byte's value (exact in float32): `E4M3_VALUES[byte]`. */
export const E4M3_VALUES: Float32Array = Float32Array.from({ length: 256 }, (_, b) => decodeE4m3(b));

export function e4m3ToFloat(byte: number): number {
  return E4M3_VALUES[byte & 0xff]!;
}

/**
 * Round to the nearest e4m3 value (ties to even mantissa), saturating finite values beyond ±448 to
 * ±448 (ue8m0 scaling keeps values in range; saturation only guards rounding at the edge). NaN → 0x7F.
 */
export function floatToE4m3(v: number): number {
  if (Number.isNaN(v)) return 0x7f;
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  const a = Math.abs(v);
  if (a >= E4M3_MAX) return sign | 0x7e;
  // Quantum of the binade that holds a (subnormals share the smallest normal binade's 2^-9 step).
  const exp = a < 2 ** -6 ? -6 : floorLog2(a);
  const step = 2 ** (exp - 3);
  let q = a / step;
  const fl = Math.floor(q);
  const frac = q - fl;
  q = frac > 0.5 || (frac === 0.5 && (fl & 1) === 1) ? fl + 1 : fl;
  const r = q * step; // may carry into the next binade: still exact
  if (r === 0) return sign;
  if (r < 2 ** -6) return sign | (r / 2 ** -9);
  const e = floorLog2(r);
  return sign | ((e + 7) << 3) | (r / 2 ** (e - 3) - 8);
}

/** floor(log2(a)) for a finite a > 0, exact (Math.log2 may round across an integer). */
function floorLog2(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return e;
}

/**
 * The power-of-two ("ue8m0") scale DeepSeek uses for a group with this amax:
 * 2^ceil(log2(max(amax, 1e-4) / 448)), the division in float32 as the kernels (and torch) do it.
 */
export function ue8m0Scale(amax: number): number {
  const x = Math.fround(Math.max(Math.fround(amax), Math.fround(1e-4)) / E4M3_MAX);
  const e = floorLog2(x);
  return 2 ** (2 ** e === x ? e : e + 1);
}

/**
 * Quantize `n` values of `src` from `offset` as one group: bytes into `dst` at `dstOffset`, returns the
 * scale (value ≈ e4m3ToFloat(byte) · scale). NaN inputs propagate as NaN codes (amax ignores them).
 */
export function quantizeGroupE4m3(src: ArrayLike<number>, offset: number, n: number, dst: Uint8Array, dstOffset: number): number {
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(src[offset + i]!);
    if (a > amax) amax = a;
  }
  const scale = ue8m0Scale(amax);
  for (let i = 0; i < n; i++) dst[dstOffset + i] = floatToE4m3(src[offset + i]! / scale);
  return scale;
}

/**
 * Multiply `n` values (a power of two) at `offset` by the normalized Sylvester–Hadamard matrix
 * (H_1 = [1], H_2n = [[H, H], [H, −H]], times n^-1/2), in place, in float64.
 */
export function hadamardRotate(v: { [i: number]: number; length: number }, offset = 0, n = v.length - offset): void {
  if (n <= 0 || (n & (n - 1)) !== 0) {
    throw new DsaError(ErrorCode.SHAPE, `hadamardRotate: expected a power-of-two length, got ${n}`, 'n');
  }
  for (let h = 1; h < n; h *= 2) {
    for (let i = 0; i < n; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const a = v[offset + j]!;
        const b = v[offset + j + h]!;
        v[offset + j] = a + b;
        v[offset + j + h] = a - b;
      }
    }
  }
  const s = 1 / Math.sqrt(n);
  for (let i = 0; i < n; i++) v[offset + i] = v[offset + i]! * s;
}

/**
 * A block-scaled FP8 weight as the checkpoint stores it. Logical shape [K, N] (the operator's [in, out];
 * wUk: [heads, K, N]). `data` holds e4m3 bytes in storage order: 'NT' = [N, K] rows (the checkpoint's
 * [out, in]), 'ND' = [K, N]. `blockScale` has one float32 per 128×128 block of the stored matrix:
 * [ceil(rows/128), ceil(cols/128)] (3-D: [heads, …]); the real value is byte value × block scale.
 */
export interface Fp8Weight {
  dtype: 'float8_e4m3fn';
  shape: readonly number[];
  /** 'PACKED' is made by packWeights only (the kernels' layout; blockScale then holds one scale per 16 columns and 128 k). */
  format: 'NT' | 'ND' | 'PACKED';
  data: Uint8Array;
  blockScale: Tensor<'float32'>;
}

/**
 * Dequantize one stored [rows, cols] matrix of e4m3 bytes with its [ceil(rows/128), ceil(cols/128)]
 * block scales into float64, exactly (the references' input). Edge blocks are partial.
 */
export function dequantizeBlocks(data: Uint8Array, scale: Float32Array, rows: number, cols: number, dataOffset = 0, scaleOffset = 0): Float64Array {
  const sc = Math.ceil(cols / FP8_BLOCK);
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const srow = scaleOffset + Math.floor(r / FP8_BLOCK) * sc;
    for (let c = 0; c < cols; c++) {
      out[r * cols + c] = E4M3_VALUES[data[dataOffset + r * cols + c]!]! * scale[srow + Math.floor(c / FP8_BLOCK)]!;
    }
  }
  return out;
}

/**
 * The exact real values of an Fp8Weight in the operator's orientation: [K, N] row-major (3-D:
 * [heads, K, N]) as float64, for references and for converting to bf16.
 */
export function dequantizeFp8Weight(w: Fp8Weight): Float64Array {
  const heads = w.shape.length === 3 ? w.shape[0]! : 1;
  const K = w.shape[w.shape.length - 2]!;
  const N = w.shape[w.shape.length - 1]!;
  if (w.format === 'PACKED') return dequantizePacked(w, heads, K, N);
  const [rows, cols] = w.format === 'NT' ? [N, K] : [K, N];
  const gridPerHead = Math.ceil(rows / FP8_BLOCK) * Math.ceil(cols / FP8_BLOCK);
  const out = new Float64Array(heads * K * N);
  for (let h = 0; h < heads; h++) {
    const stored = dequantizeBlocks(w.data, w.blockScale.data, rows, cols, h * rows * cols, h * gridPerHead);
    if (w.format === 'ND') out.set(stored, h * K * N);
    else for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) out[h * K * N + k * N + n] = stored[n * K + k]!;
  }
  return out;
}

/** Bytes of one [K, N] FP8 weight in the PACKED layout: K rounded up to 4, N to 16. */
export function fp8PackedBytes(K: number, N: number): number {
  return Math.ceil(K / 4) * 4 * Math.ceil(N / 16) * 16;
}

/**
 * Offset of (k, n) in one PACKED FP8 weight (tensor-core's dsa/gemm.h, Fp8Packed): 16-column panels of
 * 4-k groups of 64 bytes; byte (n%16 >> 2)·16 + (k%4 >> 1)·8 + (n%4)·2 + (k%2) of a group.
 */
export function fp8PackedOffset(K: number, k: number, n: number): number {
  const c = n & 15;
  const kk = k & 3;
  return (n >> 4) * Math.ceil(K / 4) * 64 + (k >> 2) * 64 + (c >> 2) * 16 + (kk >> 1) * 8 + (c & 3) * 2 + (kk & 1);
}

function dequantizePacked(w: Fp8Weight, heads: number, K: number, N: number): Float64Array {
  const bytes = fp8PackedBytes(K, N);
  const kb = Math.ceil(K / FP8_BLOCK);
  const scales = Math.ceil(N / 16) * kb;
  const out = new Float64Array(heads * K * N);
  for (let h = 0; h < heads; h++)
    for (let k = 0; k < K; k++)
      for (let n = 0; n < N; n++) {
        const v = E4M3_VALUES[w.data[h * bytes + fp8PackedOffset(K, k, n)]!]!;
        out[(h * K + k) * N + n] = v * w.blockScale.data[h * scales + (n >> 4) * kb + Math.floor(k / FP8_BLOCK)]!;
      }
  return out;
}
