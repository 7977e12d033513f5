import { describe, expect, it } from 'vitest';
import { assertCachesIdle, isDsaError, withCaches, zeros } from '../src/index.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('cache lock', () => {
  it('serializes async calls on the same cache, in call order, and lets other caches run alongside', async () => {
    const a = zeros('bfloat16', [4]);
    const b = zeros('bfloat16', [4]);
    const log: string[] = [];
    const job = (name: string, ms: number) => async () => {
      log.push(`${name} start`);
      await tick(ms);
      log.push(`${name} end`);
      return name;
    };
    const p1 = withCaches([['kvCache', a]], job('1', 30));
    const p2 = withCaches([['kvCache', a]], job('2', 5));
    const p3 = withCaches([['kvCache', b]], job('3', 5));
    expect(await Promise.all([p1, p2, p3])).toEqual(['1', '2', '3']);
    expect(log.indexOf('1 end')).toBeLessThan(log.indexOf('2 start'));
    expect(log.indexOf('3 start')).toBeLessThan(log.indexOf('1 end'));
  });

  it('a sync call on a held cache throws DSA_E_STATE naming it; a failed call releases the cache', async () => {
    const a = zeros('bfloat16', [4]);
    const p = withCaches([['indexKCache', a]], async () => {
      await tick(5);
      throw new Error('boom');
    });
    let err: unknown;
    try {
      assertCachesIdle([['indexKCache', a]]);
    } catch (e) {
      err = e;
    }
    expect(isDsaError(err) && (err as { code: string }).code).toBe('DSA_E_STATE');
    expect((err as Error).message).toMatch(/^indexKCache: an async call/);
    await expect(p).rejects.toThrow('boom');
    expect(() => assertCachesIdle([['indexKCache', a]])).not.toThrow();
    expect(await withCaches([['indexKCache', a]], async () => 7)).toBe(7);
  });
});

describe('cache lock nesting', () => {
  it('a call made inside a holder of the same caches runs at once (no self-deadlock), others still wait', async () => {
    const a = zeros('bfloat16', [4]);
    const log: string[] = [];
    const outer = withCaches([['kvCache', a]], async () => {
      log.push('outer');
      await tick(5);
      assertCachesIdle([['kvCache', a]]);
      const inner = await withCaches([['kvCache', a]], async () => {
        log.push('inner');
        return 1;
      });
      log.push('outer end');
      return inner;
    });
    const other = withCaches([['kvCache', a]], async () => {
      log.push('other');
      return 2;
    });
    expect(() => assertCachesIdle([['kvCache', a]])).toThrow(/kvCache/);
    expect(await Promise.all([outer, other])).toEqual([1, 2]);
    expect(log).toEqual(['outer', 'inner', 'outer end', 'other']);
  });
});
