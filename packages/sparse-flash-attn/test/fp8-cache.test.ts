// Sparse attention on the FP8 latent cache (656-byte rows at DeepSeek widths: e4m3 tiles ‖ fp32 tile
// scales ‖ bf16 rope), on every ISA: against the float64 reference of the FP8 semantics, and byte for
// byte against the bf16 path on the exactly dequantized cache (the gather's dequantization is exact).
import { afterAll, describe, expect, it } from 'vitest';
import {
  bf16ArrayToF32, compareBf16, cpuFeatures, encodeLatentRow, fp8KvRowBytes, ISAS, latentCacheToBf16, setIsa,
  type Bf16Tensor, type Isa, type U8Tensor,
} from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention, type SparseFlashAttentionInputs } from '../src/index.js';
import { sparseFlashAttentionReference } from '../src/reference.js';
import { makeCase, poisoned, sameBytes, type CaseSpec } from './cases.js';

const best = cpuFeatures().best;
const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(best));
afterAll(() => setIsa('auto'));

/** The FP8 latent cache the MLA prolog would write for these bf16 rows (NaN rows stay NaN codes). */
export function toFp8(inputs: SparseFlashAttentionInputs, mul = 1): SparseFlashAttentionInputs {
  const kv = inputs.kvCache as Bf16Tensor;
  const kr = inputs.krCache!;
  const [blocks, bs, , kvLora] = kv.shape as [number, number, number, number];
  const rope = kr.shape[3]!;
  const rb = fp8KvRowBytes(kvLora, rope);
  const data = new Uint8Array(blocks * bs * rb);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let s = 0; s < blocks * bs; s++) {
    const lat = kv.data.slice(s * kvLora, (s + 1) * kvLora).map((b) => {
      u[0] = b << 16;
      f[0] *= mul;
      return u[0]! >>> 16;
    });
    encodeLatentRow(lat, kr.data.subarray(s * rope, (s + 1) * rope), data, s * rb);
  }
  const kvCache: U8Tensor = { dtype: 'uint8', shape: [blocks, bs, 1, rb], data, format: 'ND' };
  const { krCache: _drop, ...rest } = inputs;
  return { ...rest, kvCache };
}

const specs: Record<string, CaseSpec> = {
  'DeepSeek widths, partial blocks': { b: 3, s1: 1, n: 8, kvLora: 512, rope: 64, blockSize: 128, topk: 129, acts: [300, 1, 131] },
  'odd heads, MTP rows, holes': { b: 2, s1: 2, n: 5, kvLora: 128, rope: 6, blockSize: 7, topk: 20, acts: [30, 3], holes: true, count: 'random' },
  'no rope, sparseMode 0': { b: 1, s1: 2, n: 17, kvLora: 256, rope: 0, blockSize: 5, topk: 9, acts: [11], sparseMode: 0 },
};

