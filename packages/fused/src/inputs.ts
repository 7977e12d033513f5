import {
  checkIndexKeyCache, checkIntRange, checkLatentCaches, checkTensor, checkWeight, DimBinder, DsaError, enumOption, ErrorCode, intOption,
  numberOption, signalOption, type Bf16Tensor, type I32Tensor, type U8Tensor, type Weight,
} from '@dsa/tensor-core';
import type { SparseAttentionOptions } from './presets.js';

export const WEIGHT_KEYS = ['wDq', 'wUqQr', 'wUk', 'wDkvKr', 'gammaCq', 'gammaCkv', 'wIdxQb', 'wIdxK', 'wIdxProj', 'inGammaK', 'inBetaK'] as const;

/**
 * The seven weights and four norm vectors: what a layer holds between calls. Each weight is bf16 (2-D:
 * ND, NZ or PACKED; wUk ND) or block-scaled FP8 as the checkpoint stores it (tensor-core's Fp8Weight:
 * 2-D NT, ND or PACKED; wUk [n, qk_nope, kv_lora] ND or PACKED), kept FP8 by the kernels.
 */
export interface LayerWeights {
  wDq: Weight;
  wUqQr: Weight;
  wUk: Weight;
  wDkvKr: Weight;
  gammaCq: Bf16Tensor;
  gammaCkv: Bf16Tensor;
  wIdxQb: Weight;
  wIdxK: Weight;
  wIdxProj: Weight;
  inGammaK: Bf16Tensor;
  inBetaK: Bf16Tensor;
}

/** What changes from call to call: the new tokens, their positions and the caches. */
export interface StepInputs {
  x: Bf16Tensor;
  sin: Bf16Tensor;
  cos: Bf16Tensor;
  cacheIndex: I32Tensor;
  /** bf16 [blocks, block_size, 1, kv_lora], or the FP8 latent cache uint8 [.., 656] (then no krCache). */
  kvCache: Bf16Tensor | U8Tensor;
  krCache?: Bf16Tensor;
  blockTable: I32Tensor;
  actSeqs: I32Tensor;
  /** bf16 [blocks, block_size, 1, idx_dim], or the FP8 key cache uint8 [.., 132]. */
  indexKCache: Bf16Tensor | U8Tensor;
}

/** The operator's 20 inputs, in camelCase. */
export type SparseAttentionInputs = LayerWeights & StepInputs;

/** Dimensions of one call, all read from shapes. */
export interface OperatorDims {
  b: number; s1: number; h: number; qLora: number; n: number; qkNope: number; kvLora: number; rope: number;
  idxHeads: number; idxDim: number; blocks: number; blockSize: number; maxBlocks: number;
}

export interface ResolvedOptions {
  softmaxScale: number;
  rmsNormEps: number;
  layerNormEps: number;
  indexerRope: 'interleaved' | 'half';
  topk: number;
  sparseMode: 0 | 3;
  mode: 'fused' | 'chain';
  returnIndices: boolean;
  signal: AbortSignal | undefined;
}

const BF16 = { dtype: 'bfloat16' } as const;
const I32 = { dtype: 'int32' } as const;

