import {
  assertCachesIdle, type Bf16Tensor, checkIndexKeyCache, checkTensor, DimBinder, DsaError, enumOption, ErrorCode, type F32Tensor, fromNativeError,
  getNumThreads, type I32Tensor, intOption, type Tensor, toFloat32, type U8Tensor, unravel, withCaches,
} from '@dsa/tensor-core';
import { abortedError, chunkAct, planChunks, signalOption } from './cancel.js';
import { nativeAddon } from './native.js';

export { nativeAddon, type StageAddon } from './native.js';

/** The tensors of one call (spec §3). */
export interface LightningIndexerInputs {
  /** bf16 [b, s1, heads, dim]: the indexer queries. */
  query: Bf16Tensor;
  /** bf16 [b, s1, heads]: per-head weights. */
  weights: Bf16Tensor;
  /**
   * bf16 [blockNum, blockSize, 1, dim]: the paged indexer key cache (PA_BSND); or the FP8 key cache,
   * uint8 [blockNum, blockSize, 1, dim + 4] (dim 128) as the indexer prolog writes it: the e4m3 bytes of
   * the Hadamard-rotated key ‖ its fp32 scale (tensor-core fp8-cache.ts). With an FP8 cache each query
   * head is rotated the same way and quantized per head, and the score is
   * Σ_h w_h · ReLU(q8_h · k8_j) · qscale_h · kscale_j.
   */
  indexKCache: Bf16Tensor | U8Tensor;
  /** int32 [b, maxBlocks]: physical block of each logical block; entries never read may be −1. */
  blockTable: I32Tensor;
  /** int32 [b]: key count of each sequence, including its s1 new tokens. */
  actSeqs: I32Tensor;
}

export interface LightningIndexerOptions {
  /** Positions kept per query row (default 2048). */
  topk?: number;
  /** 3 (default): query i of s1 sees act − (s1 − 1 − i) keys; 0: every query sees act keys. */
  sparseMode?: 0 | 3;
  /** Also return the fp32 scores [b, s1, max act], −Infinity past each row's key count (default false). */
  returnScores?: boolean;
  /**
   * Async calls: an abort stops the call between chunks of query rows and rejects with DSA_E_ABORTED.
   * Sync calls only check that it has not fired yet.
   */
  signal?: AbortSignal;
}

export interface LightningIndexerResult {
  /** int32 [b, s1, topk]: logical positions by descending score (ties: smaller position), −1 padded. */
  indices: I32Tensor;
  /** float32 [b, s1, max(actSeqs)], only with `returnScores`. */
  scores?: F32Tensor;
}

export const DEFAULT_TOPK = 2048;

interface Prepared {
  inputs: LightningIndexerInputs;
  indices: I32Tensor;
  scores: F32Tensor | null;
  topk: number;
  sparseMode: 0 | 3;
  signal: AbortSignal | undefined;
}

function checkOptions(options: unknown): { topk: number; sparseMode: 0 | 3; returnScores: boolean; signal: AbortSignal | undefined } {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null) {
    throw new DsaError(ErrorCode.ARGUMENT, `options: expected an object, got ${options === null ? 'null' : typeof options}`, 'options');
  }
  const o = options as LightningIndexerOptions;
  const topk = intOption('topk', o.topk, DEFAULT_TOPK, 1, 0x7fffffff);
  const sparseMode = enumOption('sparseMode', o.sparseMode, [0, 3] as const, 3);
  if (o.returnScores !== undefined && typeof o.returnScores !== 'boolean') {
    throw new DsaError(ErrorCode.ARGUMENT, `returnScores: expected a boolean, got ${JSON.stringify(o.returnScores)}`, 'returnScores');
  }
  return { topk, sparseMode, returnScores: o.returnScores ?? false, signal: signalOption(o.signal) };
}

