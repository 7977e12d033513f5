// Cancellation: options.signal on the async call. An abort stops the call between chunks of query
// rows; a signal that never fires gives the bytes of a call without one.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { getNumThreads, isDsaError, setNumThreads } from '@dsa/tensor-core';
import { type LightningIndexerInputs, lightningIndexer, lightningIndexerAsync, nativeAddon } from '../src/index.js';
import { chunking } from '../src/cancel.js';
import { type Bf16KeyInputs, makeInputs, sameBytes } from './helpers.js';

// Chunks hold a multiple of the thread count in rows; the chunk counts below assume 2 threads.
const threads0 = getNumThreads();
beforeAll(() => setNumThreads(2));
afterAll(() => setNumThreads(threads0));

const budget0 = chunking.budget;
afterEach(() => {
  chunking.budget = budget0;
  vi.restoreAllMocks();
});

const cacheCopy = (x: Bf16KeyInputs): Uint16Array => x.indexKCache.data.slice();

function expectAborted(err: unknown): void {
  expect(isDsaError(err), `expected a DsaError, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe('DSA_E_ABORTED');
  expect((err as Error).message).toMatch(/^signal: /);
  expect((err as { argument: string }).argument).toBe('signal');
}

// DeepSeek widths, 8 query rows x 32K keys: one row per chunk at the default budget, tens of ms.
// Made once (the calls only read it; each test checks that).
let longInputs: Bf16KeyInputs | undefined;
const long = () => (longInputs ??= makeInputs({ b: 1, s1: 8, heads: 64, dim: 128, blockSize: 128, acts: [32768], seed: 41, keys: 'bits' }));

/** The same tensor with its data at an offset inside a larger buffer. */
function offsetView<T extends LightningIndexerInputs[keyof LightningIndexerInputs]>(t: T): T {
  const big = new (t.data.constructor as new (n: number) => T['data'])(t.data.length + 5);
  big.set(t.data as never, 3);
  return { ...t, data: big.subarray(3, 3 + t.data.length) };
}

describe('signal: already aborted', () => {
  it('rejects with DSA_E_ABORTED without a native call or taking the cache', async () => {
    const x = makeInputs({ b: 2, s1: 2, heads: 3, dim: 4, blockSize: 4, acts: [5, 9], seed: 40 });
    const spy = vi.spyOn(nativeAddon(), 'runAsync');
    const pending = lightningIndexerAsync(x, { signal: AbortSignal.abort() });
    // The cache is not held: a sync call goes through at once.
    expect(() => lightningIndexer(x, { topk: 4 })).not.toThrow();
    expectAborted(await pending.then(() => null, (e: unknown) => e));
    expect(spy).not.toHaveBeenCalled();
  });

  it('the sync call throws the same', () => {
    const x = makeInputs({ b: 1, s1: 1, heads: 2, dim: 4, blockSize: 4, acts: [3], seed: 42 });
    let err: unknown;
    try {
      lightningIndexer(x, { signal: AbortSignal.abort() });
    } catch (e) {
      err = e;
    }
    expectAborted(err);
  });

  it('a signal that is not an AbortSignal is a DSA_E_ARGUMENT', async () => {
    const x = makeInputs({ b: 1, s1: 1, heads: 2, dim: 4, blockSize: 4, acts: [3], seed: 43 });
    for (const signal of [{}, 'abort', 1, null, { aborted: 'no', addEventListener: () => {} }]) {
      const err = await lightningIndexerAsync(x, { signal: signal as unknown as AbortSignal }).then(() => null, (e: unknown) => e);
      expect((err as { code: string }).code).toBe('DSA_E_ARGUMENT');
      expect((err as Error).message).toMatch(/^signal: expected an AbortSignal, got /);
      expect(() => lightningIndexer(x, { signal: signal as unknown as AbortSignal })).toThrow(/^signal: /);
    }
  });
});

describe('signal: aborted during the call', () => {
  it('stops right after the chunk in flight (abort from inside the k-th native call)', async () => {
    const x = long();
    const before = cacheCopy(x);
    const addon = nativeAddon();
    const run = addon.runAsync.bind(addon);
    const counter = vi.spyOn(addon, 'runAsync');
    await lightningIndexerAsync(x, { signal: new AbortController().signal });
    expect(counter.mock.calls.length).toBeGreaterThanOrEqual(4);
    vi.restoreAllMocks();
    for (const k of [1, 3]) {
      const ac = new AbortController();
      let calls = 0;
      vi.spyOn(addon, 'runAsync').mockImplementation((...args: Parameters<typeof run>) => {
        if (++calls === k) ac.abort();
        return run(...args);
      });
      expectAborted(await lightningIndexerAsync(x, { signal: ac.signal }).then(() => null, (e: unknown) => e));
      expect(calls).toBe(k);
      vi.restoreAllMocks();
    }
    expect(sameBytes(x.indexKCache.data, before)).toBe(true);
  });

  it('aborts at several fractions of the measured duration; caches unchanged, finished calls exact', async () => {
    const x = long();
    const before = cacheCopy(x);
    const want = lightningIndexer(x, { topk: 2048 }).indices.data;
    let t0 = performance.now();
    const full = await lightningIndexerAsync(x, { topk: 2048, signal: new AbortController().signal });
    const ms = performance.now() - t0;
    expect(sameBytes(full.indices.data, want)).toBe(true);
    let aborted = 0;
    for (const f of [0.05, 0.25, 0.5, 0.75, 0.95]) {
      const ac = new AbortController();
      t0 = performance.now();
      const timer = setTimeout(() => ac.abort(), f * ms);
      const r = await lightningIndexerAsync(x, { topk: 2048, signal: ac.signal }).then((v) => v, (e: unknown) => e);
      clearTimeout(timer);
      if (isDsaError(r)) {
        expectAborted(r);
        aborted++;
      } else {
        expect(sameBytes((r as { indices: { data: Int32Array } }).indices.data, want)).toBe(true);
      }
      expect(sameBytes(x.indexKCache.data, before)).toBe(true);
    }
    expect(aborted).toBeGreaterThanOrEqual(1);
  });
});

describe('signal: never fired', () => {
  const inputs = () => makeInputs({ b: 4, s1: 3, heads: 5, dim: 9, blockSize: 8, acts: [0, 2, 77, 40], seed: 44 });

  // Budget 1: one row per chunk; 3000: an entry's rows in runs; 40000: whole entries grouped.
  it.each([1, 3000, 40_000, 2 ** 27])('budget %d: the same bytes as without a signal', async (budget) => {
    chunking.budget = budget;
    const x = inputs();
    for (const sparseMode of [3, 0] as const) {
      for (const returnScores of [true, false]) {
        const options = { topk: 7, sparseMode, returnScores };
        const want = lightningIndexer(x, options);
        const got = await lightningIndexerAsync(x, { ...options, signal: new AbortController().signal });
        expect(sameBytes(got.indices.data, want.indices.data)).toBe(true);
        expect(got.indices.shape).toEqual(want.indices.shape);
        if (returnScores) {
          expect(got.scores!.shape).toEqual(want.scores!.shape);
          expect(sameBytes(got.scores!.data, want.scores!.data)).toBe(true);
        } else {
          expect(got.scores).toBeUndefined();
        }
      }
    }
  });

  it('inputs that are views at an offset in larger buffers', async () => {
    chunking.budget = 3000;
    const x = inputs();
    const v: LightningIndexerInputs = {
      query: offsetView(x.query), weights: offsetView(x.weights), indexKCache: offsetView(x.indexKCache),
      blockTable: offsetView(x.blockTable), actSeqs: offsetView(x.actSeqs),
    };
    const want = lightningIndexer(x, { topk: 7, returnScores: true });
    const got = await lightningIndexerAsync(v, { topk: 7, returnScores: true, signal: new AbortController().signal });
    expect(sameBytes(got.indices.data, want.indices.data)).toBe(true);
    expect(sameBytes(got.scores!.data, want.scores!.data)).toBe(true);
  });

  it('b = 0 and s1 = 0 with a signal give empty outputs', async () => {
    const e = inputs();
    const none: LightningIndexerInputs = {
      ...e,
      query: { ...e.query, shape: [0, 3, 5, 9], data: new Uint16Array(0) },
      weights: { ...e.weights, shape: [0, 3, 5], data: new Uint16Array(0) },
      blockTable: { ...e.blockTable, shape: [0, e.blockTable.shape[1]!], data: new Int32Array(0) },
      actSeqs: { ...e.actSeqs, shape: [0], data: new Int32Array(0) },
    };
    const r = await lightningIndexerAsync(none, { topk: 4, returnScores: true, signal: new AbortController().signal });
    expect(r.indices.shape).toEqual([0, 3, 4]);
    expect(r.scores!.shape).toEqual([0, 3, 0]);
  });
});
