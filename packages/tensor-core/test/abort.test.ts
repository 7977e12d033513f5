import { describe, expect, it } from 'vitest';
import { abortedError, chunkAct, planRowChunks, saveCacheRows, signalOption, tokenRows, zeros } from '../src/index.js';

describe('cancellation helpers', () => {
  it('signalOption accepts AbortSignals by structure and names the argument otherwise', () => {
    const s = new AbortController().signal;
    expect(signalOption(s)).toBe(s);
    expect(signalOption(undefined)).toBeUndefined();
    for (const bad of [null, 5, 'stop', {}]) expect(() => signalOption(bad)).toThrow(/^signal: expected an AbortSignal/);
    expect(abortedError().code).toBe('DSA_E_ABORTED');
  });

  it('saveCacheRows puts back exactly the rows at non-negative slots', () => {
    const cache = zeros('bfloat16', [2, 4, 1, 3]);
    cache.data.forEach((_, i) => (cache.data[i] = i));
    const before = cache.data.slice();
    const restore = saveCacheRows([cache], Int32Array.from([5, -1, 2]));
    cache.data.fill(7);
    restore();
    for (let r = 0; r < 8; r++) {
      const row = Array.from(cache.data.subarray(r * 3, r * 3 + 3));
      expect(row).toEqual(r === 5 || r === 2 ? Array.from(before.subarray(r * 3, r * 3 + 3)) : [7, 7, 7]);
    }
  });

  it('tokenRows views tokens of a [b, s1, ...] tensor; row chunks cover every row once', () => {
    const t = zeros('bfloat16', [2, 3, 4]);
    const v = tokenRows(t, 2, 5);
    expect(v.shape).toEqual([1, 3, 4]);
    expect(v.data.buffer).toBe(t.data.buffer);
    expect(v.data.byteOffset).toBe(2 * 4 * 2);
    const chunks = planRowChunks(3, 4, () => 10, 25, 2);
    const rows = chunks.flatMap((c) => Array.from({ length: (c.b1 - c.b0) * (c.i1 - c.i0) }, (_, k) => (c.b0 + Math.floor(k / (c.i1 - c.i0))) * 4 + c.i0 + (k % (c.i1 - c.i0))));
    expect(rows.sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(chunkAct(10, 4, 2, 3)).toBe(8);
    expect(chunkAct(1, 4, 2, 3)).toBe(0);
    expect(chunkAct(10, 4, 2, 0)).toBe(10);
  });
});
