// Cancellation (options.signal) and the cache lock.
import { cpuFeatures, isDsaError, matmul, packWeights, Rng, setIsa, toNZ, type Bf16Tensor, type Isa } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { tokenChunks } from '../src/cancel.js';
import { indexerProlog, indexerPrologAsync, prepareIndexerProlog, type IndexerPrologResult } from '../src/index.js';
import { type Bf16CacheInputs, type Dims, makeCase, withFormat } from './helpers.js';

const ISAS: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => {
  const f = cpuFeatures();
  return i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512');
});

const sameBytes = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
const fresh = (i: Bf16CacheInputs): Bf16CacheInputs => ({ ...i, indexKCache: { ...i.indexKCache, data: i.indexKCache.data.slice() } });
const sameResult = (a: IndexerPrologResult, b: IndexerPrologResult): boolean =>
  sameBytes(a.query.data, b.query.data) && sameBytes(a.weights.data, b.weights.data) && a.query.shape.join() === b.query.shape.join();
const sameCache = (a: Bf16CacheInputs, b: Bf16CacheInputs): boolean => sameBytes(a.indexKCache.data, b.indexKCache.data);

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
  it('cover every token once, start at multiples of 8 and are longer than 8 tokens unless the call is not', () => {
    const bad: string[] = [];
    for (let T = 0; T <= 700; T++) {
      let next = 0;
      for (const [t0, t1] of tokenChunks(T)) {
        if (t0 !== next || t0 % 8 !== 0 || t1 - t0 > 72 || (t1 - t0 <= 8 && t1 - t0 !== T)) bad.push(`T=${T}: [${t0}, ${t1})`);
        next = t1;
      }
      if (next !== T || (T <= 64 && tokenChunks(T).length > 1)) bad.push(`T=${T}`);
    }
    expect(bad).toEqual([]);
  });

  // The premise of the chunking: the GEMM gives each row the same fp32 bits in a chunk as in the
  // whole call (bf16 outputs would hide most differences). Naive chunks are the control.
  it.each(ISAS)('give the GEMM rows of the whole call bit for bit, where naive chunks do not (%s)', (isa) => {
    setIsa(isa);
    const rng = new Rng(4);
    const rows = (t: Bf16Tensor, t0: number, t1: number): Bf16Tensor => ({ ...t, shape: [t1 - t0, t.shape[1]!], data: t.data.subarray(t0 * t.shape[1]!, t1 * t.shape[1]!) });
    const same = (x: Bf16Tensor, w: Bf16Tensor, chunks: [number, number][]): boolean => {
      const N = w.shape[1]!;
      const full = matmul(x, w);
      return chunks.every(([t0, t1]) => sameBytes(matmul(rows(x, t0, t1), w).data, full.data.subarray(t0 * N, t1 * N)));
    };
    for (const [K, N] of [[48, 32], [1024, 16]] as const) {
      const w = rng.uniformTensor([K, N], -1, 1);
      for (const fw of [w, toNZ(w), packWeights(w)]) {
        for (const M of K === 48 ? [66, 137, 330] : [66, 200]) expect(same(rng.uniformTensor([M, K], -1, 1), fw, tokenChunks(M)), `K=${K} M=${M} ${fw.format}`).toBe(true);
      }
      if (K === 1024) {
        expect(same(rng.uniformTensor([67, K], -1, 1), w, [[0, 64], [64, 67]]), 'a 3-row tail').toBe(false);
        expect(same(rng.uniformTensor([72, K], -1, 1), packWeights(w), [[0, 64], [64, 72]]), 'an 8-row packed tail').toBe(false);
        if (isa === 'avx512') expect(same(rng.uniformTensor([150, K], -1, 1), packWeights(w), [[0, 50], [50, 150]]), 'rows off the grid').toBe(false);
      }
    }
  });
});

