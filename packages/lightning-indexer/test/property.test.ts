// Property tests (fast-check, fixed seeds): random valid configurations against the float64 reference
// on every ISA path, with and without a signal; random invalid inputs that must throw a DsaError
// naming the argument and change no byte; NaN/Inf inputs that must give well-formed indices.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { getNumThreads, isDsaError, setIsa, setNumThreads, type Tensor } from '@dsa/tensor-core';
import { type LightningIndexerInputs, type LightningIndexerOptions, lightningIndexer, lightningIndexerAsync } from '../src/index.js';
import { chunking } from '../src/cancel.js';
import { effectiveKeys } from '../src/reference.js';
import { type Case, checkAgainstReference, isas, makeInputs, sameBytes } from './helpers.js';

const threads0 = getNumThreads();
const budget0 = chunking.budget;
afterAll(() => {
  setIsa('auto');
  setNumThreads(threads0);
  chunking.budget = budget0;
});

const NAMES = ['query', 'weights', 'indexKCache', 'blockTable', 'actSeqs'] as const;
type Name = (typeof NAMES)[number];

const caseArb = fc
  .record({
    b: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    s1: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 2, arbitrary: fc.integer({ min: 5, max: 12 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    heads: fc.integer({ min: 1, max: 20 }),
    dim: fc.integer({ min: 1, max: 40 }),
    blockSize: fc.integer({ min: 1, max: 16 }),
    acts: fc.array(fc.integer({ min: 0, max: 90 }), { minLength: 4, maxLength: 4 }),
    spareBlocks: fc.integer({ min: 0, max: 3 }),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  })
  .map((c): Case => ({ ...c, acts: c.acts.slice(0, c.b) }));

const optionsArb = fc.record({
  topk: fc.oneof(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 13, max: 120 })),
  sparseMode: fc.constantFrom(0 as const, 3 as const),
});

function copies(x: LightningIndexerInputs): Buffer[] {
  return NAMES.map((k) => Buffer.from(x[k].data.buffer, x[k].data.byteOffset, x[k].data.byteLength)).map((b) => Buffer.from(b));
}
const unchanged = (x: LightningIndexerInputs, before: Buffer[]): boolean =>
  NAMES.every((k, n) => Buffer.compare(Buffer.from(x[k].data.buffer, x[k].data.byteOffset, x[k].data.byteLength), before[n]!) === 0);

describe('property: valid configurations', () => {
  it('native matches the float64 reference; async, with or without a signal, gives the same bytes', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, optionsArb, fc.constantFrom(...isas()), fc.integer({ min: 1, max: 6000 }), async (c, o, isa, budget) => {
        setIsa(isa);
        const x = makeInputs(c);
        const before = copies(x);
        const sync = checkAgainstReference(x, o.topk, o.sparseMode);
        chunking.budget = budget;
        const opts: LightningIndexerOptions = { ...o, returnScores: true };
        const [plain, chunked] = await Promise.all([
          lightningIndexerAsync(x, opts),
          lightningIndexerAsync(x, { ...opts, signal: new AbortController().signal }),
        ]);
        for (const r of [plain, chunked]) {
          expect(sameBytes(r.indices.data, sync.indices.data)).toBe(true);
          expect(sameBytes(r.scores!.data, sync.scores!.data)).toBe(true);
        }
        expect(unchanged(x, before)).toBe(true);
      }),
      { numRuns: 150, seed: 20261208 },
    );
  });
});

type Mutation = (x: LightningIndexerInputs, pick: (n: number) => number) => [unknown, unknown, string];

const withShape = (t: Tensor, shape: number[]): Tensor => {
  const n = shape.reduce((a, v) => a * v, 1);
  return { ...t, shape, data: new (t.data.constructor as new (n: number) => Tensor['data'])(n) };
};
// Axes tied to another argument's (a wider block table or a bigger pool would still be valid).
const BOUND: Record<Name, number[]> = { query: [0, 1, 2, 3], weights: [0, 1, 2], indexKCache: [2, 3], blockTable: [0], actSeqs: [0] };

