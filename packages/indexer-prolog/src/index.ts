import {
  assertCachesIdle, type Bf16Tensor, checkIndexKeyCache, checkTensor, checkWeight, DimBinder, DsaError, enumOption, ErrorCode, fromNZ,
  fromNativeError, type I32Tensor, isFp8Weight, numberOption, packWeights, type Tensor, type U8Tensor, unravel, type Weight, withCaches,
} from '@dsa/tensor-core';
import { abortedError, saveCacheRows, signalOption, tokenChunks, tokenRows } from './cancel.js';
import { nativeAddon } from './native.js';

export { nativeAddon } from './native.js';

export type IndexerRope = 'interleaved' | 'half';

export interface IndexerPrologOptions {
  /** LayerNorm epsilon of the indexer key (default 1e-6). */
  layerNormEps?: number;
  /** RoPE pairing of the indexer: 'interleaved' (default; pairs 2j, 2j+1, stored de-interleaved) or 'half' (pairs j, j + rope/2). */
  indexerRope?: IndexerRope;
  /**
   * Async calls: aborting rejects the call with DSA_E_ABORTED and leaves indexKCache as it was before
   * it. Sync calls only check it is not aborted yet.
   */
  signal?: AbortSignal;
}

/** Per-call options of a prepared stage (the others are fixed at preparation). */
export interface IndexerPrologRunOptions {
  /** As IndexerPrologOptions.signal. */
  signal?: AbortSignal;
}

/** The weights of the stage: the part of the inputs that stays the same from call to call. */
export interface IndexerPrologWeights {
  /**
   * [q_lora, idx_heads·idx_dim]: bf16 ND, NZ or PACKED, or block-scaled FP8 (tensor-core's Fp8Weight:
   * NT as the checkpoint stores it, ND, or PACKED from packWeights). Likewise wIdxK and wIdxProj.
   */
  wIdxQb: Weight;
  /** [h, idx_dim] */
  wIdxK: Weight;
  /** [h, idx_heads] (bf16 in the checkpoint) */
  wIdxProj: Weight;
  /** [idx_dim] bf16 LayerNorm scale. */
  inGammaK: Bf16Tensor;
  /** [idx_dim] bf16 LayerNorm shift. */
  inBetaK: Bf16Tensor;
}

/** The per-call inputs. */
export interface IndexerPrologStep {
  /** [b, s1, h] bf16 hidden states. */
  x: Bf16Tensor;
  /** [b, s1, q_lora] bf16, the MLA prolog's qNorm. */
  qNorm: Bf16Tensor;
  /** [b, s1, rope] bf16 element-wise RoPE coefficients. */
  sin: Bf16Tensor;
  /** [b, s1, rope] bf16. */
  cos: Bf16Tensor;
  /** [b, s1] int32 global cache slots; a negative slot writes nothing. */
  cacheIndex: I32Tensor;
  /**
   * [blocks, block_size, 1, idx_dim] bf16, updated in place; or the FP8 key cache, uint8
   * [blocks, block_size, 1, idx_dim + 4] (idx_dim 128): per slot the e4m3 bytes of bf16(H · key), H the
   * normalized 128×128 Hadamard matrix, quantized as one ue8m0 group ‖ its fp32 scale (tensor-core fp8-cache.ts).
   */
  indexKCache: Bf16Tensor | U8Tensor;
}

export type IndexerPrologInputs = IndexerPrologWeights & IndexerPrologStep;

export interface IndexerPrologResult {
  /** [b, s1, idx_heads, idx_dim] bf16; the first `rope` dims of each head rotated (de-interleaved). */
  query: Bf16Tensor;
  /** [b, s1, idx_heads] bf16 = bf16(x @ wIdxProj), unscaled. */
  weights: Bf16Tensor;
}

interface Checked {
  layerNormEps: number;
  indexerRope: IndexerRope;
}


function checkOptions(options: unknown): Checked {
  if (options === undefined || options === null) options = {};
  if (typeof options !== 'object') {
    throw new DsaError(ErrorCode.ARGUMENT, `options: expected an object, got ${typeof options}`, 'options');
  }
  const o = options as IndexerPrologOptions;
  return {
    layerNormEps: numberOption('layerNormEps', o.layerNormEps, 1e-6),
    indexerRope: enumOption<IndexerRope>('indexerRope', o.indexerRope, ['interleaved', 'half'], 'interleaved'),
  };
}

