// The lightning indexer on the FP8 key cache (132-byte rows: e4m3 of the Hadamard-rotated key ‖ fp32
// scale) against the float64 reference of the FP8 semantics, on every ISA: scores within the fp32
// accumulation bound of the exact quantized products, indices equal to the full sort of the returned
// scores and to the reference's set up to near-ties (helpers.checkAgainstReference).
import { afterAll, describe, expect, it } from 'vitest';
import {
  type Bf16Tensor, fp8IndexQueryToBf16, fp8IndexRowBytes, indexKeyCacheToBf16, type Isa, setIsa, type U8Tensor,
} from '@dsa/tensor-core';
import { lightningIndexer, type LightningIndexerInputs } from '../src/index.js';
import { lightningIndexerReference } from '../src/reference.js';
import { checkAgainstReference, isas, makeInputs, withFp8Keys } from './helpers.js';

afterAll(() => setIsa('auto'));

const cases = [
  { b: 2, s1: 3, heads: 5, dim: 128, blockSize: 7, acts: [40, 19], seed: 81 },
  { b: 1, s1: 1, heads: 64, dim: 128, blockSize: 16, acts: [333], seed: 82 },
  { b: 3, s1: 2, heads: 17, dim: 128, blockSize: 5, acts: [2, 61, 1], seed: 83 },
  // Runs of many 32-key widening batches and task chunks that start inside a block (the prefetch of
  // the next batch and of the next run).
  { b: 2, s1: 1, heads: 9, dim: 128, blockSize: 100, acts: [2500, 777], seed: 90 },
];

function scaled(t: Bf16Tensor, f: number): Bf16Tensor {
  const v = new Float32Array(new Uint32Array(Array.from(t.data, (b) => b << 16)).buffer);
  const out = new Uint16Array(t.data.length);
  const u = new Uint32Array(1);
  const x = new Float32Array(u.buffer);
  v.forEach((a, i) => {
    x[0] = a * f;
    out[i] = u[0]! >>> 16;
  });
  return { ...t, data: out };
}

