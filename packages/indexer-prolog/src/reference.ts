// Float64 reference of the indexer prolog with the spec's bf16 rounding points (background.md §3.3, §6):
//   q = bf16(qNorm @ wIdxQb), then per head RoPE on the first `rope` dims -> bf16
//   k = x @ wIdxK (not rounded), LayerNorm -> bf16, RoPE on the first `rope` dims -> bf16, scattered
//   w = bf16(x @ wIdxProj)
// Slow and simple on purpose: the tests measure the native kernel against it.
import {
  type Bf16Tensor, bf16ToF32, dequantizeFp8Weight, encodeIndexKeyRow, f32ToBf16, fp8IndexRowBytes, type I32Tensor, isFp8Weight,
  roundBf16, type U8Tensor, type Weight,
} from '@dsa/tensor-core';

export interface ReferenceInputs {
  x: Bf16Tensor;
  qNorm: Bf16Tensor;
  wIdxQb: Weight;
  wIdxK: Weight;
  wIdxProj: Weight;
  inGammaK: Bf16Tensor;
  inBetaK: Bf16Tensor;
  sin: Bf16Tensor;
  cos: Bf16Tensor;
  cacheIndex: I32Tensor;
  /** bf16, or the FP8 key cache (uint8 rows of idx_dim + 4 bytes). */
  indexKCache: Bf16Tensor | U8Tensor;
}

export interface ReferenceOptions {
  layerNormEps?: number;
  indexerRope?: 'interleaved' | 'half';
}

export interface ReferenceResult {
  query: Bf16Tensor;
  weights: Bf16Tensor;
  /** A new copy of the cache after the call (the input cache is not modified), in the input's dtype. */
  indexKCache: Bf16Tensor | U8Tensor;
}

const dequantized = new WeakMap<object, Float64Array>();

/** Element (k, n) of a [K, N] weight stored ND, NZ or PACKED, as a number (FP8: exactly dequantized). */
function weightReader(w: Weight): (k: number, n: number) => number {
  const [K, N] = w.shape as [number, number];
  if (isFp8Weight(w)) {
    let v = dequantized.get(w);
    if (v === undefined) dequantized.set(w, (v = dequantizeFp8Weight(w)));
    return (k, n) => v[k * N + n]!;
  }
  const d = w.data;
  switch (w.format ?? 'ND') {
    case 'NZ':
      return (k, n) => bf16ToF32(d[(n >> 4) * K * 16 + k * 16 + (n & 15)]!);
    case 'PACKED': {
      const kp2 = (K + (K & 1)) / 2;
      return (k, n) => bf16ToF32(d[((n >> 4) * kp2 + (k >> 1)) * 32 + (n & 15) * 2 + (k & 1)]!);
    }
    default:
      return (k, n) => bf16ToF32(d[k * N + n]!);
  }
}

/** Row r of a row-major bf16 tensor viewed as [rows, width], as numbers. */
function rowOf(t: Bf16Tensor, r: number, width: number): number[] {
  const out = new Array<number>(width);
  for (let i = 0; i < width; i++) out[i] = bf16ToF32(t.data[r * width + i]!);
  return out;
}

function matvec(v: readonly number[], w: Weight): number[] {
  const [K, N] = w.shape as [number, number];
  const at = weightReader(w);
  const out = new Array<number>(N).fill(0);
  for (let k = 0; k < K; k++) {
    const a = v[k]!;
    if (a === 0) continue;
    for (let n = 0; n < N; n++) out[n] += a * at(k, n);
  }
  return out;
}

/** RoPE of v[0:rope] (bf16 values) in float64, rounded to bf16; v[rope:] unchanged. */
export function ropeReference(v: readonly number[], sin: readonly number[], cos: readonly number[], mode: 'interleaved' | 'half'): number[] {
  const rope = sin.length;
  const half = rope / 2;
  const out = v.slice();
  for (let j = 0; j < half; j++) {
    const re = mode === 'interleaved' ? v[2 * j]! : v[j]!;
    const im = mode === 'interleaved' ? v[2 * j + 1]! : v[half + j]!;
    out[j] = roundBf16(re * cos[j]! - im * sin[j]!);
    out[half + j] = roundBf16(im * cos[half + j]! + re * sin[half + j]!);
  }
  return out;
}

/** The stage in float64 with bf16 rounding points. */
export function indexerPrologReference(inputs: ReferenceInputs, options: ReferenceOptions = {}): ReferenceResult {
  const eps = options.layerNormEps ?? 1e-6;
  const mode = options.indexerRope ?? 'interleaved';
  const [b, s1, h] = inputs.x.shape as [number, number, number];
  const qLora = inputs.qNorm.shape[2]!;
  const di = inputs.wIdxK.shape[1]!;
  const heads = inputs.wIdxProj.shape[1]!;
  const rope = inputs.sin.shape[2]!;
  const T = b * s1;
  const query = new Uint16Array(T * heads * di);
  const weights = new Uint16Array(T * heads);
  const fp8 = inputs.indexKCache.dtype === 'uint8';
  const cache = inputs.indexKCache.data.slice();
  const gamma = rowOf(inputs.inGammaK, 0, di);
  const beta = rowOf(inputs.inBetaK, 0, di);
  for (let t = 0; t < T; t++) {
    const sn = rowOf(inputs.sin, t, rope);
    const cs = rowOf(inputs.cos, t, rope);
    const q = matvec(rowOf(inputs.qNorm, t, qLora), inputs.wIdxQb).map(roundBf16);
    for (let hd = 0; hd < heads; hd++) {
      const head = ropeReference(q.slice(hd * di, (hd + 1) * di), sn, cs, mode);
      for (let d = 0; d < di; d++) query[(t * heads + hd) * di + d] = f32ToBf16(head[d]!);
    }
    const xr = rowOf(inputs.x, t, h);
    const w = matvec(xr, inputs.wIdxProj);
    for (let j = 0; j < heads; j++) weights[t * heads + j] = f32ToBf16(w[j]!);
    const slot = inputs.cacheIndex.data[t]!;
    if (slot < 0) continue;
    const k = matvec(xr, inputs.wIdxK);
    const mean = k.reduce((s, v) => s + v, 0) / di;
    const variance = k.reduce((s, v) => s + (v - mean) * (v - mean), 0) / di;
    const normed = k.map((v, d) => roundBf16(((v - mean) / Math.sqrt(variance + eps)) * gamma[d]! + beta[d]!));
    const key = ropeReference(normed, sn, cs, mode);
    const bits = Uint16Array.from(key, (v) => f32ToBf16(v));
    // FP8 key cache: bf16(H · key) quantized as one group (tensor-core fp8-cache.ts).
    if (fp8) encodeIndexKeyRow(bits, cache as Uint8Array, slot * fp8IndexRowBytes(di));
    else cache.set(bits, slot * di);
  }
  return {
    query: { dtype: 'bfloat16', shape: [b, s1, heads, di], data: query, format: 'ND' },
    weights: { dtype: 'bfloat16', shape: [b, s1, heads], data: weights, format: 'ND' },
    indexKCache: { dtype: inputs.indexKCache.dtype, shape: [...inputs.indexKCache.shape], data: cache, format: 'ND' } as Bf16Tensor | U8Tensor,
  };
}
