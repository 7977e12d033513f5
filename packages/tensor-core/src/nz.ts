import { DsaError, ErrorCode } from './errors.js';
import type { Bf16Tensor } from './tensor.js';

/** Fractal width of bf16 NZ weights. */
export const NZ_C0 = 16;

function checkNZDims(name: string, shape: readonly number[]): [number, number] {
  if (shape.length !== 2) {
    throw new DsaError(ErrorCode.SHAPE, `${name}: expected a 2-D weight [K, N] for NZ, got shape [${shape.join(', ')}]`, name);
  }
  const [K, N] = shape as [number, number];
  if (K % 16 !== 0 || N % NZ_C0 !== 0) {
    throw new DsaError(ErrorCode.SHAPE, `${name}: NZ needs K % 16 == 0 and N % 16 == 0, got [${K}, ${N}]`, name);
  }
  return [K, N];
}

/** ND [K, N] → NZ (stored [N/16, K, 16]); element (k, n) lands at (n>>4)·K·16 + k·16 + (n & 15). */
export function toNZ(w: Bf16Tensor, name = 'weight'): Bf16Tensor {
  if ((w.format ?? 'ND') !== 'ND') throw new DsaError(ErrorCode.FORMAT, `${name}: expected format ND, got ${w.format}`, name);
  const [K, N] = checkNZDims(name, w.shape);
  const src = w.data;
  const dst = new Uint16Array(src.length);
  for (let k = 0; k < K; k++) {
    const row = k * N;
    for (let n = 0; n < N; n++) dst[(n >> 4) * K * 16 + k * 16 + (n & 15)] = src[row + n]!;
  }
  return { dtype: 'bfloat16', shape: [K, N], data: dst, format: 'NZ' };
}

/** NZ → ND [K, N]. */
export function fromNZ(w: Bf16Tensor, name = 'weight'): Bf16Tensor {
  if (w.format !== 'NZ') throw new DsaError(ErrorCode.FORMAT, `${name}: expected format NZ, got ${w.format ?? 'ND'}`, name);
  const [K, N] = checkNZDims(name, w.shape);
  const src = w.data;
  const dst = new Uint16Array(src.length);
  for (let k = 0; k < K; k++) {
    const row = k * N;
    for (let n = 0; n < N; n++) dst[row + n] = src[(n >> 4) * K * 16 + k * 16 + (n & 15)]!;
  }
  return { dtype: 'bfloat16', shape: [K, N], data: dst, format: 'ND' };
}
