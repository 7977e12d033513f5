// Bad inputs: each throws a DsaError with a stable code that names the argument, and no cache byte
// changes. The TypeScript checks run first; the native ones are exercised by calling the addon directly.
import { type Bf16Tensor, DsaError, fromNativeError, isDsaError } from '@dsa/tensor-core';
import { describe, expect, it } from 'vitest';
import { indexerProlog, indexerPrologAsync, type IndexerPrologInputs, nativeAddon, prepareIndexerProlog } from '../src/index.js';
import { type Dims, makeCase } from './helpers.js';

const D: Dims = { b: 2, s1: 2, h: 32, qLora: 16, heads: 2, di: 16, rope: 8, blocks: 2, blockSize: 4 };

type Mutate = (i: IndexerPrologInputs) => Record<string, unknown>;
const bf = (shape: number[]): Bf16Tensor => ({ dtype: 'bfloat16', shape, data: new Uint16Array(shape.reduce((a, b) => a * b, 1)), format: 'ND' });

const CASES: [string, Mutate, string, string, RegExp][] = [
  ['x of rank 2', (i) => ({ ...i, x: bf([4, 32]) }), 'DSA_E_SHAPE', 'x', /rank 3/],
  ['x as float32', (i) => ({ ...i, x: { ...i.x, dtype: 'float32', data: new Float32Array(i.x.data.length) } }), 'DSA_E_DTYPE', 'x', /bfloat16/],
  ['x data too short', (i) => ({ ...i, x: { ...i.x, data: i.x.data.subarray(1) } }), 'DSA_E_SHAPE', 'x', /needs 128 elements, data has 127/],
  ['qNorm with another batch', (i) => ({ ...i, qNorm: bf([3, 2, 16]) }), 'DSA_E_SHAPE', 'qNorm', /\(b\) = 2/],
  ['wIdxK with another h', (i) => ({ ...i, wIdxK: bf([31, 16]) }), 'DSA_E_SHAPE', 'wIdxK', /\(h\) = 32/],
  ['wIdxQb not idx_heads * idx_dim wide', (i) => ({ ...i, wIdxQb: bf([16, 30]) }), 'DSA_E_SHAPE', 'wIdxQb', /idx_heads \* idx_dim/],
  ['wIdxProj NZ with N % 16 != 0', (i) => ({ ...i, wIdxProj: { ...i.wIdxProj, format: 'NZ' } }), 'DSA_E_SHAPE', 'wIdxProj', /N % 16 == 0/],
  ['wIdxK in an unknown format', (i) => ({ ...i, wIdxK: { ...i.wIdxK, format: 'NT' } }), 'DSA_E_FORMAT', 'wIdxK', /ND or NZ or PACKED/],
  ['inGammaK as NZ', (i) => ({ ...i, inGammaK: { ...i.inGammaK, format: 'NZ' } }), 'DSA_E_FORMAT', 'inGammaK', /ND/],
  ['inBetaK of another width', (i) => ({ ...i, inBetaK: bf([15]) }), 'DSA_E_SHAPE', 'inBetaK', /\(idx_dim\) = 16/],
  ['sin missing', (i) => ({ ...i, sin: undefined }), 'DSA_E_ARGUMENT', 'sin', /expected a tensor/],
  ['odd RoPE width', (i) => ({ ...i, sin: bf([2, 2, 7]), cos: bf([2, 2, 7]) }), 'DSA_E_SHAPE', 'sin', /even/],
  ['indexer head narrower than the RoPE width', (i) => ({ ...i, sin: bf([2, 2, 18]), cos: bf([2, 2, 18]) }), 'DSA_E_SHAPE', 'sin', /narrower than the RoPE/],
  ['cos of another RoPE width', (i) => ({ ...i, cos: bf([2, 2, 6]) }), 'DSA_E_SHAPE', 'cos', /\(rope\) = 8/],
  ['cacheIndex as bf16', (i) => ({ ...i, cacheIndex: bf([2, 2]) }), 'DSA_E_DTYPE', 'cacheIndex', /int32/],
  ['indexKCache with two key heads', (i) => ({ ...i, indexKCache: bf([2, 4, 2, 16]) }), 'DSA_E_SHAPE', 'indexKCache', /shape\[2\] = 1/],
  ['indexKCache of another head dim', (i) => ({ ...i, indexKCache: bf([2, 4, 1, 8]) }), 'DSA_E_SHAPE', 'indexKCache', /\(idx_dim\) = 16/],
  ['a slot past the cache', (i) => slots(i, [0, 8, 1, 2]), 'DSA_E_RANGE', 'cacheIndex', /cacheIndex\[0, 1\]: expected a slot below 8.*got 8/],
  ['two tokens with one slot', (i) => slots(i, [5, 1, 2, 5]), 'DSA_E_VALUE', 'cacheIndex', /cacheIndex\[1, 1\]: slot 5 is also written by cacheIndex\[0, 0\]/],
  ['inputs not an object', () => null as unknown as Record<string, unknown>, 'DSA_E_ARGUMENT', 'inputs', /object/],
];

function slots(i: IndexerPrologInputs, s: number[]): Record<string, unknown> {
  return { ...i, cacheIndex: { ...i.cacheIndex, data: Int32Array.from(s) } };
}

function expectDsaError(fn: () => unknown, code: string, argument: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isDsaError(caught), `threw ${String(caught)}`).toBe(true);
  const e = caught as DsaError;
  expect(e.code).toBe(code);
  expect(e.argument).toBe(argument);
  expect(e.message).toMatch(new RegExp(`^${argument.replace(/[[\]]/g, '\\$&')}`));
  expect(e.message).toMatch(message);
}

