// A float64 implementation of the MLA prolog with the spec's bf16 rounding points (background.md
// §3.1, §3.2, §6): every product sums in float64 and is rounded to bf16 once, where the spec says.
// Slow and simple on purpose: it is the yardstick for the native kernel.
import {
  bf16ArrayToF32, checkTensor, dequantizeFp8Weight, DimBinder, DsaError, encodeLatentRow, ErrorCode, f32ArrayToBf16, fp8KvRowBytes,
  fromNZ, isFp8Weight, roundBf16, type Bf16Tensor, type U8Tensor, type Weight,
} from '@dsa/tensor-core';
import {
  checkInputsObject, checkStep, checkWeights, rmsNormEpsOption,
  type MlaPrologInputs, type MlaPrologOutputs,
} from './validate.js';

export interface MlaPrologReferenceResult extends MlaPrologOutputs {
  /** A copy of the input kvCache with the new tokens' rows written (FP8 rows for an FP8 cache). */
  kvCache: Bf16Tensor | U8Tensor;
  /** A copy of the input krCache with the new tokens' rows written (absent with an FP8 kvCache). */
  krCache?: Bf16Tensor;
}

// FP8 weights enter exactly dequantized (byte value × block scale).
function values(name: string, t: Weight): Float64Array {
  if (isFp8Weight(t)) return dequantizeFp8Weight(t);
  if (t.format === 'PACKED') throw new DsaError(ErrorCode.FORMAT, `${name}: the reference takes ND or NZ weights, got PACKED`, name);
  return Float64Array.from(bf16ArrayToF32((t.format === 'NZ' ? fromNZ(t, name) : t).data));
}

/** y[T, N] = bf16(x[T, K] @ w[K, N]) with float64 sums; x rows are `ldx` apart starting at `off`. */
function matmulBf16(x: Float64Array, off: number, ldx: number, T: number, w: Float64Array, K: number, N: number): Float64Array {
  const y = new Float64Array(T * N);
  const acc = new Float64Array(N);
  for (let t = 0; t < T; t++) {
    acc.fill(0);
    for (let k = 0; k < K; k++) {
      const a = x[off + t * ldx + k]!;
      if (a === 0) continue;
      const row = k * N;
      for (let n = 0; n < N; n++) acc[n] += a * w[row + n]!;
    }
    for (let n = 0; n < N; n++) y[t * N + n] = roundBf16(acc[n]!);
  }
  return y;
}

function rmsNorm(v: Float64Array, off: number, d: number, gamma: Float64Array, eps: number, out: Float64Array, outOff: number): void {
  let ss = 0;
  for (let i = 0; i < d; i++) ss += v[off + i]! * v[off + i]!;
  const inv = 1 / Math.sqrt(ss / d + eps);
  for (let i = 0; i < d; i++) out[outOff + i] = roundBf16(v[off + i]! * inv * gamma[i]!);
}

/** Interleaved RoPE with element-wise c/s; the output is de-interleaved (spec §3.2). */
function rope(x: Float64Array, off: number, c: Float64Array, s: Float64Array, cs: number, r: number, out: Float64Array, outOff: number): void {
  const half = r / 2;
  for (let j = 0; j < half; j++) {
    const x0 = x[off + 2 * j]!;
    const x1 = x[off + 2 * j + 1]!;
    out[outOff + j] = roundBf16(x0 * c[cs + j]! - x1 * s[cs + j]!);
    out[outOff + half + j] = roundBf16(x1 * c[cs + half + j]! + x0 * s[cs + half + j]!);
  }
}

const bf16Tensor = (shape: number[], v: Float64Array): Bf16Tensor => ({ dtype: 'bfloat16', shape, data: f32ArrayToBf16(v), format: 'ND' });

/**
 * The MLA prolog in float64 with bf16 rounding points. Same inputs and validation as `mlaProlog`
 * (weights ND or NZ), but the caches are not modified: updated copies are returned.
 */
