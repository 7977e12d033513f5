import { join } from 'node:path';
import { expect } from 'vitest';
import {
  type Bf16Tensor, cpuFeatures, encodeIndexKeyRow, f32ArrayToBf16, fp8IndexQueryToBf16, fp8IndexRowBytes, type I32Tensor,
  indexKeyCacheToBf16, type Isa, Rng, toFloat32, type U8Tensor,
} from '@dsa/tensor-core';
import { lightningIndexer, type LightningIndexerInputs } from '../src/index.js';
import { lightningIndexerReference } from '../src/reference.js';

export const GOLDEN = join(import.meta.dirname, '../../../../shared/golden');

export const NAN_BF16 = 0x7fc0;
export const POISON_I32 = 0x7fc07fc0;

/** The ISA paths this CPU can run (all three here). */
export function isas(): Isa[] {
  const f = cpuFeatures();
  return (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512'));
}

export interface Case {
  b: number;
  s1: number;
  heads: number;
  dim: number;
  blockSize: number;
  acts: number[];
  /** Extra table columns past the used blocks (filled with −1). */
  spareBlocks?: number;
  seed: number;
  /** 'bits': keys of random sign and mantissa in ±[1, 2), much faster to make than N(0,1) for big caches. */
  keys?: 'normal' | 'bits';
}

/** Inputs with the bf16 key cache (what makeInputs builds). */
export type Bf16KeyInputs = LightningIndexerInputs & { indexKCache: Bf16Tensor };

/** Inputs with the FP8 key cache (uint8 rows; what withFp8Keys builds). */
export type Fp8KeyInputs = LightningIndexerInputs & { indexKCache: U8Tensor };

/**
 * Random inputs: N(0,1) queries, keys and weights, a shuffled block table with −1 past the used
 * blocks, and NaN in every cache row no sequence uses (so reading past eff shows up as NaN).
 */
export function makeInputs(c: Case): Bf16KeyInputs {
  const rng = new Rng(c.seed);
  const used = c.acts.map((a) => Math.ceil(a / c.blockSize));
  const maxBlocks = Math.max(1, ...used) + (c.spareBlocks ?? 1);
  const blockNum = used.reduce((a, u) => a + u, 0) + 2;
  const ids = rng.shuffle(Array.from({ length: blockNum }, (_, i) => i));
  const table = new Int32Array(c.b * maxBlocks).fill(-1);
  const cache = new Uint16Array(blockNum * c.blockSize * c.dim).fill(NAN_BF16);
  const keyBits = c.keys === 'bits'
    ? Uint16Array.from({ length: blockNum * c.blockSize * c.dim }, () => 0x3f80 | (rng.nextU32() & 0x807f))
    : rng.normalTensor([blockNum * c.blockSize * c.dim]).data;
  let next = 0;
  for (let bi = 0; bi < c.b; bi++) {
    for (let j = 0; j < used[bi]!; j++) {
      const id = ids[next++]!;
      table[bi * maxBlocks + j] = id;
      const valid = Math.min(c.blockSize, c.acts[bi]! - j * c.blockSize);
      const o = id * c.blockSize * c.dim;
      cache.set(keyBits.subarray(o, o + valid * c.dim), o);
    }
  }
  return {
    query: rng.normalTensor([c.b, c.s1, c.heads, c.dim]),
    weights: rng.normalTensor([c.b, c.s1, c.heads]),
    indexKCache: { dtype: 'bfloat16', shape: [blockNum, c.blockSize, 1, c.dim], data: cache, format: 'ND' },
    blockTable: { dtype: 'int32', shape: [c.b, maxBlocks], data: table, format: 'ND' },
    actSeqs: { dtype: 'int32', shape: [c.b], data: Int32Array.from(c.acts), format: 'ND' },
  };
}

/** The same inputs with the key cache in the FP8 form the indexer prolog writes (each bf16 row rotated and quantized). */
export function withFp8Keys(inputs: Bf16KeyInputs): Fp8KeyInputs {
  const c = inputs.indexKCache;
  const [blocks, bs, , dim] = c.shape as [number, number, number, number];
  const rb = fp8IndexRowBytes(dim);
  const data = new Uint8Array(blocks * bs * rb);
  for (let s = 0; s < blocks * bs; s++) encodeIndexKeyRow(c.data.subarray(s * dim, (s + 1) * dim), data, s * rb);
  const indexKCache: U8Tensor = { dtype: 'uint8', shape: [blocks, bs, 1, rb], data, format: 'ND' };
  return { ...inputs, indexKCache };
}

/** Per key: Σ_h |w_h| Σ_d |q_hd k_d|, the scale of the fp32 rounding error of its score. */
export function magnitudes(inputs: LightningIndexerInputs, eff: Int32Array, maxAct: number): Float64Array {
  const [b, s1, heads, dim] = inputs.query.shape as [number, number, number, number];
  const bs = inputs.indexKCache.shape[1]!;
  const mb = inputs.blockTable.shape[1]!;
  // FP8 keys: the exact quantized values (scales folded in), which is what the kernel multiplies.
  const fp8 = inputs.indexKCache.dtype === 'uint8';
  const q = toFloat32(fp8 ? fp8IndexQueryToBf16(inputs.query) : inputs.query);
  const w = toFloat32(inputs.weights);
  const k = toFloat32(inputs.indexKCache.dtype === 'uint8' ? indexKeyCacheToBf16(inputs.indexKCache, dim) : inputs.indexKCache);
  const out = new Float64Array(b * s1 * maxAct);
  for (let r = 0; r < b * s1; r++) {
    const bi = Math.floor(r / s1);
    for (let j = 0; j < eff[r]!; j++) {
      const slot = inputs.blockTable.data[bi * mb + Math.floor(j / bs)]! * bs + (j % bs);
      let m = 0;
      for (let h = 0; h < heads; h++) {
        let a = 0;
        for (let d = 0; d < dim; d++) a += Math.abs(q[(r * heads + h) * dim + d]! * k[slot * dim + d]!);
        m += Math.abs(w[r * heads + h]!) * a;
      }
      out[r * maxAct + j] = m;
    }
  }
  return out;
}

/** A rigorous bound of fp32 accumulation error: (dim + heads + 2) units of 2^-24 times the magnitude. */
export function tolerance(mag: number, heads: number, dim: number): number {
  return (dim + heads + 2) * 2 ** -24 * mag + 1e-30;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * The exact top-k of an fp32 score row by the spec's rule (descending, ties to the smaller
 * position, −1 padded), by a full sort: what the native selection must reproduce bit for bit.
 */
export function exactTopk(scores: ArrayLike<number>, eff: number, topk: number): Int32Array {
  const out = new Int32Array(topk).fill(-1);
  if (eff <= 0) return out;
  const keys = new Float64Array(eff);
  for (let j = 0; j < eff; j++) {
    f32[0] = scores[j]! + 0; // -0 ties with +0
    const u = u32[0]!;
    const ascending = u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0;
    keys[j] = (0xffffffff - ascending) * 2 ** 21 + j; // score descending, then position
  }
  keys.sort();
  for (let t = 0; t < Math.min(eff, topk); t++) out[t] = keys[t]! % 2 ** 21;
  return out;
}

/**
 * Compare one row's index set with the reference's: an index may differ only where its reference
 * score ties the reference's k-th score within `tol`.
 */
export function setMismatch(ours: Int32Array, ref: Int32Array, refScores: ArrayLike<number>, tol: (j: number) => number): string | null {
  const a = new Set(Array.from(ours).filter((j) => j >= 0));
  const e = new Set(Array.from(ref).filter((j) => j >= 0));
  if (a.size !== e.size) return `selected ${a.size} keys, reference ${e.size}`;
  const kth = ref[e.size - 1]!;
  for (const j of [...a].filter((x) => !e.has(x)).concat([...e].filter((x) => !a.has(x)))) {
    if (Math.abs(refScores[j]! - refScores[kth]!) > tol(j) + tol(kth)) {
      return `position ${j} (score ${refScores[j]}) differs but is not a near-tie with the threshold ${refScores[kth]}`;
    }
  }
  return null;
}

/** Byte equality of two typed arrays (fast; vitest's toEqual walks big buffers element by element). */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export function bf16Tensor(values: number[], shape: number[]): Bf16Tensor {
  return { dtype: 'bfloat16', shape, data: f32ArrayToBf16(values), format: 'ND' };
}

export function i32Tensor(values: ArrayLike<number>, shape: number[]): I32Tensor {
  return { dtype: 'int32', shape, data: Int32Array.from(values), format: 'ND' };
}

/**
 * Run with returnScores and check, row by row: the scores against the float64 reference within
 * the fp32 error bound (−Infinity past eff), the indices exactly equal to the full sort of the
 * returned scores, and the index set equal to the reference's up to near-ties. Returns the result.
 */
export function checkAgainstReference(inputs: LightningIndexerInputs, topk: number, sparseMode: 0 | 3) {
  const [b, s1, heads, dim] = inputs.query.shape as [number, number, number, number];
  const ref = lightningIndexerReference(inputs, { topk, sparseMode });
  const maxAct = ref.scoresShape[2];
  const mag = magnitudes(inputs, ref.eff, maxAct);
  const got = lightningIndexer(inputs, { topk, sparseMode, returnScores: true });
  expect(got.indices.shape).toEqual([b, s1, topk]);
  expect(got.scores!.shape).toEqual([b, s1, maxAct]);
  const sc = got.scores!.data;
  for (let r = 0; r < b * s1; r++) {
    const eff = ref.eff[r]!;
    for (let j = 0; j < maxAct; j++) {
      const o = r * maxAct + j;
      if (j >= eff) {
        if (sc[o] !== -Infinity) throw new Error(`row ${r} key ${j} (eff ${eff}): expected -Infinity, got ${sc[o]}`);
      } else if (!(Math.abs(sc[o]! - ref.scores[o]!) <= tolerance(mag[o]!, heads, dim))) {
        throw new Error(`row ${r} key ${j}: score ${sc[o]} vs reference ${ref.scores[o]}`);
      }
    }
    const ours = got.indices.data.subarray(r * topk, (r + 1) * topk);
    const row = sc.subarray(r * maxAct, (r + 1) * maxAct);
    expect(Array.from(ours)).toEqual(Array.from(exactTopk(row, eff, topk)));
    const refRow = ref.scores.subarray(r * maxAct, (r + 1) * maxAct);
    const why = setMismatch(ours, ref.indices.data.subarray(r * topk, (r + 1) * topk), refRow, (j) =>
      tolerance(mag[r * maxAct + j]!, heads, dim),
    );
    if (why) throw new Error(`row ${r}: ${why}`);
  }
  // The selection without a scores output (thread-local score buffers) picks the same indices.
  const plain = lightningIndexer(inputs, { topk, sparseMode });
  expect(plain.scores).toBeUndefined();
  expect(Array.from(plain.indices.data)).toEqual(Array.from(got.indices.data));
  return got;
}
