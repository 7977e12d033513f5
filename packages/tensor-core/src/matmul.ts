import { fromNativeError } from './errors.js';
import { coreAddon } from './native.js';
import type { CpuFeatures, Isa } from './runtime.js';
import type { Fp8Weight } from './fp8.js';
import type { Bf16Tensor, F32Tensor, Tensor } from './tensor.js';
import { checkTensor, DimBinder } from './validate.js';
import { checkWeight, isFp8Weight, type Weight } from './weights.js';

function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNativeError(e);
  }
}

/**
 * y[M, N] = x[M, K] @ w[K, N] in bf16 with fp32 accumulation, on the shared kernel pool.
 * `w` may be bf16 ND, NZ or PACKED (from packWeights), or a block-scaled FP8 weight (NT, ND, or
 * PACKED from packWeights; converted to bf16 in registers, each block's scale applied in fp32).
 * Output float32 (default) or bfloat16.
 */
export function matmul(x: Bf16Tensor, w: Weight, options: { outDtype?: 'float32' }): F32Tensor;
export function matmul(x: Bf16Tensor, w: Weight, options: { outDtype: 'bfloat16' }): Bf16Tensor;
export function matmul(x: Bf16Tensor, w: Weight): F32Tensor;
export function matmul(x: Bf16Tensor, w: Weight, options: { outDtype?: 'float32' | 'bfloat16' } = {}): Tensor {
  checkTensor('x', x, { dtype: 'bfloat16' });
  checkWeight('w', w);
  const dims = new DimBinder();
  dims.match('x', x, ['M', 'K']);
  dims.match('w', w, ['K', 'N']);
  const out = options.outDtype ?? 'float32';
  return native(() => coreAddon().matmul(x, w, out));
}

/**
 * `B` independent products y[i] = x[i] @ w[i] with x [B, M, K] and w [B, K, N] (bf16 ND, or FP8 ND or
 * PACKED), e.g. the per-head W_UK absorption; one pool task per item.
 */
export function matmulBatched(x: Bf16Tensor, w: Weight, options: { outDtype?: 'float32' | 'bfloat16' } = {}): Tensor {
  checkTensor('x', x, { dtype: 'bfloat16' });
  checkWeight('w', w, { rank: 3, fp8Formats: ['ND', 'PACKED'] });
  const dims = new DimBinder();
  dims.match('x', x, ['B', 'M', 'K']);
  dims.match('w', w, ['B', 'K', 'N']);
  return native(() => coreAddon().matmulBatched(x, w, options.outDtype ?? 'float32'));
}

/**
 * Repack a [K, N] weight (ND or NZ) once into the kernels' layout (format 'PACKED': k-pairs of 16
 * columns per 64-byte line). Use the result wherever a weight is accepted. An FP8 weight (NT or ND,
 * [K, N] or [items, K, N]) stays FP8: PACKED bytes (half the bytes of bf16) with one scale per 16
 * columns and 128 k.
 */
export function packWeights(w: Fp8Weight): Fp8Weight;
export function packWeights(w: Bf16Tensor): Bf16Tensor;
export function packWeights(w: Weight): Weight;
export function packWeights(w: Weight): Weight {
  if (isFp8Weight(w)) {
    checkWeight('w', w, { rank: w.shape?.length === 3 ? 3 : 2, fp8Formats: ['NT', 'ND'] });
    return native(() => coreAddon().packWeights(w));
  }
  checkTensor('w', w, { dtype: 'bfloat16', formats: ['ND', 'NZ'] });
  if (w.shape.length !== 2) checkTensor('w', { ...w, shape: [w.shape.length] }, { dtype: 'bfloat16' });
  return native(() => coreAddon().packWeights(w));
}

/** What this CPU supports, and the best ISA path. */
export function cpuFeatures(): CpuFeatures {
  return coreAddon().cpuFeatures();
}

/** The ISA the kernels use now. */
export function activeIsa(): Isa {
  return coreAddon().activeIsa() as Isa;
}
