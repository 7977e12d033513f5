// Float64 reference of the lightning indexer (spec §2, background.md §3.4): plain loops, no tiling,
// a full sort per row. The inputs are bf16, so they are exact in float64; the scores are never rounded
// (the spec keeps them in fp32, which this reference bounds from above in precision).
import { fp8IndexQueryToBf16, type I32Tensor, indexKeyCacheToBf16, toFloat32 } from '@dsa/tensor-core';
import type { LightningIndexerInputs } from './index.js';

export interface ReferenceOptions {
  topk?: number;
  sparseMode?: 0 | 3;
}

export interface ReferenceResult {
  /** int32 [b, s1, topk]: positions by descending score, ties to the smaller position, −1 padded. */
  indices: I32Tensor;
  /** float64 [b, s1, max act] in row-major order, −Infinity past each row's key count. */
  scores: Float64Array;
  scoresShape: [number, number, number];
  /** Key count (eff) of each row, [b * s1]; ≤ 0 means no keys. */
  eff: Int32Array;
}

/** Key count of query row i of sequence with `act` keys. */
export function effectiveKeys(act: number, s1: number, i: number, sparseMode: 0 | 3): number {
  return sparseMode === 3 ? act - (s1 - 1 - i) : act;
}

/** The topk positions of one score row (positions ≥ eff are ignored), full sort. */
export function referenceTopk(scores: ArrayLike<number>, eff: number, topk: number): Int32Array {
  const out = new Int32Array(topk).fill(-1);
  if (eff <= 0) return out;
  const order = Array.from({ length: eff }, (_, j) => j);
  order.sort((x, y) => scores[y]! - scores[x]! || x - y);
  for (let t = 0; t < Math.min(topk, eff); t++) out[t] = order[t]!;
  return out;
}

export function lightningIndexerReference(inputs: LightningIndexerInputs, options: ReferenceOptions = {}): ReferenceResult {
  const topk = options.topk ?? 2048;
  const sparseMode = options.sparseMode ?? 3;
  const [b, s1, heads, dim] = inputs.query.shape as [number, number, number, number];
  const blockSize = inputs.indexKCache.shape[1]!;
  const maxBlocks = inputs.blockTable.shape[1]!;
  // FP8 key cache: the exact values of q8_h · qscale_h and k8 · kscale (bf16 holds them exactly), so the
  // float64 loop below computes Σ_h w_h · relu(q8_h · k8) · qscale_h · kscale exactly.
  const fp8 = inputs.indexKCache.dtype === 'uint8';
  const q = toFloat32(fp8 ? fp8IndexQueryToBf16(inputs.query) : inputs.query);
  const w = toFloat32(inputs.weights);
  const k = toFloat32(inputs.indexKCache.dtype === 'uint8' ? indexKeyCacheToBf16(inputs.indexKCache, dim) : inputs.indexKCache);
  const act = inputs.actSeqs.data;
  const table = inputs.blockTable.data;
  let maxAct = 0;
  for (let bi = 0; bi < b; bi++) maxAct = Math.max(maxAct, act[bi]!);

  const scores = new Float64Array(b * s1 * maxAct).fill(-Infinity);
  const eff = new Int32Array(b * s1);
  const indices = new Int32Array(b * s1 * topk);
  for (let bi = 0; bi < b; bi++) {
    for (let i = 0; i < s1; i++) {
      const r = bi * s1 + i;
      const e = effectiveKeys(act[bi]!, s1, i, sparseMode);
      eff[r] = e;
      const row = scores.subarray(r * maxAct, (r + 1) * maxAct);
      for (let j = 0; j < e; j++) {
        const slot = table[bi * maxBlocks + Math.floor(j / blockSize)]! * blockSize + (j % blockSize);
        let s = 0;
        for (let h = 0; h < heads; h++) {
          const qo = (r * heads + h) * dim;
          let dot = 0;
          for (let d = 0; d < dim; d++) dot += q[qo + d]! * k[slot * dim + d]!;
          s += w[r * heads + h]! * Math.max(0, dot);
        }
        row[j] = s;
      }
      indices.set(referenceTopk(row, e, topk), r * topk);
    }
  }
  return { indices: { dtype: 'int32', shape: [b, s1, topk], data: indices, format: 'ND' }, scores, scoresShape: [b, s1, maxAct], eff };
}
