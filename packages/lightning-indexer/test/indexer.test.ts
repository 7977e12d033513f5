import { afterAll, describe, expect, it } from 'vitest';
import { getNumThreads, type Isa, readGoldenCase, setIsa, setNumThreads, type Tensor } from '@dsa/tensor-core';
import { type LightningIndexerInputs, lightningIndexer, nativeAddon } from '../src/index.js';
import { lightningIndexerReference } from '../src/reference.js';
import {
  type Case, checkAgainstReference, exactTopk, GOLDEN, isas, magnitudes, makeInputs, POISON_I32, sameBytes, setMismatch, tolerance,
} from './helpers.js';
import { join } from 'node:path';

const threads0 = getNumThreads();
afterAll(() => {
  setIsa('auto');
  setNumThreads(threads0);
});

const cases: [string, Case, number][] = [
  ['tiny odd dims, act 1 and partial blocks', { b: 3, s1: 2, heads: 3, dim: 5, blockSize: 4, acts: [1, 7, 13], seed: 1 }, 5],
  ['heads 17 x dim 33 (odd dim, head remainder)', { b: 2, s1: 1, heads: 17, dim: 33, blockSize: 16, acts: [100, 37], seed: 2 }, 16],
  ['MTP s1 = 4 with act < s1 (no-key rows)', { b: 3, s1: 4, heads: 40, dim: 64, blockSize: 8, acts: [3, 50, 0], seed: 3 }, 8],
  ['80 heads (two head groups), topk > act', { b: 2, s1: 2, heads: 80, dim: 16, blockSize: 16, acts: [20, 45], seed: 4 }, 64],
  ['prefill rows, 40 queries', { b: 1, s1: 40, heads: 4, dim: 16, blockSize: 16, acts: [100], seed: 5 }, 16],
  ['DeepSeek dims 64 x 128, block 128, multi-chunk rows', { b: 2, s1: 1, heads: 64, dim: 128, blockSize: 128, acts: [300, 2500], spareBlocks: 3, seed: 6 }, 256],
  ['act = 1 everywhere', { b: 2, s1: 1, heads: 2, dim: 3, blockSize: 2, acts: [1, 1], seed: 7 }, 4],
];

describe.each(isas())('lightningIndexer on the %s path', (isa: Isa) => {
  it.each(cases)('%s: matches the float64 reference (sparseMode 3 and 0)', (_name, c, topk) => {
    setIsa(isa);
    const inputs = makeInputs(c);
    checkAgainstReference(inputs, topk, 3);
    checkAgainstReference(inputs, topk, 0);
  });

  it('long rows split into many chunks: merge, ties across chunk boundaries, 1 and 2 threads agree', () => {
    setIsa(isa);
    const c: Case = { b: 2, s1: 2, heads: 3, dim: 8, blockSize: 64, acts: [20000, 9001], seed: 8 };
    const inputs = makeInputs(c);
    const got = checkAgainstReference(inputs, 300, 3);
    // Duplicate five key rows over the whole cache: every score ties with thousands of others.
    const dup = structuredClone(inputs);
    const k = dup.indexKCache.data;
    const row = c.dim;
    for (let s = 0; s < k.length / row; s++) k.copyWithin(s * row, (s % 5) * row, (s % 5) * row + row);
    const tied = checkAgainstReference(dup, 300, 3);
    for (const t of [1, 2]) {
      setNumThreads(t);
      expect(sameBytes(lightningIndexer(inputs, { topk: 300, returnScores: true }).scores!.data, got.scores!.data)).toBe(true);
      expect(Array.from(lightningIndexer(dup, { topk: 300 }).indices.data)).toEqual(Array.from(tied.indices.data));
    }
    setNumThreads(threads0);
  });
});

describe('long prefill', () => {
  it('more candidates than one wave holds (2M): rows in several waves, every row exact', () => {
    setIsa('auto');
    // 1100 rows x 2100 keys, all kept (topk = act): 2.31M candidates > the 2M of one wave.
    const x = makeInputs({ b: 1, s1: 1100, heads: 2, dim: 4, blockSize: 64, acts: [2100], seed: 15 });
    const topk = 2100;
    const got = lightningIndexer(x, { topk, sparseMode: 0, returnScores: true });
    const sc = got.scores!.data;
    for (let r = 0; r < 1100; r++) {
      const want = exactTopk(sc.subarray(r * 2100, (r + 1) * 2100), 2100, topk);
      const ours = got.indices.data.subarray(r * topk, (r + 1) * topk);
      if (!want.every((v, t) => v === ours[t])) throw new Error(`row ${r}: indices differ from the sort of its scores`);
    }
    expect(sameBytes(lightningIndexer(x, { topk, sparseMode: 0 }).indices.data, got.indices.data)).toBe(true);
    // Spot-check a few rows' scores against the float64 reference.
    const one = { ...x, query: { ...x.query, shape: [1, 1, 2, 4], data: x.query.data.slice(777 * 8, 778 * 8) },
      weights: { ...x.weights, shape: [1, 1, 2], data: x.weights.data.slice(777 * 2, 778 * 2) } };
    const ref = lightningIndexerReference(one, { topk, sparseMode: 0 });
    const mag = magnitudes(one, ref.eff, 2100);
    for (let j = 0; j < 2100; j++) expect(Math.abs(sc[777 * 2100 + j]! - ref.scores[j]!)).toBeLessThanOrEqual(tolerance(mag[j]!, 2, 4));
  });
});

