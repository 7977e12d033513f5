import { cpuFeatures, packWeights, setIsa, type Isa } from '@dsa/tensor-core';
import { afterAll, describe, expect, it } from 'vitest';
import { mlaProlog, prepareMlaProlog } from '../src/index.js';
import { mlaPrologReference } from '../src/reference.js';
import { bf16Cache, cloneTensor, expectCacheRows, expectClose, makeInputs, poisoned, writtenSlots, type Dims } from './helpers.js';

const ISA_LIST: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => {
  const f = cpuFeatures();
  return i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512');
});

// Odd sizes everywhere (odd K takes the GEMM's padded path); NZ needs multiples of 16.
const ODD: Omit<Dims, 'b' | 's1'> = { h: 37, qLora: 19, n: 3, qkNope: 5, rope: 6, kvLora: 13, blockNum: 3, blockSize: 5 };
const NZ: Omit<Dims, 'b' | 's1'> = { h: 32, qLora: 16, n: 2, qkNope: 8, rope: 8, kvLora: 24, blockNum: 2, blockSize: 8 };
// DeepSeek-V3.2's per-head widths with few heads and a small hidden size.
const HEADS: Omit<Dims, 'b' | 's1'> = { h: 48, qLora: 32, n: 2, qkNope: 128, rope: 64, kvLora: 512, blockNum: 2, blockSize: 16 };
const TOKENS: [number, number][] = [[1, 1], [3, 1], [2, 4]]; // b·s1 = 1, 3, 8

/** Run native with poisoned outputs and check everything against the float64 reference. */
function check(d: Dims, seed: number, opts: { nz?: boolean; skip?: number; eps?: number } = {}): void {
  const inputs = makeInputs(d, seed, opts);
  const ref = mlaPrologReference(inputs, { rmsNormEps: opts.eps });
  const before = { kv: cloneTensor(inputs.kvCache), kr: cloneTensor(inputs.krCache) };
  const out = {
    qNope: poisoned([d.b, d.s1, d.n, d.kvLora]),
    qRope: poisoned([d.b, d.s1, d.n, d.rope]),
    qNorm: poisoned([d.b, d.s1, d.qLora]),
  };
  mlaProlog(inputs, { rmsNormEps: opts.eps, out });
  expectClose('qNorm', out.qNorm, ref.qNorm);
  expectClose('qNope', out.qNope, ref.qNope);
  expectClose('qRope', out.qRope, ref.qRope);
  const slots = writtenSlots(inputs.cacheIndex);
  expectCacheRows('kvCache', inputs.kvCache, before.kv, bf16Cache('reference kvCache', ref.kvCache), slots);
  expectCacheRows('krCache', inputs.krCache, before.kr, bf16Cache('reference krCache', ref.krCache), slots);
}

describe.each(ISA_LIST)('native vs float64 reference, isa %s', (isa) => {
  afterAll(() => setIsa('auto'));
  it.each(TOKENS)('odd dims, ND weights, b=%i s1=%i', (b, s1) => {
    setIsa(isa);
    check({ ...ODD, b, s1 }, 11 + b * 7 + s1);
  });
  it.each(TOKENS)('NZ weights, b=%i s1=%i', (b, s1) => {
    setIsa(isa);
    check({ ...NZ, b, s1 }, 23 + b * 7 + s1, { nz: true });
  });
  it.each(TOKENS)('DeepSeek per-head widths (128 nope, 64 rope, 512 latent), NZ, b=%i s1=%i', (b, s1) => {
    setIsa(isa);
    check({ ...HEADS, b, s1 }, 37 + b * 7 + s1, { nz: true, eps: 1e-6 });
  });
});

