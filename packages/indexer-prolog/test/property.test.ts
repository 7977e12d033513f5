// Property tests (fast-check, fixed seeds): random valid configurations against the float64
// reference, and random invalid inputs that must throw a DsaError without touching the cache.
import fc from 'fast-check';
import {
  bf16ArrayToF32, compareBf16, cpuFeatures, isDsaError, packWeights, Rng, setIsa, toNZ,
  type Bf16Tensor, type I32Tensor, type Isa, type Tensor,
} from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import {
  indexerProlog, indexerPrologAsync, prepareIndexerProlog,
  type IndexerPrologInputs, type IndexerPrologOptions, type IndexerPrologResult,
} from '../src/index.js';
import { indexerPrologReference } from '../src/reference.js';
import { bf16Cache, type Bf16Case } from './helpers.js';

const ISAS: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => {
  const f = cpuFeatures();
  return i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512');
});
afterAll(() => setIsa('auto'));

const sameBytes = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

const configArb = fc.record({
  b: fc.integer({ min: 1, max: 3 }),
  // Mostly decode-sized; sometimes long enough for several chunks of a cancellable call.
  s1: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 6 }) }, { weight: 1, arbitrary: fc.integer({ min: 30, max: 150 }) }),
  h: fc.constantFrom(1, 7, 16, 32, 48),
  qLora: fc.constantFrom(1, 5, 16, 32),
  heads: fc.integer({ min: 1, max: 4 }),
  rope: fc.constantFrom(0, 2, 4, 8),
  extraDim: fc.constantFrom(0, 1, 8, 16),
  blockSize: fc.constantFrom(1, 4, 16),
  extraBlocks: fc.integer({ min: 0, max: 3 }),
  skip: fc.integer({ min: 0, max: 3 }),
  // Per weight (wIdxQb, wIdxK, wIdxProj): ND, PACKED, or NZ where its K and N allow it.
  formats: fc.array(fc.constantFrom('ND', 'NZ', 'PACKED'), { minLength: 3, maxLength: 3 }),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
});
type Config = typeof configArb extends fc.Arbitrary<infer C> ? C : never;

/** Random inputs for `c`: distinct random slots (some negative), a cache with random history. */
function makeCase(c: Config): Bf16Case {
  const rng = new Rng(c.seed);
  const T = c.b * c.s1;
  const di = c.rope + c.extraDim || 1;
  const blocks = Math.ceil(T / c.blockSize) + c.extraBlocks;
  const w = (K: number, N: number, f: string): Bf16Tensor => {
    const t = rng.uniformTensor([K, N], -0.3, 0.3);
    if (f === 'PACKED') return packWeights(t);
    return f === 'NZ' && K % 16 === 0 && N % 16 === 0 ? toNZ(t) : t;
  };
  const slots = rng.shuffle(Array.from({ length: blocks * c.blockSize }, (_, i) => i)).slice(0, T);
  for (let k = 0; k < c.skip; k++) slots[rng.int(0, T - 1)] = -1 - rng.int(0, 1000);
  const [f0, f1, f2] = c.formats;
  return {
    x: rng.uniformTensor([c.b, c.s1, c.h], -1, 1),
    qNorm: rng.uniformTensor([c.b, c.s1, c.qLora], -2, 2),
    wIdxQb: w(c.qLora, c.heads * di, f0!),
    wIdxK: w(c.h, di, f1!),
    wIdxProj: w(c.h, c.heads, f2!),
    inGammaK: rng.uniformTensor([di], 0.5, 1.5),
    inBetaK: rng.uniformTensor([di], -0.5, 0.5),
    sin: rng.uniformTensor([c.b, c.s1, c.rope], -1, 1),
    cos: rng.uniformTensor([c.b, c.s1, c.rope], -1, 1),
    cacheIndex: { dtype: 'int32', shape: [c.b, c.s1], data: Int32Array.from(slots), format: 'ND' },
    indexKCache: rng.uniformTensor([blocks, c.blockSize, 1, di], -3, 3),
  };
}

const fresh = (i: Bf16Case): Bf16Case => ({ ...i, indexKCache: { ...i.indexKCache, data: i.indexKCache.data.slice() } });

function writtenRows(cache: Bf16Tensor, slots: number[]): Uint16Array {
  const d = cache.shape[3]!;
  const out = new Uint16Array(slots.length * d);
  slots.forEach((s, k) => out.set(cache.data.subarray(s * d, (s + 1) * d), k * d));
  return out;
}