describe.each(isas())('FP8 key cache (%s)', (isa: Isa) => {
  it('matches the float64 FP8 reference (odd heads, partial blocks, s1 > 1)', () => {
    setIsa(isa);
    for (const c of cases) {
      const inputs = withFp8Keys(makeInputs(c));
      checkAgainstReference(inputs, 8, 3);
      checkAgainstReference(inputs, 50, 0);
    }
  });

  it('handles all-zero keys and queries (the amax floor) and values far past 448', () => {
    setIsa(isa);
    const base = makeInputs({ b: 1, s1: 2, heads: 4, dim: 128, blockSize: 8, acts: [20], seed: 84 });
    const big = { ...base, query: scaled(base.query, 3000), indexKCache: scaled(base.indexKCache as Bf16Tensor, 5000) };
    const zeros = makeInputs({ b: 1, s1: 1, heads: 3, dim: 128, blockSize: 8, acts: [12], seed: 85 });
    (zeros.indexKCache as Bf16Tensor).data.fill(0);
    zeros.query.data.fill(0, 0, 128);  // head 0 all zero
    for (const inputs of [withFp8Keys(big), withFp8Keys(zeros)]) checkAgainstReference(inputs, 6, 3);
    const z = withFp8Keys(zeros).indexKCache as U8Tensor;
    // A zero key stores zero bytes and the floor scale 2^ceil(log2(1e-4 / 448)) = 2^-22.
    expect(new DataView(z.data.buffer).getFloat32(128, true)).toBe(2 ** -22);
    expect(Array.from(z.data.subarray(0, 128)).every((v) => v === 0)).toBe(true);
    const r = lightningIndexer(withFp8Keys(zeros), { topk: 4, returnScores: true });
    expect(Array.from(r.scores!.data).every((v) => v === 0)).toBe(true);
  });

  it('reads every e4m3 code (subnormals included) with power-of-two scales exactly', () => {
    setIsa(isa);
    const inputs = withFp8Keys(makeInputs({ b: 1, s1: 1, heads: 6, dim: 128, blockSize: 9, acts: [40], seed: 89 }));
    const k = inputs.indexKCache as U8Tensor;
    const rows = k.data.length / 132;
    const view = new DataView(k.data.buffer);
    for (let s = 0; s < rows; s++) {
      for (let d = 0; d < 128; d++) {
        const b = (s * 131 + d * 7) & 0xff;
        k.data[s * 132 + d] = (b & 0x7f) === 0x7f ? b ^ 0x70 : b;  // every code but NaN, subnormals included
      }
      view.setFloat32(s * 132 + 128, 2 ** ((s % 9) - 12), true);
    }
    const got = checkAgainstReference(inputs, 10, 3);
    // The bf16 path on the exact dequantized query and keys gives the same fp32 scores bit for bit (the
    // power-of-two scales commute with every fp32 rounding), so any conversion error would show here.
    const deq = { ...inputs, query: fp8IndexQueryToBf16(inputs.query), indexKCache: indexKeyCacheToBf16(k, 128) };
    const viaBf16 = lightningIndexer(deq, { topk: 10, returnScores: true });
    expect(Array.from(viaBf16.scores!.data)).toEqual(Array.from(got.scores!.data));
  });

  it('a NaN code in a key reaches its score as on the bf16 path of the dequantized keys (ReLU of NaN: 0)', () => {
    setIsa(isa);
    const inputs = withFp8Keys(makeInputs({ b: 1, s1: 1, heads: 6, dim: 128, blockSize: 9, acts: [40], seed: 91 }));
    const k = inputs.indexKCache as U8Tensor;
    const slot = (j: number): number => inputs.blockTable.data[Math.floor(j / 9)]! * 9 + (j % 9);
    k.data[slot(3) * 132 + 17] = 0x7f;  // key 3: one NaN code
    k.data[slot(20) * 132 + 127] = 0xff;  // key 20: the other one, at the last dimension
    const got = lightningIndexer(inputs, { topk: 40, returnScores: true });
    const deq = { ...inputs, query: fp8IndexQueryToBf16(inputs.query), indexKCache: indexKeyCacheToBf16(k, 128) };
    const viaBf16 = lightningIndexer(deq, { topk: 40, returnScores: true });
    const a = Array.from(got.scores!.data), b = Array.from(viaBf16.scores!.data);
    // Every head's dot product with keys 3 and 20 is NaN, which the kernels' ReLU (max with 0) turns to
    // 0; a NaN code read as a finite value would give them ordinary scores.
    expect([a[3], a[20]]).toEqual([0, 0]);
    expect(a.filter((v) => v === 0).length).toBe(2);
    expect(a).toEqual(b);
    expect(Array.from(got.indices.data)).toEqual(Array.from(viaBf16.indices.data));
  });

  it('keeps indices in range with NaN queries and NaN keys', () => {
    setIsa(isa);
    const inputs = makeInputs({ b: 2, s1: 1, heads: 4, dim: 128, blockSize: 8, acts: [30, 9], seed: 86 });
    inputs.query.data.fill(0x7fc0, 0, 64);
    (inputs.indexKCache as Bf16Tensor).data.fill(0x7fc0);
    const r = lightningIndexer(withFp8Keys(inputs), { topk: 8 });
    for (let bi = 0; bi < 2; bi++) {
      for (const j of r.indices.data.subarray(bi * 8, bi * 8 + 8)) expect(j >= -1 && j < inputs.actSeqs.data[bi]!).toBe(true);
    }
  });
});

describe('FP8 key cache arguments', () => {
  const inputs = withFp8Keys(makeInputs({ b: 1, s1: 1, heads: 2, dim: 128, blockSize: 4, acts: [6], seed: 87 }));

  it('rejects a head dim other than 128, and rows of the wrong width', () => {
    const small = makeInputs({ b: 1, s1: 1, heads: 2, dim: 64, blockSize: 4, acts: [6], seed: 88 });
    const bad: LightningIndexerInputs = {
      ...small,
      indexKCache: { dtype: 'uint8', shape: [small.indexKCache.shape[0]!, 4, 1, fp8IndexRowBytes(64)], data: new Uint8Array(small.indexKCache.shape[0]! * 4 * 68), format: 'ND' },
    };
    expect(() => lightningIndexer(bad)).toThrow(/DSA_E_SHAPE|head dim of 128/);
    const k = inputs.indexKCache as U8Tensor;
    const wide: LightningIndexerInputs = { ...inputs, indexKCache: { ...k, shape: [k.shape[0]!, 4, 1, 128], data: new Uint8Array(k.shape[0]! * 4 * 128) } };
    expect(() => lightningIndexer(wide)).toThrow(/indexKCache/);
  });

  it('gives the reference the same semantics (the scores are those of the dequantized values)', () => {
    const ref = lightningIndexerReference(inputs, { topk: 4 });
    const got = lightningIndexer(inputs, { topk: 4 });
    expect(Array.from(got.indices.data)).toEqual(Array.from(ref.indices.data));
  });
});
