// Property tests (fast-check, fixed seeds): random valid configurations against the float64
// reference, and random invalid inputs that must throw a DsaError without touching a cache.
import fc from 'fast-check';
import {
  bf16ArrayToF32, compareBf16, cpuFeatures, isDsaError, Rng, setIsa, toNZ,
  type Bf16Tensor, type I32Tensor, type Isa, type Tensor,
} from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { mlaProlog, mlaPrologAsync, prepareMlaProlog, type MlaPrologInputs, type MlaPrologOptions, type MlaPrologOutputs } from '../src/index.js';
import { mlaPrologReference } from '../src/reference.js';
import { bf16Cache, cloneTensor, poisoned, sameBytes, type Bf16CacheInputs } from './helpers.js';

const ISAS: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => {
  const f = cpuFeatures();
  return i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512');
});
afterAll(() => setIsa('auto'));

const configArb = fc
  .record({
    b: fc.integer({ min: 1, max: 3 }),
    // Mostly decode-sized; sometimes long enough for several chunks of a cancellable call.
    s1: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 6 }) }, { weight: 1, arbitrary: fc.integer({ min: 30, max: 150 }) }),
    h: fc.constantFrom(1, 7, 16, 32, 48),
    qLora: fc.constantFrom(1, 5, 16, 32),
    n: fc.integer({ min: 1, max: 4 }),
    qkNope: fc.constantFrom(1, 3, 8, 16),
    rope: fc.constantFrom(0, 2, 4, 8),
    kvLora: fc.constantFrom(1, 9, 24, 32),
    blockSize: fc.constantFrom(1, 4, 16),
    extraBlocks: fc.integer({ min: 0, max: 3 }),
    skip: fc.integer({ min: 0, max: 3 }),
    // Per weight: ND, or NZ where its K and N allow it.
    formats: fc.array(fc.constantFrom('ND', 'NZ'), { minLength: 3, maxLength: 3 }),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  });
type Config = typeof configArb extends fc.Arbitrary<infer C> ? C : never;

/** Random inputs for `c`: distinct random slots (some negative), caches with random history. */
function makeCase(c: Config): Bf16CacheInputs {
  const rng = new Rng(c.seed);
  const T = c.b * c.s1;
  const blockNum = Math.ceil(T / c.blockSize) + c.extraBlocks;
  const w = (K: number, N: number, f: string): Bf16Tensor => {
    const t = rng.uniformTensor([K, N], -0.2, 0.2);
    return f === 'NZ' && K % 16 === 0 && N % 16 === 0 ? toNZ(t) : t;
  };
  const slots = rng.shuffle(Array.from({ length: blockNum * c.blockSize }, (_, i) => i)).slice(0, T);
  for (let k = 0; k < c.skip; k++) slots[rng.int(0, T - 1)] = -1 - rng.int(0, 1000);
  const [f0, f1, f2] = c.formats;
  return {
    x: rng.uniformTensor([c.b, c.s1, c.h], -1, 1),
    wDq: w(c.h, c.qLora, f0!),
    wUqQr: w(c.qLora, c.n * (c.qkNope + c.rope), f1!),
    wUk: rng.uniformTensor([c.n, c.qkNope, c.kvLora], -0.2, 0.2),
    wDkvKr: w(c.h, c.kvLora + c.rope, f2!),
    gammaCq: rng.uniformTensor([c.qLora], -1, 1),
    gammaCkv: rng.uniformTensor([c.kvLora], -1, 1),
    sin: rng.uniformTensor([c.b, c.s1, c.rope], -1, 1),
    cos: rng.uniformTensor([c.b, c.s1, c.rope], -1, 1),
    cacheIndex: { dtype: 'int32', shape: [c.b, c.s1], data: Int32Array.from(slots), format: 'ND' },
    kvCache: rng.uniformTensor([blockNum, c.blockSize, 1, c.kvLora], -1, 1),
    krCache: rng.uniformTensor([blockNum, c.blockSize, 1, c.rope], -1, 1),
  };
}