/** Every check of the call, in TypeScript, before the addon is touched; allocates the outputs. */
function prepare(inputs: unknown, options: unknown): Prepared {
  if (typeof inputs !== 'object' || inputs === null) {
    throw new DsaError(ErrorCode.ARGUMENT, `inputs: expected an object { query, weights, indexKCache, blockTable, actSeqs }, got ${inputs === null ? 'null' : typeof inputs}`, 'inputs');
  }
  const i = inputs as Record<string, unknown>;
  const query = checkTensor<'bfloat16'>('query', i.query, { dtype: 'bfloat16' });
  const weights = checkTensor<'bfloat16'>('weights', i.weights, { dtype: 'bfloat16' });
  const blockTable = checkTensor<'int32'>('blockTable', i.blockTable, { dtype: 'int32' });
  const actSeqs = checkTensor<'int32'>('actSeqs', i.actSeqs, { dtype: 'int32' });
  const dims = new DimBinder();
  dims.match('query', query, ['b', 's1', 'heads', 'dim']);
  dims.match('weights', weights, ['b', 's1', 'heads']);
  checkIndexKeyCache(i.indexKCache, dims, 'dim');
  const indexKCache = i.indexKCache as Bf16Tensor | U8Tensor;
  dims.match('blockTable', blockTable, ['b', 'maxBlocks']);
  dims.match('actSeqs', actSeqs, ['b']);
  const [b, s1, heads, dim] = query.shape as [number, number, number, number];
  const [blockNum, blockSize] = indexKCache.shape as [number, number];
  const maxBlocks = blockTable.shape[1]!;
  if (heads < 1) throw new DsaError(ErrorCode.SHAPE, `query: expected at least 1 head (shape[2]), got shape [${query.shape.join(', ')}]`, 'query');
  if (dim < 1) throw new DsaError(ErrorCode.SHAPE, `query: expected a head dim (shape[3]) of at least 1, got shape [${query.shape.join(', ')}]`, 'query');
  if (blockSize < 1) {
    throw new DsaError(ErrorCode.SHAPE, `indexKCache: expected a block size (shape[1]) of at least 1, got shape [${indexKCache.shape.join(', ')}]`, 'indexKCache');
  }
  const { topk, sparseMode, returnScores, signal } = checkOptions(options);

  const covers = maxBlocks * blockSize;
  let maxAct = 0;
  for (let bi = 0; bi < b; bi++) {
    const act = actSeqs.data[bi]!;
    if (act < 0 || act > covers) {
      throw new DsaError(ErrorCode.RANGE, `actSeqs[${bi}]: expected a value in [0, ${covers}] (blockTable covers ${maxBlocks} blocks of ${blockSize}), got ${act}`, 'actSeqs');
    }
    maxAct = Math.max(maxAct, act);
    const used = Math.ceil(act / blockSize);
    for (let j = 0; j < used; j++) {
      const id = blockTable.data[bi * maxBlocks + j]!;
      if (id < 0 || id >= blockNum) {
        throw new DsaError(
          ErrorCode.RANGE,
          `blockTable[${bi}, ${j}]: expected a block id in [0, ${blockNum - 1}] (read for actSeqs[${bi}] = ${act}), got ${id}`,
          'blockTable',
        );
      }
    }
  }
  const rows = b * s1;
  let indexData: Int32Array;
  let scoreData: Float32Array | null = null;
  try {
    indexData = new Int32Array(rows * topk);
    if (returnScores) scoreData = new Float32Array(rows * maxAct);
  } catch (e) {
    throw new DsaError(ErrorCode.RANGE, `topk: cannot allocate the outputs (${rows} rows x ${topk} indices${returnScores ? ` and x ${maxAct} scores` : ''}): ${(e as Error).message}`, 'topk');
  }
  const indices: I32Tensor = { dtype: 'int32', shape: [b, s1, topk], data: indexData, format: 'ND' };
  const scores: F32Tensor | null = scoreData ? { dtype: 'float32', shape: [b, s1, maxAct], data: scoreData, format: 'ND' } : null;
  return { inputs: { query, weights, indexKCache, blockTable, actSeqs }, indices, scores, topk, sparseMode, signal };
}

// The cache a call reads: async calls on it are serialized with every other call that holds it (the
// prologs write it), and a sync call while an async one holds it throws DSA_E_STATE (tensor-core's lock).
function readCaches(p: Prepared): [string, Tensor][] {
  return [['indexKCache', p.inputs.indexKCache]];
}

/**
 * The async call as native calls over chunks of query rows, with the signal checked after each. A
 * chunk's outputs are views of the call's outputs, except scores whose row length (the chunk's max
 * act) is shorter: those go through a scratch buffer, padded with −Infinity like the whole call's.
 */
