// FP8 weights (block-scaled e4m3, as the checkpoint stores them) through the MLA prolog: against the
// float64 reference fed with the exactly dequantized weights, on every ISA, raw and prepared, and
// against the same call with the weights dequantized to bf16.
import { compareBf16, cpuFeatures, dequantizeFp8Weight, toFloat32, f32ArrayToBf16, Rng, setIsa, type Bf16Tensor, type Fp8Weight, type Isa } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { mlaProlog, prepareMlaProlog, type MlaPrologInputs } from '../src/index.js';
import { mlaPrologReference } from '../src/reference.js';
import { bf16Cache, cloneTensor, expectCacheRows, expectClose, makeInputs, poisoned, writtenSlots, type Bf16CacheInputs, type Dims } from './helpers.js';

const ISA_LIST: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => {
  const f = cpuFeatures();
  return i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512');
});

// Partial 128-blocks everywhere, K not a multiple of 4; and DeepSeek's per-head widths.
const ODD: Omit<Dims, 'b' | 's1'> = { h: 137, qLora: 19, n: 3, qkNope: 5, rope: 6, kvLora: 130, blockNum: 3, blockSize: 5 };
const HEADS: Omit<Dims, 'b' | 's1'> = { h: 160, qLora: 136, n: 2, qkNope: 128, rope: 64, kvLora: 512, blockNum: 2, blockSize: 16 };

/** Inputs with FP8 weights: the checkpoint's NT for the 2-D ones, ND (kv_b_proj rows) for wUk. */
function fp8Inputs(d: Dims, seed: number, pow2 = false): Bf16CacheInputs {
  const i = makeInputs(d, seed);
  const rng = new Rng(seed + 1000);
  const w = (shape: number[], format: 'NT' | 'ND'): Fp8Weight => rng.fp8Weight(shape, format, { scale: 0.1 / 448, pow2 });
  return {
    ...i,
    wDq: w([d.h, d.qLora], 'NT'),
    wUqQr: w([d.qLora, d.n * (d.qkNope + d.rope)], 'NT'),
    wUk: w([d.n, d.qkNope, d.kvLora], 'ND'),
    wDkvKr: w([d.h, d.kvLora + d.rope], 'NT'),
  };
}

function bf16Of(w: Fp8Weight): Bf16Tensor {
  return { dtype: 'bfloat16', shape: [...w.shape], data: f32ArrayToBf16(dequantizeFp8Weight(w)), format: 'ND' };
}

function check(inputs: Bf16CacheInputs, d: Dims, run: (i: MlaPrologInputs, out: Record<string, Bf16Tensor>) => void): void {
  const ref = mlaPrologReference(inputs, { rmsNormEps: 1e-6 });
  const before = { kv: cloneTensor(inputs.kvCache), kr: cloneTensor(inputs.krCache) };
  const out = {
    qNope: poisoned([d.b, d.s1, d.n, d.kvLora]),
    qRope: poisoned([d.b, d.s1, d.n, d.rope]),
    qNorm: poisoned([d.b, d.s1, d.qLora]),
  };
  run(inputs, out);
  expectClose('qNorm', out.qNorm, ref.qNorm);
  expectClose('qNope', out.qNope, ref.qNope);
  expectClose('qRope', out.qRope, ref.qRope);
  const slots = writtenSlots(inputs.cacheIndex);
  expectCacheRows('kvCache', inputs.kvCache, before.kv, bf16Cache('reference kvCache', ref.kvCache), slots);
  expectCacheRows('krCache', inputs.krCache, before.kr, bf16Cache('reference krCache', ref.krCache), slots);
}