describe('exact ties', () => {
  it.each(isas())('identical keys resolve to the smaller positions (%s)', (isa) => {
    setIsa(isa);
    const c: Case = { b: 1, s1: 1, heads: 4, dim: 8, blockSize: 4, acts: [40], seed: 9 };
    const inputs = makeInputs(c);
    const k = inputs.indexKCache.data;
    const table = inputs.blockTable.data;
    const slot = (j: number) => table[Math.floor(j / 4)]! * 4 + (j % 4);
    // Positions 3, 17, 18, 30 and 39 all hold the key of position 5.
    for (const j of [3, 17, 18, 30, 39]) k.copyWithin(slot(j) * 8, slot(5) * 8, slot(5) * 8 + 8);
    const { indices, scores } = lightningIndexer(inputs, { topk: 40, returnScores: true });
    const s = scores!.data;
    const group = [3, 5, 17, 18, 30, 39];
    for (const j of group) expect(s[j]).toBe(s[5]);
    const order = Array.from(indices.data);
    const at = group.map((j) => order.indexOf(j));
    expect(at).toEqual([...at].sort((x, y) => x - y)); // ascending positions inside the tie
    expect(at[5]! - at[0]!).toBe(5); // and adjacent
    // Cut the top-k inside the tie group: the smaller positions win.
    const cut = at[0]! + 3;
    const part = lightningIndexer(inputs, { topk: cut }).indices.data;
    expect(Array.from(part.slice(at[0]!))).toEqual([3, 5, 17]);
  });

  it('zero and negative scores tie by position (negative weights, ReLU zeros)', () => {
    const c: Case = { b: 1, s1: 1, heads: 2, dim: 4, blockSize: 8, acts: [8], seed: 10 };
    const inputs = makeInputs(c);
    inputs.weights.data.set([0xbf80, 0xbf80]); // w = −1
    const k = inputs.indexKCache.data;
    const slot0 = inputs.blockTable.data[0]! * 8;
    for (let j = 0; j < 8; j++) {
      const o = (slot0 + j) * 4;
      if (j % 2 === 0) k.fill(0, o, o + 4);
      else k.set([0x3f80, 0x3f80, 0x3f80, 0x3f80], o);
    }
    // q = +1 on head 0 only: odd keys score −4, zero keys score 0 (each w · ReLU(0) may be −0).
    inputs.query.data.fill(0);
    inputs.query.data.fill(0x3f80, 0, 4);
    const { indices } = lightningIndexer(inputs, { topk: 8 });
    expect(Array.from(indices.data)).toEqual([0, 2, 4, 6, 1, 3, 5, 7]);
  });
});

