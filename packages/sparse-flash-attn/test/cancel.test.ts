// Cancellation: options.signal on the async call. An abort stops the call between chunks of query
// rows; a signal that never fires gives the bytes of a call without one.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { getNumThreads, isDsaError, setNumThreads } from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention, sparseFlashAttentionAsync, type SparseFlashAttentionInputs } from '../src/index.js';
import { chunking } from '../src/cancel.js';
import { i32, makeCase, sameBytes, sameSnapshot, snapshot, type Bf16CacheInputs } from './cases.js';

// Chunks hold a multiple of the thread count in rows; the chunk counts below assume 2 threads.
const threads0 = getNumThreads();
beforeAll(() => setNumThreads(2));
afterAll(() => setNumThreads(threads0));

const budget0 = chunking.budget;
afterEach(() => {
  chunking.budget = budget0;
  vi.restoreAllMocks();
});

function expectAborted(err: unknown): void {
  expect(isDsaError(err), `expected a DsaError, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe('DSA_E_ABORTED');
  expect((err as Error).message).toMatch(/^signal: /);
  expect((err as { argument: string }).argument).toBe('signal');
}

// DeepSeek widths, 128 heads, 1024 of ~1100 keys per row (MTP s1 = 6): one row per chunk at the default budget.
// Made once (the calls only read it; each test checks that).
let longInputs: Bf16CacheInputs | undefined;
const long = () =>
  (longInputs ??= makeCase(61, { b: 2, s1: 6, n: 128, kvLora: 512, rope: 64, blockSize: 128, topk: 1024, acts: [1100, 1100] }).inputs);
const small = (seed = 60) => makeCase(seed, { b: 2, s1: 2, n: 3, kvLora: 12, rope: 4, blockSize: 4, topk: 4, acts: [10, 5] }).inputs;

/** The same tensor with its data at an offset inside a larger buffer. */
function offsetView<T extends Bf16CacheInputs[keyof Bf16CacheInputs]>(t: T): T {
  const big = new (t.data.constructor as new (n: number) => T['data'])(t.data.length + 5);
  big.set(t.data as never, 3);
  return { ...t, data: big.subarray(3, 3 + t.data.length) };
}

describe('signal: already aborted', () => {
  it('rejects with DSA_E_ABORTED without a native call or taking the caches', async () => {
    const x = small();
    const spy = vi.spyOn(nativeAddon(), 'sparseFlashAttentionAsync');
    const pending = sparseFlashAttentionAsync(x, { signal: AbortSignal.abort() });
    expect(() => sparseFlashAttention(x)).not.toThrow();
    expectAborted(await pending.then(() => null, (e: unknown) => e));
    expect(spy).not.toHaveBeenCalled();
  });

  it('the sync call throws the same', () => {
    let err: unknown;
    try {
      sparseFlashAttention(small(), { signal: AbortSignal.abort('why') });
    } catch (e) {
      err = e;
    }
    expectAborted(err);
  });

  it('a signal that is not an AbortSignal is a DSA_E_ARGUMENT', async () => {
    const x = small();
    for (const signal of [{}, 'abort', 1, null, { aborted: 'no', addEventListener: () => {} }]) {
      const err = await sparseFlashAttentionAsync(x, { signal: signal as unknown as AbortSignal }).then(() => null, (e: unknown) => e);
      expect((err as { code: string }).code).toBe('DSA_E_ARGUMENT');
      expect((err as Error).message).toMatch(/^signal: expected an AbortSignal, got /);
      expect(() => sparseFlashAttention(x, { signal: signal as unknown as AbortSignal })).toThrow(/^signal: /);
    }
  });
});

describe('signal: aborted during the call', () => {
  it('stops right after the chunk in flight (abort from inside the k-th native call)', async () => {
    const x = long();
    const before = snapshot(x);
    const addon = nativeAddon();
    const run = addon.sparseFlashAttentionAsync.bind(addon);
    const counter = vi.spyOn(addon, 'sparseFlashAttentionAsync');
    await sparseFlashAttentionAsync(x, { signal: new AbortController().signal });
    expect(counter.mock.calls.length).toBeGreaterThanOrEqual(4);
    vi.restoreAllMocks();
    for (const k of [1, 3]) {
      const ac = new AbortController();
      let calls = 0;
      vi.spyOn(addon, 'sparseFlashAttentionAsync').mockImplementation(((...args: Parameters<typeof run>) => {
        if (++calls === k) ac.abort();
        return run(...args);
      }) as typeof run);
      expectAborted(await sparseFlashAttentionAsync(x, { signal: ac.signal }).then(() => null, (e: unknown) => e));
      expect(calls).toBe(k);
      vi.restoreAllMocks();
    }
    expect(sameSnapshot(snapshot(x), before)).toBe(true);
  });

  it('aborts at several fractions of the measured duration; caches unchanged, finished calls exact', async () => {
    const x = long();
    const before = snapshot(x);
    const want = sparseFlashAttention(x).out.data;
    let t0 = performance.now();
    const full = await sparseFlashAttentionAsync(x, { signal: new AbortController().signal });
    const ms = performance.now() - t0;
    expect(sameBytes(full.out.data, want)).toBe(true);
    let aborted = 0;
    for (const f of [0.05, 0.25, 0.5, 0.75, 0.95]) {
      const ac = new AbortController();
      t0 = performance.now();
      const timer = setTimeout(() => ac.abort(), f * ms);
      const r = await sparseFlashAttentionAsync(x, { signal: ac.signal }).then((v) => v, (e: unknown) => e);
      clearTimeout(timer);
      if (isDsaError(r)) {
        expectAborted(r);
        aborted++;
      } else {
        expect(sameBytes((r as { out: { data: Uint16Array } }).out.data, want)).toBe(true);
      }
      expect(sameSnapshot(snapshot(x), before)).toBe(true);
    }
    expect(aborted).toBeGreaterThanOrEqual(1);
  });
});

describe('signal: never fired', () => {
  const inputs = () => makeCase(62, { b: 4, s1: 3, n: 5, kvLora: 20, rope: 4, blockSize: 4, topk: 9, acts: [0, 2, 37, 20], count: 'random', holes: true }).inputs;

  // Budget 1: one row per chunk; 3000: an entry's rows in runs; 40000: whole entries grouped.
  it.each([1, 3000, 40_000, 2 ** 27])('budget %d: the same bytes as without a signal', async (budget) => {
    chunking.budget = budget;
    const x = inputs();
    for (const sparseMode of [3, 0] as const) {
      const options = { sparseMode, softmaxScale: 0.3 };
      const want = sparseFlashAttention(x, options).out;
      const got = (await sparseFlashAttentionAsync(x, { ...options, signal: new AbortController().signal })).out;
      expect(got.shape).toEqual(want.shape);
      expect(sameBytes(got.data, want.data)).toBe(true);
    }
  });

  it('inputs that are views at an offset in larger buffers', async () => {
    chunking.budget = 3000;
    const x = inputs();
    const v = Object.fromEntries(Object.entries(x).map(([k, t]) => [k, offsetView(t)])) as unknown as SparseFlashAttentionInputs;
    const want = sparseFlashAttention(x).out.data;
    expect(sameBytes((await sparseFlashAttentionAsync(v, { signal: new AbortController().signal })).out.data, want)).toBe(true);
  });

  it('b = 0 with a signal gives an empty output', async () => {
    const e = inputs();
    const none: SparseFlashAttentionInputs = {
      ...e,
      qNope: { ...e.qNope, shape: [0, 3, 5, 20], data: new Uint16Array(0) },
      qRope: { ...e.qRope, shape: [0, 3, 5, 4], data: new Uint16Array(0) },
      indices: i32([0, 3, 9], new Int32Array(0)),
      blockTable: i32([0, e.blockTable.shape[1]!], new Int32Array(0)),
      actSeqs: i32([0], new Int32Array(0)),
    };
    const r = await sparseFlashAttentionAsync(none, { signal: new AbortController().signal });
    expect(r.out.shape).toEqual([0, 3, 5, 20]);
  });
});