describe.each(ISA_LIST)('FP8 weights vs the float64 reference, isa %s', (isa) => {
  afterAll(() => setIsa('auto'));
  // b·s1 = 1, 3 (GEMV), 12 (GEMM).
  it.each([[1, 1], [3, 1], [3, 4]])('odd dims, raw NT/ND FP8 weights, b=%i s1=%i', (b, s1) => {
    setIsa(isa);
    const d = { ...ODD, b, s1 };
    check(fp8Inputs(d, 5 + b * 7 + s1), d, (i, out) => mlaProlog(i, { rmsNormEps: 1e-6, out }));
  });
  it.each([[1, 1], [2, 5]])('DeepSeek per-head widths, prepared FP8 weights, b=%i s1=%i', (b, s1) => {
    setIsa(isa);
    const d = { ...HEADS, b, s1 };
    const inputs = fp8Inputs(d, 9 + b * 7 + s1, s1 > 1);
    const p = prepareMlaProlog(inputs);
    check(inputs, d, (i, out) => p.run(i, { rmsNormEps: 1e-6, out }));
  });
  // Decode hands each thread runs of consecutive heads (the GEMV prefetches into the next head).
  it.each([[1, 1], [3, 1]])('37 heads in runs, prepared FP8 weights, b=%i s1=%i', (b, s1) => {
    setIsa(isa);
    const d = { ...HEADS, n: 37, b, s1 };
    const inputs = fp8Inputs(d, 41 + b);
    const p = prepareMlaProlog(inputs);
    check(inputs, d, (i, out) => p.run(i, { rmsNormEps: 1e-6, out }));
  });
});

describe('FP8 weights: agreement with bf16, mixed forms, errors', () => {
  it('FP8 and the bf16-dequantized weights give the same outputs to bf16 rounding', () => {
    for (const [b, s1] of [[1, 1], [2, 6]] as const) {
      const d = { ...HEADS, b, s1 };
      const f = fp8Inputs(d, 31 + s1);
      const bf: Bf16CacheInputs = {
        ...f, wDq: bf16Of(f.wDq as Fp8Weight), wUqQr: bf16Of(f.wUqQr as Fp8Weight), wUk: bf16Of(f.wUk as Fp8Weight),
        wDkvKr: bf16Of(f.wDkvKr as Fp8Weight), kvCache: cloneTensor(f.kvCache), krCache: cloneTensor(f.krCache),
      };
      const a = prepareMlaProlog(f).run(f);
      const c = prepareMlaProlog(bf).run(bf);
      // Two results rounded to bf16 independently at each of the spec's rounding points (the weights
      // once more on the bf16 side): the spec's accuracy bar between them.
      for (const [name, x, y] of [['qNope', a.qNope, c.qNope], ['qRope', a.qRope, c.qRope], ['qNorm', a.qNorm, c.qNorm], ['kvCache', f.kvCache, bf.kvCache]] as const) {
        const r = compareBf16(toFloat32(x), toFloat32(y));
        expect(r.relL2, name).toBeLessThanOrEqual(1e-2);
        expect(r.close, name).toBeGreaterThanOrEqual(0.95);
      }
    }
  });

  it('mixes FP8 and bf16 weights', () => {
    const d = { ...ODD, b: 2, s1: 2 };
    const f = fp8Inputs(d, 50);
    const mixed = { ...f, wUqQr: bf16Of(f.wUqQr as Fp8Weight) };
    check(mixed, d, (i, out) => mlaProlog(i, { rmsNormEps: 1e-6, out }));
  });

  it('rejects an FP8 weight with a wrong block-scale grid or byte count before writing a cache row', () => {
    const d = { ...ODD, b: 1, s1: 2 };
    const f = fp8Inputs(d, 60);
    const kv = cloneTensor(f.kvCache);
    const wDq = f.wDq as Fp8Weight;
    const badScale = { ...wDq, blockScale: { ...wDq.blockScale, shape: [1, 1], data: new Float32Array(1) } };
    expect(() => mlaProlog({ ...f, wDq: badScale })).toThrow(expect.objectContaining({ code: 'DSA_E_SHAPE', message: expect.stringMatching(/wDq\.blockScale: expected shape \[1, 2\]/) }));
    const wUk = f.wUk as Fp8Weight;
    expect(() => mlaProlog({ ...f, wUk: { ...wUk, data: wUk.data.subarray(1) } })).toThrow(expect.objectContaining({ code: 'DSA_E_SHAPE', message: expect.stringMatching(/^wUk: /) }));
    expect(() => mlaProlog({ ...f, wUk: { ...wUk, format: 'NT' } })).toThrow(expect.objectContaining({ code: 'DSA_E_FORMAT' }));
    expect(f.kvCache.data).toEqual(kv.data);
  });
});