describe.each(isas)('FP8 latent cache (%s)', (isa: Isa) => {
  for (const [name, spec] of Object.entries(specs)) {
    it(`${name}: the FP8 reference, and the bf16 path on the dequantized cache byte for byte`, () => {
      setIsa(isa);
      const { inputs } = makeCase(2000 + name.length, spec);
      for (const mul of [1, 3000]) {  // 3000: latent values far past 448 before scaling
        const fp8 = toFp8(inputs, mul);
        const options = { sparseMode: spec.sparseMode };
        const ref = sparseFlashAttentionReference(fp8, options).out;
        const out = poisoned([...ref.shape]);
        nativeAddon().sparseFlashAttention(fp8, 0, spec.sparseMode ?? 3, { out });
        const got = bf16ArrayToF32(out.data);
        expect(got.some(Number.isNaN)).toBe(false);
        expect(compareBf16(got, bf16ArrayToF32(ref.data)).pass).toBe(true);
        const deq = latentCacheToBf16(fp8.kvCache as U8Tensor, spec.kvLora, spec.rope);
        const viaBf16 = sparseFlashAttention({ ...fp8, kvCache: deq.kvCache, krCache: deq.krCache }, options).out;
        expect(sameBytes(viaBf16.data, out.data)).toBe(true);
      }
    });
  }

  it('reads every e4m3 code (subnormals included) exactly', () => {
    setIsa(isa);
    const spec: CaseSpec = { b: 1, s1: 1, n: 4, kvLora: 256, rope: 8, blockSize: 8, topk: 30, acts: [30] };
    const fp8 = toFp8(makeCase(2050, spec).inputs);
    const kv = fp8.kvCache as U8Tensor;
    const rb = fp8KvRowBytes(256, 8);
    const view = new DataView(kv.data.buffer);
    for (let s = 0; s < kv.data.length / rb; s++) {
      for (let c = 0; c < 256; c++) {
        const b = (s * 37 + c * 3) & 0xff;
        kv.data[s * rb + c] = (b & 0x7f) === 0x7f ? b ^ 0x70 : b;
      }
      for (let g = 0; g < 2; g++) view.setFloat32(s * rb + 256 + 4 * g, 2 ** ((s + g) % 7 - 10), true);
    }
    const ref = sparseFlashAttentionReference(fp8).out;
    const out = sparseFlashAttention(fp8).out;
    expect(compareBf16(bf16ArrayToF32(out.data), bf16ArrayToF32(ref.data)).pass).toBe(true);
    const deq = latentCacheToBf16(kv, 256, 8);
    expect(sameBytes(sparseFlashAttention({ ...fp8, kvCache: deq.kvCache, krCache: deq.krCache }).out.data, out.data)).toBe(true);
  });

  it('all-zero latent rows (the amax floor) attend to zeros', () => {
    setIsa(isa);
    const { inputs } = makeCase(2100, { b: 1, s1: 1, n: 3, kvLora: 128, rope: 4, blockSize: 4, topk: 6, acts: [6] });
    (inputs.kvCache as Bf16Tensor).data.fill(0);
    const fp8 = toFp8(inputs);
    const out = sparseFlashAttention(fp8).out;
    expect(Array.from(bf16ArrayToF32(out.data)).every((v) => v === 0)).toBe(true);
  });
});

describe('FP8 latent cache arguments', () => {
  const { inputs } = makeCase(2200, { b: 1, s1: 1, n: 2, kvLora: 128, rope: 8, blockSize: 4, topk: 4, acts: [5] });
  const fp8 = toFp8(inputs);

  it('rejects an FP8 kvCache with a krCache, a bf16 kvCache without one, and rows of the wrong width', () => {
    expect(() => sparseFlashAttention({ ...fp8, krCache: inputs.krCache })).toThrow(/krCache: expected none/);
    const { krCache: _k, ...noKr } = inputs;
    expect(() => sparseFlashAttention(noKr as SparseFlashAttentionInputs)).toThrow(/krCache: expected a bfloat16 tensor/);
    const kv = fp8.kvCache as U8Tensor;
    const wrong: U8Tensor = { ...kv, shape: [kv.shape[0]!, 4, 1, 128 + 4], data: new Uint8Array(kv.shape[0]! * 4 * 132) };
    expect(() => sparseFlashAttention({ ...fp8, kvCache: wrong })).toThrow(/kvCache/);
    // kv_lora not a multiple of 128
    const odd = makeCase(2201, { b: 1, s1: 1, n: 2, kvLora: 40, rope: 8, blockSize: 4, topk: 4, acts: [5] }).inputs;
    const u8: U8Tensor = { dtype: 'uint8', shape: [odd.kvCache.shape[0]!, 4, 1, 40 + 16], data: new Uint8Array(odd.kvCache.shape[0]! * 4 * 56), format: 'ND' };
    const { krCache: _o, ...oddNoKr } = odd;
    expect(() => sparseFlashAttention({ ...oddNoKr, kvCache: u8 })).toThrow(/kv_lora % 128/);
  });
});