export function mlaPrologReference(inputs: MlaPrologInputs, options: { rmsNormEps?: number } = {}): MlaPrologReferenceResult {
  checkInputsObject('inputs', inputs);
  const i = inputs as unknown as Record<string, unknown>;
  const eps = rmsNormEpsOption(options);
  const dims = new DimBinder();
  dims.match('x', checkTensor('x', i.x, { dtype: 'bfloat16' }), ['b', 's1', 'h']);
  checkWeights(i, dims, checkTensor('cos', i.cos, { dtype: 'bfloat16' }));
  const { b, s1, h, qLora, n, qkNope, rope: r, kvLora } = checkStep(i, dims);
  const T = b * s1;
  const dq = qkNope + r;

  const x = values('x', inputs.x);
  const wDq = values('wDq', inputs.wDq);
  const wUqQr = values('wUqQr', inputs.wUqQr);
  const wUk = values('wUk', inputs.wUk);
  const wDkvKr = values('wDkvKr', inputs.wDkvKr);
  const gCq = values('gammaCq', inputs.gammaCq);
  const gCkv = values('gammaCkv', inputs.gammaCkv);
  const cos = values('cos', inputs.cos);
  const sin = values('sin', inputs.sin);

  const qa = matmulBf16(x, 0, h, T, wDq, h, qLora);
  const qNorm = new Float64Array(T * qLora);
  for (let t = 0; t < T; t++) rmsNorm(qa, t * qLora, qLora, gCq, eps, qNorm, t * qLora);
  const q = matmulBf16(qNorm, 0, qLora, T, wUqQr, qLora, n * dq);
  const qNope = new Float64Array(T * n * kvLora);
  const qRope = new Float64Array(T * n * r);
  for (let hd = 0; hd < n; hd++) {
    const wh = wUk.subarray(hd * qkNope * kvLora, (hd + 1) * qkNope * kvLora);
    const y = matmulBf16(q, hd * dq, n * dq, T, wh, qkNope, kvLora);
    for (let t = 0; t < T; t++) {
      qNope.set(y.subarray(t * kvLora, (t + 1) * kvLora), (t * n + hd) * kvLora);
      rope(q, t * n * dq + hd * dq + qkNope, cos, sin, t * r, r, qRope, (t * n + hd) * r);
    }
  }

  const kva = matmulBf16(x, 0, h, T, wDkvKr, h, kvLora + r);
  // FP8 latent cache: the bf16 row the bf16 cache would hold, quantized per 128 (tensor-core fp8-cache.ts).
  const fp8 = inputs.kvCache.dtype === 'uint8';
  const kvCache = { ...inputs.kvCache, shape: [...inputs.kvCache.shape], data: inputs.kvCache.data.slice() } as Bf16Tensor | U8Tensor;
  const krCache: Bf16Tensor | undefined = inputs.krCache && { ...inputs.krCache, shape: [...inputs.krCache.shape], data: inputs.krCache.data.slice() };
  const kvRow = new Float64Array(kvLora);
  const krRow = new Float64Array(r);
  for (let t = 0; t < T; t++) {
    const slot = inputs.cacheIndex.data[t]!;
    if (slot < 0) continue;
    rmsNorm(kva, t * (kvLora + r), kvLora, gCkv, eps, kvRow, 0);
    rope(kva, t * (kvLora + r) + kvLora, cos, sin, t * r, r, krRow, 0);
    if (fp8) {
      encodeLatentRow(f32ArrayToBf16(kvRow), f32ArrayToBf16(krRow), kvCache.data as Uint8Array, slot * fp8KvRowBytes(kvLora, r));
    } else {
      (kvCache.data as Uint16Array).set(f32ArrayToBf16(kvRow), slot * kvLora);
      krCache!.data.set(f32ArrayToBf16(krRow), slot * r);
    }
  }
  return {
    qNope: bf16Tensor([b, s1, n, kvLora], qNope),
    qRope: bf16Tensor([b, s1, n, r], qRope),
    qNorm: bf16Tensor([b, s1, qLora], qNorm),
    kvCache,
    krCache,
  };
}