describe('a signal that never fires', () => {
  const D: Omit<Dims, 's1'> = { b: 1, h: 48, qLora: 32, heads: 2, di: 16, rope: 8, blocks: 40, blockSize: 16 };
  const TOKENS = [1, 4, 5, 64, 66, 72, 73, 137, 200, 330];
  it.each(ISAS)('gives the bytes of a call without one (%s; ND, NZ, PACKED and prepared, both RoPE pairings)', async (isa) => {
    setIsa(isa);
    for (const s1 of TOKENS) {
      for (const format of ['ND', 'NZ', 'PACKED'] as const) {
        const inputs = withFormat(makeCase({ ...D, s1 }, s1 * 7), format);
        const indexerRope = format === 'NZ' ? 'half' : 'interleaved';
        const a = fresh(inputs);
        const plain = indexerProlog(a, { indexerRope });
        const b = fresh(inputs);
        const r = await indexerPrologAsync(b, { indexerRope, signal: new AbortController().signal });
        expect(sameResult(r, plain), `${isa} s1=${s1} ${format}`).toBe(true);
        expect(sameCache(a, b), `${isa} s1=${s1} ${format}: cache`).toBe(true);
        if (format === 'NZ') {
          const p = prepareIndexerProlog(inputs, { indexerRope });
          const c = fresh(inputs);
          const pr = p.run(c);
          const d = fresh(inputs);
          expect(sameResult(await p.runAsync(d, { signal: new AbortController().signal }), pr), `${isa} s1=${s1} prepared`).toBe(true);
          expect(sameCache(c, d)).toBe(true);
        }
      }
    }
  });
});

describe('abort', () => {
  const BIG: Dims = { b: 2, s1: 400, h: 256, qLora: 128, heads: 8, di: 32, rope: 16, blocks: 60, blockSize: 16 };
  const big = makeCase(BIG, 1);

  it('an already aborted signal rejects with DSA_E_ABORTED and does nothing; sync calls refuse it too', async () => {
    const ctrl = new AbortController();
    ctrl.abort();
    const i = fresh(big);
    const e = await rejection(indexerPrologAsync(i, { signal: ctrl.signal }));
    expect(e.code).toBe('DSA_E_ABORTED');
    expect(e.argument).toBe('signal');
    expect(e.message?.startsWith('signal: ')).toBe(true);
    expect(sameCache(i, big)).toBe(true);
    expect(() => indexerProlog(i, { signal: ctrl.signal })).toThrow(expect.objectContaining({ code: 'DSA_E_ABORTED' }));
    const p = prepareIndexerProlog(big);
    expect((await rejection(p.runAsync(i, { signal: ctrl.signal }))).code).toBe('DSA_E_ABORTED');
    expect(() => p.run(i, { signal: ctrl.signal })).toThrow(expect.objectContaining({ code: 'DSA_E_ABORTED' }));
    expect(sameCache(i, big)).toBe(true);
  });

  it('a signal that is not an AbortSignal is a DSA_E_ARGUMENT (and prepared options take none)', async () => {
    const p = prepareIndexerProlog(big);
    for (const signal of ['stop', 1, null, {}, { aborted: 'no' }]) {
      const i = fresh(big);
      expect(() => indexerProlog(i, { signal: signal as never })).toThrow(expect.objectContaining({ code: 'DSA_E_ARGUMENT', argument: 'signal' }));
      expect((await rejection(indexerPrologAsync(i, { signal: signal as never }))).argument).toBe('signal');
      expect((await rejection(p.runAsync(i, { signal: signal as never }))).argument).toBe('signal');
      expect(sameCache(i, big)).toBe(true);
    }
    expect(() => prepareIndexerProlog(big, { signal: new AbortController().signal } as never)).toThrow(expect.objectContaining({ code: 'DSA_E_ARGUMENT', argument: 'signal' }));
    expect(() => p.run(fresh(big), 'fast' as never)).toThrow(expect.objectContaining({ code: 'DSA_E_ARGUMENT', argument: 'options' }));
  });

  it('mid-call, at several fractions of its duration: rejects and puts every cache row back', async () => {
    setIsa('scalar'); // a long call, many chunks
    const t0 = performance.now();
    const reference = await indexerPrologAsync(fresh(big), { signal: new AbortController().signal });
    const ms = performance.now() - t0;
    const plain = fresh(big);
    expect(sameResult(indexerProlog(plain), reference)).toBe(true);
    let aborted = 0;
    let completed = 0;
    // null: abort on the next turn of the event loop, while the first chunk runs.
    for (const f of [null, 0.1, 0.3, 0.5, 0.7, 0.9, 2]) {
      const i = fresh(big);
      const ctrl = new AbortController();
      const pending = indexerPrologAsync(i, { signal: ctrl.signal });
      if (f === null) setImmediate(() => ctrl.abort());
      else setTimeout(() => ctrl.abort(), ms * f);
      try {
        const r = await pending;
        expect(sameResult(r, reference)).toBe(true);
        expect(sameCache(i, plain)).toBe(true);
        completed++;
      } catch (e) {
        expect((e as { code?: string }).code).toBe('DSA_E_ABORTED');
        expect(sameCache(i, big), `abort at ${f}: cache changed`).toBe(true);
        aborted++;
      }
    }
    setIsa('auto');
    console.log(`indexer-prolog: ${tokenChunks(BIG.b * BIG.s1).length}-chunk call of ${ms.toFixed(1)} ms: ${aborted} aborted, ${completed} completed`);
    expect(aborted).toBeGreaterThan(0);
    expect(aborted + completed).toBe(7);
  });

  it('an abort while the call waits for the cache rejects without doing anything', async () => {
    const i = fresh(big);
    const seq = fresh(big);
    indexerProlog(seq);
    const first = indexerPrologAsync(i);
    const ctrl = new AbortController();
    const second = indexerPrologAsync({ ...i, x: makeCase(BIG, 2).x }, { signal: ctrl.signal });
    ctrl.abort();
    await first;
    expect((await rejection(second)).code).toBe('DSA_E_ABORTED');
    expect(sameCache(i, seq)).toBe(true);
  });
});

