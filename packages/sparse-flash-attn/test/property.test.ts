// Property tests (fast-check, fixed seeds): random valid configurations against the float64 reference
// on every ISA path, with and without a signal; random invalid inputs that must throw a DsaError
// naming the argument and change no byte; NaN/Inf inputs that must leave the other rows as they were.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ArrayToF32, cpuFeatures, ISAS, isDsaError, iscloseFraction, relativeL2, setIsa, type Tensor } from '@dsa/tensor-core';
import { rowEff, sparseFlashAttention, sparseFlashAttentionAsync, type SparseFlashAttentionInputs, type SparseFlashAttentionOptions } from '../src/index.js';
import { chunking } from '../src/cancel.js';
import { sparseFlashAttentionReference } from '../src/reference.js';
import { makeCase, sameBytes, type Bf16CacheInputs, type CaseSpec } from './cases.js';

const best = cpuFeatures().best;
const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(best));
const budget0 = chunking.budget;
afterAll(() => {
  setIsa('auto');
  chunking.budget = budget0;
});

const NAMES = ['qNope', 'qRope', 'kvCache', 'krCache', 'indices', 'blockTable', 'actSeqs'] as const;
type Name = (typeof NAMES)[number];

const specArb = fc
  .record({
    b: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    s1: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 2, arbitrary: fc.integer({ min: 5, max: 10 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    n: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 20 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    kvLora: fc.integer({ min: 1, max: 48 }),
    rope: fc.integer({ min: 0, max: 12 }),
    blockSize: fc.integer({ min: 1, max: 16 }),
    // topk >= 256 cuts each row's indices into two merged splits (keys in one half only, or both).
    topk: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 40 }) }, { weight: 2, arbitrary: fc.integer({ min: 256, max: 300 }) }),
    acts: fc.array(fc.integer({ min: 0, max: 70 }), { minLength: 4, maxLength: 4 }),
    sparseMode: fc.constantFrom(0 as const, 3 as const),
    count: fc.oneof(fc.constantFrom('full' as const, 'random' as const), fc.integer({ min: 0, max: 5 })),
    holes: fc.boolean(),
    qStd: fc.constantFrom(0.5, 1, 3),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  })
  .map((c): CaseSpec & { seed: number } => ({ ...c, acts: c.acts.slice(0, c.b) }));

function copies(x: Bf16CacheInputs): Buffer[] {
  return NAMES.map((k) => Buffer.from(Buffer.from(x[k].data.buffer, x[k].data.byteOffset, x[k].data.byteLength)));
}
const unchanged = (x: Bf16CacheInputs, before: Buffer[]): boolean =>
  NAMES.every((k, n) => Buffer.compare(Buffer.from(x[k].data.buffer, x[k].data.byteOffset, x[k].data.byteLength), before[n]!) === 0);

/** Repeat some valid index of a row in one of its −1 entries (the key then counts twice, as in the reference). */
function duplicate(x: SparseFlashAttentionInputs, pick: number): void {
  const topk = x.indices.shape[2]!;
  const rows = x.indices.data.length / Math.max(topk, 1);
  for (let r = 0; r < rows; r++) {
    const row = x.indices.data.subarray(r * topk, (r + 1) * topk);
    const valid = Array.from(row).filter((p) => p >= 0);
    const free = row.indexOf(-1);
    if (valid.length > 0 && free >= 0 && (r + pick) % 2 === 0) row[free] = valid[pick % valid.length]!;
  }
}

describe('property: valid configurations', () => {
  it('native matches the float64 reference; async, with or without a signal, gives the same bytes', async () => {
    // The isclose rule (>= 97% of elements) is statistical: on an output of a few values one element
    // near a cancellation decides it. Each case must pass relative L2 (and a loose floor when it has
    // 64 elements or more); the 97% rule holds over all outputs of the run together.
    let close = 0;
    let total = 0;
    await fc.assert(
      fc.asyncProperty(specArb, fc.constantFrom(...isas), fc.option(fc.oneof(fc.double({ min: 0.02, max: 2, noNaN: true }), fc.constantFrom(1e-45, 1e-30, 2 ** -126))), fc.nat(), fc.integer({ min: 1, max: 20000 }), async (spec, isa, scale, dup, budget) => {
        setIsa(isa);
        const x = makeCase(spec.seed, spec).inputs;
        if (dup % 3 === 0) duplicate(x, dup);
        const options: SparseFlashAttentionOptions = { sparseMode: spec.sparseMode, softmaxScale: scale ?? undefined };
        const before = copies(x);
        const got = sparseFlashAttention(x, options).out;
        const ref = sparseFlashAttentionReference(x, options).out;
        expect(got.shape).toEqual(ref.shape);
        const a = bf16ArrayToF32(got.data);
        const e = bf16ArrayToF32(ref.data);
        expect(a.some(Number.isNaN)).toBe(false);
        expect(relativeL2(a, e)).toBeLessThanOrEqual(1e-2);
        const frac = iscloseFraction(a, e);
        if (a.length >= 64) expect(frac).toBeGreaterThanOrEqual(0.85);
        close += frac * a.length;
        total += a.length;
        // Rows without keys are exact zeros.
        const { b, s1, n, kvLora } = { b: spec.b, s1: spec.s1, n: spec.n, kvLora: spec.kvLora };
        for (let r = 0; r < b * s1; r++) {
          if (rowEff(spec.acts[Math.floor(r / s1)]!, s1, r % s1, spec.sparseMode ?? 3) > 0) continue;
          expect(got.data.subarray(r * n * kvLora, (r + 1) * n * kvLora).every((v) => v === 0)).toBe(true);
        }
        chunking.budget = budget;
        const [plain, chunked] = await Promise.all([
          sparseFlashAttentionAsync(x, options),
          sparseFlashAttentionAsync(x, { ...options, signal: new AbortController().signal }),
        ]);
        expect(sameBytes(plain.out.data, got.data)).toBe(true);
        expect(sameBytes(chunked.out.data, got.data)).toBe(true);
        expect(unchanged(x, before)).toBe(true);
      }),
      { numRuns: 150, seed: 20261208 },
    );
    expect(close / total).toBeGreaterThanOrEqual(0.97);
  });
});

