// Cancellation (options.signal) and the cache lock around it.
import { cpuFeatures, isDsaError, matmul, packWeights, Rng, setIsa, toNZ, type Bf16Tensor, type Isa } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { mlaProlog, mlaPrologAsync, prepareMlaProlog, type MlaPrologOutputs } from '../src/index.js';
import { tokenChunks } from '../src/cancel.js';
import { cloneTensor, makeInputs, poisoned, sameBytes, type Bf16CacheInputs, type Dims } from './helpers.js';

const ISAS: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => {
  const f = cpuFeatures();
  return i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512');
});

const fresh = (i: Bf16CacheInputs): Bf16CacheInputs => ({ ...i, kvCache: cloneTensor(i.kvCache), krCache: cloneTensor(i.krCache) });
const sameOutputs = (a: MlaPrologOutputs, b: MlaPrologOutputs): boolean =>
  sameBytes(a.qNope.data, b.qNope.data) && sameBytes(a.qRope.data, b.qRope.data) && sameBytes(a.qNorm.data, b.qNorm.data);
const sameCaches = (a: Bf16CacheInputs, b: Bf16CacheInputs): boolean =>
  sameBytes(a.kvCache.data, b.kvCache.data) && sameBytes(a.krCache.data, b.krCache.data);

async function rejection(p: Promise<unknown>): Promise<{ code?: string; message?: string; argument?: string }> {
  try {
    await p;
  } catch (e) {
    expect(isDsaError(e), String(e)).toBe(true);
    return e as { code: string; message: string };
  }
  return expect.fail('expected the call to reject');
}

afterAll(() => setIsa('auto'));

describe('token chunks', () => {
  it('cover every token once, stay inside the kernel passes, start at multiples of 8 and are short only when their pass is', () => {
    const bad: string[] = [];
    for (let T = 0; T <= 1100; T++) {
      let next = 0;
      for (const [t0, t1] of tokenChunks(T)) {
        const p0 = Math.floor(t0 / 256) * 256;
        const pass = Math.min(T, p0 + 256) - p0;
        if (t0 !== next || t0 % 8 !== 0 || t1 > p0 + 256 || t1 - t0 > 72 || (t1 - t0 <= 8 && t1 - t0 !== pass)) bad.push(`T=${T}: [${t0}, ${t1})`);
        next = t1;
      }
      if (next !== T) bad.push(`T=${T}: ends at ${next}`);
    }
    expect(bad).toEqual([]);
  });

  // The premise of the chunking: the GEMM gives each row the same fp32 bits in a chunk as in the
  // whole call (bf16 outputs would hide most differences). Naive chunks are the control: they change
  // bits (rows off the 8-row grid on AVX-512; short tails take the GEMV kernel or a K split).
  it.each(ISAS)('give the GEMM rows of the whole call bit for bit, where naive chunks do not (%s)', (isa) => {
    setIsa(isa);
    const rng = new Rng(3);
    const rows = (t: Bf16Tensor, t0: number, t1: number): Bf16Tensor => ({ ...t, shape: [t1 - t0, t.shape[1]!], data: t.data.subarray(t0 * t.shape[1]!, t1 * t.shape[1]!) });
    const same = (x: Bf16Tensor, w: Bf16Tensor, chunks: [number, number][]): boolean => {
      const N = w.shape[1]!;
      const full = matmul(x, w);
      return chunks.every(([t0, t1]) => sameBytes(matmul(rows(x, t0, t1), w).data, full.data.subarray(t0 * N, t1 * N)));
    };
    for (const [K, N] of [[64, 32], [1024, 32]] as const) {
      const w = rng.uniformTensor([K, N], -1, 1);
      for (const fw of [w, toNZ(w), packWeights(w)]) {
        for (const M of K === 64 ? [66, 200, 521] : [66, 200]) expect(same(rng.uniformTensor([M, K], -1, 1), fw, tokenChunks(M, Infinity)), `K=${K} M=${M} ${fw.format}`).toBe(true);
      }
      if (K === 1024) {
        expect(same(rng.uniformTensor([66, K], -1, 1), w, [[0, 64], [64, 66]]), 'a 2-row tail').toBe(false);
        expect(same(rng.uniformTensor([200, K], -1, 1), packWeights(w), [[0, 192], [192, 200]]), 'an 8-row packed tail').toBe(false);
        if (isa === 'avx512') expect(same(rng.uniformTensor([200, K], -1, 1), packWeights(w), [[0, 50], [50, 100], [100, 200]]), 'rows off the grid').toBe(false);
      }
    }
  });
});

