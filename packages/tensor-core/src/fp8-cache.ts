// FP8 paged caches (shared/spec/checkpoint.md, "FP8 as the model computes it"): the row layouts, the
// group quantization the prologs apply, the checks every stage runs on a cache argument, and exact
// decodings for the float64 references. C++ twin: include/dsa/fp8_cache.h.
//
//   latent row (kvCache uint8 [blockNum, blockSize, 1, kvLora + 4·kvLora/128 + 2·rope], 656 B at
//   DeepSeek size): kvLora e4m3 (tiles of 128) ‖ one float32 ue8m0 scale per tile ‖ rope bf16.
//   There is no krCache in FP8 mode: the rope part lives in the latent row.
//   index key row (indexKCache uint8 [blockNum, blockSize, 1, dim + 4], 132 B at dim 128): the
//   e4m3 bytes of bf16(H·key) (H the normalized 128×128 Sylvester–Hadamard matrix) ‖ its float32 scale.
//
// Quantization of a group: amax = max |v| ignoring NaN (a NaN is stored as the NaN code 0x7F, its
// neighbours keep their scale); an infinite amax counts as the largest finite float32, so the scale
// stays finite (2^120) and ±Inf saturates to ±448. scale = ue8m0(amax), byte = e4m3(v / scale).
import { bf16ToF32, f32ToBf16 } from './bf16.js';
import { DsaError, ErrorCode } from './errors.js';
import { E4M3_VALUES, FP8_BLOCK, floatToE4m3, hadamardRotate, ue8m0Scale } from './fp8.js';
import type { Bf16Tensor, Tensor } from './tensor.js';
import { checkTensor, type DimBinder } from './validate.js';

/** The dtype of a paged cache: 'bfloat16' (default) or 'float8_e4m3fn' (the FP8 row layouts above). */
export type CacheDtype = 'bfloat16' | 'float8_e4m3fn';
export type U8Tensor = Tensor<'uint8'>;

const F32_MAX = 3.4028234663852886e38;

export function fp8KvRowBytes(kvLora: number, rope: number): number {
  return kvLora + (4 * kvLora) / FP8_BLOCK + 2 * rope;
}

export function fp8IndexRowBytes(dim: number): number {
  return dim + 4;
}

/** Quantize n values from `offset` as one cache group into dst (bytes), returns the scale. */
export function quantizeCacheGroup(src: ArrayLike<number>, offset: number, n: number, dst: Uint8Array, dstOffset: number): number {
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(src[offset + i]!);
    if (a > amax) amax = a;
  }
  const scale = ue8m0Scale(Math.min(amax, F32_MAX));
  for (let i = 0; i < n; i++) dst[dstOffset + i] = floatToE4m3(src[offset + i]! / scale);
  return scale;
}

/** One latent row from the bf16 latent (kvLora values) and bf16 rope values (raw bits), at `offset`. */
export function encodeLatentRow(latent: Uint16Array, rope: Uint16Array, dst: Uint8Array, offset: number): void {
  const kvLora = latent.length;
  const v = Float64Array.from(latent, bf16ToF32);
  const scales = new DataView(dst.buffer, dst.byteOffset + offset + kvLora, (4 * kvLora) / FP8_BLOCK);
  for (let g = 0; g < kvLora / FP8_BLOCK; g++) {
    scales.setFloat32(4 * g, quantizeCacheGroup(v, g * FP8_BLOCK, FP8_BLOCK, dst, offset + g * FP8_BLOCK), true);
  }
  const r = offset + kvLora + (4 * kvLora) / FP8_BLOCK;
  for (let j = 0; j < rope.length; j++) {
    dst[r + 2 * j] = rope[j]! & 0xff;
    dst[r + 2 * j + 1] = rope[j]! >> 8;
  }
}