async function runChunks(p: Prepared, signal: AbortSignal): Promise<void> {
  const { query, weights, indexKCache, blockTable, actSeqs } = p.inputs;
  const [, s1, heads, dim] = query.shape as [number, number, number, number];
  const maxBlocks = blockTable.shape[1]!;
  const maxAct = p.scores ? p.scores.shape[2]! : 0;
  const act = actSeqs.data;
  const eff = (bi: number, i: number): number => (p.sparseMode === 3 ? act[bi]! - (s1 - 1 - i) : act[bi]!);
  // Rows per chunk a multiple of the thread count: each row's final merge runs on one thread.
  const cost = (bi: number, i: number): number => (Math.max(eff(bi, i), 0) + 1) * heads * dim + p.topk;
  const chunks = planChunks(query.shape[0]!, s1, cost, undefined, getNumThreads());
  for (const { b0, b1, i0, i1 } of chunks) {
    const nb = b1 - b0;
    const ns = i1 - i0;
    const r0 = b0 * s1 + i0;
    const r1 = r0 + nb * ns;
    const acts = ns === s1 ? act.subarray(b0, b1) : Int32Array.of(chunkAct(act[b0]!, s1, i1, p.sparseMode));
    let chunkMax = 0;
    for (const a of acts) chunkMax = Math.max(chunkMax, a);
    let scores: F32Tensor | null = null;
    if (p.scores) {
      const data = chunkMax === maxAct ? p.scores.data.subarray(r0 * maxAct, r1 * maxAct) : new Float32Array(nb * ns * chunkMax);
      scores = { dtype: 'float32', shape: [nb, ns, chunkMax], data, format: 'ND' };
    }
    await nativeAddon().runAsync(
      { dtype: 'bfloat16', shape: [nb, ns, heads, dim], data: query.data.subarray(r0 * heads * dim, r1 * heads * dim), format: 'ND' },
      { dtype: 'bfloat16', shape: [nb, ns, heads], data: weights.data.subarray(r0 * heads, r1 * heads), format: 'ND' },
      indexKCache,
      { dtype: 'int32', shape: [nb, maxBlocks], data: blockTable.data.subarray(b0 * maxBlocks, b1 * maxBlocks), format: 'ND' },
      { dtype: 'int32', shape: [nb], data: acts, format: 'ND' },
      { dtype: 'int32', shape: [nb, ns, p.topk], data: p.indices.data.subarray(r0 * p.topk, r1 * p.topk), format: 'ND' },
      scores, p.topk, p.sparseMode,
    );
    if (scores && chunkMax !== maxAct) {
      for (let r = 0; r < nb * ns; r++) {
        const row = p.scores!.data.subarray((r0 + r) * maxAct, (r0 + r + 1) * maxAct);
        row.set(scores.data.subarray(r * chunkMax, (r + 1) * chunkMax));
        row.fill(-Infinity, chunkMax);
      }
    }
    if (signal.aborted) throw abortedError();
  }
}

function result(p: Prepared): LightningIndexerResult {
  return p.scores ? { indices: p.indices, scores: p.scores } : { indices: p.indices };
}

/**
 * Lightning indexer (DSA stage 3): for every query row, the scores
 * I[j] = Σ_h w_h · ReLU(q_h · k_j) over its logical keys j < eff (read through the block table), and
 * the topk positions with the largest scores.
 */
export function lightningIndexer(inputs: LightningIndexerInputs, options: LightningIndexerOptions = {}): LightningIndexerResult {
  const p = prepare(inputs, options);
  if (p.signal?.aborted) throw abortedError();
  assertCachesIdle(readCaches(p));
  const x = p.inputs;
  try {
    nativeAddon().run(x.query, x.weights, x.indexKCache, x.blockTable, x.actSeqs, p.indices, p.scores, p.topk, p.sparseMode);
  } catch (e) {
    throw fromNativeError(e);
  }
  return result(p);
}

/**
 * `lightningIndexer` on a worker thread: the event loop keeps running. The input tensors must not be
 * modified until the promise settles. Invalid input rejects the promise. Calls on the same cache run
 * one after the other; with `options.signal`, an abort rejects with DSA_E_ABORTED after the chunk
 * of query rows in flight.
 */
export async function lightningIndexerAsync(inputs: LightningIndexerInputs, options: LightningIndexerOptions = {}): Promise<LightningIndexerResult> {
  const p = prepare(inputs, options);
  const { signal } = p;
  if (signal?.aborted) throw abortedError();
  return withCaches(readCaches(p), async () => {
    if (signal?.aborted) throw abortedError();
    const x = p.inputs;
    try {
      if (signal) await runChunks(p, signal);
      else await nativeAddon().runAsync(x.query, x.weights, x.indexKCache, x.blockTable, x.actSeqs, p.indices, p.scores, p.topk, p.sparseMode);
    } catch (e) {
      throw fromNativeError(e);
    }
    return result(p);
  });
}

export interface CoverageOptions {
  /** Multiplies the logits before the softmax (e.g. the attention's softmaxScale); default 1. */
  scale?: number;
}

