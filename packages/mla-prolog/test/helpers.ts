import {
  compareBf16, Rng, toFloat32, toNZ,
  type Bf16Tensor, type I32Tensor, type Tensor, type U8Tensor,
} from '@dsa/tensor-core';
import { expect } from 'vitest';
import type { MlaPrologDims, MlaPrologInputs } from '../src/index.js';

/** A call's dimensions (the same record the package derives from shapes). */
export type Dims = MlaPrologDims;

/** bf16 bits of a quiet NaN: poison for anything that must be written. */
export const NAN_BF16 = 0x7fc0;

export function poisoned(shape: number[]): Bf16Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: 'bfloat16', shape, data: new Uint16Array(n).fill(NAN_BF16), format: 'ND' };
}

/** What makeInputs builds: the bf16 cache form (a bf16 kvCache and a krCache). */
export type Bf16CacheInputs = MlaPrologInputs & { kvCache: Bf16Tensor; krCache: Bf16Tensor };

/** Random inputs with the golden's value ranges; distinct random slots (some negative when `skip`). */
export function makeInputs(d: Dims, seed: number, opts: { nz?: boolean; skip?: number } = {}): Bf16CacheInputs {
  const rng = new Rng(seed);
  const T = d.b * d.s1;
  const w = (shape: number[]): Bf16Tensor => {
    const t = rng.uniformTensor(shape, -0.1, 0.1);
    return opts.nz ? toNZ(t) : t;
  };
  const slots = rng.shuffle(Array.from({ length: d.blockNum * d.blockSize }, (_, i) => i)).slice(0, T);
  for (let k = 0; k < (opts.skip ?? 0); k++) slots[rng.int(0, T - 1)] = -1 - k;
  const cacheIndex: I32Tensor = { dtype: 'int32', shape: [d.b, d.s1], data: Int32Array.from(slots), format: 'ND' };
  return {
    x: rng.uniformTensor([d.b, d.s1, d.h], -1, 1),
    wDq: w([d.h, d.qLora]),
    wUqQr: w([d.qLora, d.n * (d.qkNope + d.rope)]),
    wUk: rng.uniformTensor([d.n, d.qkNope, d.kvLora], -0.1, 0.1),
    wDkvKr: w([d.h, d.kvLora + d.rope]),
    gammaCq: rng.uniformTensor([d.qLora], -1, 1),
    gammaCkv: rng.uniformTensor([d.kvLora], -1, 1),
    sin: rng.uniformTensor([d.b, d.s1, d.rope], -1, 1),
    cos: rng.uniformTensor([d.b, d.s1, d.rope], -1, 1),
    cacheIndex,
    kvCache: rng.uniformTensor([d.blockNum, d.blockSize, 1, d.kvLora], -1, 1),
    krCache: rng.uniformTensor([d.blockNum, d.blockSize, 1, d.rope], -1, 1),
  };
}

/** A cache the test knows is bf16 (a reference result's kvCache or krCache for bf16 inputs); fails the test otherwise. */
export function bf16Cache(name: string, t: Bf16Tensor | U8Tensor | undefined): Bf16Tensor {
  if (t === undefined || t.dtype !== 'bfloat16') return expect.fail(`${name}: expected a bf16 cache, got ${t === undefined ? 'none' : t.dtype}`);
  return t;
}

export function cloneTensor<T extends Tensor>(t: T): T {
  return { ...t, shape: [...t.shape], data: t.data.slice() } as T;
}

/** The spec's accuracy bar (§4) plus: no NaN anywhere (poison left in place would show up here). */
export function expectClose(name: string, actual: Bf16Tensor, expected: Bf16Tensor): void {
  expect(actual.shape, `${name} shape`).toEqual(expected.shape);
  const a = toFloat32(actual);
  const e = toFloat32(expected);
  const nan = a.findIndex((v) => Number.isNaN(v));
  expect(nan, `${name}: first NaN at ${nan}`).toBe(-1);
  const r = compareBf16(a, e);
  expect(r.relL2, `${name} relative L2`).toBeLessThanOrEqual(1e-2);
  expect(r.close, `${name} isclose fraction`).toBeGreaterThanOrEqual(0.97);
}

/** Rows of a [blocks, block_size, 1, d] cache: those in `written` match `expected`, the others are `before` byte for byte. */
export function expectCacheRows(name: string, cache: Bf16Tensor, before: Bf16Tensor, expected: Bf16Tensor, written: Set<number>): void {
  const d = cache.shape[3]!;
  const rows = cache.data.length / Math.max(d, 1);
  for (let r = 0; r < rows; r++) {
    const got = cache.data.subarray(r * d, (r + 1) * d);
    if (written.has(r)) continue;
    const was = before.data.subarray(r * d, (r + 1) * d);
    if (!got.every((v, i) => v === was[i])) expect.fail(`${name}: row ${r} is not written by this call but changed`);
  }
  const gotRows = [...written].sort((a, b) => a - b);
  const pick = (t: Bf16Tensor): Bf16Tensor => {
    const out = new Uint16Array(gotRows.length * d);
    gotRows.forEach((r, i) => out.set(t.data.subarray(r * d, (r + 1) * d), i * d));
    return { dtype: 'bfloat16', shape: [gotRows.length, d], data: out, format: 'ND' };
  };
  if (gotRows.length > 0) expectClose(`${name} written rows`, pick(cache), pick(expected));
}

export function writtenSlots(cacheIndex: I32Tensor): Set<number> {
  return new Set([...cacheIndex.data].filter((s) => s >= 0));
}


/** Byte equality of two typed arrays (fast, unlike a deep toEqual on large arrays). */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}
