import {
  assertCachesIdle, checkTensor, DimBinder, DsaError, ErrorCode, fromNativeError, isFp8Weight, packWeights, withCaches,
  type Bf16Tensor, type Tensor, type Weight,
} from '@dsa/tensor-core';
import { abortedError, KERNEL_PASS, saveCacheRows, signalOption, tokenChunks, tokenRows } from './cancel.js';
import { nativeAddon } from './native.js';
import {
  checkInputsObject, checkOutAndAliasing, checkStep, checkWeights, rmsNormEpsOption,
  type MlaPrologDims, type MlaPrologInputs, type MlaPrologOptions, type MlaPrologOutputs,
} from './validate.js';

export { nativeAddon } from './native.js';
export {
  DEFAULT_RMS_NORM_EPS,
  type MlaPrologDims, type MlaPrologInputs, type MlaPrologOptions, type MlaPrologOutputs,
} from './validate.js';

interface Checked {
  inputs: Record<string, Tensor>;
  eps: number;
  out: Partial<MlaPrologOutputs> | undefined;
  signal: AbortSignal | undefined;
  d: MlaPrologDims;
}

function checkCall(inputs: unknown, options: unknown): Checked {
  checkInputsObject('inputs', inputs);
  const i = inputs as Record<string, unknown>;
  const eps = rmsNormEpsOption(options);
  const dims = new DimBinder();
  dims.match('x', checkTensor('x', i.x, { dtype: 'bfloat16' }), ['b', 's1', 'h']);
  checkWeights(i, dims, checkTensor('cos', i.cos, { dtype: 'bfloat16' }));
  const d = checkStep(i, dims);
  const tensors = pick(i);
  const out = checkOutAndAliasing(tensors, (options as MlaPrologOptions | undefined)?.out, d);
  return { inputs: tensors, eps, out, signal: signalOption((options as { signal?: unknown } | null | undefined)?.signal), d };
}

const INPUT_NAMES = ['x', 'wDq', 'wUqQr', 'wUk', 'wDkvKr', 'gammaCq', 'gammaCkv', 'sin', 'cos', 'cacheIndex', 'kvCache', 'krCache'] as const;

function pick(i: Record<string, unknown>): Record<string, Tensor> {
  const r: Record<string, Tensor> = {};
  for (const k of INPUT_NAMES) if (i[k] !== undefined && i[k] !== null) r[k] = i[k] as Tensor;
  return r;
}

// What a call writes: the shared cache lock (tensor-core) serializes async calls on the same buffers
// and rejects a sync call while an async one still holds them.
function written(c: Checked): [string, Tensor | undefined][] {
  return [['kvCache', c.inputs.kvCache], ['krCache', c.inputs.krCache],
    ['out.qNope', c.out?.qNope], ['out.qRope', c.out?.qRope], ['out.qNorm', c.out?.qNorm]];
}

function callSync(c: Checked): MlaPrologOutputs {
  if (c.signal?.aborted) throw abortedError();
  assertCachesIdle(written(c));
  try {
    return nativeAddon().mlaProlog(c.inputs, c.eps, c.out);
  } catch (e) {
    throw fromNativeError(e);
  }
}