function otherRowsUnchanged(after: Bf16Tensor, before: Bf16Tensor, slots: Set<number>): boolean {
  const d = after.shape[3]!;
  for (let r = 0; r * d < after.data.length; r++) {
    if (!slots.has(r) && !sameBytes(after.data.subarray(r * d, (r + 1) * d), before.data.subarray(r * d, (r + 1) * d))) return false;
  }
  return true;
}

type Mode = 'sync' | 'async' | 'signal' | 'prepared';

async function run(mode: Mode, i: IndexerPrologInputs, options: unknown): Promise<IndexerPrologResult> {
  const o = options as IndexerPrologOptions;
  if (mode === 'sync') return indexerProlog(i, o);
  if (mode === 'async') return indexerPrologAsync(i, o);
  if (mode === 'signal') return indexerPrologAsync(i, { signal: new AbortController().signal, ...o });
  // The prepared stage takes its options at preparation and the signal per call.
  const { signal, ...fixed } = (typeof o === 'object' && o !== null ? o : { signal: undefined }) as IndexerPrologOptions;
  return prepareIndexerProlog(i, typeof o === 'object' && o !== null ? fixed : (o as never)).runAsync(i, { signal });
}

describe('property: valid configurations', () => {
  it('native (every ISA, sync, async, chunked, prepared) matches the float64 reference', async () => {
    // The isclose rule (>= 97% of elements) is statistical: on outputs of a few values one element
    // near zero decides it. So each case must pass relative L2 and a loose floor, and the 97% rule
    // holds for all outputs of the run together.
    let close = 0;
    let total = 0;
    const compare = (what: string, a: Uint16Array, e: Uint16Array): void => {
      const af = bf16ArrayToF32(a);
      expect(af.some(Number.isNaN), `${what}: NaN`).toBe(false);
      if (e.length === 0) return;
      const r = compareBf16(af, bf16ArrayToF32(e));
      expect(r.relL2, `${what}: relative L2`).toBeLessThanOrEqual(1e-2);
      expect(r.close, `${what}: isclose fraction`).toBeGreaterThanOrEqual(0.8);
      close += r.close * e.length;
      total += e.length;
    };
    await fc.assert(
      fc.asyncProperty(
        configArb, fc.constantFrom(...ISAS), fc.constantFrom<Mode>('sync', 'async', 'signal', 'prepared'),
        fc.constantFrom(undefined, 1e-5, 0.5), fc.constantFrom(undefined, 'interleaved' as const, 'half' as const),
        async (c, isa, mode, layerNormEps, indexerRope) => {
          setIsa(isa);
          const inputs = makeCase(c);
          const ref = indexerPrologReference(inputs, { layerNormEps, indexerRope });
          const i = fresh(inputs);
          const r = await run(mode, i, { layerNormEps, indexerRope });
          compare('query', r.query.data, ref.query.data);
          compare('weights', r.weights.data, ref.weights.data);
          const slots = Array.from(inputs.cacheIndex.data).filter((s) => s >= 0).sort((a, b) => a - b);
          compare('indexKCache rows', writtenRows(i.indexKCache, slots), writtenRows(bf16Cache('reference indexKCache', ref.indexKCache), slots));
          expect(otherRowsUnchanged(i.indexKCache, inputs.indexKCache, new Set(slots))).toBe(true);
        },
      ),
      { numRuns: 150, seed: 20261125 },
    );
    setIsa('auto');
    expect(close / total).toBeGreaterThanOrEqual(0.97);
  });
});

const TENSORS = ['x', 'qNorm', 'wIdxQb', 'wIdxK', 'wIdxProj', 'inGammaK', 'inBetaK', 'sin', 'cos', 'cacheIndex', 'indexKCache'] as const;
type Name = (typeof TENSORS)[number];
type Mutation = (i: Bf16Case, r: Rng) => [Record<string, unknown>, unknown];

const pickTensor = (r: Rng): Name => TENSORS[r.int(0, TENSORS.length - 1)]!;
const withSlot = (t: I32Tensor, at: number, v: number): I32Tensor => {
  const data = t.data.slice();
  data[at] = v;
  return { ...t, data };
};