/** Check the weights' forms and shapes and bind the model dimensions. */
export function checkWeights(w: LayerWeights, dims = new DimBinder()): DimBinder {
  if (typeof w !== 'object' || w === null) throw new DsaError(ErrorCode.ARGUMENT, `inputs: expected an object of tensors, got ${String(w)}`, 'inputs');
  checkWeight('wDq', w.wDq);
  checkWeight('wUqQr', w.wUqQr);
  checkWeight('wUk', w.wUk, { rank: 3, bf16Formats: ['ND'], fp8Formats: ['ND', 'PACKED'] });
  checkWeight('wDkvKr', w.wDkvKr);
  checkTensor('gammaCq', w.gammaCq, BF16);
  checkTensor('gammaCkv', w.gammaCkv, BF16);
  checkWeight('wIdxQb', w.wIdxQb);
  checkWeight('wIdxK', w.wIdxK);
  checkWeight('wIdxProj', w.wIdxProj);
  checkTensor('inGammaK', w.inGammaK, BF16);
  checkTensor('inBetaK', w.inBetaK, BF16);
  dims.match('wDq', w.wDq, ['h', 'q_lora']);
  dims.match('wUk', w.wUk, ['n', 'qk_nope', 'kv_lora']);
  dims.match('gammaCq', w.gammaCq, ['q_lora']);
  dims.match('gammaCkv', w.gammaCkv, ['kv_lora']);
  if (w.wDkvKr.shape.length !== 2) {
    throw new DsaError(ErrorCode.SHAPE, `wDkvKr: expected rank 2 [h, kv_lora + rope], got shape [${w.wDkvKr.shape.join(', ')}]`, 'wDkvKr');
  }
  const rope = w.wDkvKr.shape[1]! - dims.get('kv_lora');
  if (rope <= 0 || rope % 2 !== 0) {
    throw new DsaError(ErrorCode.SHAPE, `wDkvKr: expected shape[1] = kv_lora (${dims.get('kv_lora')}) + an even, positive rope width, got ${w.wDkvKr.shape[1]}`, 'wDkvKr');
  }
  dims.set('rope', rope, 'wDkvKr.shape[1] − kv_lora');
  dims.match('wDkvKr', w.wDkvKr, ['h', dims.get('kv_lora') + rope]);
  dims.match('wUqQr', w.wUqQr, ['q_lora', dims.get('n') * (dims.get('qk_nope') + rope)]);
  dims.match('wIdxK', w.wIdxK, ['h', 'idx_dim']);
  dims.match('wIdxProj', w.wIdxProj, ['h', 'idx_heads']);
  dims.match('wIdxQb', w.wIdxQb, ['q_lora', dims.get('idx_heads') * dims.get('idx_dim')]);
  dims.match('inGammaK', w.inGammaK, ['idx_dim']);
  dims.match('inBetaK', w.inBetaK, ['idx_dim']);
  if (dims.get('idx_dim') < rope) {
    throw new DsaError(ErrorCode.SHAPE, `wIdxK: the indexer head (idx_dim = ${dims.get('idx_dim')}) must be at least the rope width ${rope}`, 'wIdxK');
  }
  return dims;
}

/** Check a call's step inputs against the weights' dimensions; returns every dimension. */
export function checkStep(s: StepInputs, dims: DimBinder): OperatorDims {
  checkTensor('x', s.x, BF16);
  checkTensor('sin', s.sin, BF16);
  checkTensor('cos', s.cos, BF16);
  checkTensor('cacheIndex', s.cacheIndex, I32);
  checkTensor('blockTable', s.blockTable, I32);
  checkTensor('actSeqs', s.actSeqs, I32);
  dims.match('x', s.x, ['b', 's1', 'h']);
  dims.match('sin', s.sin, ['b', 's1', 'rope']);
  dims.match('cos', s.cos, ['b', 's1', 'rope']);
  dims.match('cacheIndex', s.cacheIndex, ['b', 's1']);
  // Either cache may be FP8 (tensor-core fp8-cache.ts); the kernels pick each form from its dtype.
  const names = { blockNum: 'blocks', blockSize: 'block_size', kvLora: 'kv_lora', rope: 'rope' };
  checkLatentCaches(s.kvCache, s.krCache, dims, names);
  checkIndexKeyCache(s.indexKCache, dims, 'idx_dim', names);
  dims.match('blockTable', s.blockTable, ['b', 'max_blocks']);
  dims.match('actSeqs', s.actSeqs, ['b']);
  const d: OperatorDims = {
    b: dims.get('b'), s1: dims.get('s1'), h: dims.get('h'), qLora: dims.get('q_lora'), n: dims.get('n'),
    qkNope: dims.get('qk_nope'), kvLora: dims.get('kv_lora'), rope: dims.get('rope'), idxHeads: dims.get('idx_heads'),
    idxDim: dims.get('idx_dim'), blocks: dims.get('blocks'), blockSize: dims.get('block_size'), maxBlocks: dims.get('max_blocks'),
  };
  if (d.blockSize < 1) throw new DsaError(ErrorCode.SHAPE, `kvCache: expected block_size ≥ 1, got ${d.blockSize}`, 'kvCache');
  checkSlots(s.cacheIndex, d.blocks * d.blockSize);
  checkIntRange('actSeqs', s.actSeqs, 0, d.maxBlocks * d.blockSize);
  checkReadBlocks(s.blockTable, s.actSeqs, d);
  return d;
}

