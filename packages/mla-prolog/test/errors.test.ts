import { isDsaError, type Bf16Tensor, type Tensor } from '@dsa/tensor-core';
import { describe, expect, it } from 'vitest';
import { mlaProlog, mlaPrologAsync, nativeAddon, prepareMlaProlog, type MlaPrologInputs } from '../src/index.js';
import { mlaPrologReference } from '../src/reference.js';
import { cloneTensor, makeInputs, type Dims } from './helpers.js';

const D: Dims = { b: 2, s1: 3, h: 32, qLora: 16, n: 2, qkNope: 8, rope: 8, kvLora: 24, blockNum: 2, blockSize: 8 };

type Mutate = (i: MlaPrologInputs) => Record<string, unknown>;
const bf = (shape: number[], format: 'ND' | 'NZ' = 'ND'): Bf16Tensor => ({
  dtype: 'bfloat16', shape, data: new Uint16Array(shape.reduce((a, b) => a * b, 1)), format,
});

// [what, argument named, code, mutation]
const BAD: [string, string, string, Mutate][] = [
  ['x of rank 2', 'x', 'DSA_E_SHAPE', (i) => ({ ...i, x: { ...i.x, shape: [6, 32] } })],
  ['x as float32', 'x', 'DSA_E_DTYPE', (i) => ({ ...i, x: { dtype: 'float32', shape: i.x.shape, data: new Float32Array(i.x.data.length) } })],
  ['x data shorter than its shape', 'x', 'DSA_E_SHAPE', (i) => ({ ...i, x: { ...i.x, data: i.x.data.subarray(1) } })],
  ['x in NZ format', 'x', 'DSA_E_FORMAT', (i) => ({ ...i, x: { ...i.x, format: 'NZ' } })],
  ['wDq with the wrong K', 'wDq', 'DSA_E_SHAPE', (i) => ({ ...i, wDq: bf([48, 16]) })],
  ['wDq NZ with N % 16 != 0', 'wDq', 'DSA_E_SHAPE', (i) => ({ ...i, wDq: bf([32, 24], 'NZ'), gammaCq: bf([24]) })],
  ['wDq NZ with K % 16 != 0', 'wDq', 'DSA_E_SHAPE', (i) => ({ ...i, x: bf([2, 3, 24]), wDq: bf([24, 16], 'NZ') })],
  ['wUqQr with the wrong width', 'wUqQr', 'DSA_E_SHAPE', (i) => ({ ...i, wUqQr: bf([16, 48]) })],
  ['wUqQr with the wrong dtype', 'wUqQr', 'DSA_E_DTYPE', (i) => ({ ...i, wUqQr: { ...i.wUqQr, dtype: 'int32' } })],
  ['wUk in NZ format', 'wUk', 'DSA_E_FORMAT', (i) => ({ ...i, wUk: { ...i.wUk, format: 'NZ' } })],
  ['wUk of rank 2', 'wUk', 'DSA_E_SHAPE', (i) => ({ ...i, wUk: bf([16, 24]) })],
  ['wUk missing', 'wUk', 'DSA_E_ARGUMENT', (i) => ({ ...i, wUk: undefined })],
  ['wDkvKr with the wrong width', 'wDkvKr', 'DSA_E_SHAPE', (i) => ({ ...i, wDkvKr: bf([32, 24]) })],
  ['wDkvKr NZ with N % 16 != 0', 'wDkvKr', 'DSA_E_SHAPE', (i) => ({ ...i, wDkvKr: bf([32, 40], 'NZ'), wUk: bf([2, 8, 32]), gammaCkv: bf([32]) })],
  ['gammaCq of the wrong length', 'gammaCq', 'DSA_E_SHAPE', (i) => ({ ...i, gammaCq: bf([15]) })],
  ['gammaCkv of the wrong length', 'gammaCkv', 'DSA_E_SHAPE', (i) => ({ ...i, gammaCkv: bf([25]) })],
  ['an odd rope width', 'cos', 'DSA_E_SHAPE', (i) => ({ ...i, cos: bf([2, 3, 7]), sin: bf([2, 3, 7]) })],
  ['sin of another shape than cos', 'sin', 'DSA_E_SHAPE', (i) => ({ ...i, sin: bf([2, 3, 6]) })],
  ['cos for other tokens than x', 'cos', 'DSA_E_SHAPE', (i) => ({ ...i, cos: bf([3, 2, 8]) })],
  ['cacheIndex as bf16', 'cacheIndex', 'DSA_E_DTYPE', (i) => ({ ...i, cacheIndex: bf([2, 3]) })],
  ['cacheIndex of the wrong shape', 'cacheIndex', 'DSA_E_SHAPE', (i) => ({ ...i, cacheIndex: { ...i.cacheIndex, shape: [3, 2] } })],
  ['a slot past the cache', 'cacheIndex', 'DSA_E_RANGE', (i) => ({ ...i, cacheIndex: withSlot(i, 5, 16) })],
  ['two tokens on one slot', 'cacheIndex', 'DSA_E_VALUE', (i) => ({ ...i, cacheIndex: withSlot(i, 5, i.cacheIndex.data[0]!) })],
  ['kvCache with the wrong row width', 'kvCache', 'DSA_E_SHAPE', (i) => ({ ...i, kvCache: bf([2, 8, 1, 16]) })],
  ['kvCache with 2 KV heads', 'kvCache', 'DSA_E_SHAPE', (i) => ({ ...i, kvCache: bf([2, 8, 2, 24]) })],
  ['krCache with another block size', 'krCache', 'DSA_E_SHAPE', (i) => ({ ...i, krCache: bf([2, 4, 1, 8]) })],
];

