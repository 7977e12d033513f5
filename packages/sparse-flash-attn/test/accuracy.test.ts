// Native kernel vs the float64 reference over the same index sets, on every ISA path and thread count.
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ArrayToF32, compareBf16, cpuFeatures, ISAS, setIsa, setNumThreads, type Isa } from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention } from '../src/index.js';
import { sparseFlashAttentionReference } from '../src/reference.js';
import { makeCase, NAN_BF16, poisoned, sameBytes, sameSnapshot, snapshot, type CaseSpec } from './cases.js';

const DEEPSEEK_SCALE = 0.1352338;
const best = cpuFeatures().best;
const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(best));

const specs: Record<string, CaseSpec & { softmaxScale?: number }> = {
  // odd widths (kvLora odd: a key pair straddles q_nope ‖ q_rope), MTP rows with fewer keys than topk
  'odd widths, MTP': { b: 2, s1: 2, n: 5, kvLora: 37, rope: 6, blockSize: 8, topk: 20, acts: [30, 3] },
  // several head groups and head-vector tails, -1 holes between valid indices, 3 key tiles (128 + 128 + 34)
  'many heads, holes, 3 tiles': { b: 1, s1: 1, n: 40, kvLora: 64, rope: 16, blockSize: 16, topk: 300, acts: [400], holes: true, count: 290 },
  // Two index splits of 300 positions each at DeepSeek widths, as separate tasks (1 row, 2 threads)
  // and within one task (1 thread; and 3 rows): the same bits either way.
  'two splits, DeepSeek widths': { b: 1, s1: 1, n: 20, kvLora: 512, rope: 64, blockSize: 64, topk: 600, acts: [1000], holes: true, count: 580 },
  'two splits, 3 rows': { b: 3, s1: 1, n: 17, kvLora: 512, rope: 64, blockSize: 64, topk: 512, acts: [700, 200, 513], holes: true },
  // DeepSeek per-head widths, 129 keys (a 1-key tail tile), a 1-key sequence
  'DeepSeek widths': { b: 3, s1: 1, n: 8, kvLora: 512, rope: 64, blockSize: 128, topk: 129, acts: [300, 1, 131] },
  'DeepSeek scale, peaky logits': {
    b: 2, s1: 3, n: 17, kvLora: 48, rope: 16, blockSize: 4, topk: 70, acts: [90, 40], qStd: 3, softmaxScale: DEEPSEEK_SCALE,
  },
  'sparseMode 0': { b: 2, s1: 3, n: 3, kvLora: 20, rope: 4, blockSize: 5, topk: 12, acts: [9, 2], sparseMode: 0 },
  'no rope columns': { b: 1, s1: 2, n: 2, kvLora: 33, rope: 0, blockSize: 3, topk: 9, acts: [11] },
};

afterAll(() => {
  setIsa('auto');
  setNumThreads(2);
});

describe.each(isas)('isa %s', (isa: Isa) => {
  for (const [name, spec] of Object.entries(specs)) {
    it(`${name}: matches the reference, 1 and 2 threads, every output element written`, () => {
      setIsa(isa);
      const { inputs } = makeCase(1000 + name.length, spec);
      const options = { softmaxScale: spec.softmaxScale, sparseMode: spec.sparseMode };
      const ref = sparseFlashAttentionReference(inputs, options).out;
      const before = snapshot(inputs);
      const outs: Uint16Array[] = [];
      for (const threads of [1, 2]) {
        setNumThreads(threads);
        const out = poisoned([...ref.shape]);
        nativeAddon().sparseFlashAttention(inputs, spec.softmaxScale ?? 0, spec.sparseMode ?? 3, { out });
        const got = bf16ArrayToF32(out.data);
        expect(got.some(Number.isNaN)).toBe(false);
        const cmp = compareBf16(got, bf16ArrayToF32(ref.data));
        expect(cmp.pass).toBe(true);
        expect(cmp.relL2).toBeLessThan(5e-3);
        outs.push(out.data);
      }
      // Tasks never share an output element: the thread count does not change a bit.
      expect(sameBytes(outs[1]!, outs[0]!)).toBe(true);
      // The public API gives the same bytes and reads its inputs only.
      expect(sameBytes(sparseFlashAttention(inputs, options).out.data, outs[0]!)).toBe(true);
      expect(sameSnapshot(snapshot(inputs), before)).toBe(true);
    });
  }
});

describe('precision', () => {
  it('stays within bf16 rounding of P on long rows (2048 keys, DeepSeek widths)', () => {
    const { inputs } = makeCase(77, { b: 1, s1: 1, n: 16, kvLora: 512, rope: 64, blockSize: 128, topk: 2048, acts: [2500] });
    const ref = bf16ArrayToF32(sparseFlashAttentionReference(inputs).out.data);
    const got = bf16ArrayToF32(sparseFlashAttention(inputs).out.data);
    const cmp = compareBf16(got, ref);
    expect(cmp.pass).toBe(true);
    expect(cmp.relL2).toBeLessThan(5e-3);
  });

  it('poison check is live: the test cases hold NaN in every unselected slot', () => {
    const { inputs } = makeCase(5, specs['odd widths, MTP']!);
    expect(Array.from(inputs.kvCache.data).filter((v) => v === NAN_BF16).length).toBeGreaterThan(0);
  });
});
