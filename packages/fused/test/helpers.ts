import { expect } from 'vitest';
import { bf16ArrayToF32, clone, compareBf16, relativeL2, Rng, toFloat32, toNZ, type Bf16Tensor, type I32Tensor, type U8Tensor } from '@dsa/tensor-core';
import { sparseAttention, type SparseAttentionInputs, type SparseAttentionOptions } from '../src/index.js';
import { sparseAttentionReference } from '../src/reference.js';

export interface ProblemConfig {
  b: number; s1: number; h?: number; qLora?: number; n?: number; qkNope?: number; kvLora?: number; rope?: number;
  idxHeads?: number; idxDim?: number; blockSize?: number; acts: number[]; nz?: boolean; negativeSlot?: boolean;
  extraBlocks?: number;
}

/** The three caches in bf16 (the FP8 forms are uint8, and have no krCache). */
export interface Bf16Caches {
  kvCache: Bf16Tensor;
  krCache: Bf16Tensor;
  indexKCache: Bf16Tensor;
}

/** Inputs with the bf16 caches. */
export type Bf16CacheInputs = SparseAttentionInputs & Bf16Caches;

/** What randomProblem builds: bf16 weights and bf16 caches. */
export type Bf16Problem = Bf16CacheInputs & Record<'wDq' | 'wUqQr' | 'wUk' | 'wDkvKr' | 'wIdxQb' | 'wIdxK' | 'wIdxProj', Bf16Tensor>;

/** A cache the test knows is bf16 (e.g. a reference result's for bf16 inputs); fails the test otherwise. */
export function bf16Cache(what: string, t: Bf16Tensor | U8Tensor | undefined): Bf16Tensor {
  if (t === undefined || t.dtype !== 'bfloat16') return expect.fail(`${what}: expected a bf16 cache, got ${t === undefined ? 'none' : t.dtype}`);
  return t;
}

/** The three caches of inputs, a result or a cache pool the test knows are bf16; fails the test otherwise. */
export function bf16Caches(what: string, c: { kvCache: Bf16Tensor | U8Tensor; krCache?: Bf16Tensor | undefined; indexKCache: Bf16Tensor | U8Tensor }): Bf16Caches {
  return {
    kvCache: bf16Cache(`${what} kvCache`, c.kvCache),
    krCache: bf16Cache(`${what} krCache`, c.krCache),
    indexKCache: bf16Cache(`${what} indexKCache`, c.indexKCache),
  };
}

/** A random, consistent set of the operator's 20 inputs (caches hold random history). */
export function randomProblem(seed: number, c: ProblemConfig): Bf16Problem {
  const rng = new Rng(seed);
  const h = c.h ?? 64, qLora = c.qLora ?? 32, n = c.n ?? 4, qkNope = c.qkNope ?? 16, kvLora = c.kvLora ?? 32;
  const rope = c.rope ?? 8, ih = c.idxHeads ?? 4, id = c.idxDim ?? 16, bs = c.blockSize ?? 8;
  const { b, s1, acts } = c;
  const maxBlocks = Math.max(1, ...acts.map((a) => Math.ceil(a / bs)));
  const used = acts.reduce((s, a) => s + Math.ceil(a / bs), 0);
  const blocks = used + (c.extraBlocks ?? 2);
  const perm = rng.shuffle(Array.from({ length: blocks }, (_, i) => i));
  const blockTable: I32Tensor = { dtype: 'int32', shape: [b, maxBlocks], data: new Int32Array(b * maxBlocks).fill(-1) };
  const cacheIndex: I32Tensor = { dtype: 'int32', shape: [b, s1], data: new Int32Array(b * s1) };
  let next = 0;
  for (let bi = 0; bi < b; bi++) {
    const nb = Math.ceil(acts[bi]! / bs);
    for (let j = 0; j < nb; j++) blockTable.data[bi * maxBlocks + j] = perm[next++]!;
    for (let i = 0; i < s1; i++) {
      const p = acts[bi]! - s1 + i;
      cacheIndex.data[bi * s1 + i] = p < 0 ? -1 : blockTable.data[bi * maxBlocks + Math.floor(p / bs)]! * bs + (p % bs);
    }
  }
  // The first token with a position gets no slot: its key stays whatever the cache held.
  if (c.negativeSlot) {
    const k = cacheIndex.data.findIndex((v) => v >= 0);
    if (k >= 0) cacheIndex.data[k] = -1;
  }
  const w = (K: number, N: number, lo = -0.1, hi = 0.1): Bf16Tensor => {
    const t = rng.uniformTensor([K, N], lo, hi);
    return c.nz && K % 16 === 0 && N % 16 === 0 ? toNZ(t) : t;
  };
  return {
    x: rng.uniformTensor([b, s1, h]),
    wDq: w(h, qLora),
    wUqQr: w(qLora, n * (qkNope + rope)),
    wUk: rng.uniformTensor([n, qkNope, kvLora], -0.1, 0.1),
    wDkvKr: w(h, kvLora + rope),
    gammaCq: rng.uniformTensor([qLora]),
    gammaCkv: rng.uniformTensor([kvLora]),
    sin: rng.uniformTensor([b, s1, rope], -1, 1),
    cos: rng.uniformTensor([b, s1, rope], -1, 1),
    cacheIndex,
    kvCache: rng.uniformTensor([blocks, bs, 1, kvLora]),
    krCache: rng.uniformTensor([blocks, bs, 1, rope]),
    blockTable,
    actSeqs: { dtype: 'int32', shape: [b], data: Int32Array.from(acts) },
    wIdxQb: w(qLora, ih * id, -1, 1),
    wIdxK: w(h, id, -1, 1),
    wIdxProj: w(h, ih, -1, 1),
    inGammaK: rng.uniformTensor([id], 0.5, 1.5),
    inBetaK: rng.uniformTensor([id], -0.1, 0.1),
    indexKCache: rng.uniformTensor([blocks, bs, 1, id]),
  };
}

