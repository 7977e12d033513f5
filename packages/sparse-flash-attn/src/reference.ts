// Float64 reference of stage 4 (background.md §3.5) with the spec's rounding points: inputs are
// bf16, logits and softmax in float64 with P unrounded (the golden keeps P in fp32), output rounded
// once to bf16. The native kernel rounds P to bf16 before P·V; the spec's tolerance covers that.
import { bf16ArrayToF32, f32ToBf16, latentCacheToBf16, type Bf16Tensor } from '@dsa/tensor-core';
import { checkSfaCall, rowEff, type SparseFlashAttentionInputs, type SparseFlashAttentionOptions } from './check.js';

export type { SparseFlashAttentionInputs, SparseFlashAttentionOptions } from './check.js';

/** Same inputs, options, checks and errors as `sparseFlashAttention`, computed in float64. */
export function sparseFlashAttentionReference(inputs: SparseFlashAttentionInputs, options: SparseFlashAttentionOptions = {}): { out: Bf16Tensor } {
  const { dims, softmaxScale, sparseMode } = checkSfaCall(inputs, options);
  const { b, s1, n, kvLora, rope, blockSize, topk, maxBlocks } = dims;
  const qn = bf16ArrayToF32(inputs.qNope.data);
  const qr = bf16ArrayToF32(inputs.qRope.data);
  // FP8 latent cache: its exact values (bf16 holds every dequantized value exactly).
  const caches = inputs.kvCache.dtype === 'uint8'
    ? latentCacheToBf16(inputs.kvCache, kvLora, rope)
    : { kvCache: inputs.kvCache, krCache: inputs.krCache! };
  const kv = bf16ArrayToF32(caches.kvCache.data);
  const kr = bf16ArrayToF32(caches.krCache.data);
  const idx = inputs.indices.data;
  const table = inputs.blockTable.data;
  const act = inputs.actSeqs.data;
  const out = new Uint16Array(b * s1 * n * kvLora);

  for (let bi = 0; bi < b; bi++) {
    for (let i = 0; i < s1; i++) {
      const row = bi * s1 + i;
      if (rowEff(act[bi]!, s1, i, sparseMode) <= 0) continue;  // no keys: zeros
      const slots: number[] = [];
      for (let t = 0; t < topk; t++) {
        const p = idx[row * topk + t]!;
        if (p >= 0) slots.push(table[bi * maxBlocks + Math.floor(p / blockSize)]! * blockSize + (p % blockSize));
      }
      if (slots.length === 0) continue;
      const z = new Float64Array(slots.length);
      const acc = new Float64Array(kvLora);
      for (let h = 0; h < n; h++) {
        const qnOff = (row * n + h) * kvLora;
        const qrOff = (row * n + h) * rope;
        let m = -Infinity;
        for (let t = 0; t < slots.length; t++) {
          const s = slots[t]!;
          let dot = 0;
          for (let c = 0; c < kvLora; c++) dot += qn[qnOff + c]! * kv[s * kvLora + c]!;
          for (let c = 0; c < rope; c++) dot += qr[qrOff + c]! * kr[s * rope + c]!;
          z[t] = softmaxScale * dot;
          m = Math.max(m, z[t]!);
        }
        let sum = 0;
        acc.fill(0);
        for (let t = 0; t < slots.length; t++) {
          const e = Math.exp(z[t]! - m);
          sum += e;
          const vOff = slots[t]! * kvLora;
          for (let c = 0; c < kvLora; c++) acc[c] += e * kv[vOff + c]!;
        }
        const oOff = (row * n + h) * kvLora;
        for (let c = 0; c < kvLora; c++) out[oOff + c] = f32ToBf16(acc[c]! / sum);
      }
    }
  }
  return { out: { dtype: 'bfloat16', shape: [b, s1, n, kvLora], data: out, format: 'ND' } };
}