const INVALID: Record<string, Mutation> = {
  'wrong dtype': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    const t = x[k];
    const variants = [
      { ...t, dtype: t.dtype === 'int32' ? 'float32' : 'int32' },
      { ...t, dtype: t.dtype === 'int32' ? 'bfloat16' : 'float32', data: new Float32Array(t.data.length) },
      { ...t, data: new Float64Array(t.data.length) },
    ];
    return [{ ...x, [k]: variants[pick(3)] }, {}, k];
  },
  'a shape that disagrees': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    const axes = BOUND[k];
    const shape = [...x[k].shape];
    const a = axes[pick(axes.length)]!;
    shape[a] = shape[a]! + 1 + pick(3);
    // The first tensor that names a dimension fixes it, so the error names whichever disagrees first.
    return [{ ...x, [k]: withShape(x[k], shape) }, {}, '*'];
  },
  'another rank': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    const shape = pick(2) ? [...x[k].shape, 1] : x[k].shape.slice(1);
    return [{ ...x, [k]: withShape(x[k], shape) }, {}, k];
  },
  'storage not matching the shape': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    const t = x[k];
    const n = pick(2) ? t.data.length + 1 + pick(3) : Math.max(0, t.data.length - 1 - pick(3));
    if (n === t.data.length) return [{ ...x, [k]: { ...t, shape: [-1, ...t.shape.slice(1)] } }, {}, k];
    return [{ ...x, [k]: { ...t, data: new (t.data.constructor as new (n: number) => Tensor['data'])(n) } }, {}, k];
  },
  'bad shape entries': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    const bad = [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3' as unknown as number][pick(5)]!;
    const shape = [...x[k].shape];
    shape[pick(shape.length)] = bad;
    return [{ ...x, [k]: { ...x[k], shape } }, {}, k];
  },
  'a weight format': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    return [{ ...x, [k]: { ...x[k], format: ['NZ', 'PACKED', 'nd'][pick(3)] } }, {}, k];
  },
  'a missing or non-tensor argument': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    return [{ ...x, [k]: [undefined, null, 7, 'tensor', x[k].data][pick(5)] }, {}, k];
  },
  'a table entry that is read is -1 or past the pool': (x, pick) => {
    const b = x.actSeqs.data.length;
    const bs = x.indexKCache.shape[1]!;
    const mb = x.blockTable.shape[1]!;
    const bi = pick(b);
    const used = Math.ceil(x.actSeqs.data[bi]! / bs);
    const table = x.blockTable.data.slice();
    const act = x.actSeqs.data.slice();
    // A sequence without keys reads nothing: give it keys first.
    if (used === 0) act[bi] = 1;
    table[bi * mb + pick(Math.max(used, 1))] = pick(2) ? -1 - pick(5) : x.indexKCache.shape[0]! + pick(100);
    return [{ ...x, blockTable: { ...x.blockTable, data: table }, actSeqs: { ...x.actSeqs, data: act } }, {}, 'blockTable'];
  },
  'act negative or past the table': (x, pick) => {
    const act = x.actSeqs.data.slice();
    act[pick(act.length)] = pick(2) ? -1 - pick(1000) : x.blockTable.shape[1]! * x.indexKCache.shape[1]! + 1 + pick(1000);
    return [{ ...x, actSeqs: { ...x.actSeqs, data: act } }, {}, 'actSeqs'];
  },
  'bad options': (x, pick) => {
    const bad: [object, string][] = [
      [{ topk: 0 }, 'topk'], [{ topk: -3 }, 'topk'], [{ topk: 1.5 }, 'topk'], [{ topk: Number.NaN }, 'topk'], [{ topk: '8' }, 'topk'],
      [{ topk: 2 ** 31 }, 'topk'], [{ sparseMode: 1 }, 'sparseMode'], [{ sparseMode: '3' }, 'sparseMode'], [{ returnScores: 1 }, 'returnScores'],
      [{ signal: {} }, 'signal'], [{ signal: 'stop' }, 'signal'], [{ signal: null }, 'signal'],
    ];
    const [o, name] = bad[pick(bad.length)]!;
    return [x, o, name];
  },
  'inputs or options not an object': (x, pick) => (pick(2) ? [[null, 3, 'x'][pick(3)], {}, 'inputs'] : [x, [null, 3, 'x'][pick(3)], 'options']),
};

