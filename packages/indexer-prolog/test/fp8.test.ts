// FP8 weights (block-scaled e4m3 as the checkpoint stores wq_b and wk; weights_proj stays bf16) through
// the indexer prolog: against the float64 reference on the exactly dequantized weights, every ISA,
// raw and prepared, and against the same call on the weights dequantized to bf16.
import { compareBf16, cpuFeatures, dequantizeFp8Weight, f32ArrayToBf16, type Fp8Weight, type Isa, Rng, setIsa, bf16ArrayToF32, type Bf16Tensor } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { indexerProlog, prepareIndexerProlog, type IndexerPrologInputs, type IndexerRope } from '../src/index.js';
import { indexerPrologReference } from '../src/reference.js';
import { bf16Cache, type Bf16CacheInputs, type Dims, expectBf16Close, expectCache, makeCase, poisoned } from './helpers.js';

const SHAPES: Record<string, Dims> = {
  // Partial 128-blocks in K and N, K not a multiple of 4.
  odd: { b: 1, s1: 5, h: 137, qLora: 131, heads: 5, di: 18, rope: 6, blocks: 7, blockSize: 3 },
  decode: { b: 2, s1: 1, h: 160, qLora: 136, heads: 4, di: 128, rope: 64, blocks: 2, blockSize: 8 },
  prefill: { b: 1, s1: 20, h: 96, qLora: 64, heads: 3, di: 32, rope: 16, blocks: 3, blockSize: 16 },
};

const features = cpuFeatures();
const ISAS_HERE: Isa[] = ['scalar', ...(features.avx2 && features.fma ? (['avx2'] as const) : []), ...(features.best === 'avx512' ? (['avx512'] as const) : [])];
afterAll(() => setIsa('auto'));

function fp8Case(d: Dims, seed: number): Bf16CacheInputs & { wIdxQb: Fp8Weight; wIdxK: Fp8Weight } {
  const base = makeCase(d, seed);
  const rng = new Rng(seed + 500);
  return {
    ...base,
    wIdxQb: rng.fp8Weight([d.qLora, d.heads * d.di], 'NT', { scale: 1 / 448, pow2: seed % 2 === 0 }),
    wIdxK: rng.fp8Weight([d.h, d.di], 'NT', { scale: 1 / 448 }),
  };
}

function check(inputs: Bf16CacheInputs, d: Dims, mode: IndexerRope, run: (i: IndexerPrologInputs) => { query: Bf16Tensor; weights: Bf16Tensor }): void {
  const ref = indexerPrologReference(inputs, { indexerRope: mode });
  const p = poisoned(inputs);
  const out = run(p);
  expectBf16Close(out.query.data, ref.query.data, 'query');
  expectBf16Close(out.weights.data, ref.weights.data, 'weights');
  expectCache(p.indexKCache.data, bf16Cache('reference indexKCache', ref.indexKCache).data, inputs.indexKCache.data, inputs.cacheIndex.data, d.di, 'indexKCache');
}

let seed = 300;
describe.each(ISAS_HERE)('FP8 weights on the %s path', (isa) => {
  it.each(Object.keys(SHAPES))('%s shapes: raw NT and prepared, both RoPE pairings', (name) => {
    setIsa(isa);
    const d = SHAPES[name]!;
    for (const mode of ['interleaved', 'half'] as const) {
      const inputs = fp8Case(d, seed++);
      check(inputs, d, mode, (i) => indexerProlog(i, { indexerRope: mode }));
      const prepared = prepareIndexerProlog(inputs, { indexerRope: mode });
      expect(prepared.weights.wIdxQb.format).toBe('PACKED');
      expect(prepared.wIdxKProj).toBeUndefined();
      check(inputs, d, mode, (i) => prepared.run(i));
    }
  });
});

describe('FP8 weights: agreement with bf16 and errors', () => {
  it('FP8 and the bf16-dequantized weights agree to the bf16 rounding', () => {
    setIsa('auto');
    for (const d of [SHAPES.decode!, SHAPES.prefill!]) {
      const f = fp8Case(d, seed++);
      const bf = (w: Fp8Weight): Bf16Tensor => ({ dtype: 'bfloat16', shape: [...w.shape], data: f32ArrayToBf16(dequantizeFp8Weight(w)), format: 'ND' });
      const a = indexerProlog(poisoned(f));
      const b = indexerProlog(poisoned({ ...f, wIdxQb: bf(f.wIdxQb), wIdxK: bf(f.wIdxK) }));
      for (const [name, x, y] of [['query', a.query, b.query], ['weights', a.weights, b.weights]] as const) {
        // Two bf16 roundings apart (the weights' on one side, each output's own), so the paths agree to
        // the spec's relL2 bar and a 0.95 close fraction; each meets the spec's full bar against the
        // float64 reference above (elements at the tolerance edge flip with the summation order).
        const c = compareBf16(bf16ArrayToF32(x.data), bf16ArrayToF32(y.data));
        expect(c.relL2, name).toBeLessThanOrEqual(1e-2);
        expect(c.close, name).toBeGreaterThanOrEqual(0.95);
      }
    }
  });

  it('rejects an FP8 weight whose block scales do not fit, before writing the cache', () => {
    const d = SHAPES.odd!;
    const f = fp8Case(d, 9);
    const before = f.indexKCache.data.slice();
    const w = f.wIdxK;
    expect(() => indexerProlog({ ...f, wIdxK: { ...w, blockScale: { ...w.blockScale, shape: [1, 1], data: new Float32Array(1) } } }))
      .toThrow(expect.objectContaining({ code: 'DSA_E_SHAPE', message: expect.stringMatching(/^wIdxK\.blockScale: expected shape \[1, 2\]/) }));
    expect(() => indexerProlog({ ...f, wIdxQb: { ...f.wIdxQb, format: 'NZ' as 'NT' } }))
      .toThrow(expect.objectContaining({ code: 'DSA_E_FORMAT' }));
    expect(f.indexKCache.data).toEqual(before);
  });
});
