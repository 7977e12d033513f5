// Model-sized layers with seeded random weights, synthetic cache history and the cost model (bytes
// and FLOPs per call) that the demo and the benchmark report against the machine's ceilings.
import { f32ArrayToBf16, Rng, toNZ, type Bf16Tensor, type Ceilings, type Fp8Weight } from '@dsa/tensor-core';
import type { PagedCacheManager } from './cache-manager.js';
import type { LayerWeights } from './inputs.js';

export interface ModelDims {
  h: number; qLora: number; n: number; qkNope: number; kvLora: number; rope: number; idxHeads: number; idxDim: number;
  topk: number; blockSize: number;
}

/** DeepSeek-V3.2's attention dimensions. */
export const DEEPSEEK_V32: Readonly<ModelDims> = Object.freeze({
  h: 7168, qLora: 1536, n: 128, qkNope: 128, kvLora: 512, rope: 64, idxHeads: 64, idxDim: 128, topk: 2048, blockSize: 128,
});

/** Uniform bf16 values, generated in chunks (fast enough for 10⁸ values). */
export function uniformBf16(rng: Rng, shape: number[], lo: number, hi: number): Bf16Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Uint16Array(n);
  const chunk = new Float32Array(Math.min(n, 1 << 16));
  for (let base = 0; base < n; base += chunk.length) {
    const m = Math.min(chunk.length, n - base);
    for (let i = 0; i < m; i++) chunk[i] = lo + (hi - lo) * (rng.nextU32() / 4294967296);
    out.set(f32ArrayToBf16(chunk.subarray(0, m)), base);
  }
  return { dtype: 'bfloat16', shape, data: out, format: 'ND' };
}

/** Seeded random weights with the golden data's ranges; 2-D weights in NZ (the operator's format). */
export function randomLayerWeights(d: ModelDims, seed: number, onProgress?: (done: number, total: number) => void): LayerWeights {
  const rng = new Rng(seed);
  const specs: [keyof LayerWeights, number[], number, number, boolean][] = [
    ['wDq', [d.h, d.qLora], -0.1, 0.1, true],
    ['wUqQr', [d.qLora, d.n * (d.qkNope + d.rope)], -0.1, 0.1, true],
    ['wUk', [d.n, d.qkNope, d.kvLora], -0.1, 0.1, false],
    ['wDkvKr', [d.h, d.kvLora + d.rope], -0.1, 0.1, true],
    ['gammaCq', [d.qLora], -1, 1, false],
    ['gammaCkv', [d.kvLora], -1, 1, false],
    ['wIdxQb', [d.qLora, d.idxHeads * d.idxDim], -0.1, 0.1, true],
    ['wIdxK', [d.h, d.idxDim], -0.1, 0.1, true],
    ['wIdxProj', [d.h, d.idxHeads], -0.1, 0.1, true],
    ['inGammaK', [d.idxDim], 1, 1, false],
    ['inBetaK', [d.idxDim], 0, 0, false],
  ];
  const w: Partial<LayerWeights> = {};
  specs.forEach(([name, shape, lo, hi, nz], i) => {
    const t = uniformBf16(rng, shape, lo, hi);
    w[name] = nz && shape[0]! % 16 === 0 && shape[1]! % 16 === 0 ? toNZ(t, name) : t;
    onProgress?.(i + 1, specs.length);
  });
  return w as LayerWeights;
}

/**
 * Seeded random weights in the checkpoint's FP8 form: the six FP8 weights as e4m3 bytes with random
 * fp32 scales per 128×128 block (2-D stored NT as [out, in]; wUk ND [n, qk_nope, kv_lora]) and about
 * the ranges of randomLayerWeights; wIdxProj and the norm vectors bf16.
 */
export function randomFp8LayerWeights(d: ModelDims, seed: number, onProgress?: (done: number, total: number) => void): LayerWeights {
  const bf16 = randomBf16Parts(d, seed);
  const rng = new Rng(seed + 1);
  const fp8 = (shape: number[], format: 'NT' | 'ND'): Fp8Weight => rng.fp8Weight(shape, format, { scale: 0.1 / 448 });
  const specs: [keyof LayerWeights, number[], 'NT' | 'ND'][] = [
    ['wDq', [d.h, d.qLora], 'NT'], ['wUqQr', [d.qLora, d.n * (d.qkNope + d.rope)], 'NT'], ['wUk', [d.n, d.qkNope, d.kvLora], 'ND'],
    ['wDkvKr', [d.h, d.kvLora + d.rope], 'NT'], ['wIdxQb', [d.qLora, d.idxHeads * d.idxDim], 'NT'], ['wIdxK', [d.h, d.idxDim], 'NT'],
  ];
  const w: Record<string, unknown> = { ...bf16 };
  specs.forEach(([name, shape, format], i) => {
    w[name] = fp8(shape, format);
    onProgress?.(i + 1, specs.length);
  });
  return w as unknown as LayerWeights;
}

function randomBf16Parts(d: ModelDims, seed: number): Pick<LayerWeights, 'gammaCq' | 'gammaCkv' | 'wIdxProj' | 'inGammaK' | 'inBetaK'> {
  const rng = new Rng(seed);
  return {
    gammaCq: uniformBf16(rng, [d.qLora], -1, 1), gammaCkv: uniformBf16(rng, [d.kvLora], -1, 1),
    wIdxProj: uniformBf16(rng, [d.h, d.idxHeads], -0.1, 0.1), inGammaK: uniformBf16(rng, [d.idxDim], 1, 1),
    inBetaK: uniformBf16(rng, [d.idxDim], 0, 0),
  };
}