/** Negative slots write nothing; others must lie in the cache and be unique within the call. */
function checkSlots(cacheIndex: I32Tensor, slots: number): void {
  const seen = new Map<number, number>();
  const c = cacheIndex.data;
  const s1 = cacheIndex.shape[1]!;
  for (let i = 0; i < c.length; i++) {
    const v = c[i]!;
    if (v < 0) continue;
    const at = `[${Math.floor(i / s1)}, ${i % s1}]`;
    if (v >= slots) {
      throw new DsaError(ErrorCode.RANGE, `cacheIndex${at}: expected a slot < ${slots} (block_num · block_size) or negative, got ${v}`, 'cacheIndex');
    }
    const prev = seen.get(v);
    if (prev !== undefined) {
      throw new DsaError(ErrorCode.VALUE, `cacheIndex${at}: slot ${v} is already written by cacheIndex[${Math.floor(prev / s1)}, ${prev % s1}] in this call`, 'cacheIndex');
    }
    seen.set(v, i);
  }
}

/** Every table entry that the indexer and the attention will read must name a real block. */
function checkReadBlocks(table: I32Tensor, act: I32Tensor, d: OperatorDims): void {
  for (let b = 0; b < d.b; b++) {
    const used = Math.ceil(act.data[b]! / d.blockSize);
    for (let j = 0; j < used; j++) {
      const v = table.data[b * d.maxBlocks + j]!;
      if (v < 0 || v >= d.blocks) {
        throw new DsaError(ErrorCode.RANGE, `blockTable[${b}, ${j}]: expected a block in [0, ${d.blocks}) for the ${act.data[b]} keys of actSeqs[${b}], got ${v}`, 'blockTable');
      }
    }
  }
}

/** Options with defaults filled in (the pto preset), each checked. */
export function resolveOptions(o: SparseAttentionOptions | undefined, kvLora: number, rope: number): ResolvedOptions {
  const opts = o ?? {};
  if (typeof opts !== 'object') throw new DsaError(ErrorCode.ARGUMENT, `options: expected an object, got ${typeof opts}`, 'options');
  return {
    softmaxScale: fp32Option('softmaxScale', opts.softmaxScale, (kvLora + rope) ** -0.5),
    rmsNormEps: numberOption('rmsNormEps', opts.rmsNormEps, 1e-5),
    layerNormEps: fp32Option('layerNormEps', opts.layerNormEps, 1e-6),
    indexerRope: enumOption('indexerRope', opts.indexerRope, ['interleaved', 'half'] as const, 'interleaved'),
    topk: intOption('topk', opts.topk, 2048, 1, 1 << 20),
    sparseMode: enumOption('sparseMode', opts.sparseMode, [0, 3] as const, 3),
    mode: enumOption('mode', opts.mode, ['fused', 'chain'] as const, 'fused'),
    returnIndices: booleanOption('returnIndices', opts.returnIndices),
    signal: signalOption(opts.signal),
  };
}

/** A positive number the kernels use as fp32: it must stay positive and finite when rounded. */
function fp32Option(name: string, value: unknown, dflt: number): number {
  const v = numberOption(name, value, dflt);
  const f = Math.fround(v);
  if (!(f > 0 && f < Infinity)) {
    throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected a positive number within float32 range, got ${v}`, name);
  }
  return v;
}

function booleanOption(name: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected true or false, got ${JSON.stringify(value)}`, name);
  return value;
}

