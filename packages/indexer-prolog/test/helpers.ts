// Shared test helpers: seeded random cases, weight formats, poisoned caches and the comparison rule.
import { bf16ArrayToF32, type Bf16Tensor, compareBf16, type I32Tensor, packWeights, Rng, toNZ, type U8Tensor } from '@dsa/tensor-core';
import { expect } from 'vitest';
import type { IndexerPrologInputs } from '../src/index.js';

export interface Dims {
  b: number;
  s1: number;
  h: number;
  qLora: number;
  heads: number;
  di: number;
  rope: number;
  blocks: number;
  blockSize: number;
}

/** bf16 quiet NaN: an element left unwritten over this poison fails every comparison. */
export const POISON = 0x7fc0;

export type WeightFormat = 'ND' | 'NZ' | 'PACKED';

/** Inputs with the bf16 key cache (the FP8 cache is uint8). */
export type Bf16CacheInputs = IndexerPrologInputs & { indexKCache: Bf16Tensor };

/** What makeCase builds: bf16 weights and the bf16 key cache. */
export type Bf16Case = Bf16CacheInputs & { wIdxQb: Bf16Tensor; wIdxK: Bf16Tensor; wIdxProj: Bf16Tensor };

/** A cache the test knows is bf16 (a reference result's indexKCache for a bf16 cache); fails the test otherwise. */
export function bf16Cache(name: string, t: Bf16Tensor | U8Tensor): Bf16Tensor {
  if (t.dtype !== 'bfloat16') return expect.fail(`${name}: expected a bf16 cache, got ${t.dtype}`);
  return t;
}

/** A random case; slots are distinct, scattered over the cache, with one negative when T > 2. */
export function makeCase(d: Dims, seed: number): Bf16Case {
  const rng = new Rng(seed);
  const T = d.b * d.s1;
  const rows = d.blocks * d.blockSize;
  const slots = rng.shuffle(Array.from({ length: rows }, (_, i) => i)).slice(0, T);
  if (T > 2) slots[1] = -1 - rng.int(0, 5);
  const cacheIndex: I32Tensor = { dtype: 'int32', shape: [d.b, d.s1], data: Int32Array.from(slots), format: 'ND' };
  return {
    x: rng.uniformTensor([d.b, d.s1, d.h]),
    qNorm: rng.uniformTensor([d.b, d.s1, d.qLora], -2, 2),
    wIdxQb: rng.uniformTensor([d.qLora, d.heads * d.di], -0.2, 0.2),
    wIdxK: rng.uniformTensor([d.h, d.di], -0.2, 0.2),
    wIdxProj: rng.uniformTensor([d.h, d.heads], -0.2, 0.2),
    inGammaK: rng.uniformTensor([d.di], 0.5, 1.5),
    inBetaK: rng.uniformTensor([d.di], -0.5, 0.5),
    sin: rng.uniformTensor([d.b, d.s1, d.rope]),
    cos: rng.uniformTensor([d.b, d.s1, d.rope]),
    cacheIndex,
    indexKCache: rng.uniformTensor([d.blocks, d.blockSize, 1, d.di], -3, 3),
  };
}

/** The weight in `format`; NZ only where K and N are multiples of 16 (ND otherwise, as the goldens do). */
export function inFormat(w: Bf16Tensor, format: WeightFormat): Bf16Tensor {
  if (format === 'PACKED') return packWeights(w);
  if (format === 'NZ' && w.shape[0]! % 16 === 0 && w.shape[1]! % 16 === 0) return toNZ(w);
  return w;
}

export function withFormat(inputs: Bf16Case, format: WeightFormat): Bf16Case {
  return {
    ...inputs,
    wIdxQb: inFormat(inputs.wIdxQb, format),
    wIdxK: inFormat(inputs.wIdxK, format),
    wIdxProj: inFormat(inputs.wIdxProj, format),
  };
}

/** A copy of the inputs whose cache has the rows this call writes set to NaN (and its own storage). */
export function poisoned<I extends Bf16CacheInputs>(inputs: I): I {
  const di = inputs.indexKCache.shape[3]!;
  const cache = inputs.indexKCache.data.slice();
  for (const s of inputs.cacheIndex.data) if (s >= 0) cache.fill(POISON, s * di, (s + 1) * di);
  return { ...inputs, indexKCache: { ...inputs.indexKCache, data: cache } };
}

/** Fraction of elements within one bf16 ulp of the reference (both bf16 bit patterns). */
export function withinUlp(actual: Uint16Array, expected: Uint16Array): number {
  if (expected.length === 0) return 1;
  const a = bf16ArrayToF32(actual);
  const e = bf16ArrayToF32(expected);
  let ok = 0;
  for (let i = 0; i < e.length; i++) {
    const ulp = e[i] === 0 ? 2 ** -133 : 2 ** (Math.floor(Math.log2(Math.abs(e[i]!))) - 7);
    if (Math.abs(a[i]! - e[i]!) <= ulp) ok++;
  }
  return ok / e.length;
}

/** The spec's rule (relL2 ≤ 1e-2, isclose on ≥ 97%) plus ≥ 99.5% within one ulp and no NaN. */
export function expectBf16Close(actual: Uint16Array, expected: Uint16Array, what: string): void {
  expect(actual.length, what).toBe(expected.length);
  const a = bf16ArrayToF32(actual);
  expect(a.some(Number.isNaN), `${what}: NaN in the output`).toBe(false);
  const c = compareBf16(a, bf16ArrayToF32(expected));
  expect(c.pass, `${what}: relL2 ${c.relL2}, isclose ${c.close}`).toBe(true);
  expect(withinUlp(actual, expected), `${what}: within one ulp`).toBeGreaterThanOrEqual(0.995);
}

/** Written rows close to the reference cache; every other byte identical to `before`. */
export function expectCache(after: Uint16Array, expected: Uint16Array, before: Uint16Array, slots: Int32Array, di: number, what: string): void {
  const written = new Set<number>();
  for (const s of slots) if (s >= 0) written.add(s);
  const rowsA: number[] = [];
  const rowsE: number[] = [];
  for (let r = 0; r < after.length / di; r++) {
    for (let d = 0; d < di; d++) {
      const i = r * di + d;
      if (written.has(r)) {
        rowsA.push(after[i]!);
        rowsE.push(expected[i]!);
      } else if (after[i] !== before[i]) {
        expect.fail(`${what}: cache row ${r} is not written by this call but element ${d} changed`);
      }
    }
  }
  expectBf16Close(Uint16Array.from(rowsA), Uint16Array.from(rowsE), `${what} written rows`);
}