const INVALID: Record<string, Mutation> = {
  'slot past the cache': (i, r) => {
    const rows = i.indexKCache.shape[0]! * i.indexKCache.shape[1]!;
    return [{ ...i, cacheIndex: withSlot(i.cacheIndex, r.int(0, i.cacheIndex.data.length - 1), rows + r.int(0, 1 << 20)) }, {}];
  },
  'duplicate slot': (i, r) => {
    const d = i.cacheIndex.data;
    const used = [...d.keys()].filter((k) => d[k]! >= 0);
    if (d.length < 2 || used.length === 0) return [{ ...i, cacheIndex: withSlot(i.cacheIndex, 0, 0x7fffffff) }, {}];
    const from = used[r.int(0, used.length - 1)]!;
    return [{ ...i, cacheIndex: withSlot(i.cacheIndex, (from + 1 + r.int(0, d.length - 2)) % d.length, d[from]!) }, {}];
  },
  'wrong dtype': (i, r) => {
    const k = pickTensor(r);
    const t = i[k] as Tensor;
    const data = t.dtype === 'int32' ? new Float32Array(t.data.length) : r.int(0, 1) ? new Int32Array(t.data.length) : new Float32Array(t.data.length);
    return [{ ...i, [k]: { ...t, dtype: data instanceof Float32Array ? 'float32' : 'int32', data } }, {}];
  },
  'bf16 dtype with other storage': (i, r) => {
    const k = pickTensor(r);
    return [{ ...i, [k]: { ...(i[k] as Tensor), dtype: 'bfloat16', data: new Float32Array((i[k] as Tensor).data.length) } }, {}];
  },
  'inconsistent shape': (i, r) => {
    const k = pickTensor(r);
    const t = i[k] as Tensor;
    const shape = [...t.shape];
    // The cache's block count and block size are free (a larger cache is valid).
    shape[k === 'indexKCache' ? r.int(2, 3) : r.int(0, shape.length - 1)]! += 1 + r.int(0, 2);
    const n = shape.reduce((a, v) => a * v, 1);
    return [{ ...i, [k]: { ...t, shape, data: new (t.data.constructor as new (n: number) => Tensor['data'])(n), format: 'ND' } }, {}];
  },
  'wrong rank': (i, r) => {
    const k = pickTensor(r);
    const t = i[k] as Tensor;
    return [{ ...i, [k]: { ...t, shape: t.shape.length > 1 && r.int(0, 1) ? [t.data.length] : [...t.shape, 1], format: 'ND' } }, {}];
  },
  'storage shorter than the shape': (i, r) => {
    const nonEmpty = TENSORS.filter((k) => i[k].data.length > 0);
    const k = nonEmpty[r.int(0, nonEmpty.length - 1)]!;
    const t = i[k] as Tensor;
    return [{ ...i, [k]: { ...t, data: t.data.subarray(0, Math.max(0, t.data.length - 1 - r.int(0, 3))) } }, {}];
  },
  'a format the argument does not take': (i, r) => {
    const k = pickTensor(r);
    const weight = k === 'wIdxQb' || k === 'wIdxK' || k === 'wIdxProj';
    return [{ ...i, [k]: { ...(i[k] as Tensor), format: weight ? (['NT', 'nz', 'XYZ'] as const)[r.int(0, 2)] : (['NZ', 'PACKED', 'NT'] as const)[r.int(0, 2)] } }, {}];
  },
  // wIdxProj is [h, heads] with heads <= 4: never a valid NZ weight.
  'NZ weight with N not a multiple of 16': (i) => [{ ...i, wIdxProj: { ...i.wIdxProj, format: 'NZ' } }, {}],
  'a missing tensor': (i, r) => [{ ...i, [pickTensor(r)]: r.int(0, 1) ? undefined : null }, {}],
  'not a tensor': (i, r) => [{ ...i, [pickTensor(r)]: [1, 2, 3] }, {}],
  'bad options': (i, r) => {
    const bad = [
      { layerNormEps: 0 }, { layerNormEps: -1 }, { layerNormEps: Number.NaN }, { layerNormEps: Number.POSITIVE_INFINITY },
      { layerNormEps: '1e-6' }, { indexerRope: 'neox' }, { indexerRope: 1 }, { signal: 'stop' }, { signal: {} }, 'fast', 3,
    ];
    return [{ ...i }, bad[r.int(0, bad.length - 1)]!];
  },
};