const fresh = (i: Bf16CacheInputs): Bf16CacheInputs => ({ ...i, kvCache: cloneTensor(i.kvCache), krCache: cloneTensor(i.krCache) });

/** Rows of the cache at the written slots, in slot order. */
function writtenRows(cache: Bf16Tensor, slots: number[]): Uint16Array {
  const d = cache.shape[3]!;
  const out = new Uint16Array(slots.length * d);
  slots.forEach((s, k) => out.set(cache.data.subarray(s * d, (s + 1) * d), k * d));
  return out;
}

/** Every cache row outside `slots` byte for byte as `before`. */
function otherRowsUnchanged(after: Bf16Tensor, before: Bf16Tensor, slots: Set<number>): boolean {
  const d = after.shape[3]!;
  for (let r = 0; r * d < after.data.length; r++) {
    if (slots.has(r)) continue;
    if (!sameBytes(after.data.subarray(r * d, (r + 1) * d), before.data.subarray(r * d, (r + 1) * d))) return false;
  }
  return true;
}

type Mode = 'sync' | 'async' | 'signal' | 'prepared';

async function run(mode: Mode, i: MlaPrologInputs, options: MlaPrologOptions): Promise<MlaPrologOutputs> {
  if (mode === 'sync') return mlaProlog(i, options);
  if (mode === 'async') return mlaPrologAsync(i, options);
  if (mode === 'signal') return mlaPrologAsync(i, { signal: new AbortController().signal, ...options });
  return prepareMlaProlog(i).runAsync(i, options);
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
      fc.asyncProperty(configArb, fc.constantFrom(...ISAS), fc.constantFrom<Mode>('sync', 'async', 'signal', 'prepared'), fc.constantFrom(undefined, 1e-6, 0.25), fc.boolean(), async (c, isa, mode, eps, withOut) => {
        setIsa(isa);
        const inputs = makeCase(c);
        const ref = mlaPrologReference(inputs, { rmsNormEps: eps });
        const i = fresh(inputs);
        const out = withOut ? { qNope: poisoned([c.b, c.s1, c.n, c.kvLora]), qNorm: poisoned([c.b, c.s1, c.qLora]) } : undefined;
        const r = await run(mode, i, { rmsNormEps: eps, out });
        if (out) expect(r.qNope).toBe(out.qNope);
        compare('qNope', r.qNope.data, ref.qNope.data);
        compare('qRope', r.qRope.data, ref.qRope.data);
        compare('qNorm', r.qNorm.data, ref.qNorm.data);
        const slots = Array.from(inputs.cacheIndex.data).filter((s) => s >= 0).sort((a, b) => a - b);
        compare('kvCache rows', writtenRows(i.kvCache, slots), writtenRows(bf16Cache('reference kvCache', ref.kvCache), slots));
        compare('krCache rows', writtenRows(i.krCache, slots), writtenRows(bf16Cache('reference krCache', ref.krCache), slots));
        expect(otherRowsUnchanged(i.kvCache, inputs.kvCache, new Set(slots))).toBe(true);
        expect(otherRowsUnchanged(i.krCache, inputs.krCache, new Set(slots))).toBe(true);
      }),
      { numRuns: 150, seed: 20261125 },
    );
    setIsa('auto');
    expect(close / total).toBeGreaterThanOrEqual(0.97);
  });
});

const TENSORS = ['x', 'wDq', 'wUqQr', 'wUk', 'wDkvKr', 'gammaCq', 'gammaCkv', 'sin', 'cos', 'cacheIndex', 'kvCache', 'krCache'] as const;
type Name = (typeof TENSORS)[number];
type Mutation = (i: Bf16CacheInputs, r: Rng) => [Record<string, unknown>, Record<string, unknown>];

const pickTensor = (r: Rng): Name => TENSORS[r.int(0, TENSORS.length - 1)]!;
const withSlot = (t: I32Tensor, at: number, v: number): I32Tensor => {
  const c = cloneTensor(t);
  c.data[at] = v;
  return c;
};
const rowsOf = (i: MlaPrologInputs): number => i.kvCache.shape[0]! * i.kvCache.shape[1]!;

