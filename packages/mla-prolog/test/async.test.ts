import { setIsa } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { mlaProlog, mlaPrologAsync, prepareMlaProlog } from '../src/index.js';
import { cloneTensor, makeInputs, sameBytes, type Bf16CacheInputs, type Dims } from './helpers.js';

const D: Dims = { b: 2, s1: 256, h: 256, qLora: 128, n: 16, qkNope: 32, rope: 16, kvLora: 128, blockNum: 40, blockSize: 16 };

const withFreshCaches = (i: Bf16CacheInputs): Bf16CacheInputs => ({ ...i, kvCache: cloneTensor(i.kvCache), krCache: cloneTensor(i.krCache) });

describe('async twins', () => {
  afterAll(() => setIsa('auto'));

  it('give the same bytes as the sync call and keep the event loop turning', async () => {
    setIsa('scalar'); // the slowest path makes the call long enough to watch the loop
    const inputs = makeInputs(D, 1, { skip: 2 });
    const a = withFreshCaches(inputs);
    const b = withFreshCaches(inputs);
    const sync = mlaProlog(a);
    let ticks = 0;
    let running = true;
    const spin = (): void => {
      ticks++;
      if (running) setImmediate(spin);
    };
    setImmediate(spin);
    const t0 = performance.now();
    const pending = mlaPrologAsync(b);
    const callMs = performance.now() - t0;
    const r = await pending;
    const totalMs = performance.now() - t0;
    running = false;
    expect(ticks).toBeGreaterThan(2);
    expect(callMs).toBeLessThan(totalMs / 2);
    expect(sameBytes(r.qNope.data, sync.qNope.data)).toBe(true);
    expect(sameBytes(r.qRope.data, sync.qRope.data)).toBe(true);
    expect(sameBytes(r.qNorm.data, sync.qNorm.data)).toBe(true);
    expect(sameBytes(b.kvCache.data, a.kvCache.data)).toBe(true);
    expect(sameBytes(b.krCache.data, a.krCache.data)).toBe(true);
  });

  it('prepared runAsync equals run; concurrent calls do not interfere', async () => {
    setIsa('auto');
    const inputs = makeInputs(D, 2);
    const p = prepareMlaProlog(inputs);
    const a = withFreshCaches(inputs);
    const sync = p.run(a);
    const others = [0, 1, 2].map(() => withFreshCaches(inputs));
    const results = await Promise.all([...others.map((o) => p.runAsync(o)), mlaPrologAsync(withFreshCaches(inputs))]);
    for (const [k, r] of results.entries()) {
      if (k < 3) {
        expect(sameBytes(r.qNope.data, sync.qNope.data)).toBe(true);
        expect(sameBytes(others[k]!.kvCache.data, a.kvCache.data)).toBe(true);
        expect(sameBytes(others[k]!.krCache.data, a.krCache.data)).toBe(true);
      }
      expect(r.qNope.data.some((v) => v !== 0)).toBe(true);
    }
    p.dispose();
    await expect(p.runAsync(a)).rejects.toMatchObject({ code: 'DSA_E_STATE' });
  });
});

describe('calls on the same caches', () => {
  it('async calls are serialized in call order; a sync call meanwhile is refused', async () => {
    const inputs = makeInputs({ ...D, s1: 8 }, 3);
    const seq = withFreshCaches(inputs);
    const first = { ...seq, x: makeInputs({ ...D, s1: 8 }, 4).x };
    mlaProlog(first);
    const second = mlaProlog(seq); // same slots: the second call's rows win
    const shared = withFreshCaches(inputs);
    const p1 = mlaPrologAsync({ ...shared, x: first.x });
    const p2 = mlaPrologAsync(shared);
    expect(() => mlaProlog(shared)).toThrow(expect.objectContaining({ code: 'DSA_E_STATE', argument: 'kvCache' }));
    const [, r2] = await Promise.all([p1, p2]);
    expect(sameBytes(r2.qNope.data, second.qNope.data)).toBe(true);
    expect(sameBytes(shared.kvCache.data, seq.kvCache.data)).toBe(true);
    expect(sameBytes(shared.krCache.data, seq.krCache.data)).toBe(true);
    mlaProlog(shared); // settled: sync calls are allowed again
  });
});
