import { fromNativeError } from './errors.js';
import { coreAddon } from './native.js';
import type { CpuFeatures, Isa } from './runtime.js';
import type { Bf16Tensor, F32Tensor, Tensor } from './tensor.js';
import { checkTensor, DimBinder } from './validate.js';

function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNativeError(e);
  }
}

/**
 * y[M, N] = x[M, K] @ w[K, N] in bf16 with fp32 accumulation, on the shared kernel pool.
 * `w` may be ND, NZ or PACKED (from packWeights). Output float32 (default) or bfloat16.
 */
export function matmul(x: Bf16Tensor, w: Bf16Tensor, options: { outDtype?: 'float32' }): F32Tensor;
export function matmul(x: Bf16Tensor, w: Bf16Tensor, options: { outDtype: 'bfloat16' }): Bf16Tensor;
export function matmul(x: Bf16Tensor, w: Bf16Tensor): F32Tensor;
export function matmul(x: Bf16Tensor, w: Bf16Tensor, options: { outDtype?: 'float32' | 'bfloat16' } = {}): Tensor {
  checkTensor('x', x, { dtype: 'bfloat16' });
  checkTensor('w', w, { dtype: 'bfloat16', formats: ['ND', 'NZ', 'PACKED'] });
  const dims = new DimBinder();
  dims.match('x', x, ['M', 'K']);
  dims.match('w', w, ['K', 'N']);
  const out = options.outDtype ?? 'float32';
  return native(() => coreAddon().matmul(x, w, out));
}

/**
 * `B` independent products y[i] = x[i] @ w[i] with x [B, M, K] and w [B, K, N] (ND), e.g. the
 * per-head W_UK absorption; one pool task per item.
 */
export function matmulBatched(x: Bf16Tensor, w: Bf16Tensor, options: { outDtype?: 'float32' | 'bfloat16' } = {}): Tensor {
  checkTensor('x', x, { dtype: 'bfloat16' });
  checkTensor('w', w, { dtype: 'bfloat16' });
  const dims = new DimBinder();
  dims.match('x', x, ['B', 'M', 'K']);
  dims.match('w', w, ['B', 'K', 'N']);
  return native(() => coreAddon().matmulBatched(x, w, options.outDtype ?? 'float32'));
}

/**
 * Repack a [K, N] weight (ND or NZ) once into the kernels' layout (format 'PACKED': k-pairs of 16
 * columns per 64-byte line). Use the result wherever a weight is accepted.
 */
export function packWeights(w: Bf16Tensor): Bf16Tensor {
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
