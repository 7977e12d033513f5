import {
  type Bf16Tensor, checkTensor, DimBinder, DsaError, enumOption, ErrorCode, fromNZ, fromNativeError, type I32Tensor,
  numberOption, packWeights, unravel,
} from '@dsa/tensor-core';
import { nativeAddon } from './native.js';

export { nativeAddon } from './native.js';

export type IndexerRope = 'interleaved' | 'half';

export interface IndexerPrologOptions {
  /** LayerNorm epsilon of the indexer key (default 1e-6). */
  layerNormEps?: number;
  /** RoPE pairing of the indexer: 'interleaved' (default; pairs 2j, 2j+1, stored de-interleaved) or 'half' (pairs j, j + rope/2). */
  indexerRope?: IndexerRope;
}

/** The weights of the stage: the part of the inputs that stays the same from call to call. */
export interface IndexerPrologWeights {
  /** [q_lora, idx_heads·idx_dim] bf16, ND, NZ or PACKED. */
  wIdxQb: Bf16Tensor;
  /** [h, idx_dim] bf16, ND, NZ or PACKED. */
  wIdxK: Bf16Tensor;
  /** [h, idx_heads] bf16, ND, NZ or PACKED. */
  wIdxProj: Bf16Tensor;
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
  /** [blocks, block_size, 1, idx_dim] bf16, updated in place. */
  indexKCache: Bf16Tensor;
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

const WEIGHT_FORMATS = ['ND', 'NZ', 'PACKED'] as const;

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
  checkTensor('wIdxK', w.wIdxK, { dtype: 'bfloat16', formats: WEIGHT_FORMATS });
  checkTensor('wIdxProj', w.wIdxProj, { dtype: 'bfloat16', formats: WEIGHT_FORMATS });
  checkTensor('wIdxQb', w.wIdxQb, { dtype: 'bfloat16', formats: WEIGHT_FORMATS });
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

/** Every check of the call, in TypeScript, before native code sees anything. */
function checkInputs(inputs: unknown): void {
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
  checkTensor('indexKCache', i.indexKCache, { dtype: 'bfloat16' });
  d.match('indexKCache', i.indexKCache!, ['blocks', 'block_size', 1, 'idx_dim']);
  checkSlots(i.cacheIndex!, d.get('blocks') * d.get('block_size'));
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

/**
 * The indexer prolog (stage 2): indexer queries and per-head weights for each token, and the new
 * keys written into `indexKCache` in place (a negative `cacheIndex` slot writes nothing). Everything
 * is validated before anything is written: a call that throws leaves the cache unchanged.
 */
export function indexerProlog(inputs: IndexerPrologInputs, options: IndexerPrologOptions = {}): IndexerPrologResult {
  const o = checkOptions(options);
  checkInputs(inputs);
  return callNative(() => nativeAddon().indexerProlog(inputs, o.layerNormEps, o.indexerRope));
}

/** `indexerProlog` on a worker thread: the event loop keeps running; same bytes as the sync call. */
export async function indexerPrologAsync(inputs: IndexerPrologInputs, options: IndexerPrologOptions = {}): Promise<IndexerPrologResult> {
  const o = checkOptions(options);
  checkInputs(inputs);
  try {
    return await nativeAddon().indexerPrologAsync(inputs, o.layerNormEps, o.indexerRope);
  } catch (e) {
    throw fromNativeError(e);
  }
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
  readonly options: Readonly<Required<IndexerPrologOptions>>;
  /** [h, idx_dim + idx_heads] packed = [wIdxK | wIdxProj]. */
  readonly wIdxKProj: Bf16Tensor;

  constructor(weights: IndexerPrologWeights, options: IndexerPrologOptions = {}) {
    this.options = checkOptions(options);
    checkWeights(asObject('weights', weights) as Partial<IndexerPrologWeights>, new DimBinder());
    const pack = (w: Bf16Tensor): Bf16Tensor => ((w.format ?? 'ND') === 'PACKED' ? w : callNative(() => packWeights(w)));
    this.weights = {
      wIdxQb: pack(weights.wIdxQb),
      wIdxK: pack(weights.wIdxK),
      wIdxProj: pack(weights.wIdxProj),
      inGammaK: weights.inGammaK,
      inBetaK: weights.inBetaK,
    };
    this.wIdxKProj = callNative(() => packWeights(concatColumns(toND(weights.wIdxK), toND(weights.wIdxProj))));
  }

  private inputs(step: IndexerPrologStep): IndexerPrologInputs {
    const s = asObject('step', step) as unknown as IndexerPrologStep;
    const inputs: IndexerPrologInputs = {
      ...this.weights, x: s.x, qNorm: s.qNorm, sin: s.sin, cos: s.cos, cacheIndex: s.cacheIndex, indexKCache: s.indexKCache,
    };
    checkInputs(inputs);
    return inputs;
  }

  /** One call: same result as `indexerProlog({...step, ...weights}, options)`. */
  run(step: IndexerPrologStep): IndexerPrologResult {
    const inputs = this.inputs(step);
    const o = this.options;
    return callNative(() => nativeAddon().indexerProlog(inputs, o.layerNormEps, o.indexerRope, this.wIdxKProj));
  }

  /** `run` on a worker thread. */
  async runAsync(step: IndexerPrologStep): Promise<IndexerPrologResult> {
    const inputs = this.inputs(step);
    const o = this.options;
    try {
      return await nativeAddon().indexerPrologAsync(inputs, o.layerNormEps, o.indexerRope, this.wIdxKProj);
    } catch (e) {
      throw fromNativeError(e);
    }
  }
}

/** Prepare the weights once (see `PreparedIndexerProlog`). */
export function prepareIndexerProlog(weights: IndexerPrologWeights, options: IndexerPrologOptions = {}): PreparedIndexerProlog {
  return new PreparedIndexerProlog(weights, options);
}

