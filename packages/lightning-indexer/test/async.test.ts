import { afterAll, describe, expect, it } from 'vitest';
import { getNumThreads, setIsa, setNumThreads } from '@dsa/tensor-core';
import { lightningIndexer, lightningIndexerAsync } from '../src/index.js';
import { isas, makeInputs, sameBytes } from './helpers.js';

const threads0 = getNumThreads();
afterAll(() => {
  setIsa('auto');
  setNumThreads(threads0);
});

describe('lightningIndexerAsync', () => {
  it.each(isas())('resolves byte-equal to the sync call (%s)', async (isa) => {
    setIsa(isa);
    const x = makeInputs({ b: 3, s1: 2, heads: 6, dim: 10, blockSize: 8, acts: [1, 70, 333], seed: 31 });
    const sync = lightningIndexer(x, { topk: 50, returnScores: true });
    const [a, b] = await Promise.all([
      lightningIndexerAsync(x, { topk: 50, returnScores: true }),
      lightningIndexerAsync(x, { topk: 50, sparseMode: 0 }),
    ]);
    expect(sameBytes(a.indices.data, sync.indices.data)).toBe(true);
    expect(sameBytes(a.scores!.data, sync.scores!.data)).toBe(true);
    expect(sameBytes(b.indices.data, lightningIndexer(x, { topk: 50, sparseMode: 0 }).indices.data)).toBe(true);
  });

  it('keeps the event loop ticking during a long call', async () => {
    setIsa('auto');
    // DeepSeek dims, 8 query rows x 32K keys: tens of milliseconds of native work.
    const x = makeInputs({ b: 1, s1: 8, heads: 64, dim: 128, blockSize: 128, acts: [32768], seed: 32, keys: 'bits' });
    let ticks = 0;
    let running = true;
    const tick = (): void => {
      ticks++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    const t0 = performance.now();
    const r = await lightningIndexerAsync(x, { topk: 2048 });
    running = false;
    const ms = performance.now() - t0;
    expect(ticks).toBeGreaterThan(2);
    expect(r.indices.shape).toEqual([1, 8, 2048]);
    expect(ms).toBeGreaterThan(0);
    expect(sameBytes(r.indices.data, lightningIndexer(x, { topk: 2048 }).indices.data)).toBe(true);
  });
});