/** How a layer's weights are stored: all bf16, or the checkpoint's FP8 form (see randomFp8LayerWeights). */
export type WeightDtype = 'bf16' | 'fp8';

/** Bytes of a layer's weights: bf16, or FP8 (1 byte per element plus one fp32 scale per 128×128 block; wIdxProj and norms bf16). */
export function weightBytes(d: ModelDims, dtype: WeightDtype = 'bf16'): number {
  const fp8: [number, number][] = [
    [d.h, d.qLora], [d.qLora, d.n * (d.qkNope + d.rope)], [d.h, d.kvLora + d.rope], [d.qLora, d.idxHeads * d.idxDim], [d.h, d.idxDim],
  ];
  const rest = d.h * d.idxHeads + d.qLora + d.kvLora + 2 * d.idxDim;
  const elems = fp8.reduce((s, [k, n]) => s + k * n, 0) + d.n * d.qkNope * d.kvLora;
  if (dtype === 'bf16') return 2 * (elems + rest);
  const blocks = fp8.reduce((s, [k, n]) => s + Math.ceil(k / 128) * Math.ceil(n / 128), 0) + d.n * Math.ceil(d.qkNope / 128) * Math.ceil(d.kvLora / 128);
  return elems + 4 * blocks + 2 * rest;
}

/**
 * Fill a sequence's first `tokens` cache rows with random bf16 values in ±[2⁻⁷, 2) (what earlier
 * calls would have written). Built from random bits directly: 10⁹ values would be too slow otherwise.
 * FP8 caches hold the same distribution, ±[2⁻⁷, 2) (e4m3 bytes of ±[2⁻⁶, 4): random sign, exponent
 * field 1..8 and mantissa; scale 2⁻¹), and random bf16 rope values.
 */
export function fillHistory(cache: PagedCacheManager, seq: number, tokens: number, seed: number): void {
  if (tokens <= 0) return;
  const plan = cache.plan([seq], tokens);
  let x = (seed * 2654435761) >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x;
  };
  const bf16 = (): number => {
    const r = next();
    return (r & 0x8000) | ((120 + ((r >>> 16) & 7)) << 7) | ((r >>> 8) & 0x7f);
  };
  const scale = new Uint8Array(new Float32Array([2 ** -1]).buffer);
  for (const t of Object.values(cache.tensors())) {
    const d = t.shape[3]!;
    const data = t.data;
    if (t.dtype === 'bfloat16') {
      for (const slot of plan.cacheIndex.data) for (let k = slot * d, end = k + d; k < end; k++) data[k] = bf16();
      continue;
    }
    // FP8 rows: the e4m3 part, then one scale per 128 values, then (latent rows) bf16 rope values.
    const e8 = t === cache.indexKCache ? d - 4 : cache.kvLora;
    const ropeAt = e8 + (4 * e8) / 128;
    for (const slot of plan.cacheIndex.data) {
      const o = slot * d;
      for (let k = 0; k < e8; k++) {
        const r = next();
        data[o + k] = (r & 0x87) | ((1 + ((r >>> 8) & 7)) << 3);
      }
      for (let g = 0; g < e8 / 128; g++) data.set(scale, o + e8 + 4 * g);
      for (let k = ropeAt; k < d; k += 2) {
        const v = bf16();
        data[o + k] = v & 0xff;
        data[o + k + 1] = v >> 8;
      }
    }
  }
}

/** Random x, sin and cos for b sequences of s1 new tokens. */
export function randomTokens(d: ModelDims, b: number, s1: number, rng: Rng): { x: Bf16Tensor; sin: Bf16Tensor; cos: Bf16Tensor } {
  return {
    x: uniformBf16(rng, [b, s1, d.h], -1, 1),
    sin: uniformBf16(rng, [b, s1, d.rope], -1, 1),
    cos: uniformBf16(rng, [b, s1, d.rope], -1, 1),
  };
}

export interface CallCost {
  weightBytes: number;
  /** Lightning indexer score FLOPs (2·heads·dim per visible key per query row). */
  indexerFlops: number;
  /** Sparse attention FLOPs (2·n·(kv_lora+rope + kv_lora) per selected key per row). */
  attentionFlops: number;
  /** Prolog FLOPs (2 per weight element per token, W_UK included). */
  prologFlops: number;
  /** Lower bound in ms: weights once at the read ceiling + indexer and attention FLOPs at the dot peak. */
  floorMs: number;
}

/** The cost model of one call (background.md §4), against measured ceilings. */
export function callCost(d: ModelDims, acts: number[], s1: number, c: Ceilings, sparseMode: 0 | 3 = 3, dtype: WeightDtype = 'bf16'): CallCost {
  let idx = 0;
  let att = 0;
  for (const act of acts) {
    for (let i = 0; i < s1; i++) {
      const eff = Math.max(0, sparseMode === 3 ? act - (s1 - 1 - i) : act);
      idx += 2 * d.idxHeads * d.idxDim * eff;
      att += 2 * d.n * (2 * d.kvLora + d.rope) * Math.min(eff, d.topk);
    }
  }
  const wb = weightBytes(d, dtype);
  const tokens = acts.length * s1;
  const prolog = tokens * weightBytes(d); // 2 FLOP per weight element (2 bytes in bf16)
  const floorMs = (wb / (c.readGBs * 1e9) + (idx + att) / (c.bf16Gflops * 1e9)) * 1e3;
  return { weightBytes: wb, indexerFlops: idx, attentionFlops: att, prologFlops: prolog, floorMs };
}
