import {
  checkLatentCaches, checkTensor, DimBinder, DsaError, enumOption, ErrorCode, numberOption,
  type Bf16Tensor, type I32Tensor, type U8Tensor,
} from '@dsa/tensor-core';
import { signalOption } from './cancel.js';

/** The seven inputs of stage 4 (spec §1). */
export interface SparseFlashAttentionInputs {
  /** bf16 [b, s1, n, kvLora]: the absorbed (latent) query. */
  qNope: Bf16Tensor;
  /** bf16 [b, s1, n, rope]. */
  qRope: Bf16Tensor;
  /**
   * bf16 [blocks, blockSize, 1, kvLora]: latent cache, read in place; or the FP8 latent cache, uint8
   * [blocks, blockSize, 1, kvLora + 4·kvLora/128 + 2·rope] (656 at DeepSeek size) as the MLA prolog
   * writes it: e4m3 tiles of 128 ‖ their fp32 scales ‖ the bf16 rope values (tensor-core fp8-cache.ts).
   * The gather dequantizes each row exactly (to bf16) before the bf16 path's arithmetic.
   */
  kvCache: Bf16Tensor | U8Tensor;
  /** bf16 [blocks, blockSize, 1, rope]: rope cache, read in place; absent with an FP8 kvCache. */
  krCache?: Bf16Tensor;
  /** int32 [b, s1, topk]: logical positions, −1 = skip. */
  indices: I32Tensor;
  /** int32 [b, maxBlocks]: physical block of each logical block (−1 where never read). */
  blockTable: I32Tensor;
  /** int32 [b]: keys per sequence, the s1 new tokens included. */
  actSeqs: I32Tensor;
}

export interface SparseFlashAttentionOptions {
  /** Logit scale τ; default (kvLora + rope)^-0.5 (the Ascend golden). DeepSeek-V3.2 uses 0.1352338. */
  softmaxScale?: number;
  /** 3 (default): query i of s1 sees act − (s1−1−i) keys; 0: every query sees act keys. */
  sparseMode?: 0 | 3;
  /**
   * Async calls: an abort stops the call between chunks of query rows and rejects with DSA_E_ABORTED.
   * Sync calls only check that it has not fired yet.
   */
  signal?: AbortSignal;
}

export interface SfaDims {
  b: number;
  s1: number;
  n: number;
  kvLora: number;
  rope: number;
  blocks: number;
  blockSize: number;
  topk: number;
  maxBlocks: number;
}

export interface SfaCall {
  dims: SfaDims;
  softmaxScale: number;
  sparseMode: 0 | 3;
  signal: AbortSignal | undefined;
}

const NAMES = ['qNope', 'qRope', 'kvCache', 'krCache', 'indices', 'blockTable', 'actSeqs'] as const;

/** Keys row (bi, i) may attend to: act − (s1−1−i) under sparseMode 3, act under 0 (may be ≤ 0). */
export function rowEff(act: number, s1: number, i: number, sparseMode: 0 | 3): number {
  return sparseMode === 3 ? act - (s1 - 1 - i) : act;
}

/**
 * Every check the kernel makes, in TypeScript, before anything runs: tensor forms, shapes across
 * arguments, options, actSeqs, and each index with the block-table entry it would read.
 */