describe('bad inputs', () => {
  it.each(CASES)('%s', (_, mutate, code, argument, message) => {
    const inputs = makeCase(D, 1);
    const before = inputs.indexKCache.data.slice();
    const bad = mutate(inputs);
    expectDsaError(() => indexerProlog(bad as unknown as IndexerPrologInputs), code, argument, message);
    expect(inputs.indexKCache.data).toEqual(before);
  });

  it.each([
    [{ layerNormEps: 0 }, 'layerNormEps'],
    [{ layerNormEps: Number.NaN }, 'layerNormEps'],
    [{ layerNormEps: '1e-6' }, 'layerNormEps'],
    [{ indexerRope: 'neox' }, 'indexerRope'],
  ])('option %j', (options, argument) => {
    const inputs = makeCase(D, 2);
    const before = inputs.indexKCache.data.slice();
    expectDsaError(() => indexerProlog(inputs, options as never), 'DSA_E_ARGUMENT', argument, /expected/);
    expect(inputs.indexKCache.data).toEqual(before);
  });

  it('the async twin rejects with the same error and writes nothing', async () => {
    const inputs = makeCase(D, 3);
    const before = inputs.indexKCache.data.slice();
    const p = indexerPrologAsync(slots(inputs, [0, 1, 2, 1]) as unknown as IndexerPrologInputs);
    await expect(p).rejects.toMatchObject({ name: 'DsaError', code: 'DSA_E_VALUE', argument: 'cacheIndex' });
    expect(inputs.indexKCache.data).toEqual(before);
  });

  it('the prepared form checks its weights once and each step', () => {
    const inputs = makeCase(D, 4);
    expectDsaError(() => prepareIndexerProlog({ ...inputs, wIdxQb: bf([16, 31]) }), 'DSA_E_SHAPE', 'wIdxQb', /idx_heads \* idx_dim/);
    const prepared = prepareIndexerProlog(inputs);
    const before = inputs.indexKCache.data.slice();
    expectDsaError(() => prepared.run({ ...inputs, x: bf([2, 2, 33]) }), 'DSA_E_SHAPE', 'wIdxK', /\(h\) = 33/);
    expectDsaError(() => prepared.run(slots(inputs, [0, 99, 1, 2]) as never), 'DSA_E_RANGE', 'cacheIndex', /below 8/);
    expect(inputs.indexKCache.data).toEqual(before);
  });
});

// The C++ side never trusts JS: the same mistakes, past the TypeScript checks, still fail cleanly.
describe('native validation (addon called directly)', () => {
  const call = (i: Record<string, unknown>, eps = 1e-6, rope = 'interleaved', kproj?: Bf16Tensor) => () => {
    try {
      return nativeAddon().indexerProlog(i, eps, rope, kproj);
    } catch (e) {
      throw fromNativeError(e);
    }
  };
  it.each<[string, Mutate, string, string, RegExp]>([
    ['a slot past the cache', (i) => slots(i, [0, 1, 2, 8]), 'DSA_E_RANGE', 'cacheIndex[3]', /below 8/],
    ['two tokens with one slot', (i) => slots(i, [3, 3, -1, -1]), 'DSA_E_VALUE', 'cacheIndex[1]', /slot 3 is also written by token 0/],
    ['a RoPE wider than the head', (i) => ({ ...i, sin: bf([2, 2, 18]), cos: bf([2, 2, 18]) }), 'DSA_E_SHAPE', 'sin', /exceeds the indexer head dim 16/],
    ['an odd RoPE width', (i) => ({ ...i, sin: bf([2, 2, 5]), cos: bf([2, 2, 5]) }), 'DSA_E_SHAPE', 'sin', /even/],
    ['wIdxQb of the wrong width', (i) => ({ ...i, wIdxQb: bf([16, 16]) }), 'DSA_E_SHAPE', 'wIdxQb', /idx_heads \* idx_dim/],
    ['x data too short', (i) => ({ ...i, x: { ...i.x, data: i.x.data.subarray(2) } }), 'DSA_E_SHAPE', 'x', /needs 128 elements/],
    ['NZ weight with N % 16 != 0', (i) => ({ ...i, wIdxProj: { ...i.wIdxProj, format: 'NZ' } }), 'DSA_E_SHAPE', 'wIdxProj', /NZ needs K % 16 == 0 and N % 16 == 0/],
    ['cacheIndex as float32', (i) => ({ ...i, cacheIndex: { dtype: 'float32', shape: [2, 2], data: new Float32Array(4) } }), 'DSA_E_DTYPE', 'cacheIndex', /int32/],
  ])('%s', (_, mutate, code, argument, message) => {
    const inputs = makeCase(D, 5);
    const before = inputs.indexKCache.data.slice();
    expectDsaError(call(mutate(inputs)), code, argument, message);
    expect(inputs.indexKCache.data).toEqual(before);
  });

  it('bad eps, RoPE mode and combined weight', () => {
    const inputs = makeCase(D, 6);
    expectDsaError(call(inputs as never, 0), 'DSA_E_ARGUMENT', 'layerNormEps', /positive/);
    expectDsaError(call(inputs as never, 1e-6, 'neox'), 'DSA_E_ARGUMENT', 'indexerRope', /half/);
    expectDsaError(call(inputs as never, 1e-6, 'half', bf([32, 17])), 'DSA_E_SHAPE', 'wIdxKProj', /idx_dim \+ idx_heads/);
  });
});
