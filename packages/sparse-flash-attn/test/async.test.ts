// The Async twin: same bytes as the sync call, and the event loop keeps turning while it runs.
import { describe, expect, it } from 'vitest';
import { sparseFlashAttention, sparseFlashAttentionAsync } from '../src/index.js';
import { makeCase, sameBytes } from './cases.js';

describe('sparseFlashAttentionAsync', () => {
  it('resolves to exactly the sync result', async () => {
    const { inputs } = makeCase(31, { b: 3, s1: 2, n: 20, kvLora: 40, rope: 8, blockSize: 8, topk: 70, acts: [80, 2, 71], holes: true });
    const sync = sparseFlashAttention(inputs, { softmaxScale: 0.2 }).out;
    const async_ = (await sparseFlashAttentionAsync(inputs, { softmaxScale: 0.2 })).out;
    expect(async_.shape).toEqual(sync.shape);
    expect(async_.dtype).toBe('bfloat16');
    expect(sameBytes(async_.data, sync.data)).toBe(true);
  });

  it('does not block the event loop', async () => {
    // ~0.6 GFLOP: tens of milliseconds on this machine, long enough to count timer turns.
    const { inputs } = makeCase(32, { b: 8, s1: 1, n: 64, kvLora: 512, rope: 64, blockSize: 128, topk: 512, acts: [600, 600, 600, 600, 600, 600, 600, 600] });
    let ticks = 0;
    let settled = false;
    const spin = (): void => {
      if (settled) return;
      ticks++;
      setImmediate(spin);
    };
    setImmediate(spin);
    const pending = sparseFlashAttentionAsync(inputs).finally(() => (settled = true));
    const { out } = await pending;
    expect(ticks).toBeGreaterThan(1);
    expect(sameBytes(out.data, sparseFlashAttention(inputs).out.data)).toBe(true);
  });

  it('two calls in flight both complete with their own results', async () => {
    const a = makeCase(33, { b: 2, s1: 1, n: 4, kvLora: 16, rope: 4, blockSize: 4, topk: 9, acts: [12, 10] }).inputs;
    const b = makeCase(34, { b: 1, s1: 2, n: 6, kvLora: 24, rope: 2, blockSize: 2, topk: 5, acts: [7] }).inputs;
    const [ra, rb] = await Promise.all([sparseFlashAttentionAsync(a), sparseFlashAttentionAsync(b)]);
    expect(sameBytes(ra.out.data, sparseFlashAttention(a).out.data)).toBe(true);
    expect(sameBytes(rb.out.data, sparseFlashAttention(b).out.data)).toBe(true);
  });
});
