// The cache lock (tensor-core): async calls on the same indexKCache run one after the other, also
// with writers (the prologs) queued between them; a sync call while one is pending throws DSA_E_STATE.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { getNumThreads, isDsaError, setNumThreads, withCaches } from '@dsa/tensor-core';
import { lightningIndexer, lightningIndexerAsync, nativeAddon } from '../src/index.js';
import { type Bf16KeyInputs, makeInputs, sameBytes } from './helpers.js';

// Chunks hold a multiple of the thread count in rows; the chunk counts below assume 2 threads.
const threads0 = getNumThreads();
beforeAll(() => setNumThreads(2));
afterAll(() => setNumThreads(threads0));

afterEach(() => vi.restoreAllMocks());

const inputs = (seed: number) => makeInputs({ b: 3, s1: 2, heads: 8, dim: 32, blockSize: 16, acts: [300, 41, 7], seed });

function expectBusy(fn: () => unknown): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isDsaError(err), `expected a DsaError, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe('DSA_E_STATE');
  expect((err as { argument: string }).argument).toBe('indexKCache');
  expect((err as Error).message).toMatch(/^indexKCache: an async call on this cache has not settled yet/);
}

/** A writer (as a prolog would be) that replaces the cache contents once it holds the cache. */
function writeCache(x: Bf16KeyInputs, next: Uint16Array): Promise<void> {
  return withCaches([['indexKCache', x.indexKCache]], async () => {
    x.indexKCache.data.set(next);
  });
}

describe('cache lock', () => {
  it.each([false, true])('a sync call while an async one is pending throws DSA_E_STATE naming the cache (signal: %s)', async (withSignal) => {
    const x = inputs(51);
    const want = lightningIndexer(x, { topk: 20 }).indices.data;
    const pending = lightningIndexerAsync(x, { topk: 20, signal: withSignal ? new AbortController().signal : undefined });
    expectBusy(() => lightningIndexer(x, { topk: 20 }));
    // Another cache is free.
    const other = inputs(52);
    expect(() => lightningIndexer(other, { topk: 20 })).not.toThrow();
    expect(sameBytes((await pending).indices.data, want)).toBe(true);
    expect(() => lightningIndexer(x, { topk: 20 })).not.toThrow();
  });

  it('a chunked call holds the cache between its chunks', async () => {
    const x = makeInputs({ b: 1, s1: 6, heads: 64, dim: 128, blockSize: 128, acts: [20000], seed: 53, keys: 'bits' });
    const addon = nativeAddon();
    const spy = vi.spyOn(addon, 'runAsync');
    // Poll from the test's own async context (inside the call's context the lock lets calls through).
    const seen = new Set<number>();
    let done = false;
    const poll = (): void => {
      if (done) return;
      expectBusy(() => lightningIndexer(x, { topk: 4 }));
      seen.add(spy.mock.calls.length);
      setImmediate(poll);
    };
    const pending = lightningIndexerAsync(x, { topk: 64, signal: new AbortController().signal }).finally(() => (done = true));
    setImmediate(poll);
    await pending;
    expect(spy.mock.calls.length).toBeGreaterThanOrEqual(3);
    // Polls ran while later chunks were queued, not just during the first.
    expect(Math.max(...seen)).toBeGreaterThanOrEqual(2);
  });

  it('async calls on the same cache give the bytes of sequential calls', async () => {
    const x = inputs(54);
    const opts = [{ topk: 20 }, { topk: 5, sparseMode: 0 as const }, { topk: 64, returnScores: true }, { topk: 9 }];
    const want = opts.map((o) => lightningIndexer(x, o));
    const got = await Promise.all(opts.map((o, k) => lightningIndexerAsync(x, k % 2 ? { ...o, signal: new AbortController().signal } : o)));
    got.forEach((g, k) => {
      expect(sameBytes(g.indices.data, want[k]!.indices.data)).toBe(true);
      if (want[k]!.scores) expect(sameBytes(g.scores!.data, want[k]!.scores!.data)).toBe(true);
    });
  });

  it.each([false, true])('a writer queued between two readers runs after the first and before the second (signal: %s)', async (withSignal) => {
    const x = inputs(55);
    const next = inputs(56).indexKCache.data;
    const first = lightningIndexer(x, { topk: 30, returnScores: true });
    const second = lightningIndexer({ ...x, indexKCache: { ...x.indexKCache, data: next } }, { topk: 30, returnScores: true });
    expect(sameBytes(first.scores!.data, second.scores!.data)).toBe(false);
    const signal = withSignal ? new AbortController().signal : undefined;
    const a = lightningIndexerAsync(x, { topk: 30, returnScores: true, signal });
    const w = writeCache(x, next);
    const b = lightningIndexerAsync(x, { topk: 30, returnScores: true, signal });
    const [ra, , rb] = await Promise.all([a, w, b]);
    expect(sameBytes(ra.scores!.data, first.scores!.data)).toBe(true);
    expect(sameBytes(rb.scores!.data, second.scores!.data)).toBe(true);
    expect(sameBytes(rb.indices.data, second.indices.data)).toBe(true);
  });

  it('a caller that holds the cache (the fused chain) calls straight through', async () => {
    const x = inputs(57);
    const want = lightningIndexer(x, { topk: 12 }).indices.data;
    const r = await withCaches([['indexKCache', x.indexKCache]], async () => {
      const sync = lightningIndexer(x, { topk: 12 });
      const chunked = await lightningIndexerAsync(x, { topk: 12, signal: new AbortController().signal });
      const plain = await lightningIndexerAsync(x, { topk: 12 });
      return [sync, chunked, plain];
    });
    for (const g of r) expect(sameBytes(g.indices.data, want)).toBe(true);
  });
});