type Mutation = (x: Bf16CacheInputs, pick: (n: number) => number) => [unknown, unknown, string];

const withShape = (t: Tensor, shape: number[]): Tensor => {
  const n = shape.reduce((a, v) => a * v, 1);
  return { ...t, shape, data: new (t.data.constructor as new (n: number) => Tensor['data'])(n) };
};
// Axes tied to another argument's (topk, a wider table or a bigger pool would still be valid).
const BOUND: Record<Name, number[]> = {
  qNope: [0, 1, 2, 3], qRope: [0, 1, 2, 3], kvCache: [0, 1, 2, 3], krCache: [0, 1, 2, 3], indices: [0, 1], blockTable: [0], actSeqs: [0],
};
/** A row with at least one valid index, and its first valid slot: [row, t, position], or undefined. */
function validEntry(x: SparseFlashAttentionInputs, pick: (n: number) => number): [number, number, number] | undefined {
  const topk = x.indices.shape[2]!;
  const hits: [number, number, number][] = [];
  x.indices.data.forEach((p, o) => p >= 0 && hits.push([Math.floor(o / topk), o % topk, p]));
  return hits.length ? hits[pick(hits.length)] : undefined;
}

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
    const n = pick(2) || t.data.length === 0 ? t.data.length + 1 + pick(3) : Math.max(0, t.data.length - 1 - pick(3));
    return [{ ...x, [k]: { ...t, data: new (t.data.constructor as new (n: number) => Tensor['data'])(n) } }, {}, k];
  },
  'bad shape entries': (x, pick) => {
    const k = NAMES[pick(NAMES.length)]!;
    const shape = [...x[k].shape];
    shape[pick(shape.length)] = [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3' as unknown as number][pick(5)]!;
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
  'an index past the row eff, past the table or below -1': (x, pick) => {
    const topk = x.indices.shape[2]!;
    const s1 = x.indices.shape[1]!;
    const o = pick(x.indices.data.length);
    const act = x.actSeqs.data[Math.floor(o / topk / s1)]!;
    const eff = Math.max(0, rowEff(act, s1, Math.floor(o / topk) % s1, 3));
    const idx = x.indices.data.slice();
    idx[o] = [eff + pick(5), -2 - pick(100), x.blockTable.shape[1]! * x.kvCache.shape[1]! + pick(100), 0x7fffffff][pick(4)]!;
    return [{ ...x, indices: { ...x.indices, data: idx } }, {}, 'indices'];
  },
  'a table entry that is read is -1 or past the pool': (x, pick) => {
    const hit = validEntry(x, pick);
    if (!hit) return [{ ...x, actSeqs: { ...x.actSeqs, data: x.actSeqs.data.map(() => -1) } }, {}, 'actSeqs'];
    const [row, , p] = hit;
    const bi = Math.floor(row / x.indices.shape[1]!);
    const mb = x.blockTable.shape[1]!;
    const table = x.blockTable.data.slice();
    table[bi * mb + Math.floor(p / x.kvCache.shape[1]!)] = pick(2) ? -1 - pick(5) : x.kvCache.shape[0]! + pick(100);
    return [{ ...x, blockTable: { ...x.blockTable, data: table } }, {}, 'blockTable'];
  },
  'a negative act': (x, pick) => {
    const act = x.actSeqs.data.slice();
    act[pick(act.length)] = -1 - pick(1000);
    return [{ ...x, actSeqs: { ...x.actSeqs, data: act } }, {}, 'actSeqs'];
  },
  'bad options': (x, pick) => {
    const bad: [object, string][] = [
      [{ softmaxScale: 0 }, 'softmaxScale'], [{ softmaxScale: -1 }, 'softmaxScale'], [{ softmaxScale: Number.NaN }, 'softmaxScale'],
      [{ softmaxScale: Number.POSITIVE_INFINITY }, 'softmaxScale'], [{ softmaxScale: '0.1' }, 'softmaxScale'], [{ softmaxScale: 1e-46 }, 'softmaxScale'],
      [{ softmaxScale: 4e38 }, 'softmaxScale'], [{ sparseMode: 1 }, 'sparseMode'],
      [{ sparseMode: '3' }, 'sparseMode'], [{ signal: {} }, 'signal'], [{ signal: 'stop' }, 'signal'], [{ signal: null }, 'signal'],
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
      fc.asyncProperty(specArb.filter((c) => c.b > 0 && c.s1 > 0), fc.constantFrom(...names), fc.constantFrom('sync', 'async', 'signal'), fc.integer(), async (spec, name, how, seed) => {
        // sparseMode 3 (the default): the index mutation computes its eff that way.
        const x = makeCase(spec.seed, { ...spec, sparseMode: 3 }).inputs;
        let s = seed >>> 0;
        const pick = (n: number): number => {
          s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
          return s % n;
        };
        const [inputs, options, argument] = INVALID[name]!(x, pick);
        const before = copies(x);
        let err: unknown;
        try {
          if (how === 'sync') sparseFlashAttention(inputs as SparseFlashAttentionInputs, options as SparseFlashAttentionOptions);
          else {
            const o = how === 'signal' && typeof options === 'object' && options !== null && !('signal' in options) ? { ...options, signal: new AbortController().signal } : options;
            await sparseFlashAttentionAsync(inputs as SparseFlashAttentionInputs, o as SparseFlashAttentionOptions);
          }
        } catch (e) {
          err = e;
        }
        expect(isDsaError(err), `${name}: ${String(err)}`).toBe(true);
        const e = err as { argument?: string; message: string };
        if (argument !== '*') expect(e.argument, `${name}: ${e.message}`).toBe(argument);
        expect(e.message.startsWith(`${e.argument}: `), e.message).toBe(true);
        expect(unchanged(x, before)).toBe(true);
      }),
      { numRuns: 300, seed: 4711 },
    );
  });

  it('NaN/Inf inputs: a NaN makes exactly the (row, head) outputs that read it NaN; other rows are unchanged, rows without keys stay zero', async () => {
    const POISON = [0x7fc0, 0xffc0, 0x7f80, 0xff80, 0x7f81];
    const isNan = (bits: number): boolean => (bits & 0x7f80) === 0x7f80 && (bits & 0x7f) !== 0;
    await fc.assert(
      fc.asyncProperty(specArb, fc.constantFrom('qNope', 'qRope', 'kvCache', 'krCache'), fc.array(fc.nat(), { minLength: 1, maxLength: 6 }), fc.nat(4), fc.constantFrom(...isas), async (spec, k, where, bits, isa) => {
        setIsa(isa);
        const clean = makeCase(spec.seed, spec).inputs;
        const x: Bf16CacheInputs = { ...clean, [k]: { ...clean[k], data: clean[k].data.slice() } };
        const data = x[k].data as Uint16Array;
        if (data.length === 0) return;
        for (const w of where) data[w % data.length] = POISON[bits]!;
        const options = { sparseMode: spec.sparseMode };
        const want = sparseFlashAttention(clean, options).out.data;
        const got = sparseFlashAttention(x, options).out.data;
        const chunked = await sparseFlashAttentionAsync(x, { ...options, signal: new AbortController().signal });
        expect(sameBytes(chunked.out.data, got)).toBe(true);
        const { b, s1, n, kvLora, rope, blockSize, topk } = spec;
        const mb = x.blockTable.shape[1]!;
        const width = k === 'qNope' || k === 'kvCache' ? kvLora : rope;
        const touched = (from: number, to: number): boolean => {
          for (let e = from; e < to; e++) if (data[e] !== (clean[k].data as Uint16Array)[e]) return true;
          return false;
        };
        for (let r = 0; r < b * s1; r++) {
          const bi = Math.floor(r / s1);
          const valid = Array.from(x.indices.data.subarray(r * topk, (r + 1) * topk)).filter((p) => p >= 0);
          for (let h = 0; h < n; h++) {
            const o = (r * n + h) * kvLora;
            const row = got.subarray(o, o + kvLora);
            if (valid.length === 0) {
              expect(row.every((v) => v === 0)).toBe(true);
              continue;
            }
            // A query's NaN reaches its own head; a key's NaN reaches every head of the rows that select it.
            const poisoned = k === 'qNope' || k === 'qRope'
              ? touched((r * n + h) * width, (r * n + h + 1) * width)
              : valid.some((p) => {
                const slot = x.blockTable.data[bi * mb + Math.floor(p / blockSize)]! * blockSize + (p % blockSize);
                return touched(slot * width, (slot + 1) * width);
              });
            if (!poisoned) expect(sameBytes(row, want.subarray(o, o + kvLora)), `${isa} row ${r} head ${h} changed`).toBe(true);
            else if (isNan(POISON[bits]!)) expect(bf16ArrayToF32(row).every(Number.isNaN), `${isa} row ${r} head ${h}: read a NaN, expected all NaN`).toBe(true);
          }
        }
        setIsa('auto');
      }),
      { numRuns: 80, seed: 99 },
    );
  });
});
