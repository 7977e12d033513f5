// The async twins give the sync bytes and leave the event loop running; the prepared form matches the
// reference and its own sync call.
import { setIsa } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { indexerProlog, indexerPrologAsync, prepareIndexerProlog } from '../src/index.js';
import { indexerPrologReference } from '../src/reference.js';
import { bf16Cache, type Dims, expectBf16Close, expectCache, makeCase, poisoned, withFormat } from './helpers.js';

const D: Dims = { b: 2, s1: 3, h: 80, qLora: 48, heads: 3, di: 32, rope: 16, blocks: 3, blockSize: 8 };

afterAll(() => setIsa('auto'));

describe('indexerPrologAsync', () => {
  it.each(['ND', 'NZ', 'PACKED'] as const)('returns the sync bytes and writes the same cache (%s)', async (format) => {
    const inputs = withFormat(makeCase(D, 21), format);
    const a = poisoned(inputs);
    const b = poisoned(inputs);
    const sync = indexerProlog(a, { indexerRope: 'half' });
    const async = await indexerPrologAsync(b, { indexerRope: 'half' });
    expect(async.query.data).toEqual(sync.query.data);
    expect(async.weights.data).toEqual(sync.weights.data);
    expect(b.indexKCache.data).toEqual(a.indexKCache.data);
    expect(async.query.shape).toEqual(sync.query.shape);
  });

  it('keeps the event loop ticking while the kernel runs', async () => {
    // Large enough on the scalar path to take a while; a blocking call would let no tick through.
    setIsa('scalar');
    const big: Dims = { b: 1, s1: 64, h: 1024, qLora: 512, heads: 16, di: 64, rope: 32, blocks: 1, blockSize: 64 };
    const inputs = makeCase(big, 22);
    let ticks = 0;
    let done = false;
    const tick = (): void => {
      if (done) return;
      ticks++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const p = indexerPrologAsync(inputs).finally(() => {
      done = true;
    });
    const out = await p;
    setIsa('auto');
    expect(ticks).toBeGreaterThan(1);
    expect(out.query.shape).toEqual([1, 64, 16, 64]);
  });
});

describe('prepareIndexerProlog', () => {
  it.each(['ND', 'NZ'] as const)('matches the reference from %s weights, sync and async', async (format) => {
    const inputs = withFormat(makeCase(D, 23), format);
    const prepared = prepareIndexerProlog(inputs, { indexerRope: 'half', layerNormEps: 1e-5 });
    expect(prepared.weights.wIdxQb.format).toBe('PACKED');
    expect(prepared.wIdxKProj?.shape).toEqual([D.h, D.di + D.heads]);
    const ref = indexerPrologReference(makeCase(D, 23), { indexerRope: 'half', layerNormEps: 1e-5 });
    const a = poisoned(inputs);
    const out = prepared.run(a);
    expectBf16Close(out.query.data, ref.query.data, 'query');
    expectBf16Close(out.weights.data, ref.weights.data, 'weights');
    expectCache(a.indexKCache.data, bf16Cache('reference indexKCache', ref.indexKCache).data, inputs.indexKCache.data, inputs.cacheIndex.data, D.di, 'indexKCache');
    const b = poisoned(inputs);
    const async = await prepared.runAsync(b);
    expect(async.query.data).toEqual(out.query.data);
    expect(async.weights.data).toEqual(out.weights.data);
    expect(b.indexKCache.data).toEqual(a.indexKCache.data);
  });

  it('accepts already packed weights and serves repeated steps', () => {
    const first = makeCase(D, 24);
    const prepared = prepareIndexerProlog(withFormat(first, 'PACKED'));
    for (let step = 0; step < 3; step++) {
      const inputs = { ...makeCase(D, 30 + step), wIdxQb: first.wIdxQb, wIdxK: first.wIdxK, wIdxProj: first.wIdxProj, inGammaK: first.inGammaK, inBetaK: first.inBetaK };
      const ref = indexerPrologReference(inputs);
      const run = poisoned(inputs);
      const out = prepared.run(run);
      expectBf16Close(out.query.data, ref.query.data, `step ${step} query`);
      expectCache(run.indexKCache.data, bf16Cache('reference indexKCache', ref.indexKCache).data, inputs.indexKCache.data, inputs.cacheIndex.data, D.di, `step ${step} cache`);
    }
  });
});