describe('a signal that never fires', () => {
  const D: Omit<Dims, 's1'> = { b: 1, h: 48, qLora: 32, n: 2, qkNope: 16, rope: 8, kvLora: 24, blockNum: 40, blockSize: 16 };
  // Around chunk and pass boundaries: short last pieces, a pass of 2 tokens, odd counts.
  const TOKENS = [1, 5, 64, 66, 72, 73, 200, 258, 260, 300, 521];
  it.each(ISAS)('gives the bytes of a call without one (%s; ND, NZ and prepared weights)', async (isa) => {
    setIsa(isa);
    for (const s1 of TOKENS) {
      for (const nz of [false, true]) {
        const inputs = makeInputs({ ...D, s1 }, s1 * 3 + (nz ? 1 : 0), { nz, skip: 3 });
        const a = fresh(inputs);
        const plain = mlaProlog(a);
        const b = fresh(inputs);
        const out = { qNope: poisoned([1, s1, D.n, D.kvLora]), qRope: poisoned([1, s1, D.n, D.rope]), qNorm: poisoned([1, s1, D.qLora]) };
        const r = await mlaPrologAsync(b, { signal: new AbortController().signal, out });
        expect(r.qNope).toBe(out.qNope);
        expect(sameOutputs(r, plain), `${isa} s1=${s1} nz=${nz}`).toBe(true);
        expect(sameCaches(a, b), `${isa} s1=${s1} nz=${nz} caches`).toBe(true);
        if (nz) {
          const p = prepareMlaProlog(inputs);
          const c = fresh(inputs);
          const pr = p.run(c);
          const d = fresh(inputs);
          const pa = await p.runAsync(d, { signal: new AbortController().signal });
          expect(sameOutputs(pa, pr), `${isa} s1=${s1} prepared`).toBe(true);
          expect(sameCaches(c, d)).toBe(true);
        }
      }
    }
  });
});

