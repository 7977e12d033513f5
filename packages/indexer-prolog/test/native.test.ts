// Native kernel vs the float64 reference: every ISA path, both RoPE pairings, ND / NZ / PACKED weights,
// small, odd and DeepSeek per-head widths, decode and prefill-sized token counts.
import { cpuFeatures, type Isa, setIsa, setNumThreads, getNumThreads } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { indexerProlog, type IndexerRope } from '../src/index.js';
import { indexerPrologReference } from '../src/reference.js';
import { bf16Cache, type Dims, expectBf16Close, expectCache, makeCase, poisoned, type WeightFormat, withFormat } from './helpers.js';

const SHAPES: Record<string, Dims> = {
  small: { b: 2, s1: 1, h: 96, qLora: 48, heads: 3, di: 32, rope: 16, blocks: 4, blockSize: 8 },
  odd: { b: 1, s1: 5, h: 37, qLora: 21, heads: 5, di: 18, rope: 6, blocks: 7, blockSize: 3 },
  deepseekWidths: { b: 2, s1: 2, h: 160, qLora: 64, heads: 4, di: 128, rope: 64, blocks: 2, blockSize: 128 },
  prefill: { b: 1, s1: 37, h: 64, qLora: 32, heads: 2, di: 16, rope: 8, blocks: 5, blockSize: 16 },
  fullRope: { b: 3, s1: 2, h: 48, qLora: 16, heads: 2, di: 8, rope: 8, blocks: 2, blockSize: 4 },
  noRope: { b: 1, s1: 3, h: 32, qLora: 16, heads: 2, di: 16, rope: 0, blocks: 1, blockSize: 4 },
};

const features = cpuFeatures();
const ISAS_HERE: Isa[] = ['scalar', ...(features.avx2 && features.fma ? (['avx2'] as const) : []), ...(features.best === 'avx512' ? (['avx512'] as const) : [])];
const FORMATS: WeightFormat[] = ['ND', 'NZ', 'PACKED'];
const MODES: IndexerRope[] = ['interleaved', 'half'];

afterAll(() => setIsa('auto'));

let seed = 100;
function check(d: Dims, format: WeightFormat, mode: IndexerRope, eps = 1e-6): void {
  const base = withFormat(makeCase(d, seed++), format);
  const ref = indexerPrologReference(base, { indexerRope: mode, layerNormEps: eps });
  const inputs = poisoned(base);
  const out = indexerProlog(inputs, { indexerRope: mode, layerNormEps: eps });
  expect(out.query.shape).toEqual([d.b, d.s1, d.heads, d.di]);
  expect(out.weights.shape).toEqual([d.b, d.s1, d.heads]);
  expect(out.query.dtype).toBe('bfloat16');
  expectBf16Close(out.query.data, ref.query.data, 'query');
  expectBf16Close(out.weights.data, ref.weights.data, 'weights');
  expectCache(inputs.indexKCache.data, bf16Cache('reference indexKCache', ref.indexKCache).data, base.indexKCache.data, base.cacheIndex.data, d.di, 'indexKCache');
}

describe.each(ISAS_HERE)('indexerProlog on the %s path', (isa) => {
  it.each(Object.keys(SHAPES))('%s shapes, every format and RoPE mode', (name) => {
    setIsa(isa);
    for (const format of FORMATS) for (const mode of MODES) check(SHAPES[name]!, format, mode);
  });
});

describe('indexerProlog', () => {
  it('honours layerNormEps (a large eps changes the keys the reference way)', () => {
    setIsa('auto');
    check(SHAPES.small!, 'ND', 'interleaved', 0.5);
  });

  it('interleaved and half pairings give different queries and keys', () => {
    const inputs = makeCase(SHAPES.small!, 7);
    const a = indexerProlog(poisoned(inputs), { indexerRope: 'interleaved' });
    const b = indexerProlog(poisoned(inputs), { indexerRope: 'half' });
    expect(Buffer.from(a.query.data.buffer).equals(Buffer.from(b.query.data.buffer))).toBe(false);
    expect(a.weights.data).toEqual(b.weights.data);
  });

  it.each([['prefill', 'NZ'], ['small', 'PACKED'], ['deepseekWidths', 'NZ']] as const)(
    'is deterministic across thread counts (1 vs 2 threads, byte-equal): %s %s', (shape, format) => {
      const inputs = withFormat(makeCase(SHAPES[shape]!, 9), format);
      const threads = getNumThreads();
      try {
        setNumThreads(1);
        const c1 = poisoned(inputs);
        const one = indexerProlog(c1);
        setNumThreads(2);
        const c2 = poisoned(inputs);
        const two = indexerProlog(c2);
        expect(two.query.data).toEqual(one.query.data);
        expect(two.weights.data).toEqual(one.weights.data);
        expect(c2.indexKCache.data).toEqual(c1.indexKCache.data);
      } finally {
        setNumThreads(threads);
      }
    });

  it('handles empty batches (b = 0, s1 = 0) without touching the cache', () => {
    for (const d of [{ ...SHAPES.small!, b: 0 }, { ...SHAPES.small!, s1: 0 }]) {
      const inputs = makeCase(d, 11);
      const before = inputs.indexKCache.data.slice();
      const out = indexerProlog(inputs);
      expect(out.query.shape).toEqual([d.b, d.s1, d.heads, d.di]);
      expect(out.query.data.length).toBe(0);
      expect(inputs.indexKCache.data).toEqual(before);
    }
  });

  it('a negative slot writes nothing, and its query and weights are still computed', () => {
    const d = SHAPES.small!;
    const inputs = makeCase(d, 12);
    inputs.cacheIndex.data.fill(-1);
    const before = inputs.indexKCache.data.slice();
    const ref = indexerPrologReference(inputs);
    const out = indexerProlog(inputs);
    expect(inputs.indexKCache.data).toEqual(before);
    expectBf16Close(out.query.data, ref.query.data, 'query');
    expectBf16Close(out.weights.data, ref.weights.data, 'weights');
  });
});
