// Bad inputs: a DsaError with a stable code that names the argument, from TypeScript, from the
// reference and from the native layer alone; no input byte and no output byte changes.
import { describe, expect, it } from 'vitest';
import { ErrorCode, isDsaError } from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention, sparseFlashAttentionAsync, type SparseFlashAttentionInputs } from '../src/index.js';
import { sparseFlashAttentionReference } from '../src/reference.js';
import { i32, makeCase, NAN_BF16, poisoned, sameSnapshot, snapshot, type Bf16CacheInputs } from './cases.js';

// b = 2, s1 = 2, act [10, 5], blockSize 4: maxBlocks 4, row (1, 0) has eff 4.
function fresh(): Bf16CacheInputs {
  return makeCase(21, { b: 2, s1: 2, n: 3, kvLora: 12, rope: 4, blockSize: 4, topk: 4, acts: [10, 5] }).inputs;
}

type Mutate = (x: Bf16CacheInputs) => SparseFlashAttentionInputs | void;

const bad: Array<{ what: string; mutate: Mutate; options?: object; code: string; argument: string; message: RegExp }> = [
  { what: 'an index ≥ the row eff', mutate: (x) => void (x.indices.data[2 * 4] = 4), code: ErrorCode.RANGE, argument: 'indices',
    message: /indices: expected -1 or a position in \[0, 4\) at \[1, 0, 0\] \(row eff = 4\), got 4/ },
  { what: 'an index < −1', mutate: (x) => void (x.indices.data[1] = -2), code: ErrorCode.RANGE, argument: 'indices', message: /got -2/ },
  { what: 'an index past the table', code: ErrorCode.RANGE, argument: 'indices', message: /is past blockTable \(4 blocks of 4 = 16 positions\)/,
    mutate: (x) => {
      x.actSeqs.data[0] = 40;
      x.indices.data[0] = 20;
    } },
  { what: 'a −1 table entry that would be read', code: ErrorCode.RANGE, argument: 'blockTable', message: /blockTable: expected a block id in \[0, \d+\) at \[0, \d\] \(read for indices\[0, 0, 0\] = \d+\), got -1/,
    mutate: (x) => void (x.blockTable.data[Math.floor(x.indices.data[0]! / 4)] = -1) },
  { what: 'a table entry ≥ blocks', code: ErrorCode.RANGE, argument: 'blockTable', message: /got 999/,
    mutate: (x) => void (x.blockTable.data[Math.floor(x.indices.data[0]! / 4)] = 999) },
  { what: 'a negative act', mutate: (x) => void (x.actSeqs.data[1] = -1), code: ErrorCode.RANGE, argument: 'actSeqs', message: /actSeqs: expected a non-negative key count at \[1\], got -1/ },
  { what: 'mismatched head counts between qNope and qRope', code: ErrorCode.SHAPE, argument: 'qRope',
    message: /qRope: expected shape\[2\] \(n\) = 3 as given by qNope.shape\[2\], got 4/,
    mutate: (x) => ({ ...x, qRope: { ...x.qRope, shape: [2, 2, 4, 4], data: new Uint16Array(64) } }) },
  { what: 'kvLora of kvCache differing from qNope', code: ErrorCode.SHAPE, argument: 'kvCache', message: /kvLora/,
    mutate: (x) => ({ ...x, kvCache: { ...x.kvCache, shape: [x.kvCache.shape[0]!, 4, 1, 6], data: new Uint16Array(x.kvCache.shape[0]! * 24) } }) },
  { what: 'a cache with two kv heads', code: ErrorCode.SHAPE, argument: 'krCache', message: /expected shape\[2\] = 1/,
    mutate: (x) => ({ ...x, krCache: { ...x.krCache, shape: [x.krCache.shape[0]!, 4, 2, 2] } }) },
  { what: 'float32 queries', code: ErrorCode.DTYPE, argument: 'qNope', message: /qNope: expected dtype bfloat16, got float32/,
    mutate: (x) => ({ ...x, qNope: { dtype: 'float32', shape: x.qNope.shape, data: new Float32Array(x.qNope.data.length) } as never }) },
  { what: 'data shorter than the shape', code: ErrorCode.SHAPE, argument: 'indices', message: /needs 16 elements, data has 15/,
    mutate: (x) => ({ ...x, indices: i32([2, 2, 4], new Int32Array(15)) }) },
  { what: 'a missing tensor', code: ErrorCode.ARGUMENT, argument: 'blockTable', message: /blockTable: expected a tensor/,
    mutate: (x) => ({ ...x, blockTable: undefined as never }) },
  { what: 'sparseMode 2', mutate: () => {}, options: { sparseMode: 2 }, code: ErrorCode.ARGUMENT, argument: 'sparseMode', message: /sparseMode: expected one of 0, 3, got 2/ },
  { what: 'a negative softmaxScale', mutate: () => {}, options: { softmaxScale: -1 }, code: ErrorCode.ARGUMENT, argument: 'softmaxScale', message: /softmaxScale/ },
  { what: 'a NaN softmaxScale', mutate: () => {}, options: { softmaxScale: NaN }, code: ErrorCode.ARGUMENT, argument: 'softmaxScale', message: /softmaxScale/ },
  // Finite positive doubles the fp32 kernel cannot take: 1e-46 rounded to 0 (= "default") and silently
  // used (kvLora + rope)^-0.5; 1e39 overflowed and was only caught in C++.
  { what: 'a softmaxScale that rounds to 0 in fp32', mutate: () => {}, options: { softmaxScale: 1e-46 }, code: ErrorCode.ARGUMENT, argument: 'softmaxScale',
    message: /^softmaxScale: expected a positive number within fp32 range \(1\.4e-45 to 3\.4e38\), got 1e-46$/ },
  { what: 'a softmaxScale past the fp32 range', mutate: () => {}, options: { softmaxScale: 1e39 }, code: ErrorCode.ARGUMENT, argument: 'softmaxScale', message: /^softmaxScale: .*got 1e\+39$/ },
];

