import fc from 'fast-check';
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

describe('property: the chunk plan of a call with a signal', () => {
  it('covers every row once, in order, in chunks of whole entries or of one entry\'s rows, within budget but for the row step', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 7 }), fc.array(fc.nat(100), { minLength: 42, maxLength: 42 }), fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 4 }), (b, s1, costs, budget, rowStep) => {
        const cost = (bi: number, i: number): number => costs[bi * s1 + i]!;
        const chunks = planRowChunks(b, s1, cost, budget, rowStep);
        const rows: number[] = [];
        for (const { b0, b1, i0, i1 } of chunks) {
          expect(b1 > b0 && i1 > i0).toBe(true);
          const whole = i0 === 0 && i1 === s1;
          expect(whole || b1 === b0 + 1).toBe(true);
          const units: number[] = [];
          for (let bi = b0; bi < b1; bi++) {
            let u = 0;
            for (let i = i0; i < i1; i++) {
              rows.push(bi * s1 + i);
              u += cost(bi, i);
              if (!whole) units.push(cost(bi, i));
            }
            if (whole) units.push(u);
          }
          // Over budget only where the chunk could not end before its last entry (or row): there its
          // row count was not a multiple of rowStep.
          const total = units.reduce((a, v) => a + v, 0);
          const perUnit = whole ? s1 : 1;
          if (total > budget) expect(units.length === 1 || ((units.length - 1) * perUnit) % rowStep !== 0).toBe(true);
        }
        expect(rows).toEqual(Array.from({ length: b * s1 }, (_, r) => r));
      }),
      { numRuns: 300, seed: 5 },
    );
  });
});