async function callAsync(c: Checked): Promise<MlaPrologOutputs> {
  if (c.signal?.aborted) throw abortedError();
  return withCaches(written(c), async () => {
    try {
      if (c.signal === undefined) return await nativeAddon().mlaPrologAsync(c.inputs, c.eps, c.out);
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
 * first and put back if it is aborted (or fails), so the caches are then as before the call.
 */
async function callInChunks(c: Checked, signal: AbortSignal): Promise<MlaPrologOutputs> {
  const { b, s1, n, kvLora, rope, qLora } = c.d;
  const out: MlaPrologOutputs = {
    qNope: c.out?.qNope ?? newBf16([b, s1, n, kvLora]),
    qRope: c.out?.qRope ?? newBf16([b, s1, n, rope]),
    qNorm: c.out?.qNorm ?? newBf16([b, s1, qLora]),
  };
  const i = c.inputs;
  const restore = saveCacheRows([i.kvCache!, ...(i.krCache ? [i.krCache] : [])], i.cacheIndex!.data as Int32Array);
  try {
    for (const [t0, t1] of tokenChunks(b * s1, KERNEL_PASS)) {
      if (signal.aborted) throw abortedError();
      const part = { ...i };
      for (const k of ['x', 'sin', 'cos', 'cacheIndex'] as const) part[k] = tokenRows(i[k]!, t0, t1);
      const outPart = { qNope: tokenRows(out.qNope, t0, t1), qRope: tokenRows(out.qRope, t0, t1), qNorm: tokenRows(out.qNorm, t0, t1) };
      await nativeAddon().mlaPrologAsync(part, c.eps, outPart);
    }
    if (signal.aborted) throw abortedError();
  } catch (e) {
    restore();
    throw e;
  }
  return out;
}

/**
 * MLA prolog (stage 1 of DSA): the absorbed queries, rope queries and normalized query latent of
 * the b·s1 new tokens, and their latent/rope rows written into kvCache/krCache in place (a negative
 * cacheIndex entry writes nothing). Everything is validated before anything is written.
 */
export function mlaProlog(inputs: MlaPrologInputs, options: MlaPrologOptions = {}): MlaPrologOutputs {
  return callSync(checkCall(inputs, options));
}

/**
 * mlaProlog on a worker thread; the event loop keeps running. Async calls on the same caches run one
 * after the other in call order; a sync call on a cache an async call still holds throws DSA_E_STATE.
 * With `options.signal`, an abort before the promise settles rejects it with DSA_E_ABORTED and
 * leaves the caches as they were before the call (the work stops at the next chunk of 64 tokens).
 */
export async function mlaPrologAsync(inputs: MlaPrologInputs, options: MlaPrologOptions = {}): Promise<MlaPrologOutputs> {
  return callAsync(checkCall(inputs, options));
}

/** The weights that stay the same from call to call. */
export type MlaPrologWeights = Pick<MlaPrologInputs, 'wDq' | 'wUqQr' | 'wUk' | 'wDkvKr' | 'gammaCq' | 'gammaCkv'>;
/** The per-call inputs of a prepared prolog. */
export type MlaPrologStepInputs = Pick<MlaPrologInputs, 'x' | 'sin' | 'cos' | 'cacheIndex' | 'kvCache' | 'krCache'>;

/** Weights packed once for the kernels, then run per decode step or prefill chunk. */
export interface PreparedMlaProlog {
  /** Dimensions fixed by the weights (b, s1 and the cache sizes come with each call). */
  readonly dims: Readonly<Pick<MlaPrologDims, 'h' | 'qLora' | 'n' | 'qkNope' | 'rope' | 'kvLora'>>;
  run(inputs: MlaPrologStepInputs, options?: MlaPrologOptions): MlaPrologOutputs;
  runAsync(inputs: MlaPrologStepInputs, options?: MlaPrologOptions): Promise<MlaPrologOutputs>;
  /** Release the packed weights; later calls throw DSA_E_STATE. */
  dispose(): void;
}

/**
 * Pack the weights once (W_DQ, W_UQQR, W_DKVKR with tensor-core's packWeights, W_UK per head) for
 * production loops where the same weights serve every call. The packed copies are independent of
 * the given tensors, which may be changed or dropped afterwards.
 */
export function prepareMlaProlog(weights: MlaPrologWeights): PreparedMlaProlog {
  checkInputsObject('weights', weights);
  const w = weights as unknown as Record<string, unknown>;
  const dims = new DimBinder();
  checkWeights(w, dims);
  const pack = (t: Weight): Weight => (t.format === 'PACKED' ? t : packWeights(t));
  let packed: Record<string, Tensor> | undefined;
  try {
    packed = {
      wDq: pack(weights.wDq),
      wUqQr: pack(weights.wUqQr),
      wDkvKr: pack(weights.wDkvKr),
      // FP8 W_UK: packWeights packs each head ([n, qk_nope, kv_lora] PACKED); bf16: packWUk.
      wUk: isFp8Weight(weights.wUk) ? pack(weights.wUk) : nativeAddon().packWUk(weights.wUk),
      gammaCq: { ...weights.gammaCq, data: weights.gammaCq.data.slice() },
      gammaCkv: { ...weights.gammaCkv, data: weights.gammaCkv.data.slice() },
    };
  } catch (e) {
    throw fromNativeError(e);
  }
  const fixed = {
    h: dims.get('h'), qLora: dims.get('qLora'), n: dims.get('n'),
    qkNope: dims.get('qkNope'), rope: dims.get('rope'), kvLora: dims.get('kvLora'),
  };
  const check = (inputs: unknown, options: unknown): Checked => {
    if (packed === undefined) throw new DsaError(ErrorCode.STATE, 'prepared: this prepared MLA prolog was disposed', 'prepared');
    checkInputsObject('inputs', inputs);
    const eps = rmsNormEpsOption(options);
    const stepDims = new DimBinder();
    for (const [k, v] of Object.entries(fixed)) stepDims.set(k, v, 'the prepared weights');
    const i = inputs as Record<string, unknown>;
    const d = checkStep(i, stepDims);
    const tensors: Record<string, Tensor> = { ...packed };
    for (const k of ['x', 'sin', 'cos', 'cacheIndex', 'kvCache', 'krCache']) if (i[k] !== undefined && i[k] !== null) tensors[k] = i[k] as Tensor;
    const out = checkOutAndAliasing(tensors, (options as MlaPrologOptions | undefined)?.out, d);
    return { inputs: tensors, eps, out, signal: signalOption((options as { signal?: unknown } | null | undefined)?.signal), d };
  };
  return {
    dims: fixed,
    run: (inputs, options = {}) => callSync(check(inputs, options)),
    runAsync: async (inputs, options = {}) => callAsync(check(inputs, options)),
    dispose: () => {
      packed = undefined;
    },
  };
}