/** bf16(H · key) for a bf16 key (raw bits; length a power of two): the rotation in float64, rounded once. */
export function hadamardBf16(key: ArrayLike<number>): Uint16Array {
  const v = Float64Array.from(key as ArrayLike<number>, (b) => bf16ToF32(b));
  hadamardRotate(v);
  return Uint16Array.from(v, (x) => f32ToBf16(x));
}

/** One index key row from the bf16 key after LayerNorm + RoPE (raw bits): rotated, quantized, scale. */
export function encodeIndexKeyRow(key: Uint16Array, dst: Uint8Array, offset: number): void {
  const r = Float64Array.from(hadamardBf16(key), bf16ToF32);
  const scale = quantizeCacheGroup(r, 0, r.length, dst, offset);
  new DataView(dst.buffer, dst.byteOffset + offset + r.length, 4).setFloat32(0, scale, true);
}

function scaleAt(data: Uint8Array, offset: number): number {
  return new DataView(data.buffer, data.byteOffset + offset, 4).getFloat32(0, true);
}

/**
 * The exact values an FP8 latent cache holds, as the bf16 pair kvCache [.., kvLora], krCache [.., rope]
 * (every dequantized value is exact in bf16): what the attention computes with.
 */
export function latentCacheToBf16(cache: U8Tensor, kvLora: number, rope: number): { kvCache: Bf16Tensor; krCache: Bf16Tensor } {
  const [blocks, bs] = cache.shape as [number, number];
  const rows = blocks * bs;
  const rb = fp8KvRowBytes(kvLora, rope);
  const kv = new Uint16Array(rows * kvLora);
  const kr = new Uint16Array(rows * rope);
  const tiles = kvLora / FP8_BLOCK;
  for (let s = 0; s < rows; s++) {
    const o = s * rb;
    for (let g = 0; g < tiles; g++) {
      const sc = scaleAt(cache.data, o + kvLora + 4 * g);
      for (let c = g * FP8_BLOCK; c < (g + 1) * FP8_BLOCK; c++) kv[s * kvLora + c] = f32ToBf16(E4M3_VALUES[cache.data[o + c]!]! * sc);
    }
    const r = o + kvLora + 4 * tiles;
    for (let j = 0; j < rope; j++) kr[s * rope + j] = cache.data[r + 2 * j]! | (cache.data[r + 2 * j + 1]! << 8);
  }
  return {
    kvCache: { dtype: 'bfloat16', shape: [blocks, bs, 1, kvLora], data: kv, format: 'ND' },
    krCache: { dtype: 'bfloat16', shape: [blocks, bs, 1, rope], data: kr, format: 'ND' },
  };
}

/** The exact (rotated) key values an FP8 index key cache holds, byte value × scale, as bf16 [.., dim]. */
export function indexKeyCacheToBf16(cache: U8Tensor, dim: number): Bf16Tensor {
  const [blocks, bs] = cache.shape as [number, number];
  const rows = blocks * bs;
  const rb = fp8IndexRowBytes(dim);
  const out = new Uint16Array(rows * dim);
  for (let s = 0; s < rows; s++) {
    const sc = scaleAt(cache.data, s * rb + dim);
    for (let d = 0; d < dim; d++) out[s * dim + d] = f32ToBf16(E4M3_VALUES[cache.data[s * rb + d]!]! * sc);
  }
  return { dtype: 'bfloat16', shape: [blocks, bs, 1, dim], data: out, format: 'ND' };
}

/**
 * The indexer's FP8 query as exact bf16 values: per row and head, bf16(H · q) quantized as one group,
 * byte value × scale. Scoring these against indexKeyCacheToBf16 keys in exact arithmetic gives the
 * FP8 scores Σ_h w_h · relu(q8_h · k8) · qscale_h · kscale (the scales are positive powers of two).
 */