const INVALID: Record<string, Mutation> = {
  'slot past the cache': (i, r) => [{ ...i, cacheIndex: withSlot(i.cacheIndex, r.int(0, i.cacheIndex.data.length - 1), rowsOf(i) + r.int(0, 1 << 20)) }, {}],
  'duplicate slot': (i, r) => {
    const c = cloneTensor(i.cacheIndex);
    const used = [...c.data.keys()].filter((k) => c.data[k]! >= 0);
    if (c.data.length < 2 || used.length === 0) return [{ ...i, cacheIndex: withSlot(c, 0, 0x7fffffff) }, {}];
    const from = used[r.int(0, used.length - 1)]!;
    const to = (from + 1 + r.int(0, c.data.length - 2)) % c.data.length;
    c.data[to] = c.data[from]!;
    return [{ ...i, cacheIndex: c }, {}];
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
    shape[r.int(0, shape.length - 1)]! += 1 + r.int(0, 2);
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
    const k = (['x', 'wUk', 'gammaCq', 'gammaCkv', 'sin', 'cos', 'cacheIndex', 'kvCache', 'krCache', 'wDq', 'wUqQr', 'wDkvKr'] as const)[r.int(0, 11)]!;
    const weight = k === 'wDq' || k === 'wUqQr' || k === 'wDkvKr';
    return [{ ...i, [k]: { ...(i[k] as Tensor), format: weight ? (['NT', 'nz', 'XYZ'] as const)[r.int(0, 2)] : (['NZ', 'PACKED', 'NT'] as const)[r.int(0, 2)] } }, {}];
  },
  'NZ weight with K or N not a multiple of 16': (i) => [{ ...i, wDq: { ...i.wDq, shape: [i.wDq.shape[0]!, i.wDq.shape[1]!], format: 'NZ' }, x: i.x }, {}],
  'a missing tensor': (i, r) => [{ ...i, [pickTensor(r)]: r.int(0, 1) ? undefined : null }, {}],
  'not a tensor': (i, r) => [{ ...i, [pickTensor(r)]: [1, 2, 3] }, {}],
  'bad options': (i, r) => {
    const bad = [
      { rmsNormEps: 0 }, { rmsNormEps: -1 }, { rmsNormEps: Number.NaN }, { rmsNormEps: Number.POSITIVE_INFINITY }, { rmsNormEps: '1e-5' },
      { signal: 'stop' }, { signal: {} }, { out: 'nowhere' }, { out: { qNope: { ...i.x } } },
      { out: { qNorm: { ...i.kvCache, shape: i.x.shape.slice(0, 2).concat([i.gammaCq.shape[0]!]), data: i.kvCache.data.subarray(0, i.x.shape[0]! * i.x.shape[1]! * i.gammaCq.shape[0]!) } } },
    ];
    return [{ ...i }, bad[r.int(0, bad.length - 1)]!];
  },
  'a cache sharing memory with x': (i, r) => {
    const k = i.krCache.data.length > 0 && r.int(0, 1) ? 'krCache' : 'kvCache';
    const buf = new Uint16Array(Math.max(i[k].data.length, i.x.data.length));
    buf.set(i[k].data);
    return [{ ...i, [k]: { ...i[k], data: buf.subarray(0, i[k].data.length) }, x: { ...i.x, data: buf.subarray(0, i.x.data.length) } }, {}];
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
        const caches = [base.kvCache, base.krCache, inputs.kvCache, inputs.krCache].filter((t): t is Bf16Tensor => (t as Tensor | undefined)?.data instanceof Uint16Array);
        const before = caches.map((t) => t.data.slice());
        let err: unknown;
        try {
          // A prepared prolog checks its weights at preparation, then each call's tensors.
          await run(mode, inputs as unknown as MlaPrologInputs, options as MlaPrologOptions);
        } catch (e) {
          err = e;
        }
        // 'NZ weight' is valid when the shape allows NZ: the weight then is NZ-typed data of a valid size.
        if (err === undefined && name === 'NZ weight with K or N not a multiple of 16' && c.h % 16 === 0 && c.qLora % 16 === 0) return;
        expect(isDsaError(err), `${name} (${mode}): ${String(err)}`).toBe(true);
        expect((err as Error).message, name).toMatch(/^[A-Za-z_][\w.[\], ]*:/);
        caches.forEach((t, k) => expect(sameBytes(t.data, before[k]!), `${name}: a cache changed`).toBe(true));
        counts[name] = (counts[name] ?? 0) + 1;
      }),
      { numRuns: 300, seed: 4242 },
    );
    expect(Object.keys(counts).length).toBe(names.length);
  });

  it('NaN/Inf inputs never crash: every token is computed, only its slot is written, async = sync bytes', async () => {
    await fc.assert(
      fc.asyncProperty(configArb, fc.constantFrom<Name>('x', 'wDq', 'wUqQr', 'wUk', 'wDkvKr', 'gammaCq', 'gammaCkv', 'sin', 'cos'), fc.constantFrom(0x7fc0, 0x7f80, 0xff80, 0xffff), async (c, k, bits) => {
        const inputs = makeCase(c);
        const t = cloneTensor(inputs[k] as Bf16Tensor);
        for (let j = 0; j < t.data.length; j += 3) t.data[j] = bits;
        const bad: Bf16CacheInputs = { ...inputs, [k]: t };
        const a = fresh(bad);
        const r = mlaProlog(a);
        expect(r.qNope.shape).toEqual([c.b, c.s1, c.n, c.kvLora]);
        const slots = new Set(Array.from(inputs.cacheIndex.data).filter((s) => s >= 0));
        expect(otherRowsUnchanged(a.kvCache, inputs.kvCache, slots) && otherRowsUnchanged(a.krCache, inputs.krCache, slots)).toBe(true);
        const b = fresh(bad);
        const s = await mlaPrologAsync(b, { signal: new AbortController().signal });
        expect(sameBytes(s.qNope.data, r.qNope.data) && sameBytes(s.qRope.data, r.qRope.data) && sameBytes(s.qNorm.data, r.qNorm.data)).toBe(true);
        expect(sameBytes(a.kvCache.data, b.kvCache.data) && sameBytes(a.krCache.data, b.krCache.data)).toBe(true);
      }),
      { numRuns: 60, seed: 7 },
    );
  });

  it('zero-length batches (b = 0 or s1 = 0) return empty outputs and write nothing, with or without a signal', async () => {
    for (const [b, s1] of [[0, 3], [2, 0], [0, 0]]) {
      const c = { b: 1, s1: 1, h: 16, qLora: 16, n: 2, qkNope: 8, rope: 4, kvLora: 9, blockSize: 4, extraBlocks: 1, skip: 0, formats: ['ND', 'NZ', 'ND'], seed: 5 } as Config;
      const one = makeCase(c);
      const empty = {
        ...one,
        x: { ...one.x, shape: [b, s1, 16], data: new Uint16Array(0) },
        sin: { ...one.sin, shape: [b, s1, 4], data: new Uint16Array(0) },
        cos: { ...one.cos, shape: [b, s1, 4], data: new Uint16Array(0) },
        cacheIndex: { ...one.cacheIndex, shape: [b, s1], data: new Int32Array(0) },
      };
      for (const mode of ['sync', 'async', 'signal', 'prepared'] as const) {
        const i = fresh(empty);
        const r = await run(mode, i, {});
        expect(r.qNope.shape).toEqual([b, s1, 2, 9]);
        expect(r.qNorm.shape).toEqual([b, s1, 16]);
        expect(r.qRope.data.length).toBe(0);
        expect(sameBytes(i.kvCache.data, one.kvCache.data) && sameBytes(i.krCache.data, one.krCache.data)).toBe(true);
      }
    }
  });
});