describe('edge rows', () => {
  it('a sequence with act = 0 and rows with no keys get −1 and −Infinity scores', () => {
    const inputs = makeInputs({ b: 2, s1: 3, heads: 2, dim: 4, blockSize: 4, acts: [0, 2], seed: 11 });
    const { indices, scores } = lightningIndexer(inputs, { topk: 3, returnScores: true });
    expect(scores!.shape).toEqual([2, 3, 2]);
    const idx = Array.from(indices.data);
    expect(idx.slice(0, 9)).toEqual(new Array(9).fill(-1)); // act 0
    expect(idx.slice(9, 12)).toEqual([-1, -1, -1]); // row 0 of act 2: eff 0
    expect(idx.slice(12, 15).filter((j) => j >= 0)).toEqual([0]); // eff 1
    expect(idx.slice(15, 18).filter((j) => j >= 0).sort()).toEqual([0, 1]);
    expect(Array.from(scores!.data.slice(0, 8))).toEqual(new Array(8).fill(-Infinity));
    expect(scores!.data[9]).toBe(-Infinity);
    expect(Number.isFinite(scores!.data[8])).toBe(true);
  });

  it('b = 0 and s1 = 0 give empty outputs', () => {
    const e = makeInputs({ b: 1, s1: 1, heads: 2, dim: 4, blockSize: 4, acts: [3], seed: 12 });
    const empty: LightningIndexerInputs = {
      ...e,
      query: { ...e.query, shape: [1, 0, 2, 4], data: new Uint16Array(0) },
      weights: { ...e.weights, shape: [1, 0, 2], data: new Uint16Array(0) },
    };
    expect(lightningIndexer(empty, { topk: 4 }).indices.shape).toEqual([1, 0, 4]);
    const none: LightningIndexerInputs = {
      query: { ...e.query, shape: [0, 1, 2, 4], data: new Uint16Array(0) },
      weights: { ...e.weights, shape: [0, 1, 2], data: new Uint16Array(0) },
      indexKCache: e.indexKCache,
      blockTable: { ...e.blockTable, shape: [0, 2], data: new Int32Array(0) },
      actSeqs: { ...e.actSeqs, shape: [0], data: new Int32Array(0) },
    };
    const r = lightningIndexer(none, { topk: 4, returnScores: true });
    expect(r.indices.shape).toEqual([0, 1, 4]);
    expect(r.scores!.shape).toEqual([0, 1, 0]);
  });

  it('the default topk is 2048 (and pads with −1)', () => {
    const inputs = makeInputs({ b: 1, s1: 1, heads: 2, dim: 4, blockSize: 16, acts: [30], seed: 13 });
    const { indices } = lightningIndexer(inputs);
    expect(indices.shape).toEqual([1, 1, 2048]);
    expect(indices.data.slice(30).every((v) => v === -1)).toBe(true);
    expect(new Set(indices.data.slice(0, 30)).size).toBe(30);
  });
});

describe('caller-provided outputs (the C++ run() on poisoned buffers)', () => {
  it.each(isas())('writes every index and score (%s)', (isa) => {
    setIsa(isa);
    const inputs = makeInputs({ b: 2, s1: 3, heads: 5, dim: 9, blockSize: 8, acts: [2, 77], seed: 14 });
    const want = lightningIndexer(inputs, { topk: 10, returnScores: true });
    const indices = { dtype: 'int32' as const, shape: [2, 3, 10], data: new Int32Array(60).fill(POISON_I32) };
    const scores = { dtype: 'float32' as const, shape: [2, 3, 77], data: new Float32Array(2 * 3 * 77).fill(NaN) };
    const x = inputs;
    nativeAddon().run(x.query, x.weights, x.indexKCache, x.blockTable, x.actSeqs, indices, scores, 10, 3);
    expect(Array.from(indices.data)).toEqual(Array.from(want.indices.data));
    expect(sameBytes(scores.data, want.scores!.data)).toBe(true);
    const alone = { ...indices, data: new Int32Array(60).fill(POISON_I32) };
    nativeAddon().run(x.query, x.weights, x.indexKCache, x.blockTable, x.actSeqs, alone, null, 10, 3);
    expect(Array.from(alone.data)).toEqual(Array.from(want.indices.data));
  });
});