describe('property: invalid inputs', () => {
  it('throw (or reject with) a DsaError naming an argument and leave every cache byte as it was', async () => {
    const names = Object.keys(INVALID);
    const counts: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(configArb, fc.constantFrom(...names), fc.constantFrom<Mode>('sync', 'async', 'signal', 'prepared'), fc.integer(), async (c, name, mode, rseed) => {
        const base = fresh(makeCase(c));
        const [inputs, options] = INVALID[name]!(base, new Rng(rseed));
        const cache = (inputs.indexKCache as Tensor | undefined)?.data instanceof Uint16Array ? (inputs.indexKCache as Bf16Tensor) : base.indexKCache;
        const before = [base.indexKCache.data.slice(), cache.data.slice()];
        let err: unknown;
        try {
          await run(mode, inputs as unknown as IndexerPrologInputs, options);
        } catch (e) {
          err = e;
        }
        expect(isDsaError(err), `${name} (${mode}): ${String(err)}`).toBe(true);
        expect((err as Error).message, name).toMatch(/^[A-Za-z_][\w.[\], ]*:/);
        expect(sameBytes(base.indexKCache.data, before[0]!) && sameBytes(cache.data, before[1]!), `${name}: the cache changed`).toBe(true);
        counts[name] = (counts[name] ?? 0) + 1;
      }),
      { numRuns: 300, seed: 4242 },
    );
    expect(Object.keys(counts).length).toBe(names.length);
  });

  it('NaN/Inf inputs never crash: every token is computed, only its slot is written, async = sync bytes', async () => {
    await fc.assert(
      fc.asyncProperty(configArb, fc.constantFrom<Exclude<Name, 'cacheIndex' | 'indexKCache'>>('x', 'qNorm', 'wIdxQb', 'wIdxK', 'wIdxProj', 'inGammaK', 'inBetaK', 'sin', 'cos'), fc.constantFrom(0x7fc0, 0x7f80, 0xff80, 0xffff), async (c, k, bits) => {
        const inputs = makeCase(c);
        const t: Bf16Tensor = { ...inputs[k], data: inputs[k].data.slice() };
        for (let j = 0; j < t.data.length; j += 3) t.data[j] = bits;
        const bad: Bf16Case = { ...inputs, [k]: t };
        const a = fresh(bad);
        const r = indexerProlog(a);
        expect(r.query.shape).toEqual([c.b, c.s1, c.heads, c.rope + c.extraDim || 1]);
        const slots = new Set(Array.from(inputs.cacheIndex.data).filter((s) => s >= 0));
        expect(otherRowsUnchanged(a.indexKCache, inputs.indexKCache, slots)).toBe(true);
        const b = fresh(bad);
        const s = await indexerPrologAsync(b, { signal: new AbortController().signal });
        expect(sameBytes(s.query.data, r.query.data) && sameBytes(s.weights.data, r.weights.data)).toBe(true);
        expect(sameBytes(a.indexKCache.data, b.indexKCache.data)).toBe(true);
      }),
      { numRuns: 60, seed: 7 },
    );
  });

  it('zero-length batches (b = 0 or s1 = 0) return empty outputs and write nothing, with or without a signal', async () => {
    for (const [b, s1] of [[0, 3], [2, 0], [0, 0]]) {
      const one = makeCase({ b: 1, s1: 1, h: 16, qLora: 16, heads: 2, rope: 4, extraDim: 8, blockSize: 4, extraBlocks: 1, skip: 0, formats: ['NZ', 'ND', 'PACKED'], seed: 5 });
      const empty = {
        ...one,
        x: { ...one.x, shape: [b, s1, 16], data: new Uint16Array(0) },
        qNorm: { ...one.qNorm, shape: [b, s1, 16], data: new Uint16Array(0) },
        sin: { ...one.sin, shape: [b, s1, 4], data: new Uint16Array(0) },
        cos: { ...one.cos, shape: [b, s1, 4], data: new Uint16Array(0) },
        cacheIndex: { ...one.cacheIndex, shape: [b, s1], data: new Int32Array(0) },
      };
      for (const mode of ['sync', 'async', 'signal', 'prepared'] as const) {
        const i = fresh(empty);
        const r = await run(mode, i, {});
        expect(r.query.shape).toEqual([b, s1, 2, 12]);
        expect(r.weights.shape).toEqual([b, s1, 2]);
        expect(r.query.data.length + r.weights.data.length).toBe(0);
        expect(sameBytes(i.indexKCache.data, one.indexKCache.data)).toBe(true);
      }
    }
  });
});
