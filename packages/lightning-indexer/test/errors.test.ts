import { describe, expect, it } from 'vitest';
import { isDsaError, type Tensor } from '@dsa/tensor-core';
import { type LightningIndexerInputs, lightningIndexer, lightningIndexerAsync, nativeAddon } from '../src/index.js';
import { type Bf16KeyInputs, makeInputs, POISON_I32 } from './helpers.js';

// b = 2, blockSize 4, acts [6, 9]: sequence 0 reads 2 table entries, sequence 1 reads 3; maxBlocks 4.
const base = () => makeInputs({ b: 2, s1: 2, heads: 3, dim: 4, blockSize: 4, acts: [6, 9], seed: 21 });

function snapshot(inputs: LightningIndexerInputs): string[] {
  return Object.values(inputs).map((t: Tensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex'));
}

function expectError(fn: () => unknown, code: string, argument: string, text: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isDsaError(err), `expected a DsaError, got ${String(err)}`).toBe(true);
  const e = err as { code: string; argument: string; message: string };
  expect(e.code).toBe(code);
  expect(e.argument).toBe(argument);
  expect(e.message).toMatch(text);
}

type Mutation = [string, (x: Bf16KeyInputs) => void, Record<string, unknown>, string, string, RegExp];

const mutations: Mutation[] = [
  ['a −1 table entry that would be read', (x) => { x.blockTable.data[1 * 4 + 2] = -1; }, {}, 'DSA_E_RANGE', 'blockTable', /blockTable\[1, 2\]: expected a block id in \[0, \d+\] \(read for actSeqs\[1\] = 9\), got -1/],
  ['a table entry past the cache', (x) => { x.blockTable.data[0] = 99; }, {}, 'DSA_E_RANGE', 'blockTable', /blockTable\[0, 0\].*got 99/],
  ['act larger than the table covers', (x) => { x.actSeqs.data[1] = 17; }, {}, 'DSA_E_RANGE', 'actSeqs', /actSeqs\[1\]: expected a value in \[0, 16\].*got 17/],
  ['act < 0', (x) => { x.actSeqs.data[0] = -1; }, {}, 'DSA_E_RANGE', 'actSeqs', /actSeqs\[0\].*got -1/],
  ['topk < 1', () => {}, { topk: 0 }, 'DSA_E_ARGUMENT', 'topk', /topk: expected an integer in \[1, 2147483647\], got 0/],
  ['a fractional topk', () => {}, { topk: 2.5 }, 'DSA_E_ARGUMENT', 'topk', /got 2\.5/],
  ['sparseMode 1', () => {}, { sparseMode: 1 }, 'DSA_E_ARGUMENT', 'sparseMode', /sparseMode: expected one of 0, 3, got 1/],
  ['a non-boolean returnScores', () => {}, { returnScores: 'yes' }, 'DSA_E_ARGUMENT', 'returnScores', /expected a boolean/],
  ['a float32 query', (x) => { (x as { query: unknown }).query = { ...x.query, dtype: 'float32', data: new Float32Array(x.query.data.length) }; }, {}, 'DSA_E_DTYPE', 'query', /query: expected dtype bfloat16, got float32/],
  ['weights with another head count', (x) => { x.weights = { ...x.weights, shape: [2, 2, 4], data: new Uint16Array(16) }; }, {}, 'DSA_E_SHAPE', 'weights', /weights: expected shape\[2\] \(heads\) = 3 as given by query.shape\[2\], got 4/],
  ['a key cache with another dim', (x) => { x.indexKCache = { ...x.indexKCache, shape: [x.indexKCache.shape[0]!, 4, 1, 2], data: new Uint16Array(x.indexKCache.shape[0]! * 8) }; }, {}, 'DSA_E_SHAPE', 'indexKCache', /indexKCache: expected shape\[3\] \(dim\) = 4/],
  ['a key cache with 2 kv heads', (x) => { x.indexKCache = { ...x.indexKCache, shape: [x.indexKCache.shape[0]!, 2, 2, 4] }; }, {}, 'DSA_E_SHAPE', 'indexKCache', /expected shape\[2\] = 1, got 2/],
  ['a block table for another batch', (x) => { x.blockTable = { ...x.blockTable, shape: [1, 8] }; }, {}, 'DSA_E_SHAPE', 'blockTable', /blockTable: expected shape\[0\] \(b\) = 2/],
  ['data shorter than the shape', (x) => { x.actSeqs = { ...x.actSeqs, data: new Int32Array(1) }; }, {}, 'DSA_E_SHAPE', 'actSeqs', /needs 2 elements, data has 1/],
  ['a missing tensor', (x) => { delete (x as Partial<LightningIndexerInputs>).weights; }, {}, 'DSA_E_ARGUMENT', 'weights', /weights: expected a tensor/],
  ['a zero block size', (x) => { x.indexKCache = { ...x.indexKCache, shape: [x.indexKCache.shape[0]!, 0, 1, 4], data: new Uint16Array(0) }; x.actSeqs.data.fill(0); }, {}, 'DSA_E_SHAPE', 'indexKCache', /block size/],
];

describe('bad inputs throw a DsaError naming the argument and change nothing', () => {
  it.each(mutations)('%s', (_name, mutate, options, code, argument, text) => {
    const x = base();
    mutate(x);
    const before = snapshot(x);
    expectError(() => lightningIndexer(x, options), code, argument, text);
    expect(snapshot(x)).toEqual(before);
  });

  it.each(mutations)('%s: the async twin rejects the same way', async (_name, mutate, options, code, argument) => {
    const x = base();
    mutate(x);
    const err = await lightningIndexerAsync(x, options).then(() => null, (e: unknown) => e);
    expect(isDsaError(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
    expect((err as { argument: string }).argument).toBe(argument);
  });

  it('−1 table entries past the used blocks are fine', () => {
    const x = base();
    expect(x.blockTable.data[3]).toBe(-1); // sequence 0 uses 2 blocks; entries 2.. are −1
    x.blockTable.data[2] = -1;
    expect(() => lightningIndexer(x, { topk: 4 })).not.toThrow();
  });

  it('outputs too large to allocate', () => {
    expectError(() => lightningIndexer(base(), { topk: 0x7fffffff }), 'DSA_E_RANGE', 'topk', /topk: cannot allocate the outputs \(4 rows x 2147483647 indices\)/);
  });

  it('non-object inputs and options', () => {
    expectError(() => lightningIndexer(null as unknown as LightningIndexerInputs), 'DSA_E_ARGUMENT', 'inputs', /inputs: expected an object/);
    expectError(() => lightningIndexer(base(), 3 as unknown as object), 'DSA_E_ARGUMENT', 'options', /options: expected an object/);
  });
});

describe('the C++ validation (binding called directly, bypassing TypeScript)', () => {
  const call = (x: LightningIndexerInputs, indices: Tensor<'int32'>, topk = 3, mode = 3) =>
    nativeAddon().run(x.query, x.weights, x.indexKCache, x.blockTable, x.actSeqs, indices, null, topk, mode);
  const poisoned = () => ({ dtype: 'int32' as const, shape: [2, 2, 3], data: new Int32Array(12).fill(POISON_I32) });

  it.each([
    ['a −1 table entry that is read', (x: LightningIndexerInputs) => { x.blockTable.data[4 + 1] = -1; }, 'DSA_E_RANGE', /blockTable\[1, 1\]/],
    ['a table entry past the cache', (x: LightningIndexerInputs) => { x.blockTable.data[1] = 1000; }, 'DSA_E_RANGE', /blockTable\[0, 1\]/],
    ['act past the table', (x: LightningIndexerInputs) => { x.actSeqs.data[0] = 1000; }, 'DSA_E_RANGE', /actSeqs\[0\]/],
    ['act < 0', (x: LightningIndexerInputs) => { x.actSeqs.data[1] = -5; }, 'DSA_E_RANGE', /actSeqs\[1\]/],
  ] as const)('%s: coded error, outputs untouched', (_n, mutate, code, text) => {
    const x = base();
    mutate(x);
    const out = poisoned();
    let err: { code?: string; message?: string } = {};
    try {
      call(x, out);
    } catch (e) {
      err = e as typeof err;
    }
    expect(err.code).toBe(code);
    expect(err.message).toMatch(text);
    expect(out.data.every((v) => v === POISON_I32)).toBe(true);
  });

  it('bad topk, sparseMode and output shapes', () => {
    const x = base();
    expect(() => call(x, { ...poisoned(), shape: [2, 2, 0], data: new Int32Array(0) }, 0)).toThrow(/topk/);
    expect(() => call(x, poisoned(), 3, 2)).toThrow(/sparseMode: expected 0 or 3, got 2/);
    expect(() => call(x, poisoned(), 4)).toThrow(/indices: expected shape\[2\] \(topk\) = 4/);
    const scores = { dtype: 'float32' as const, shape: [2, 2, 8], data: new Float32Array(32) };
    expect(() => nativeAddon().run(x.query, x.weights, x.indexKCache, x.blockTable, x.actSeqs, poisoned(), scores, 3, 3)).toThrow(
      /scores: expected shape\[2\] \(max act\) = 9/,
    );
  });
});