/** The same inputs with private copies of the three caches. */
export function withFreshCaches<I extends Bf16CacheInputs>(i: I): I {
  return { ...i, kvCache: clone(i.kvCache), krCache: clone(i.krCache), indexKCache: clone(i.indexKCache) };
}

/**
 * Top-k rows compared as sets: an index may differ only where the reference scores tie with the
 * selection boundary within `rel` (spec §4). Returns the number of offending rows.
 */
export function topkMismatches(actual: I32Tensor, expected: I32Tensor, scores: ArrayLike<number>, maxAct: number, rel = 1e-3): number {
  const topk = expected.shape[2]!;
  const rows = expected.data.length / topk;
  let bad = 0;
  for (let r = 0; r < rows; r++) {
    const a = new Set(Array.from(actual.data.subarray(r * topk, (r + 1) * topk)).filter((v) => v >= 0));
    const e = Array.from(expected.data.subarray(r * topk, (r + 1) * topk)).filter((v) => v >= 0);
    const es = new Set(e);
    if (a.size !== es.size) {
      bad++;
      continue;
    }
    const diff = [...a].filter((v) => !es.has(v)).concat(e.filter((v) => !a.has(v)));
    if (diff.length === 0) continue;
    const s = (p: number): number => scores[r * maxAct + p]!;
    const boundary = Math.min(...e.map(s));
    if (!diff.every((p) => Math.abs(s(p) - boundary) <= rel * Math.max(1e-6, Math.abs(boundary)))) bad++;
  }
  return bad;
}

/**
 * A [blocks, bs, 1, d] cache after a call: every row no token of `cacheIndex` writes is `before` byte
 * for byte; each written row on its own is within the spec's relative L2 of `expected` (so one wrong
 * row cannot hide among the many untouched ones), and the written rows together pass the spec's rule.
 */
export function expectCacheRows(what: string, after: Bf16Tensor, before: Bf16Tensor, expected: Bf16Tensor, cacheIndex: I32Tensor): void {
  const d = after.shape[3]!;
  const written = new Set(Array.from(cacheIndex.data).filter((v) => v >= 0));
  for (const row of changedRows(after, before)) expect(written.has(row), `${what}: row ${row} changed but no token writes it`).toBe(true);
  const rows = [...written].sort((a, b) => a - b);
  const pick = (t: Bf16Tensor): Float32Array => {
    const out = new Float32Array(rows.length * d);
    rows.forEach((r, i) => out.set(bf16ArrayToF32(t.data.subarray(r * d, (r + 1) * d)), i * d));
    return out;
  };
  const a = pick(after);
  const e = pick(expected);
  rows.forEach((r, i) => {
    const err = relativeL2(a.subarray(i * d, (i + 1) * d), e.subarray(i * d, (i + 1) * d));
    expect(err, `${what}: written row ${r} relative L2`).toBeLessThanOrEqual(1e-2);
  });
  const all = compareBf16(a, e);
  expect(all.close, `${what}: written rows isclose fraction`).toBeGreaterThanOrEqual(0.97);
}

/** Rows of a [blocks, bs, 1, d] cache that differ between two caches. */
export function changedRows(a: Bf16Tensor, b: Bf16Tensor): number[] {
  const d = a.shape[3]!;
  const rows: number[] = [];
  for (let r = 0; r < a.data.length / d; r++) {
    for (let k = 0; k < d; k++) {
      if (a.data[r * d + k] !== b.data[r * d + k]) {
        rows.push(r);
        break;
      }
    }
  }
  return rows;
}

/** Byte equality of two typed arrays (vitest's deep equality is slow on millions of elements). */
export function sameBytes(a: ArrayBufferView | undefined, b: ArrayBufferView | undefined): boolean {
  if (!a || !b) return a === b;
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

/** The spec's accuracy bar (relative L2 <= 1e-2, isclose on >= `minClose` of the elements). */
export function expectClose(actual: Bf16Tensor, expected: Bf16Tensor, what: string, minClose = 0.97): number {
  const r = compareBf16(toFloat32(actual), toFloat32(expected));
  expect(r.relL2, `${what} relative L2`).toBeLessThanOrEqual(1e-2);
  expect(r.close, `${what} isclose fraction`).toBeGreaterThanOrEqual(minClose);
  return Math.round(r.close * expected.data.length);
}

export function maxAct(i: SparseAttentionInputs): number {
  return Math.max(0, ...Array.from(i.actSeqs.data));
}

/** Check one call against the float64 reference: caches, indices (as sets) and out over the same set. */
export function checkAgainstReference(inputs: Bf16CacheInputs, options: SparseAttentionOptions, mode: 'fused' | 'chain', minClose = 0.97): { out: Bf16Tensor; indices: I32Tensor; closeCount: number } {
  const before = withFreshCaches(inputs);
  const run = withFreshCaches(inputs);
  const r = sparseAttention(run, { ...options, mode, returnIndices: true });
  const ref = sparseAttentionReference(before, options);
  // The caches first: the indices and the output are computed from them.
  for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) expectCacheRows(`${mode} ${k}`, run[k], before[k], bf16Cache(`reference ${k}`, ref[k]), inputs.cacheIndex);
  expect(topkMismatches(r.indices!, ref.indices, ref.scores, maxAct(inputs))).toBe(0);
  const refSame = sparseAttentionReference(withFreshCaches(inputs), options, r.indices);
  const closeCount = expectClose(r.out, refSame.out, `${mode} out`, minClose);
  return { out: r.out, indices: r.indices!, closeCount };
}