function expectDsaError(fn: () => unknown, code: string, argument: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isDsaError(caught), String(caught)).toBe(true);
  expect((caught as { code: string }).code).toBe(code);
  expect((caught as { argument?: string }).argument).toBe(argument);
  expect((caught as Error).message).toMatch(message);
}

describe('bad inputs', () => {
  it('the unmutated inputs are valid (so each case below fails for its own reason)', () => {
    expect(() => sparseFlashAttention(fresh())).not.toThrow();
  });

  for (const c of bad) {
    it(`${c.what}: DsaError ${c.code} naming ${c.argument}, nothing changed`, async () => {
      const base = fresh();
      const x = c.mutate(base) ?? base;
      const before = snapshot(base);
      expectDsaError(() => sparseFlashAttention(x, c.options as never), c.code, c.argument, c.message);
      expectDsaError(() => sparseFlashAttentionReference(x, c.options as never), c.code, c.argument, c.message);
      const rejected = await sparseFlashAttentionAsync(x, c.options as never).then(() => undefined, (e: unknown) => e);
      expect(isDsaError(rejected) && rejected.code === c.code).toBe(true);
      expect(sameSnapshot(snapshot(base), before)).toBe(true);
    });
  }

  it('the native layer checks every index itself and writes nothing on error', async () => {
    const cases: Array<[string, Mutate, RegExp]> = [
      [ErrorCode.RANGE, (x) => void (x.indices.data[2 * 4] = 4), /^indices: expected -1 or a position in \[0, 4\)/],
      [ErrorCode.RANGE, (x) => void (x.indices.data[3] = -7), /^indices: .*got -7/],
      [ErrorCode.RANGE, (x) => void (x.blockTable.data[Math.floor(x.indices.data[0]! / 4)] = -1), /^blockTable: expected a block id/],
      [ErrorCode.RANGE, (x) => void (x.actSeqs.data[0] = -3), /^actSeqs: /],
      [ErrorCode.SHAPE, (x) => ({ ...x, qRope: { ...x.qRope, shape: [2, 2, 4, 4], data: new Uint16Array(64) } }), /^qRope: expected shape\[2\] \(n\) = 3/],
    ];
    for (const [code, mutate, message] of cases) {
      const base = fresh();
      const x = mutate(base) ?? base;
      const before = snapshot(base);
      const out = poisoned([2, 2, 3, 12]);
      let caught: unknown;
      try {
        nativeAddon().sparseFlashAttention(x, 0, 3, { out });
      } catch (e) {
        caught = e;
      }
      expect((caught as { code?: string }).code).toBe(code);
      expect((caught as Error).message).toMatch(message);
      expect(out.data.every((v) => v === NAN_BF16)).toBe(true);
      const rejected = await (async () => nativeAddon().sparseFlashAttentionAsync(x, 0, 3, { out }))().then(() => undefined, (e: unknown) => e);
      expect((rejected as Error | undefined)?.message).toMatch(message);
      expect(out.data.every((v) => v === NAN_BF16)).toBe(true);
      expect(sameSnapshot(snapshot(base), before)).toBe(true);
    }
  });

  it('rejects a non-object inputs and options', () => {
    expectDsaError(() => sparseFlashAttention(null as never), ErrorCode.ARGUMENT, 'inputs', /inputs: expected an object/);
    expectDsaError(() => sparseFlashAttention(fresh(), 3 as never), ErrorCode.ARGUMENT, 'options', /options: expected an object/);
  });
});
