import {
  checkLatentCaches, checkTensor, checkWeight, DimBinder, DsaError, ErrorCode, numberOption, require_, sharesMemory, unravel,
  type Bf16Tensor, type I32Tensor, type Tensor, type U8Tensor, type Weight,
} from '@dsa/tensor-core';

/** The inputs of one MLA prolog call (spec §3). kvCache and krCache are updated in place. */
export interface MlaPrologInputs {
  /** bf16 [b, s1, h] */
  x: Bf16Tensor;
  /**
   * [h, q_lora]: bf16 ND, NZ or PACKED, or block-scaled FP8 (tensor-core's Fp8Weight: NT as the
   * checkpoint stores it, ND, or PACKED from packWeights). Likewise for wUqQr and wDkvKr.
   */
  wDq: Weight;
  /** [q_lora, n·(qk_nope + rope)] (per head: qk_nope columns, then rope) */
  wUqQr: Weight;
  /** [n, qk_nope, kv_lora]: bf16 ND, or FP8 ND (kv_b_proj's K rows of each head) or PACKED (packWeights) */
  wUk: Weight;
  /** [h, kv_lora + rope] (latent columns, then rope) */
  wDkvKr: Weight;
  /** bf16 [q_lora] */
  gammaCq: Bf16Tensor;
  /** bf16 [kv_lora] */
  gammaCkv: Bf16Tensor;
  /** bf16 [b, s1, rope], element-wise coefficients */
  sin: Bf16Tensor;
  /** bf16 [b, s1, rope], element-wise coefficients */
  cos: Bf16Tensor;
  /** int32 [b, s1]: global cache slot of each new token; negative = do not write */
  cacheIndex: I32Tensor;
  /**
   * bf16 [block_num, block_size, 1, kv_lora], updated in place; or the FP8 latent cache, uint8
   * [block_num, block_size, 1, kv_lora + 4·kv_lora/128 + 2·rope] (656 at DeepSeek size): per slot the
   * bf16 latent quantized per 128 (e4m3 ‖ fp32 ue8m0 tile scales) ‖ the bf16 rope values (tensor-core fp8-cache.ts).
   */
  kvCache: Bf16Tensor | U8Tensor;
  /** bf16 [block_num, block_size, 1, rope], updated in place; absent with an FP8 kvCache. */
  krCache?: Bf16Tensor;
}

/** What one call returns (bf16). */
export interface MlaPrologOutputs {
  /** [b, s1, n, kv_lora]: the absorbed queries q_nope · W_UK */
  qNope: Bf16Tensor;
  /** [b, s1, n, rope]: the rotated rope queries, de-interleaved */
  qRope: Bf16Tensor;
  /** [b, s1, q_lora]: the normalized query latent (the indexer prolog's input) */
  qNorm: Bf16Tensor;
}

export interface MlaPrologOptions {
  /** RMSNorm epsilon for both norms (default 1e-5, the PTO golden; the model uses 1e-6). */
  rmsNormEps?: number;
  /** Write the outputs into these tensors instead of new ones (e.g. to reuse buffers in a decode loop). */
  out?: Partial<MlaPrologOutputs>;
  /**
   * Async calls: aborting rejects the call with DSA_E_ABORTED and leaves the caches as they were
   * before it (`out` buffers are then partly written). Sync calls only check it is not aborted yet.
   */
  signal?: AbortSignal;
}

export const DEFAULT_RMS_NORM_EPS = 1e-5;

/** The dimensions of a call, all taken from tensor shapes. */
export interface MlaPrologDims {
  b: number;
  s1: number;
  h: number;
  qLora: number;
  n: number;
  qkNope: number;
  rope: number;
  kvLora: number;
  blockNum: number;
  blockSize: number;
}

const bf16 = { dtype: 'bfloat16' } as const;