describe('property: invalid inputs', () => {
  it('throw (or reject with) a DsaError naming the argument; no input byte changes', async () => {
    const names = Object.keys(INVALID);
    await fc.assert(
      fc.asyncProperty(caseArb.filter((c) => c.b > 0), fc.constantFrom(...names), fc.constantFrom('sync', 'async', 'signal'), fc.integer(), async (c, name, how, seed) => {
        const x = makeInputs(c);
        let s = seed >>> 0;
        const pick = (n: number): number => {
          s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
          return s % n;
        };
        const [inputs, options, argument] = INVALID[name]!(x, pick);
        const before = copies(x);
        let err: unknown;
        try {
          const o = typeof options === 'object' && options !== null ? { topk: 8, ...options } : options;
          if (how === 'sync') lightningIndexer(inputs as LightningIndexerInputs, o as LightningIndexerOptions);
          else {
            const withSignal = how === 'signal' && typeof o === 'object' && o !== null && !('signal' in o) ? { ...o, signal: new AbortController().signal } : o;
            await lightningIndexerAsync(inputs as LightningIndexerInputs, withSignal as LightningIndexerOptions);
          }
        } catch (e) {
          err = e;
        }
        expect(isDsaError(err), `${name}: ${String(err)}`).toBe(true);
        const e = err as { argument?: string; message: string };
        if (argument !== '*') expect(e.argument, `${name}: ${e.message}`).toBe(argument);
        expect(new RegExp(`^${e.argument}(\\[[\\d, ]+\\])?: `).test(e.message), e.message).toBe(true);
        expect(unchanged(x, before)).toBe(true);
      }),
      { numRuns: 300, seed: 4711 },
    );
  });

  it('NaN/Inf inputs give well-formed indices and rows that read none of them are unchanged; NaN gives the defined scores', async () => {
    const POISON = [0x7fc0, 0xffc0, 0x7f80, 0xff80, 0x7f81];
    const isNan = (bits: number): boolean => (bits & 0x7f80) === 0x7f80 && (bits & 0x7f) !== 0;
    await fc.assert(
      fc.asyncProperty(caseArb, optionsArb, fc.constantFrom('query', 'weights', 'indexKCache'), fc.array(fc.nat(), { minLength: 1, maxLength: 6 }), fc.nat(4), fc.constantFrom(...isas()), async (c, o, k, where, bits, isa) => {
        setIsa(isa);
        const clean = makeInputs(c);
        const x = { ...clean, [k]: { ...clean[k], data: clean[k].data.slice() } } as LightningIndexerInputs;
        const data = x[k].data as Uint16Array;
        if (data.length === 0) return;
        for (const w of where) data[w % data.length] = POISON[bits]!;
        const want = lightningIndexer(clean, { ...o, returnScores: true });
        const got = lightningIndexer(x, { ...o, returnScores: true });
        const chunked = await lightningIndexerAsync(x, { ...o, returnScores: true, signal: new AbortController().signal });
        expect(sameBytes(chunked.indices.data, got.indices.data)).toBe(true);
        expect(sameBytes(chunked.scores!.data, got.scores!.data)).toBe(true);
        const [b, s1, heads, dim] = x.query.shape as [number, number, number, number];
        const bs = x.indexKCache.shape[1]!;
        const mb = x.blockTable.shape[1]!;
        const maxAct = got.scores!.shape[2]!;
        const touched = (arr: Uint16Array, from: number, to: number): boolean => {
          for (let e = from; e < to; e++) if (arr[e] !== (clean[k].data as Uint16Array)[e]) return true;
          return false;
        };
        const nan = isNan(POISON[bits]!);
        // NaN in query[r, h]: ReLU maps the NaN dot products to 0, as if weights[r, h] were 0.
        const dropped = nan && k === 'query'
          ? lightningIndexer({ ...clean, weights: { ...clean.weights, data: clean.weights.data.map((v, i) => (touched(data, i * dim, (i + 1) * dim) ? 0 : v)) } }, { ...o, returnScores: true })
          : undefined;
        for (let r = 0; r < b * s1; r++) {
          const bi = Math.floor(r / s1);
          const eff = effectiveKeys(x.actSeqs.data[bi]!, s1, r % s1, o.sparseMode);
          const row = Array.from(got.indices.data.subarray(r * o.topk, (r + 1) * o.topk));
          const scores = got.scores!.data.subarray(r * maxAct, (r + 1) * maxAct);
          const n = Math.min(o.topk, Math.max(eff, 0));
          const picked = row.slice(0, n);
          expect(new Set(picked).size).toBe(n);
          expect(picked.every((j) => j >= 0 && j < eff)).toBe(true);
          expect(row.slice(n).every((j) => j === -1)).toBe(true);
          const keyHit = (j: number): boolean => {
            const slot = x.blockTable.data[bi * mb + Math.floor(j / bs)]! * bs + (j % bs);
            return touched(data, slot * dim, (slot + 1) * dim);
          };
          let poisoned = k === 'query' ? touched(data, r * heads * dim, (r + 1) * heads * dim) : k === 'weights' ? touched(data, r * heads, (r + 1) * heads) : false;
          for (let j = 0; k === 'indexKCache' && !poisoned && j < eff; j++) poisoned = keyHit(j);
          if (!poisoned) {
            expect(row).toEqual(Array.from(want.indices.data.subarray(r * o.topk, (r + 1) * o.topk)));
            expect(sameBytes(scores, want.scores!.data.subarray(r * maxAct, (r + 1) * maxAct))).toBe(true);
          } else if (dropped) {
            expect(row, `${isa} row ${r}`).toEqual(Array.from(dropped.indices.data.subarray(r * o.topk, (r + 1) * o.topk)));
            expect(sameBytes(scores, dropped.scores!.data.subarray(r * maxAct, (r + 1) * maxAct)), `${isa} row ${r} scores`).toBe(true);
          } else if (nan && k === 'weights') {
            // A NaN weight makes every score of its row NaN: all tie, so the first positions win.
            expect(Array.from(scores.subarray(0, eff)).every(Number.isNaN), `${isa} row ${r}: NaN scores`).toBe(true);
            expect(picked, `${isa} row ${r}`).toEqual(Array.from({ length: n }, (_, j) => j));
          } else if (nan) {
            // A NaN in key j: every head's ReLU gives 0, so its score is 0; the other keys score as before.
            const clean = want.scores!.data.subarray(r * maxAct, (r + 1) * maxAct);
            for (let j = 0; j < eff; j++) expect(scores[j], `${isa} row ${r} key ${j}`).toBe(keyHit(j) ? 0 : clean[j]);
          }
        }
        setIsa('auto');
      }),
      { numRuns: 60, seed: 99 },
    );
  });
});