export function fp8IndexQueryToBf16(query: Bf16Tensor): Bf16Tensor {
  const dim = query.shape[query.shape.length - 1]!;
  const out = new Uint16Array(query.data.length);
  const bytes = new Uint8Array(dim);
  for (let o = 0; o < query.data.length; o += dim) {
    const r = Float64Array.from(hadamardBf16(query.data.subarray(o, o + dim)), bf16ToF32);
    const sc = quantizeCacheGroup(r, 0, dim, bytes, 0);
    for (let d = 0; d < dim; d++) out[o + d] = f32ToBf16(E4M3_VALUES[bytes[d]!]! * sc);
  }
  return { ...query, shape: [...query.shape], data: out };
}

function isFp8(v: unknown): boolean {
  return typeof v === 'object' && v !== null && (v as { dtype?: unknown }).dtype === 'uint8';
}

/** The DimBinder names a caller uses for the cache dimensions (defaults: these names). */
export interface CacheDimNames {
  blockNum?: string;
  blockSize?: string;
  kvLora?: string;
  rope?: string;
}

/**
 * Check a stage's latent cache argument(s): the bf16 pair kvCache [blockNum, blockSize, 1, kvLora] +
 * krCache [.., rope], or an FP8 kvCache (uint8 rows of fp8KvRowBytes) without krCache. dims must
 * already hold kvLora and rope. Returns whether the cache is FP8.
 */
export function checkLatentCaches(kvCache: unknown, krCache: unknown, dims: DimBinder, names: CacheDimNames = {}): boolean {
  const { blockNum = 'blockNum', blockSize = 'blockSize', kvLora: kvName = 'kvLora', rope: ropeName = 'rope' } = names;
  if (!isFp8(kvCache)) {
    if (krCache === undefined || krCache === null) {
      throw new DsaError(ErrorCode.ARGUMENT, 'krCache: expected a bfloat16 tensor (only an FP8 kvCache, dtype uint8, goes without)', 'krCache');
    }
    dims.match('kvCache', checkTensor('kvCache', kvCache, { dtype: 'bfloat16' }), [blockNum, blockSize, 1, kvName]);
    dims.match('krCache', checkTensor('krCache', krCache, { dtype: 'bfloat16' }), [blockNum, blockSize, 1, ropeName]);
    return false;
  }
  if (krCache !== undefined && krCache !== null) {
    throw new DsaError(ErrorCode.ARGUMENT, 'krCache: expected none with an FP8 kvCache (dtype uint8), whose rows hold the rope part', 'krCache');
  }
  const kvLora = dims.get(kvName);
  if (kvLora % FP8_BLOCK !== 0) {
    throw new DsaError(ErrorCode.SHAPE, `kvCache: an FP8 latent cache needs kv_lora % 128 == 0, got kv_lora ${kvLora}`, 'kvCache');
  }
  dims.match('kvCache', checkTensor('kvCache', kvCache, { dtype: 'uint8' }), [blockNum, blockSize, 1, fp8KvRowBytes(kvLora, dims.get(ropeName))]);
  return true;
}

/**
 * Check an index key cache argument: bf16 [blockNum, blockSize, 1, dim] or FP8 uint8 [.., dim + 4]
 * (dim must be 128, the Hadamard size). dims must already hold `dimName`. Returns whether it is FP8.
 */
export function checkIndexKeyCache(indexKCache: unknown, dims: DimBinder, dimName: string, names: CacheDimNames = {}): boolean {
  const { blockNum = 'blockNum', blockSize = 'blockSize' } = names;
  if (!isFp8(indexKCache)) {
    dims.match('indexKCache', checkTensor('indexKCache', indexKCache, { dtype: 'bfloat16' }), [blockNum, blockSize, 1, dimName]);
    return false;
  }
  const dim = dims.get(dimName);
  if (dim !== FP8_BLOCK) {
    throw new DsaError(ErrorCode.SHAPE, `indexKCache: an FP8 key cache needs an indexer head dim of 128 (the Hadamard size), got ${dim}`, 'indexKCache');
  }
  dims.match('indexKCache', checkTensor('indexKCache', indexKCache, { dtype: 'uint8' }), [blockNum, blockSize, 1, fp8IndexRowBytes(dim)]);
  return true;
}
