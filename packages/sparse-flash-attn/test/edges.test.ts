// Edge cases of spec §2 / background §10: one key, no keys, all −1, fewer than topk, empty shapes.
import { afterEach, describe, expect, it } from 'vitest';
import { bf16ArrayToF32, compareBf16, cpuFeatures, ISAS, setIsa } from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention } from '../src/index.js';
import { sparseFlashAttentionReference } from '../src/reference.js';
import { i32, makeCase, poisoned, sameBytes } from './cases.js';

const best = cpuFeatures().best;
const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(best));

afterEach(() => setIsa('auto'));

describe('edge cases', () => {
  it.each(isas)('a row with one key returns that key latent row exactly (%s)', (isa) => {
    setIsa(isa);
    const kvLora = 40;
    const { inputs, rows } = makeCase(11, { b: 2, s1: 1, n: 19, kvLora, rope: 8, blockSize: 4, topk: 6, acts: [1, 9], count: 1, qStd: 4 });
    const out = sparseFlashAttention(inputs).out.data;
    for (let bi = 0; bi < 2; bi++) {
      const p = rows[bi]![0]!;
      const slot = inputs.blockTable.data[bi * inputs.blockTable.shape[1]! + Math.floor(p / 4)]! * 4 + (p % 4);
      const latent = inputs.kvCache.data.subarray(slot * kvLora, (slot + 1) * kvLora);
      for (let h = 0; h < 19; h++) expect(out.subarray(((bi * 19) + h) * kvLora, ((bi * 19) + h + 1) * kvLora)).toEqual(latent);
    }
  });

  it.each(isas)('rows without keys (act < s1, act = 0, all −1) are zeros, never NaN (%s)', (isa) => {
    setIsa(isa);
    // b0: act 2 < s1 = 3 → row 0 has eff 0; b1: act 0 → no row has keys; b2: keys exist but every index is −1.
    const { inputs } = makeCase(12, { b: 3, s1: 3, n: 4, kvLora: 16, rope: 4, blockSize: 4, topk: 5, acts: [2, 0, 7] });
    inputs.indices.data.fill(-1, 2 * 3 * 5);
    const out = poisoned([3, 3, 4, 16]);
    nativeAddon().sparseFlashAttention(inputs, 0, 3, { out });
    const rowSize = 4 * 16;
    const emptyRows = [0, 3, 4, 5, 6, 7, 8];
    for (let r = 0; r < 9; r++) {
      const row = Array.from(out.data.subarray(r * rowSize, (r + 1) * rowSize));
      if (emptyRows.includes(r)) expect(row.every((v) => v === 0)).toBe(true);
      else expect(row.some((v) => v !== 0) && row.every((v) => (v & 0x7f80) !== 0x7f80)).toBe(true);
    }
    const ref = sparseFlashAttentionReference(inputs).out.data;
    expect(compareBf16(bf16ArrayToF32(out.data), bf16ArrayToF32(ref)).pass).toBe(true);
  });

  it('fewer valid indices than topk, padded at the end or scattered, give the same result', () => {
    const spec = { b: 1, s1: 1, n: 6, kvLora: 24, rope: 8, blockSize: 8, topk: 40, acts: [30], count: 20 } as const;
    const packed = makeCase(13, spec);
    const scattered = structuredClone(packed.inputs);
    // Same set, same order, −1 entries moved between the valid ones.
    const valid = packed.rows[0]!;
    scattered.indices.data.fill(-1);
    valid.forEach((p, t) => (scattered.indices.data[t + Math.floor(t / 3) + 5] = p));
    const a = sparseFlashAttention(packed.inputs).out.data;
    expect(sameBytes(sparseFlashAttention(scattered).out.data, a)).toBe(true);
    const ref = sparseFlashAttentionReference(packed.inputs).out.data;
    expect(compareBf16(bf16ArrayToF32(a), bf16ArrayToF32(ref)).pass).toBe(true);
  });

  it('a block-table entry that is never read may be −1 or garbage', () => {
    const { inputs } = makeCase(14, { b: 1, s1: 1, n: 2, kvLora: 16, rope: 4, blockSize: 4, topk: 3, acts: [6] });
    const mb = inputs.blockTable.shape[1]!;
    const used = new Set(Array.from(inputs.indices.data).filter((p) => p >= 0).map((p) => Math.floor(p / 4)));
    for (let j = 0; j < mb; j++) if (!used.has(j)) inputs.blockTable.data[j] = j % 2 ? -1 : 1 << 30;
    expect(() => sparseFlashAttention(inputs)).not.toThrow();
  });

  it('empty batch and zero heads give empty outputs', () => {
    const { inputs } = makeCase(15, { b: 1, s1: 1, n: 2, kvLora: 8, rope: 2, blockSize: 4, topk: 3, acts: [5] });
    const none = {
      ...inputs,
      qNope: { ...inputs.qNope, shape: [0, 1, 2, 8], data: new Uint16Array(0) },
      qRope: { ...inputs.qRope, shape: [0, 1, 2, 2], data: new Uint16Array(0) },
      indices: i32([0, 1, 3], new Int32Array(0)),
      blockTable: i32([0, inputs.blockTable.shape[1]!], new Int32Array(0)),
      actSeqs: i32([0], new Int32Array(0)),
    };
    expect(sparseFlashAttention(none).out.shape).toEqual([0, 1, 2, 8]);
    const noHeads = {
      ...inputs,
      qNope: { ...inputs.qNope, shape: [1, 1, 0, 8], data: new Uint16Array(0) },
      qRope: { ...inputs.qRope, shape: [1, 1, 0, 2], data: new Uint16Array(0) },
    };
    expect(sparseFlashAttention(noHeads).out.shape).toEqual([1, 1, 0, 8]);
  });

  it('the default scale is (kvLora + rope)^-0.5 and the scale changes the result', () => {
    const { inputs } = makeCase(16, { b: 1, s1: 1, n: 3, kvLora: 30, rope: 6, blockSize: 4, topk: 10, acts: [12] });
    const dflt = sparseFlashAttention(inputs).out.data;
    expect(sameBytes(sparseFlashAttention(inputs, { softmaxScale: 36 ** -0.5 }).out.data, dflt)).toBe(true);
    const model = sparseFlashAttention(inputs, { softmaxScale: 0.1352338 }).out.data;
    expect(sameBytes(model, dflt)).toBe(false);
    const ref = sparseFlashAttentionReference(inputs, { softmaxScale: 0.1352338 }).out.data;
    expect(compareBf16(bf16ArrayToF32(model), bf16ArrayToF32(ref)).pass).toBe(true);
  });
});
