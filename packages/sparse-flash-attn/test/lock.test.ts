// The cache lock (tensor-core): async calls on the same kvCache/krCache run one after the other, also
// with writers (the MLA prolog) queued between them; a sync call while one is pending throws DSA_E_STATE.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { getNumThreads, isDsaError, Rng, setNumThreads, withCaches } from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention, sparseFlashAttentionAsync, type SparseFlashAttentionInputs } from '../src/index.js';
import { makeCase, sameBytes } from './cases.js';

// Chunks hold a multiple of the thread count in rows; the chunk counts below assume 2 threads.
const threads0 = getNumThreads();
beforeAll(() => setNumThreads(2));
afterAll(() => setNumThreads(threads0));

afterEach(() => vi.restoreAllMocks());

const inputs = (seed: number) =>
  makeCase(seed, { b: 3, s1: 2, n: 8, kvLora: 32, rope: 8, blockSize: 8, topk: 40, acts: [90, 33, 7] }).inputs;

function expectBusy(fn: () => unknown, cache: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isDsaError(err), `expected a DsaError, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe('DSA_E_STATE');
  expect((err as { argument: string }).argument).toBe(cache);
  expect((err as Error).message).toMatch(new RegExp(`^${cache}: an async call on this cache has not settled yet`));
}

describe('cache lock', () => {
  it.each([false, true])('a sync call while an async one is pending throws DSA_E_STATE naming the cache (signal: %s)', async (withSignal) => {
    const x = inputs(71);
    const want = sparseFlashAttention(x).out.data;
    const pending = sparseFlashAttentionAsync(x, { signal: withSignal ? new AbortController().signal : undefined });
    expectBusy(() => sparseFlashAttention(x), 'kvCache');
    // Sharing only the rope cache is enough to wait.
    const other = inputs(72);
    expectBusy(() => sparseFlashAttention({ ...other, krCache: x.krCache }), 'krCache');
    expect(() => sparseFlashAttention(other)).not.toThrow();
    expect(sameBytes((await pending).out.data, want)).toBe(true);
    expect(() => sparseFlashAttention(x)).not.toThrow();
  });

  it('a chunked call holds the caches between its chunks', async () => {
    const x = makeCase(73, { b: 1, s1: 6, n: 128, kvLora: 512, rope: 64, blockSize: 128, topk: 1024, acts: [1100] }).inputs;
    const spy = vi.spyOn(nativeAddon(), 'sparseFlashAttentionAsync');
    // Poll from the test's own async context (inside the call's context the lock lets calls through).
    const seen = new Set<number>();
    let done = false;
    const poll = (): void => {
      if (done) return;
      expectBusy(() => sparseFlashAttention(x), 'kvCache');
      seen.add(spy.mock.calls.length);
      setImmediate(poll);
    };
    const pending = sparseFlashAttentionAsync(x, { signal: new AbortController().signal }).finally(() => (done = true));
    setImmediate(poll);
    await pending;
    expect(spy.mock.calls.length).toBeGreaterThanOrEqual(3);
    expect(Math.max(...seen)).toBeGreaterThanOrEqual(2);
  });

  it('async calls on the same caches give the bytes of sequential calls', async () => {
    const x = inputs(74);
    const opts = [{}, { sparseMode: 0 as const }, { softmaxScale: 0.1352338 }, { softmaxScale: 0.5, sparseMode: 0 as const }];
    const want = opts.map((o) => sparseFlashAttention(x, o).out.data);
    const got = await Promise.all(opts.map((o, k) => sparseFlashAttentionAsync(x, k % 2 ? { ...o, signal: new AbortController().signal } : o)));
    got.forEach((g, k) => expect(sameBytes(g.out.data, want[k]!)).toBe(true));
  });

  it.each([false, true])('a writer queued between two readers runs after the first and before the second (signal: %s)', async (withSignal) => {
    const x = inputs(75);
    const rng = new Rng(76);
    const nextKv = rng.normalTensor([...x.kvCache.shape]).data;
    const nextKr = rng.normalTensor([...x.krCache.shape]).data;
    const second: SparseFlashAttentionInputs = { ...x, kvCache: { ...x.kvCache, data: nextKv }, krCache: { ...x.krCache, data: nextKr } };
    const wantFirst = sparseFlashAttention(x).out.data;
    const wantSecond = sparseFlashAttention(second).out.data;
    expect(sameBytes(wantFirst, wantSecond)).toBe(false);
    const signal = withSignal ? new AbortController().signal : undefined;
    const a = sparseFlashAttentionAsync(x, { signal });
    const w = withCaches([['kvCache', x.kvCache], ['krCache', x.krCache]], async () => {
      x.kvCache.data.set(nextKv);
      x.krCache.data.set(nextKr);
    });
    const b = sparseFlashAttentionAsync(x, { signal });
    const [ra, , rb] = await Promise.all([a, w, b]);
    expect(sameBytes(ra.out.data, wantFirst)).toBe(true);
    expect(sameBytes(rb.out.data, wantSecond)).toBe(true);
  });

  it('a caller that holds the caches (the fused chain) calls straight through', async () => {
    const x = inputs(77);
    const want = sparseFlashAttention(x).out.data;
    const r = await withCaches([['kvCache', x.kvCache], ['krCache', x.krCache]], async () => [
      sparseFlashAttention(x),
      await sparseFlashAttentionAsync(x, { signal: new AbortController().signal }),
      await sparseFlashAttentionAsync(x),
    ]);
    for (const g of r) expect(sameBytes(g.out.data, want)).toBe(true);
  });
});