function withSlot(i: MlaPrologInputs, at: number, slot: number): Tensor<'int32'> {
  const data = i.cacheIndex.data.slice();
  data[at] = slot;
  return { ...i.cacheIndex, data };
}

function expectDsaError(fn: () => unknown, argument: string, code: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isDsaError(caught), `expected a DsaError, got ${String(caught)}`).toBe(true);
  const e = caught as { code: string; message: string; argument?: string };
  expect(e.code).toBe(code);
  expect(e.message.startsWith(`${argument}:`) || e.message.startsWith(`${argument}[`), e.message).toBe(true);
  expect(e.argument).toBe(argument);
}

describe('bad inputs throw a DsaError naming the argument and change no cache byte', () => {
  it.each(BAD)('%s -> %s %s', (_what, argument, code, mutate) => {
    const inputs = makeInputs(D, 3, { nz: true });
    const bad = mutate(inputs) as unknown as MlaPrologInputs;
    const kv = cloneTensor(inputs.kvCache);
    const kr = cloneTensor(inputs.krCache);
    expectDsaError(() => mlaProlog(bad), argument, code);
    expectDsaError(() => mlaPrologReference(bad), argument, code);
    expect(inputs.kvCache.data).toEqual(kv.data);
    expect(inputs.krCache.data).toEqual(kr.data);
  });

  it('options, output buffers, and caches that share memory (native only: the reference writes copies)', () => {
    const i = makeInputs(D, 4);
    const kv = cloneTensor(i.kvCache);
    expectDsaError(() => mlaProlog(i, { rmsNormEps: -1 }), 'rmsNormEps', 'DSA_E_ARGUMENT');
    expectDsaError(() => mlaProlog(i, { rmsNormEps: Number.NaN }), 'rmsNormEps', 'DSA_E_ARGUMENT');
    expectDsaError(() => mlaProlog(i, { out: { qNope: bf([2, 3, 2, 8]) } }), 'out.qNope', 'DSA_E_SHAPE');
    expectDsaError(() => mlaProlog(i, { out: { qNorm: { ...i.x, shape: [2, 3, 16], data: i.x.data.subarray(0, 96) } } }), 'out.qNorm', 'DSA_E_ARGUMENT');
    expectDsaError(() => mlaProlog(i, { out: { qRope: { ...i.kvCache, shape: [2, 3, 2, 8], data: i.kvCache.data.subarray(0, 96) } } }), 'kvCache', 'DSA_E_ARGUMENT');
    expectDsaError(() => mlaProlog(null as unknown as MlaPrologInputs), 'inputs', 'DSA_E_ARGUMENT');
    const shared = { ...i.krCache, data: new Uint16Array(i.kvCache.data.buffer, 0, i.krCache.data.length) };
    expectDsaError(() => mlaProlog({ ...i, krCache: shared }), 'kvCache', 'DSA_E_ARGUMENT');
    expect(i.kvCache.data).toEqual(kv.data);
  });

  it('the async twin rejects with the same error (nothing thrown synchronously)', async () => {
    const i = makeInputs(D, 5);
    const p = mlaPrologAsync({ ...i, cacheIndex: withSlot(i, 0, 99) });
    await expect(p).rejects.toMatchObject({ code: 'DSA_E_RANGE', argument: 'cacheIndex' });
  });

  it('a prepared prolog checks each call against its weights', () => {
    const i = makeInputs(D, 6);
    const p = prepareMlaProlog(i);
    expectDsaError(() => p.run({ ...i, x: bf([2, 3, 31]) }), 'x', 'DSA_E_SHAPE');
    expectDsaError(() => p.run({ ...i, krCache: bf([2, 8, 1, 6]) }), 'krCache', 'DSA_E_SHAPE');
    expectDsaError(() => prepareMlaProlog({ ...i, wUqQr: bf([16, 30]) }), 'wUqQr', 'DSA_E_SHAPE');
  });
});

describe('the native layer checks again (it never trusts JS)', () => {
  const call = (i: Record<string, unknown>): unknown => nativeAddon().mlaProlog(i as Record<string, Tensor>, 1e-5);
  const cases: [string, string, string, Mutate][] = [
    ['a slot past the cache', 'cacheIndex', 'DSA_E_RANGE', (i) => ({ ...i, cacheIndex: withSlot(i, 2, 1 << 30) })],
    ['two tokens on one slot', 'cacheIndex', 'DSA_E_VALUE', (i) => ({ ...i, cacheIndex: withSlot(i, 1, i.cacheIndex.data[4]!) })],
    ['wUqQr too narrow', 'wUqQr', 'DSA_E_SHAPE', (i) => ({ ...i, wUqQr: bf([16, 16]) })],
    ['kvCache too small for its shape', 'kvCache', 'DSA_E_SHAPE', (i) => ({ ...i, kvCache: { ...i.kvCache, data: i.kvCache.data.subarray(8) } })],
    ['krCache of another block count', 'krCache', 'DSA_E_SHAPE', (i) => ({ ...i, krCache: bf([1, 8, 1, 8]) })],
    ['an odd rope width', 'cos', 'DSA_E_SHAPE', (i) => ({ ...i, cos: bf([2, 3, 7]), sin: bf([2, 3, 7]), krCache: bf([2, 8, 1, 7]) })],
  ];
  it.each(cases)('%s', (_w, argument, code, mutate) => {
    const i = makeInputs(D, 7);
    const kv = cloneTensor(i.kvCache);
    let caught: { code?: string; message?: string } | undefined;
    try {
      call(mutate(i));
    } catch (e) {
      caught = e as { code?: string; message?: string };
    }
    expect(caught?.code).toBe(code);
    expect(caught?.message?.startsWith(`${argument}:`), caught?.message).toBe(true);
    expect(i.kvCache.data).toEqual(kv.data);
  });
});
