// The shared golden cases (an independent float64 implementation of the whole operator): stage 4
// alone, fed the golden's own q, updated caches and indices, so both sides use the same index set.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bf16ArrayToF32, compareBf16, readGoldenCase, type Bf16Tensor, type I32Tensor } from '@dsa/tensor-core';
import { sparseFlashAttention, type SparseFlashAttentionInputs } from '../src/index.js';
import { sparseFlashAttentionReference } from '../src/reference.js';

const GOLDEN = join(import.meta.dirname, '../../../../shared/golden');

describe.each(['tiny', 'mtp-empty-row', 'prefill', 'model-heads', 'skip-slot'])('golden %s', (name) => {
  const g = readGoldenCase(join(GOLDEN, name));
  const inputs: SparseFlashAttentionInputs = {
    qNope: g.outputs.qNope as Bf16Tensor,
    qRope: g.outputs.qRope as Bf16Tensor,
    kvCache: g.outputs.kvCache as Bf16Tensor,
    krCache: g.outputs.krCache as Bf16Tensor,
    indices: g.outputs.indices as I32Tensor,
    blockTable: g.inputs.blockTable as I32Tensor,
    actSeqs: g.inputs.actSeqs as I32Tensor,
  };
  const options = { softmaxScale: g.options.softmaxScale as number, sparseMode: g.options.sparseMode as 0 | 3 };
  const golden = bf16ArrayToF32((g.outputs.out as Bf16Tensor).data);

  it('native output matches the golden out', () => {
    const got = sparseFlashAttention(inputs, options).out;
    expect(got.shape).toEqual(g.outputs.out!.shape);
    const cmp = compareBf16(bf16ArrayToF32(got.data), golden);
    expect(cmp.pass, JSON.stringify(cmp)).toBe(true);
    expect(cmp.relL2).toBeLessThan(5e-3);
  });

  it('the float64 reference matches the golden out', () => {
    const cmp = compareBf16(bf16ArrayToF32(sparseFlashAttentionReference(inputs, options).out.data), golden);
    expect(cmp.relL2, JSON.stringify(cmp)).toBeLessThan(1e-3);
  });
});

it('mtp-empty-row: the row without keys is exactly zero', () => {
  const g = readGoldenCase(join(GOLDEN, 'mtp-empty-row'));
  const inputs = {
    qNope: g.outputs.qNope, qRope: g.outputs.qRope, kvCache: g.outputs.kvCache, krCache: g.outputs.krCache,
    indices: g.outputs.indices, blockTable: g.inputs.blockTable, actSeqs: g.inputs.actSeqs,
  } as SparseFlashAttentionInputs;
  const [, s1, n, kvLora] = g.outputs.out!.shape as number[];
  const empty = [...Array(inputs.actSeqs.shape[0]! * s1!).keys()].filter((r) =>
    inputs.indices.data.subarray(r * inputs.indices.shape[2]!, (r + 1) * inputs.indices.shape[2]!).every((v) => v === -1));
  expect(empty.length).toBeGreaterThan(0);
  const out = sparseFlashAttention(inputs, { softmaxScale: g.options.softmaxScale as number }).out.data;
  for (const r of empty) expect(out.subarray(r * n! * kvLora!, (r + 1) * n! * kvLora!).every((v) => v === 0)).toBe(true);
});