describe('native: shapes and chunking', () => {
  it('more tokens than one internal chunk (300 tokens, prefill-shaped)', () => {
    check({ ...ODD, b: 1, s1: 300, blockNum: 40, blockSize: 8 }, 5);
  });
  it('a single head, and a one-element latent', () => {
    check({ h: 3, qLora: 1, n: 1, qkNope: 1, rope: 2, kvLora: 1, blockNum: 1, blockSize: 4, b: 2, s1: 2 }, 6);
  });
  it('rope width 0 (no rope part)', () => {
    check({ ...ODD, rope: 0, b: 2, s1: 3 }, 8);
  });
  it('negative slots write nothing; every other row is byte-for-byte unchanged', () => {
    const d = { ...ODD, b: 4, s1: 2 };
    const inputs = makeInputs(d, 9, { skip: 3 });
    expect([...inputs.cacheIndex.data].filter((s) => s < 0).length).toBeGreaterThan(0);
    check(d, 9, { skip: 3 });
    const all = makeInputs(d, 10, { skip: 100 }); // every token skipped
    const kv = cloneTensor(all.kvCache);
    const kr = cloneTensor(all.krCache);
    const r = mlaProlog(all);
    expect(all.kvCache.data).toEqual(kv.data);
    expect(all.krCache.data).toEqual(kr.data);
    expectClose('qNope without cache writes', r.qNope, mlaPrologReference(all).qNope);
  });
  it('zero tokens (s1 = 0) returns empty outputs and writes nothing', () => {
    const inputs = makeInputs({ ...ODD, b: 2, s1: 0 }, 12);
    const kv = cloneTensor(inputs.kvCache);
    const r = mlaProlog(inputs);
    expect(r.qNope.shape).toEqual([2, 0, ODD.n, ODD.kvLora]);
    expect(r.qNorm.data.length).toBe(0);
    expect(inputs.kvCache.data).toEqual(kv.data);
  });
});

describe('prepareMlaProlog', () => {
  it.each([[1, 1], [2, 4], [1, 150]])('matches the reference (b=%i s1=%i), reuses out buffers, can be disposed', (b, s1) => {
    const d = { ...NZ, b, s1, blockNum: 20, blockSize: 8 };
    const inputs = makeInputs(d, 40 + s1, { nz: true, skip: 1 });
    const ref = mlaPrologReference(inputs);
    const before = { kv: cloneTensor(inputs.kvCache), kr: cloneTensor(inputs.krCache) };
    const p = prepareMlaProlog(inputs);
    expect(p.dims).toEqual({ h: d.h, qLora: d.qLora, n: d.n, qkNope: d.qkNope, rope: d.rope, kvLora: d.kvLora });
    inputs.wDq.data.fill(0); // the prepared copy is independent of the given weights
    const out = { qNope: poisoned([b, s1, d.n, d.kvLora]), qRope: poisoned([b, s1, d.n, d.rope]), qNorm: poisoned([b, s1, d.qLora]) };
    const r = p.run(inputs, { out });
    expect(r.qNope).toBe(out.qNope);
    expectClose('qNope', r.qNope, ref.qNope);
    expectClose('qRope', r.qRope, ref.qRope);
    expectClose('qNorm', r.qNorm, ref.qNorm);
    const slots = writtenSlots(inputs.cacheIndex);
    expectCacheRows('kvCache', inputs.kvCache, before.kv, bf16Cache('reference kvCache', ref.kvCache), slots);
    expectCacheRows('krCache', inputs.krCache, before.kr, bf16Cache('reference krCache', ref.krCache), slots);
    p.dispose();
    expect(() => p.run(inputs)).toThrow(expect.objectContaining({ code: 'DSA_E_STATE' }));
  });
  it('accepts ND weights and PACKED ones', () => {
    const d = { ...ODD, b: 2, s1: 3 };
    const inputs = makeInputs(d, 77);
    const ref = mlaPrologReference(inputs);
    const p = prepareMlaProlog(inputs);
    const r = p.run(inputs);
    expectClose('qNope', r.qNope, ref.qNope);
    const again = prepareMlaProlog({ ...inputs, wDq: packWeights(inputs.wDq) });
    expect(again.run({ ...inputs, kvCache: cloneTensor(inputs.kvCache) }).qNope.data).toEqual(r.qNope.data);
  });
});
