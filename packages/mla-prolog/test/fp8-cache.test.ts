// The MLA prolog writing the FP8 latent cache (kv_lora e4m3 ‖ fp32 tile scales ‖ bf16 rope per slot),
// on every ISA. The bytes must be exactly the FP8 quantization (tensor-core encodeLatentRow) of the
// bf16 rows the bf16 path writes for the same call, which the bf16 tests hold to the float64 reference;
// the FP8 reference agrees wherever its own bf16 latent does.
import { afterAll, describe, expect, it } from 'vitest';
import { cpuFeatures, encodeLatentRow, fp8KvRowBytes, setIsa, type Bf16Tensor, type Isa, type U8Tensor } from '@dsa/tensor-core';
import { mlaProlog, type MlaPrologInputs } from '../src/index.js';
import { mlaPrologReference } from '../src/reference.js';
import { cloneTensor, makeInputs, sameBytes, writtenSlots, type Dims } from './helpers.js';

const ISA_LIST: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((i) => {
  const f = cpuFeatures();
  return i === 'scalar' || (i === 'avx2' && f.avx2 && f.fma) || (i === 'avx512' && f.best === 'avx512');
});
afterAll(() => setIsa('auto'));

const D: Dims = { b: 2, s1: 3, h: 40, qLora: 24, n: 2, qkNope: 16, rope: 6, kvLora: 256, blockNum: 3, blockSize: 5 };

function fp8Cache(d: Dims, fill: number): U8Tensor {
  const rb = fp8KvRowBytes(d.kvLora, d.rope);
  return { dtype: 'uint8', shape: [d.blockNum, d.blockSize, 1, rb], data: new Uint8Array(d.blockNum * d.blockSize * rb).fill(fill), format: 'ND' };
}

/** Run the bf16 path and the FP8 path on the same call; check the FP8 bytes against the bf16 rows. */
function check(inputs: MlaPrologInputs, d: Dims): U8Tensor {
  const bf = { ...inputs, kvCache: cloneTensor(inputs.kvCache as Bf16Tensor), krCache: cloneTensor(inputs.krCache!) };
  const outBf = mlaProlog(bf);
  const cache = fp8Cache(d, 0xa5);
  const { krCache: _kr, ...rest } = inputs;
  const out8 = mlaProlog({ ...rest, kvCache: cache });
  // The query outputs do not depend on the cache form.
  for (const k of ['qNope', 'qRope', 'qNorm'] as const) expect(sameBytes(out8[k].data, outBf[k].data)).toBe(true);
  const rb = fp8KvRowBytes(d.kvLora, d.rope);
  const slots = writtenSlots(inputs.cacheIndex);
  const kv = bf.kvCache.data;
  const kr = bf.krCache.data;
  for (let s = 0; s < d.blockNum * d.blockSize; s++) {
    const row = cache.data.subarray(s * rb, (s + 1) * rb);
    if (!slots.has(s)) {
      expect(row.every((v) => v === 0xa5), `slot ${s} was not written`).toBe(true);
      continue;
    }
    const want = new Uint8Array(rb);
    encodeLatentRow(kv.subarray(s * d.kvLora, (s + 1) * d.kvLora), kr.subarray(s * d.rope, (s + 1) * d.rope), want, 0);
    expect(Array.from(row), `slot ${s}`).toEqual(Array.from(want));
  }
  return cache;
}

describe.each(ISA_LIST)('FP8 latent cache (%s)', (isa) => {
  it('writes the FP8 quantization of the bf16 rows exactly (negative slot, partial blocks)', () => {
    setIsa(isa);
    const inputs = makeInputs(D, 31, { skip: 1 });
    const cache = check(inputs, D);
    // The float64 reference of the FP8 semantics writes the same bytes wherever its bf16 latent equals
    // the kernel's (the bf16 tests allow the kernel a rounding difference on near-ties).
    const { krCache: _kr, ...rest } = inputs;
    const ref = mlaPrologReference({ ...rest, kvCache: fp8Cache(D, 0xa5) });
    const rb = fp8KvRowBytes(D.kvLora, D.rope);
    let same = 0;
    const slots = [...writtenSlots(inputs.cacheIndex)];
    for (const s of slots) if (sameBytes(ref.kvCache.data.subarray(s * rb, (s + 1) * rb), cache.data.subarray(s * rb, (s + 1) * rb))) same++;
    expect(same).toBeGreaterThanOrEqual(slots.length - 1);
    expect(ref.krCache).toBeUndefined();
  });

  it('scales values far past 448 and all-zero latents (the amax floor)', () => {
    setIsa(isa);
    const big = makeInputs(D, 32);
    big.gammaCkv.data.forEach((v, i) => (big.gammaCkv.data[i] = (v & 0x8000) | 0x4600 | (i & 0x7f))); // |gamma| ~ 8192
    check(big, D);
    const zero = makeInputs(D, 33);
    zero.gammaCkv.data.fill(0);
    const cache = check(zero, D);
    const s = zero.cacheIndex.data[0]!;
    const rb = fp8KvRowBytes(D.kvLora, D.rope);
    expect(cache.data.subarray(s * rb, s * rb + D.kvLora).every((v) => (v & 0x7f) === 0)).toBe(true);  // ±0
    expect(new DataView(cache.data.buffer).getFloat32(s * rb + D.kvLora, true)).toBe(2 ** -22);
  });
});

describe('FP8 latent cache arguments', () => {
  const inputs = makeInputs(D, 34);
  const { krCache, ...rest } = inputs;

  it('rejects a krCache beside an FP8 kvCache, a bf16 kvCache alone, a wrong row width, kv_lora % 128 != 0', () => {
    const cache = fp8Cache(D, 7);
    expect(() => mlaProlog({ ...rest, kvCache: cache, krCache })).toThrow(/krCache: expected none/);
    expect(() => mlaProlog(rest as MlaPrologInputs)).toThrow(/krCache: expected a bfloat16 tensor/);
    const wrong: U8Tensor = { ...cache, shape: [D.blockNum, D.blockSize, 1, 600], data: new Uint8Array(D.blockNum * D.blockSize * 600) };
    expect(() => mlaProlog({ ...rest, kvCache: wrong })).toThrow(/kvCache/);
    const odd: Dims = { ...D, kvLora: 40 };
    const o = makeInputs(odd, 35);
    const { krCache: _k, ...oRest } = o;
    expect(() => mlaProlog({ ...oRest, kvCache: { dtype: 'uint8', shape: [3, 5, 1, 40 + 16], data: new Uint8Array(15 * 56), format: 'ND' } })).toThrow(/kv_lora % 128/);
    expect(cache.data.every((v) => v === 7)).toBe(true);
  });

  it('writes nothing when a later check fails (duplicate slot)', () => {
    const cache = fp8Cache(D, 9);
    const ci = { ...inputs.cacheIndex, data: inputs.cacheIndex.data.slice() };
    ci.data[1] = ci.data[0]!;
    expect(() => mlaProlog({ ...rest, cacheIndex: ci, kvCache: cache })).toThrow(/cacheIndex/);
    expect(cache.data.every((v) => v === 9)).toBe(true);
  });
});