export function checkInputsObject(name: string, v: unknown): void {
  if (typeof v !== 'object' || v === null) {
    throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected an object of tensors, got ${v === null ? 'null' : typeof v}`, name);
  }
}

function positive(dims: DimBinder, arg: string, dim: string, axis: number): void {
  const v = dims.get(dim);
  require_(v >= 1, ErrorCode.SHAPE, arg, `expected shape[${axis}] (${dim}) >= 1, got ${v}`);
}

/**
 * Check the weights against each other; binds h, qLora, n, qkNope, kvLora and rope into `dims`
 * (rope from cos when given, else from wUqQr's width). `packedWUk` accepts the prepared form.
 */
export function checkWeights(w: Record<string, unknown>, dims: DimBinder, ropeFrom?: Tensor, packedWUk = false): void {
  const wDq = checkWeight('wDq', w.wDq);
  dims.match('wDq', wDq, ['h', 'qLora']);
  positive(dims, 'wDq', 'h', 0);
  positive(dims, 'wDq', 'qLora', 1);
  const wUk = packedWUk ? (w.wUk as Bf16Tensor) : checkWeight('wUk', w.wUk, { rank: 3, bf16Formats: ['ND'], fp8Formats: ['ND', 'PACKED'] });
  dims.match('wUk', wUk, ['n', 'qkNope', 'kvLora']);
  positive(dims, 'wUk', 'n', 0);
  positive(dims, 'wUk', 'qkNope', 1);
  positive(dims, 'wUk', 'kvLora', 2);
  const n = dims.get('n');
  const qkNope = dims.get('qkNope');
  const wUqQr = checkWeight('wUqQr', w.wUqQr);
  if (ropeFrom === undefined) {
    dims.match('wUqQr', wUqQr, ['qLora', 'nq']);
    const nq = dims.get('nq');
    const rope = nq / n - qkNope;
    require_(Number.isInteger(rope) && rope >= 0 && rope % 2 === 0, ErrorCode.SHAPE, 'wUqQr',
      `expected shape[1] = n·(qk_nope + rope) with n = ${n}, qk_nope = ${qkNope} (from wUk) and an even rope width, got ${nq}`);
    dims.set('rope', rope, 'wUqQr.shape[1] / n − qk_nope');
  } else {
    dims.match('cos', ropeFrom, ['b', 's1', 'rope']);
    const rope = dims.get('rope');
    require_(rope % 2 === 0, ErrorCode.SHAPE, 'cos', `expected an even rope width in shape[2], got ${rope}`);
    dims.set('n·(qk_nope+rope)', n * (qkNope + rope), 'wUk.shape[0..1] and cos.shape[2]');
    dims.match('wUqQr', wUqQr, ['qLora', 'n·(qk_nope+rope)']);
  }
  dims.set('kv_lora+rope', dims.get('kvLora') + dims.get('rope'), 'wUk.shape[2] + the rope width');
  dims.match('wDkvKr', checkWeight('wDkvKr', w.wDkvKr), ['h', 'kv_lora+rope']);
  dims.match('gammaCq', checkTensor('gammaCq', w.gammaCq, bf16), ['qLora']);
  dims.match('gammaCkv', checkTensor('gammaCkv', w.gammaCkv, bf16), ['kvLora']);
}

/** Check the per-call tensors (x, sin, cos, cacheIndex, caches) against dims bound by checkWeights. */
export function checkStep(inputs: Record<string, unknown>, dims: DimBinder): MlaPrologDims {
  const x = checkTensor<'bfloat16'>('x', inputs.x, bf16);
  dims.match('x', x, ['b', 's1', 'h']);
  dims.match('cos', checkTensor('cos', inputs.cos, bf16), ['b', 's1', 'rope']);
  dims.match('sin', checkTensor('sin', inputs.sin, bf16), ['b', 's1', 'rope']);
  const cacheIndex = checkTensor<'int32'>('cacheIndex', inputs.cacheIndex, { dtype: 'int32' });
  dims.match('cacheIndex', cacheIndex, ['b', 's1']);
  checkLatentCaches(inputs.kvCache, inputs.krCache, dims);
  const d: MlaPrologDims = {
    b: dims.get('b'), s1: dims.get('s1'), h: dims.get('h'), qLora: dims.get('qLora'), n: dims.get('n'),
    qkNope: dims.get('qkNope'), rope: dims.get('rope'), kvLora: dims.get('kvLora'),
    blockNum: dims.get('blockNum'), blockSize: dims.get('blockSize'),
  };
  checkSlots(cacheIndex, d.blockNum * d.blockSize);
  return d;
}

/** Slots below `rows` (negative = skip), and no slot written by two tokens. */
function checkSlots(cacheIndex: I32Tensor, rows: number): void {
  const seen = new Map<number, number>();
  const d = cacheIndex.data;
  for (let i = 0; i < d.length; i++) {
    const s = d[i]!;
    if (s < 0) continue;
    const at = `cacheIndex[${unravel(i, cacheIndex.shape).join(', ')}]`;
    if (s >= rows) {
      throw new DsaError(ErrorCode.RANGE,
        `cacheIndex: ${at} = ${s}, expected a slot < block_num·block_size = ${rows} (or negative to skip)`, 'cacheIndex');
    }
    const prev = seen.get(s);
    if (prev !== undefined) {
      throw new DsaError(ErrorCode.VALUE,
        `cacheIndex: ${at} = ${s} is also the slot of cacheIndex[${unravel(prev, cacheIndex.shape).join(', ')}], expected distinct slots`, 'cacheIndex');
    }
    seen.set(s, i);
  }
}

export function rmsNormEpsOption(options: unknown): number {
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new DsaError(ErrorCode.ARGUMENT, `options: expected an object, got ${options === null ? 'null' : typeof options}`, 'options');
  }
  return numberOption('rmsNormEps', (options as MlaPrologOptions | undefined)?.rmsNormEps, DEFAULT_RMS_NORM_EPS);
}

/**
 * Check `options.out` (each tensor optional) and that nothing the kernel writes (caches, outputs)
 * shares memory with anything else of the call.
 */
export function checkOutAndAliasing(inputs: Record<string, Tensor>, out: unknown, d: MlaPrologDims): Partial<MlaPrologOutputs> | undefined {
  if (out !== undefined && (typeof out !== 'object' || out === null)) {
    throw new DsaError(ErrorCode.ARGUMENT, `out: expected an object of output tensors, got ${out === null ? 'null' : typeof out}`, 'out');
  }
  const o = (out ?? {}) as Record<string, unknown>;
  const shapes: Record<keyof MlaPrologOutputs, number[]> = {
    qNope: [d.b, d.s1, d.n, d.kvLora], qRope: [d.b, d.s1, d.n, d.rope], qNorm: [d.b, d.s1, d.qLora],
  };
  const written: [string, Tensor][] = [['kvCache', inputs.kvCache!]];
  if (inputs.krCache) written.push(['krCache', inputs.krCache]);
  for (const key of Object.keys(shapes) as (keyof MlaPrologOutputs)[]) {
    if (o[key] === undefined) continue;
    const t = checkTensor(`out.${key}`, o[key], bf16);
    new DimBinder().match(`out.${key}`, t, shapes[key]);
    written.push([`out.${key}`, t]);
  }
  const reads = Object.entries(inputs).filter(([k, v]) => k !== 'kvCache' && k !== 'krCache' && v !== undefined);
  const all: [string, Tensor][] = [...written, ...reads];
  for (let i = 0; i < written.length; i++) {
    for (let j = 0; j < all.length; j++) {
      if (j !== i && sharesMemory(written[i]![1], all[j]![1])) {
        const wn = written[i]![0];
        throw new DsaError(ErrorCode.ARGUMENT, `${wn}: shares memory with ${all[j]![0]}, expected separate buffers (it is written in place)`, wn);
      }
    }
  }
  return out === undefined ? undefined : (o as Partial<MlaPrologOutputs>);
}
