import { DsaError, ErrorCode, fromNativeError } from './errors.js';
import { coreAddon } from './native.js';
import type { CpuFeatures, Isa } from './runtime.js';
import type { Fp8Weight } from './fp8.js';
import type { Bf16Tensor, F32Tensor, Tensor } from './tensor.js';
import { checkTensor, DimBinder, sharesMemory } from './validate.js';
import { checkWeight, isFp8Weight, type Weight } from './weights.js';

function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNativeError(e);
  }
}

/** Options of matmul and matmulBatched. */
export interface MatmulOptions {
  /** Output dtype when no `out` is given: float32 (default) or bfloat16. */
  outDtype?: 'float32' | 'bfloat16';
  /**
   * Write the result into this tensor (float32 or bfloat16, ND, shaped like the result) instead of a
   * new one: a loop that reuses its output skips the allocation and first-touch page faults of a
   * fresh buffer, which cost as much as a small GEMV. It must not share memory with x or w.
   */
  out?: Tensor;
}

/**
 * y[M, N] = x[M, K] @ w[K, N] in bf16 with fp32 accumulation, on the shared kernel pool.
 * `w` may be bf16 ND, NZ or PACKED (from packWeights), or a block-scaled FP8 weight (NT, ND, or
 * PACKED from packWeights; converted to bf16 in registers, each block's scale applied in fp32).
 * Output float32 (default) or bfloat16, or `options.out`.
 *
 * @example
 *   const w = packWeights(weight);                      // once
 *   const y = matmul(x, w, { outDtype: 'bfloat16' });   // new output
 *   matmul(x2, w, { out: y });                          // reuse it
 */
export function matmul(x: Bf16Tensor, w: Weight, options: { outDtype?: 'float32' }): F32Tensor;
export function matmul(x: Bf16Tensor, w: Weight, options: { outDtype: 'bfloat16' }): Bf16Tensor;
export function matmul<T extends Tensor>(x: Bf16Tensor, w: Weight, options: { out: T }): T;
export function matmul(x: Bf16Tensor, w: Weight, options?: MatmulOptions): Tensor;
export function matmul(x: Bf16Tensor, w: Weight, options: MatmulOptions = {}): Tensor {
  checkTensor('x', x, { dtype: 'bfloat16' });
  checkWeight('w', w);
  const dims = new DimBinder();
  dims.match('x', x, ['M', 'K']);
  dims.match('w', w, ['K', 'N']);
  const out = checkOut(options, dims, ['M', 'N'], x, w);
  return native(() => coreAddon().matmul(x, w, out?.dtype ?? options.outDtype ?? 'float32', out));
}

/**
 * `B` independent products y[i] = x[i] @ w[i] with x [B, M, K] and w [B, K, N] (bf16 ND, or FP8 ND or
 * PACKED), e.g. the per-head W_UK absorption. Output as matmul's (`out` shaped [B, M, N]).
 */
export function matmulBatched(x: Bf16Tensor, w: Weight, options: MatmulOptions = {}): Tensor {
  checkTensor('x', x, { dtype: 'bfloat16' });
  checkWeight('w', w, { rank: 3, fp8Formats: ['ND', 'PACKED'] });
  const dims = new DimBinder();
  dims.match('x', x, ['B', 'M', 'K']);
  dims.match('w', w, ['B', 'K', 'N']);
  const out = checkOut(options, dims, ['B', 'M', 'N'], x, w);
  return native(() => coreAddon().matmulBatched(x, w, out?.dtype ?? options.outDtype ?? 'float32', out));
}

function checkOut(options: MatmulOptions, dims: DimBinder, shape: string[], x: Tensor, w: Weight): Tensor | undefined {
  const { out, outDtype } = options;
  if (outDtype !== undefined && outDtype !== 'float32' && outDtype !== 'bfloat16') {
    throw new DsaError(ErrorCode.ARGUMENT, `outDtype: expected float32 or bfloat16, got ${String(outDtype)}`, 'outDtype');
  }
  if (out === undefined) return undefined;
  const t = checkTensor('out', out, { dtype: ['float32', 'bfloat16'] });
  if (outDtype !== undefined && outDtype !== t.dtype) {
    throw new DsaError(ErrorCode.DTYPE, `out: expected dtype ${outDtype} as outDtype says, got ${t.dtype}`, 'out');
  }
  dims.match('out', t, shape);
  const reads: [string, Tensor][] = [['x', x], ['w', w as unknown as Tensor]];
  if (isFp8Weight(w)) reads.push(['w.blockScale', w.blockScale]);
  for (const [name, r] of reads) {
    if (sharesMemory(t, r)) throw new DsaError(ErrorCode.ARGUMENT, `out: shares memory with ${name}, expected a separate buffer`, 'out');
  }
  return t;
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
