import { describe, expect, it } from 'vitest';
import { isDsaError } from '@dsa/tensor-core';
import { lightningIndexer, selectionCoverage } from '../src/index.js';
import { i32Tensor, makeInputs } from './helpers.js';

const LN2 = Math.log(2);

describe('selectionCoverage', () => {
  it('one row as plain arrays: the softmax mass of the selection and the best possible', () => {
    // softmax([0, 0, ln 2]) = [0.25, 0.25, 0.5]
    let r = selectionCoverage([0, 0, LN2], [2]);
    expect(r.coverage[0]).toBeCloseTo(0.5, 12);
    expect(r.best[0]).toBeCloseTo(0.5, 12);
    r = selectionCoverage([0, 0, LN2], [0, -1]);
    expect(r.coverage[0]).toBeCloseTo(0.25, 12);
    expect(r.best[0]).toBeCloseTo(0.5, 12);
    r = selectionCoverage([0, 0, LN2], [1, 0, 2]);
    expect(r.coverage[0]).toBeCloseTo(1, 12);
    // scale 2: softmax([0, 0, 2 ln 2]) = [1/6, 1/6, 4/6]
    expect(selectionCoverage([0, 0, LN2], [2], { scale: 2 }).coverage[0]).toBeCloseTo(4 / 6, 12);
  });

  it('tensor rows with masked keys; a row without keys counts as covered', () => {
    const logits = { dtype: 'float32' as const, shape: [2, 3], data: Float32Array.from([1, -Infinity, 1, -Infinity, -Infinity, -Infinity]) };
    const r = selectionCoverage(logits, i32Tensor([0, -1, -1, -1], [2, 2]));
    expect(Array.from(r.coverage)).toEqual([0.5, 1]);
    expect(Array.from(r.best)).toEqual([0.5, 1]);
  });

  it('judges lightningIndexer selections: scores as logits are covered at least as well as any other same-size set', () => {
    const x = makeInputs({ b: 2, s1: 2, heads: 4, dim: 16, blockSize: 8, acts: [30, 61], seed: 41 });
    const { indices, scores } = lightningIndexer(x, { topk: 10, returnScores: true });
    const r = selectionCoverage(scores!, indices, { scale: 0.1 });
    for (let i = 0; i < 4; i++) {
      expect(r.coverage[i]).toBeGreaterThan(0);
      expect(r.coverage[i]).toBeCloseTo(r.best[i]!, 6); // the top-k of the logits is the oracle set
    }
    // A selection of the lowest-scoring keys covers less.
    const worst = Int32Array.from(indices.data);
    for (let row = 0; row < 4; row++) worst.set(Array.from({ length: 10 }, (_, t) => t), row * 10);
    const w = selectionCoverage(scores!, i32Tensor(worst, [2, 2, 10]), { scale: 0.1 });
    for (let i = 0; i < 4; i++) expect(w.coverage[i]).toBeLessThanOrEqual(r.coverage[i]! + 1e-12);
  });

  it.each([
    ['an index out of range', [0, 0, 0], [3], 'DSA_E_RANGE', /indices\[0\]: expected -1 or a position in \[0, 2\], got 3/],
    ['a duplicated index', [0, 0, 0], [1, 1], 'DSA_E_VALUE', /position 1 is selected twice/],
    ['a NaN logit', [0, NaN, 0], [1], 'DSA_E_VALUE', /logits\[1\]: expected a finite value or -Infinity, got NaN/],
  ] as const)('%s is a DsaError', (_n, logits, idx, code, text) => {
    let err: unknown;
    try {
      selectionCoverage(logits, idx);
    } catch (e) {
      err = e;
    }
    expect(isDsaError(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
    expect((err as Error).message).toMatch(text);
  });

  it('mismatched leading dimensions and a bad scale are rejected', () => {
    const logits = { dtype: 'float32' as const, shape: [2, 3], data: new Float32Array(6) };
    expect(() => selectionCoverage(logits, i32Tensor([0, 1, 2], [3, 1]))).toThrow(/indices: expected leading dimensions \[2\]/);
    expect(() => selectionCoverage([0, 1], [0], { scale: 0 })).toThrow(/scale: expected a finite positive number/);
  });
});