export interface CoverageResult {
  /** Per row: the softmax probability mass of the selected keys, in [0, 1]. */
  coverage: Float64Array;
  /** Per row: the largest mass any selection of the same size could keep (the top logits). */
  best: Float64Array;
}

function rowsOf(name: string, v: unknown, dtypes: readonly ('float32' | 'bfloat16' | 'int32')[]): { values: ArrayLike<number>; shape: readonly number[] } {
  if (typeof v === 'object' && v !== null && 'dtype' in v) {
    const t = checkTensor(name, v, { dtype: dtypes });
    if (t.shape.length < 1) throw new DsaError(ErrorCode.SHAPE, `${name}: expected rank >= 1, got shape []`, name);
    return { values: t.dtype === 'bfloat16' ? toFloat32(t as Tensor) : t.data, shape: t.shape };
  }
  if (typeof v === 'object' && v !== null && typeof (v as ArrayLike<number>).length === 'number') {
    const a = v as ArrayLike<number>;
    return { values: a, shape: [a.length] };
  }
  throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected a tensor or an array of numbers, got ${v === null ? 'null' : typeof v}`, name);
}

/**
 * How much of the dense attention's probability mass a key selection keeps, per query row: the
 * selection's share of softmax(scale · logits), and the best share any selection of the same size
 * could keep. `logits` is [..., L] (float32 or bfloat16 tensor, or one row as a plain array), with
 * −Infinity for keys a row cannot see; `indices` is int32 [..., k] with the same leading dimensions
 * (e.g. lightningIndexer's indices); −1 entries are ignored. A row without any finite logit counts
 * as fully covered (1).
 */
export function selectionCoverage(logits: Tensor | ArrayLike<number>, indices: I32Tensor | ArrayLike<number>, options: CoverageOptions = {}): CoverageResult {
  const lg = rowsOf('logits', logits, ['float32', 'bfloat16']);
  const ix = rowsOf('indices', indices, ['int32']);
  const scale = options.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0) {
    throw new DsaError(ErrorCode.ARGUMENT, `scale: expected a finite positive number, got ${String(scale)}`, 'scale');
  }
  const lead = lg.shape.slice(0, -1);
  const ilead = ix.shape.slice(0, -1);
  if (lead.length !== ilead.length || lead.some((d, a) => d !== ilead[a])) {
    throw new DsaError(ErrorCode.SHAPE, `indices: expected leading dimensions [${lead.join(', ')}] as given by logits, got [${ilead.join(', ')}]`, 'indices');
  }
  const L = lg.shape[lg.shape.length - 1]!;
  const k = ix.shape[ix.shape.length - 1]!;
  const rows = lead.reduce((a, d) => a * d, 1);
  const coverage = new Float64Array(rows);
  const best = new Float64Array(rows);
  const seen = new Uint8Array(L);
  const p = new Float64Array(L);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < L; j++) {
      const x = lg.values[r * L + j]!;
      if (Number.isNaN(x) || x === Infinity) {
        throw new DsaError(ErrorCode.VALUE, `logits[${unravel(r * L + j, lg.shape).join(', ')}]: expected a finite value or -Infinity, got ${x}`, 'logits');
      }
      m = Math.max(m, x);
    }
    seen.fill(0);
    let selected = 0;
    for (let t = 0; t < k; t++) {
      const j = ix.values[r * k + t]!;
      if (j === -1) continue;
      if (!Number.isInteger(j) || j < 0 || j >= L) {
        throw new DsaError(ErrorCode.RANGE, `indices[${unravel(r * k + t, ix.shape).join(', ')}]: expected -1 or a position in [0, ${L - 1}], got ${j}`, 'indices');
      }
      if (seen[j]) {
        throw new DsaError(ErrorCode.VALUE, `indices[${unravel(r * k + t, ix.shape).join(', ')}]: position ${j} is selected twice in this row`, 'indices');
      }
      seen[j] = 1;
      selected++;
    }
    if (m === -Infinity) {
      coverage[r] = 1;
      best[r] = 1;
      continue;
    }
    let z = 0;
    let kept = 0;
    for (let j = 0; j < L; j++) {
      p[j] = Math.exp(scale * (lg.values[r * L + j]! - m));
      z += p[j]!;
      if (seen[j]) kept += p[j]!;
    }
    const sorted = p.slice().sort((a, b) => b - a);
    let top = 0;
    for (let t = 0; t < selected; t++) top += sorted[t]!;
    coverage[r] = kept / z;
    best[r] = top / z;
  }
  return { coverage, best };
}