describe('golden cases (independent float64 implementation)', () => {
  const names = ['tiny', 'mtp-empty-row', 'prefill', 'model-heads', 'skip-slot'];
  const load = (name: string) => {
    const g = readGoldenCase(join(GOLDEN, name));
    const inputs: LightningIndexerInputs = {
      query: g.outputs.query as Tensor<'bfloat16'>,
      weights: g.outputs.weights as Tensor<'bfloat16'>,
      indexKCache: g.outputs.indexKCache as Tensor<'bfloat16'>,
      blockTable: g.inputs.blockTable as Tensor<'int32'>,
      actSeqs: g.inputs.actSeqs as Tensor<'int32'>,
    };
    return { g, inputs };
  };

  it.each(names)('%s: scores and index sets match', (name) => {
    const { g, inputs } = load(name);
    const topk = g.options.topk as number;
    const sparseMode = g.options.sparseMode as 0 | 3;
    const [b, s1, heads, dim] = inputs.query.shape as [number, number, number, number];
    const want = g.outputs.scores!.data as Float32Array;
    const wantIdx = g.outputs.indices!.data as Int32Array;
    const ref = lightningIndexerReference(inputs, { topk, sparseMode });
    const mag = magnitudes(inputs, ref.eff, ref.scoresShape[2]);
    for (const isa of isas()) {
      setIsa(isa);
      const got = lightningIndexer(inputs, { topk, sparseMode, returnScores: true });
      expect(got.scores!.shape).toEqual(g.outputs.scores!.shape);
      const sc = got.scores!.data;
      for (let o = 0; o < want.length; o++) {
        if (want[o] === -Infinity) expect(sc[o]).toBe(-Infinity);
        else expect(Math.abs(sc[o]! - want[o]!)).toBeLessThanOrEqual(tolerance(mag[o]!, heads, dim) + 2 ** -23 * Math.abs(want[o]!));
      }
      const maxAct = ref.scoresShape[2];
      for (let r = 0; r < b * s1; r++) {
        const ours = got.indices.data.subarray(r * topk, (r + 1) * topk);
        const why = setMismatch(ours, wantIdx.subarray(r * topk, (r + 1) * topk), want.subarray(r * maxAct, (r + 1) * maxAct), (j) =>
          tolerance(mag[r * maxAct + j]!, heads, dim),
        );
        if (why) throw new Error(`${name} row ${r} (${isa}): ${why}`);
      }
    }
  });

  // The float64 reference is the yardstick of the other tests: it agrees with the golden too.
  it.each(names)('%s: the float64 reference matches the golden', (name) => {
    const { g, inputs } = load(name);
    const topk = g.options.topk as number;
    const ref = lightningIndexerReference(inputs, { topk, sparseMode: g.options.sparseMode as 0 | 3 });
    const want = g.outputs.scores!.data as Float32Array;
    const wantIdx = g.outputs.indices!.data as Int32Array;
    expect(ref.scoresShape).toEqual(g.outputs.scores!.shape);
    const [b, s1, heads, dim] = inputs.query.shape as [number, number, number, number];
    const mag = magnitudes(inputs, ref.eff, ref.scoresShape[2]);
    for (let o = 0; o < want.length; o++) {
      // The golden stores float64 scores as float32: one float32 rounding apart at most.
      if (want[o] === -Infinity) expect(ref.scores[o], `score ${o}`).toBe(-Infinity);
      else expect(Math.abs(ref.scores[o]! - want[o]!), `score ${o}`).toBeLessThanOrEqual(2 ** -24 * Math.abs(want[o]!) + 1e-30);
    }
    const maxAct = ref.scoresShape[2];
    for (let r = 0; r < b * s1; r++) {
      const why = setMismatch(ref.indices.data.subarray(r * topk, (r + 1) * topk), wantIdx.subarray(r * topk, (r + 1) * topk),
        want.subarray(r * maxAct, (r + 1) * maxAct), (j) => tolerance(mag[r * maxAct + j]!, heads, dim));
      if (why) throw new Error(`${name} reference row ${r}: ${why}`);
    }
  });

  // The goldens use sparseMode 3. The last query row of each sequence sees act keys under both rules,
  // so those rows check sparseMode 0 against the golden too (all rows of tiny, where s1 = 1).
  it.each(names)('%s: sparseMode 0 gives the golden result on the last row of each sequence', (name) => {
    const { g, inputs } = load(name);
    const topk = g.options.topk as number;
    const [b, s1, heads, dim] = inputs.query.shape as [number, number, number, number];
    const want = g.outputs.scores!.data as Float32Array;
    const wantIdx = g.outputs.indices!.data as Int32Array;
    const ref = lightningIndexerReference(inputs, { topk, sparseMode: 0 });
    const got = lightningIndexer(inputs, { topk, sparseMode: 0, returnScores: true });
    const maxAct = ref.scoresShape[2];
    const mag = magnitudes(inputs, ref.eff, maxAct);
    for (let bi = 0; bi < b; bi++) {
      const r = bi * s1 + s1 - 1;
      for (let j = 0; j < maxAct; j++) {
        const w = want[r * maxAct + j]!;
        if (w === -Infinity) {
          expect(got.scores!.data[r * maxAct + j], `${name} row ${r} key ${j}`).toBe(-Infinity);
          expect(ref.scores[r * maxAct + j], `${name} row ${r} key ${j}`).toBe(-Infinity);
        } else {
          expect(Math.abs(got.scores!.data[r * maxAct + j]! - w)).toBeLessThanOrEqual(tolerance(mag[r * maxAct + j]!, heads, dim) + 2 ** -23 * Math.abs(w));
          expect(Math.abs(ref.scores[r * maxAct + j]! - w)).toBeLessThanOrEqual(2 ** -24 * Math.abs(w) + 1e-30);
        }
      }
      for (const [who, idx] of [['native', got.indices.data], ['reference', ref.indices.data]] as const) {
        const why = setMismatch(idx.subarray(r * topk, (r + 1) * topk), wantIdx.subarray(r * topk, (r + 1) * topk), want.subarray(r * maxAct, (r + 1) * maxAct),
          (j) => tolerance(mag[r * maxAct + j]!, heads, dim));
        if (why) throw new Error(`${name} ${who} row ${r}: ${why}`);
      }
    }
  });
});