describe('abort', () => {
  const BIG: Dims = { b: 2, s1: 512, h: 128, qLora: 64, n: 8, qkNope: 32, rope: 16, kvLora: 64, blockNum: 80, blockSize: 16 };
  const big = makeInputs(BIG, 1, { skip: 5 });

  it('an already aborted signal rejects with DSA_E_ABORTED and does nothing; sync calls refuse it too', async () => {
    const ctrl = new AbortController();
    ctrl.abort();
    const i = fresh(big);
    const out = { qNorm: poisoned([BIG.b, BIG.s1, BIG.qLora]) };
    const e = await rejection(mlaPrologAsync(i, { signal: ctrl.signal, out }));
    expect(e.code).toBe('DSA_E_ABORTED');
    expect(e.argument).toBe('signal');
    expect(e.message?.startsWith('signal: ')).toBe(true);
    expect(sameCaches(i, big)).toBe(true);
    expect(out.qNorm.data.every((v) => v === 0x7fc0)).toBe(true);
    expect(() => mlaProlog(i, { signal: ctrl.signal })).toThrow(expect.objectContaining({ code: 'DSA_E_ABORTED' }));
    const p = prepareMlaProlog(big);
    expect((await rejection(p.runAsync(i, { signal: ctrl.signal }))).code).toBe('DSA_E_ABORTED');
    expect(sameCaches(i, big)).toBe(true);
  });

  it('a signal that is not an AbortSignal is a DSA_E_ARGUMENT', async () => {
    for (const signal of ['stop', 1, null, {}, { aborted: 'no' }]) {
      const i = fresh(big);
      expect(() => mlaProlog(i, { signal: signal as never })).toThrow(expect.objectContaining({ code: 'DSA_E_ARGUMENT', argument: 'signal' }));
      expect((await rejection(mlaPrologAsync(i, { signal: signal as never }))).argument).toBe('signal');
      expect(sameCaches(i, big)).toBe(true);
    }
  });

  it('mid-call, at several fractions of its duration: rejects and puts every cache row back', async () => {
    setIsa('scalar'); // a long call, many chunks
    const t0 = performance.now();
    const reference = await mlaPrologAsync(fresh(big), { signal: new AbortController().signal });
    const ms = performance.now() - t0;
    const plainCaches = fresh(big);
    expect(sameOutputs(mlaProlog(plainCaches), reference)).toBe(true);
    let aborted = 0;
    let completed = 0;
    // null: abort on the next turn of the event loop, while the first chunk runs.
    for (const f of [null, 0.1, 0.3, 0.5, 0.7, 0.9, 2]) {
      const i = fresh(big);
      const ctrl = new AbortController();
      const pending = mlaPrologAsync(i, { signal: ctrl.signal });
      if (f === null) setImmediate(() => ctrl.abort());
      else setTimeout(() => ctrl.abort(), ms * f);
      try {
        const r = await pending;
        expect(sameOutputs(r, reference)).toBe(true);
        expect(sameCaches(i, plainCaches)).toBe(true);
        completed++;
      } catch (e) {
        expect((e as { code?: string }).code).toBe('DSA_E_ABORTED');
        expect(sameCaches(i, big), `abort at ${f}: caches changed`).toBe(true);
        aborted++;
      }
    }
    setIsa('auto');
    console.log(`mla-prolog: ${tokenChunks(BIG.b * BIG.s1).length}-chunk call of ${ms.toFixed(1)} ms: ${aborted} aborted, ${completed} completed`);
    expect(aborted).toBeGreaterThan(0);
    expect(aborted + completed).toBe(7);
  });

  it('an abort while the call waits for the caches rejects without doing anything', async () => {
    const i = fresh(big);
    const seq = fresh(big);
    mlaProlog(seq);
    const first = mlaPrologAsync(i);
    const ctrl = new AbortController();
    const second = mlaPrologAsync({ ...i, x: makeInputs(BIG, 2).x }, { signal: ctrl.signal });
    ctrl.abort();
    await first;
    expect((await rejection(second)).code).toBe('DSA_E_ABORTED');
    expect(sameCaches(i, seq)).toBe(true);
  });
});

describe('cache lock with chunked calls', () => {
  const D: Dims = { b: 1, s1: 200, h: 48, qLora: 32, n: 2, qkNope: 16, rope: 8, kvLora: 32, blockNum: 20, blockSize: 16 };

  it('two chunked calls on the same caches run one after the other (the bytes of sequential calls)', async () => {
    const inputs = makeInputs(D, 5);
    const other = { ...inputs, x: makeInputs(D, 6).x };
    const seq = fresh(inputs);
    mlaProlog({ ...seq, x: other.x });
    const second = mlaProlog(seq);
    const shared = fresh(inputs);
    const signal = new AbortController().signal;
    const p1 = mlaPrologAsync({ ...shared, x: other.x }, { signal });
    const p2 = mlaPrologAsync(shared, { signal });
    const [, r2] = await Promise.all([p1, p2]);
    expect(sameOutputs(r2, second)).toBe(true);
    expect(sameCaches(shared, seq)).toBe(true);
  });

  it('a sync call while a chunked call holds the caches throws DSA_E_STATE naming the cache', async () => {
    const inputs = makeInputs(D, 7);
    const shared = fresh(inputs);
    const pending = mlaPrologAsync(shared, { signal: new AbortController().signal });
    expect(() => mlaProlog(shared)).toThrow(expect.objectContaining({ code: 'DSA_E_STATE', argument: 'kvCache' }));
    expect(() => mlaProlog({ ...fresh(inputs), krCache: shared.krCache })).toThrow(expect.objectContaining({ code: 'DSA_E_STATE', argument: 'krCache' }));
    const p = prepareMlaProlog(inputs);
    expect(() => p.run(shared)).toThrow(expect.objectContaining({ code: 'DSA_E_STATE', argument: 'kvCache' }));
    await pending;
    mlaProlog(fresh(inputs)); // other caches were never held
    mlaProlog(shared);
  });
});