describe('cache lock', () => {
  const D: Dims = { b: 2, s1: 100, h: 48, qLora: 32, heads: 2, di: 16, rope: 8, blocks: 20, blockSize: 16 };

  it.each([false, true])('two async calls on the same cache run one after the other (the bytes of sequential calls; chunked %s)', async (chunked) => {
    const inputs = makeCase(D, 5);
    const other = { ...inputs, x: makeCase(D, 6).x, qNorm: makeCase(D, 6).qNorm };
    const seq = fresh(inputs);
    indexerProlog({ ...seq, x: other.x, qNorm: other.qNorm });
    const second = indexerProlog(seq);
    const shared = fresh(inputs);
    const options = chunked ? { signal: new AbortController().signal } : {};
    const p1 = indexerPrologAsync({ ...shared, x: other.x, qNorm: other.qNorm }, options);
    const p2 = indexerPrologAsync(shared, options);
    const [, r2] = await Promise.all([p1, p2]);
    expect(sameResult(r2, second)).toBe(true);
    expect(sameCache(shared, seq)).toBe(true);
  });

  it('a sync call while an async call holds the cache throws DSA_E_STATE naming it; other caches are free', async () => {
    const inputs = makeCase(D, 7);
    const shared = fresh(inputs);
    const p = prepareIndexerProlog(inputs);
    const starts = [() => indexerPrologAsync(shared), () => indexerPrologAsync(shared, { signal: new AbortController().signal }), () => p.runAsync(shared)];
    for (const start of starts) {
      const pending = start();
      expect(() => indexerProlog(shared)).toThrow(expect.objectContaining({ code: 'DSA_E_STATE', argument: 'indexKCache' }));
      expect(() => p.run(shared)).toThrow(expect.objectContaining({ code: 'DSA_E_STATE', argument: 'indexKCache' }));
      indexerProlog(fresh(inputs)); // another cache
      await pending;
    }
    indexerProlog(shared); // settled: sync calls are allowed again
  });

  it('many async calls in flight on independent caches give the bytes of sequential calls', async () => {
    const cases = Array.from({ length: 6 }, (_, k) => makeCase({ ...D, s1: 1 + k * 17 }, 40 + k));
    const seq = cases.map((c) => {
      const i = fresh(c);
      return [indexerProlog(i), i] as const;
    });
    const runs = cases.map(fresh);
    const results = await Promise.all(runs.map((i, k) => indexerPrologAsync(i, k % 2 ? { signal: new AbortController().signal } : {})));
    results.forEach((r, k) => {
      expect(sameResult(r, seq[k]![0])).toBe(true);
      expect(sameCache(runs[k]!, seq[k]![1])).toBe(true);
    });
  });
});