export function checkSfaCall(inputs: SparseFlashAttentionInputs, options: SparseFlashAttentionOptions | undefined): SfaCall {
  if (typeof inputs !== 'object' || inputs === null) {
    throw new DsaError(ErrorCode.ARGUMENT, `inputs: expected an object {${NAMES.join(', ')}}, got ${inputs === null ? 'null' : typeof inputs}`, 'inputs');
  }
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new DsaError(ErrorCode.ARGUMENT, `options: expected an object or undefined, got ${options === null ? 'null' : typeof options}`, 'options');
  }
  const { qNope, qRope, kvCache, krCache, indices, blockTable, actSeqs } = inputs;
  checkTensor('qNope', qNope, { dtype: 'bfloat16' });
  checkTensor('qRope', qRope, { dtype: 'bfloat16' });
  checkTensor('indices', indices, { dtype: 'int32' });
  checkTensor('blockTable', blockTable, { dtype: 'int32' });
  checkTensor('actSeqs', actSeqs, { dtype: 'int32' });

  const d = new DimBinder();
  d.match('qNope', qNope, ['b', 's1', 'n', 'kvLora']);
  d.match('qRope', qRope, ['b', 's1', 'n', 'rope']);
  checkLatentCaches(kvCache, krCache, d);
  d.match('indices', indices, ['b', 's1', 'topk']);
  d.match('blockTable', blockTable, ['b', 'maxBlocks']);
  d.match('actSeqs', actSeqs, ['b']);
  const dims: SfaDims = {
    b: d.get('b'), s1: d.get('s1'), n: d.get('n'), kvLora: d.get('kvLora'), rope: d.get('rope'),
    blocks: d.get('blockNum'), blockSize: d.get('blockSize'), topk: d.get('topk'), maxBlocks: d.get('maxBlocks'),
  };
  if (dims.kvLora < 1) {
    throw new DsaError(ErrorCode.SHAPE, `qNope: expected shape[3] (kvLora) ≥ 1, got ${dims.kvLora} (shape [${qNope.shape.join(', ')}])`, 'qNope');
  }
  if (dims.blockSize < 1) {
    throw new DsaError(ErrorCode.SHAPE, `kvCache: expected shape[1] (blockSize) ≥ 1, got 0 (shape [${kvCache.shape.join(', ')}])`, 'kvCache');
  }

  const opts = options ?? {};
  const softmaxScale = numberOption('softmaxScale', opts.softmaxScale, (dims.kvLora + dims.rope) ** -0.5);
  // The kernel takes τ as fp32, where 0 means "the default": a double that rounds to 0 or overflows
  // would silently change the result or fail only in C++.
  const f = Math.fround(softmaxScale);
  if (!(f > 0 && f < Infinity)) {
    throw new DsaError(ErrorCode.ARGUMENT, `softmaxScale: expected a positive number within fp32 range (1.4e-45 to 3.4e38), got ${softmaxScale}`, 'softmaxScale');
  }
  const sparseMode = enumOption('sparseMode', opts.sparseMode, [0, 3] as const, 3);
  const signal = signalOption(opts.signal);

  const act = actSeqs.data;
  for (let bi = 0; bi < dims.b; bi++) {
    if (act[bi]! < 0) throw new DsaError(ErrorCode.RANGE, `actSeqs: expected a non-negative key count at [${bi}], got ${act[bi]}`, 'actSeqs');
  }
  checkIndices(dims, sparseMode, indices.data, blockTable.data, act);
  return { dims, softmaxScale, sparseMode, signal };
}

function checkIndices(dims: SfaDims, sparseMode: 0 | 3, idx: Int32Array, table: Int32Array, act: Int32Array): void {
  const { b, s1, topk, blockSize, maxBlocks, blocks } = dims;
  const capacity = maxBlocks * blockSize;
  for (let bi = 0; bi < b; bi++) {
    for (let i = 0; i < s1; i++) {
      const eff = rowEff(act[bi]!, s1, i, sparseMode);
      const limit = Math.max(eff, 0);
      const base = (bi * s1 + i) * topk;
      for (let t = 0; t < topk; t++) {
        const p = idx[base + t]!;
        if (p === -1) continue;
        if (p < -1 || p >= limit) {
          throw new DsaError(ErrorCode.RANGE, `indices: expected -1 or a position in [0, ${limit}) at [${bi}, ${i}, ${t}] (row eff = ${eff}), got ${p}`, 'indices');
        }
        if (p >= capacity) {
          throw new DsaError(ErrorCode.RANGE,
            `indices: position ${p} at [${bi}, ${i}, ${t}] is past blockTable (${maxBlocks} blocks of ${blockSize} = ${capacity} positions)`, 'indices');
        }
        const j = Math.floor(p / blockSize);
        const blk = table[bi * maxBlocks + j]!;
        if (blk < 0 || blk >= blocks) {
          throw new DsaError(ErrorCode.RANGE,
            `blockTable: expected a block id in [0, ${blocks}) at [${bi}, ${j}] (read for indices[${bi}, ${i}, ${t}] = ${p}), got ${blk}`, 'blockTable');
        }
      }
    }
  }
}