function checkWeights(w: Partial<IndexerPrologWeights>, d: DimBinder): void {
  checkWeight('wIdxK', w.wIdxK);
  checkWeight('wIdxProj', w.wIdxProj);
  checkWeight('wIdxQb', w.wIdxQb);
  checkTensor('inGammaK', w.inGammaK, { dtype: 'bfloat16' });
  checkTensor('inBetaK', w.inBetaK, { dtype: 'bfloat16' });
  d.match('wIdxK', w.wIdxK!, ['h', 'idx_dim']);
  d.match('wIdxProj', w.wIdxProj!, ['h', 'idx_heads']);
  d.set('idx_heads*idx_dim', d.get('idx_heads') * d.get('idx_dim'), 'wIdxProj.shape[1] * wIdxK.shape[1] (idx_heads * idx_dim)');
  d.match('wIdxQb', w.wIdxQb!, ['q_lora', 'idx_heads*idx_dim']);
  d.match('inGammaK', w.inGammaK!, ['idx_dim']);
  d.match('inBetaK', w.inBetaK!, ['idx_dim']);
}

function asObject(name: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null) {
    throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected an object of tensors, got ${v === null ? 'null' : typeof v}`, name);
  }
  return v as Record<string, unknown>;
}

interface Dims {
  b: number;
  s1: number;
  heads: number;
  di: number;
}

/** Every check of the call, in TypeScript, before native code sees anything. */
function checkInputs(inputs: unknown): Dims {
  const i = asObject('inputs', inputs) as Partial<IndexerPrologInputs>;
  const d = new DimBinder();
  checkTensor('x', i.x, { dtype: 'bfloat16' });
  d.match('x', i.x!, ['b', 's1', 'h']);
  checkTensor('qNorm', i.qNorm, { dtype: 'bfloat16' });
  d.match('qNorm', i.qNorm!, ['b', 's1', 'q_lora']);
  checkWeights(i, d);
  for (const name of ['sin', 'cos'] as const) {
    checkTensor(name, i[name], { dtype: 'bfloat16' });
    d.match(name, i[name]!, ['b', 's1', 'rope']);
  }
  const rope = d.get('rope');
  const di = d.get('idx_dim');
  if (rope % 2 !== 0) throw new DsaError(ErrorCode.SHAPE, `sin: expected an even RoPE width (shape[2]), got ${rope}`, 'sin');
  if (rope > di) {
    throw new DsaError(ErrorCode.SHAPE,
      `sin: expected a RoPE width (shape[2]) of at most idx_dim = ${di} (wIdxK.shape[1]), got ${rope}: the indexer head is narrower than the RoPE part`, 'sin');
  }
  checkTensor('cacheIndex', i.cacheIndex, { dtype: 'int32' });
  d.match('cacheIndex', i.cacheIndex!, ['b', 's1']);
  checkIndexKeyCache(i.indexKCache, d, 'idx_dim');
  checkSlots(i.cacheIndex!, d.get('blockNum') * d.get('blockSize'));
  return { b: d.get('b'), s1: d.get('s1'), heads: d.get('idx_heads'), di };
}

/** Slots below the cache size and distinct; negative ones are skipped. */
function checkSlots(ci: I32Tensor, rows: number): void {
  const seen = new Map<number, number>();
  const data = ci.data;
  for (let t = 0; t < data.length; t++) {
    const s = data[t]!;
    if (s < 0) continue;
    const at = (k: number): string => `cacheIndex[${unravel(k, ci.shape).join(', ')}]`;
    if (s >= rows) {
      throw new DsaError(ErrorCode.RANGE,
        `${at(t)}: expected a slot below ${rows} (indexKCache blocks * block_size) or a negative value (skip), got ${s}`, 'cacheIndex');
    }
    const prev = seen.get(s);
    if (prev !== undefined) {
      throw new DsaError(ErrorCode.VALUE, `${at(t)}: slot ${s} is also written by ${at(prev)}; each slot may be written once per call`, 'cacheIndex');
    }
    seen.set(s, t);
  }
}

function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNativeError(e);
  }
}

/** One checked call: `wIdxKProj` is the prepared [wIdxK | wIdxProj]. */
interface Call {
  inputs: IndexerPrologInputs;
  o: Checked;
  d: Dims;
  signal: AbortSignal | undefined;
  wIdxKProj?: Bf16Tensor;
}

// The tensor-core cache lock: async calls on the same cache run one after the other, and a sync call
// on a cache an async call still holds throws DSA_E_STATE.
const caches = (c: Call): [string, Tensor][] => [['indexKCache', c.inputs.indexKCache]];

function callSync(c: Call): IndexerPrologResult {
  if (c.signal?.aborted) throw abortedError();
  assertCachesIdle(caches(c));
  return callNative(() => nativeAddon().indexerProlog(c.inputs, c.o.layerNormEps, c.o.indexerRope, c.wIdxKProj));
}

async function callAsync(c: Call): Promise<IndexerPrologResult> {
  if (c.signal?.aborted) throw abortedError();
  return withCaches(caches(c), async () => {
    try {
      if (c.signal === undefined) return await nativeAddon().indexerPrologAsync(c.inputs, c.o.layerNormEps, c.o.indexerRope, c.wIdxKProj);
      return await callInChunks(c, c.signal);
    } catch (e) {
      throw fromNativeError(e);
    }
  });
}

const newBf16 = (shape: number[]): Bf16Tensor => ({
  dtype: 'bfloat16', shape, data: new Uint16Array(shape.reduce((a, v) => a * v, 1)), format: 'ND',
});

/**
 * The async call as token chunks (see cancel.ts for why they give the whole call's bytes), checking
 * the signal before each chunk and once after the last. The cache rows the call writes are saved
 * first and put back if it is aborted (or fails), so the cache is then as before the call.
 */
async function callInChunks(c: Call, signal: AbortSignal): Promise<IndexerPrologResult> {
  const { b, s1, heads, di } = c.d;
  const query = newBf16([b, s1, heads, di]);
  const weights = newBf16([b, s1, heads]);
  const i = c.inputs;
  const restore = saveCacheRows([i.indexKCache], i.cacheIndex.data);
  try {
    for (const [t0, t1] of tokenChunks(b * s1)) {
      if (signal.aborted) throw abortedError();
      const part = { ...i, x: tokenRows(i.x, t0, t1), qNorm: tokenRows(i.qNorm, t0, t1), sin: tokenRows(i.sin, t0, t1), cos: tokenRows(i.cos, t0, t1), cacheIndex: tokenRows(i.cacheIndex, t0, t1) };
      const r = await nativeAddon().indexerPrologAsync(part, c.o.layerNormEps, c.o.indexerRope, c.wIdxKProj);
      query.data.set(r.query.data, t0 * heads * di);
      weights.data.set(r.weights.data, t0 * heads);
    }
    if (signal.aborted) throw abortedError();
  } catch (e) {
    restore();
    throw e;
  }
  return { query, weights };
}

function checkCall(inputs: unknown, options: unknown): Call {
  const o = checkOptions(options);
  const d = checkInputs(inputs);
  return { inputs: inputs as IndexerPrologInputs, o, d, signal: signalOption((options as { signal?: unknown } | null | undefined)?.signal) };
}

/**
 * The indexer prolog (stage 2): indexer queries and per-head weights for each token, and the new
 * keys written into `indexKCache` in place (a negative `cacheIndex` slot writes nothing). Everything
 * is validated before anything is written: a call that throws leaves the cache unchanged.
 */
export function indexerProlog(inputs: IndexerPrologInputs, options: IndexerPrologOptions = {}): IndexerPrologResult {
  return callSync(checkCall(inputs, options));
}

/**
 * `indexerProlog` on a worker thread: the event loop keeps running; same bytes as the sync call.
 * Async calls on the same cache run one after the other in call order. With `options.signal`, an
 * abort before the promise settles rejects it with DSA_E_ABORTED and leaves the cache as it was
 * before the call (the work stops at the next chunk of 64 tokens).
 */
export async function indexerPrologAsync(inputs: IndexerPrologInputs, options: IndexerPrologOptions = {}): Promise<IndexerPrologResult> {
  return callAsync(checkCall(inputs, options));
}

/** A [K, N] weight in any accepted format as ND (PACKED: [Np/16, Kp/2, 16, 2] k-pairs, zero padded). */
function toND(w: Bf16Tensor): Bf16Tensor {
  const format = w.format ?? 'ND';
  if (format === 'ND') return w;
  if (format === 'NZ') return fromNZ(w);
  const [K, N] = w.shape as [number, number];
  const kp2 = (K + (K & 1)) / 2;
  const out = new Uint16Array(K * N);
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) out[k * N + n] = w.data[((n >> 4) * kp2 + (k >> 1)) * 32 + (n & 15) * 2 + (k & 1)]!;
  }
  return { dtype: 'bfloat16', shape: [K, N], data: out, format: 'ND' };
}

function concatColumns(a: Bf16Tensor, b: Bf16Tensor): Bf16Tensor {
  const [K, Na] = a.shape as [number, number];
  const Nb = b.shape[1]!;
  const out = new Uint16Array(K * (Na + Nb));
  for (let k = 0; k < K; k++) {
    out.set(a.data.subarray(k * Na, (k + 1) * Na), k * (Na + Nb));
    out.set(b.data.subarray(k * Nb, (k + 1) * Nb), k * (Na + Nb) + Na);
  }
  return { dtype: 'bfloat16', shape: [K, Na + Nb], data: out, format: 'ND' };
}

/**
 * The stage with its weights prepared once, for decode loops where the same weights serve every call:
 * the three weights are packed for the kernels (format 'PACKED'), and [wIdxK | wIdxProj] is packed
 * side by side so the two products of x read x once. Options are fixed at preparation.
 */
export class PreparedIndexerProlog {
  /** Packed copies of the weights (usable as `indexerProlog` inputs too) and the LayerNorm vectors. */
  readonly weights: Readonly<IndexerPrologWeights>;
  readonly options: Readonly<Required<Omit<IndexerPrologOptions, 'signal'>>>;
  /** [h, idx_dim + idx_heads] packed = [wIdxK | wIdxProj] (bf16 weights only). */
  readonly wIdxKProj: Bf16Tensor | undefined;

  constructor(weights: IndexerPrologWeights, options: Omit<IndexerPrologOptions, 'signal'> = {}) {
    this.options = checkOptions(options);
    if ((options as IndexerPrologOptions | null)?.signal !== undefined) {
      throw new DsaError(ErrorCode.ARGUMENT, 'signal: expected no signal here (the options of a prepared stage are fixed); give it to runAsync', 'signal');
    }
    checkWeights(asObject('weights', weights) as Partial<IndexerPrologWeights>, new DimBinder());
    const pack = (w: Weight): Weight => ((w.format ?? 'ND') === 'PACKED' ? w : callNative(() => packWeights(w)));
    this.weights = {
      wIdxQb: pack(weights.wIdxQb),
      wIdxK: pack(weights.wIdxK),
      wIdxProj: pack(weights.wIdxProj),
      inGammaK: weights.inGammaK,
      inBetaK: weights.inBetaK,
    };
    // Joined only when both are bf16 (an FP8 wIdxK keeps its own block scales).
    const { wIdxK, wIdxProj } = weights;
    this.wIdxKProj = isFp8Weight(wIdxK) || isFp8Weight(wIdxProj)
      ? undefined
      : callNative(() => packWeights(concatColumns(toND(wIdxK), toND(wIdxProj))));
  }

  private call(step: IndexerPrologStep, options: IndexerPrologRunOptions): Call {
    const s = asObject('step', step) as unknown as IndexerPrologStep;
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new DsaError(ErrorCode.ARGUMENT, `options: expected an object, got ${options === null ? 'null' : typeof options}`, 'options');
    }
    const inputs: IndexerPrologInputs = {
      ...this.weights, x: s.x, qNorm: s.qNorm, sin: s.sin, cos: s.cos, cacheIndex: s.cacheIndex, indexKCache: s.indexKCache,
    };
    const d = checkInputs(inputs);
    return { inputs, o: this.options, d, signal: signalOption((options as { signal?: unknown } | null | undefined)?.signal), wIdxKProj: this.wIdxKProj };
  }

  /** One call: same result as `indexerProlog({...step, ...weights}, options)`. */
  run(step: IndexerPrologStep, options: IndexerPrologRunOptions = {}): IndexerPrologResult {
    return callSync(this.call(step, options));
  }

  /** `run` on a worker thread; `options.signal` cancels it as for `indexerPrologAsync`. */
  async runAsync(step: IndexerPrologStep, options: IndexerPrologRunOptions = {}): Promise<IndexerPrologResult> {
    return callAsync(this.call(step, options));
  }
}

/** Prepare the weights once (see `PreparedIndexerProlog`). */
export function prepareIndexerProlog(weights: IndexerPrologWeights, options: Omit<IndexerPrologOptions, 'signal'> = {}): PreparedIndexerProlog {
  return new PreparedIndexerProlog(weights, options);
}

