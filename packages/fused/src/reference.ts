// Float64 reference of the whole operator: the four stages' references composed (each with the
// spec's bf16 rounding points; FP8 caches with the stages' FP8 semantics, tensor-core fp8-cache.ts).
// The caches given are not modified; updated copies are returned.
import { indexerPrologReference } from '@dsa/indexer-prolog/reference';
import { lightningIndexerReference } from '@dsa/lightning-indexer/reference';
import { mlaPrologReference } from '@dsa/mla-prolog/reference';
import { sparseFlashAttentionReference } from '@dsa/sparse-flash-attn/reference';
import type { Bf16Tensor, I32Tensor, U8Tensor } from '@dsa/tensor-core';
import type { SparseAttentionInputs } from './inputs.js';
import type { SparseAttentionOptions } from './presets.js';

export interface SparseAttentionReference {
  out: Bf16Tensor;
  /** The reference's own top-k (or the `indices` option when given). */
  indices: I32Tensor;
  /** float64 scores [b, s1, max act], −Infinity past each row's key count. */
  scores: Float64Array;
  /** Updated copies in the inputs' forms (FP8 caches: their bytes; no krCache with an FP8 kvCache). */
  kvCache: Bf16Tensor | U8Tensor;
  krCache?: Bf16Tensor;
  indexKCache: Bf16Tensor | U8Tensor;
  qNope: Bf16Tensor;
  qRope: Bf16Tensor;
  qNorm: Bf16Tensor;
  query: Bf16Tensor;
  weights: Bf16Tensor;
}

/**
 * The operator in float64. With `indices`, the attention runs over that index set instead of the
 * reference's own (the spec compares attention over the set the implementation chose).
 */
export function sparseAttentionReference(
  i: SparseAttentionInputs,
  options: SparseAttentionOptions = {},
  indices?: I32Tensor,
): SparseAttentionReference {
  const mla = mlaPrologReference(
    { x: i.x, wDq: i.wDq, wUqQr: i.wUqQr, wUk: i.wUk, wDkvKr: i.wDkvKr, gammaCq: i.gammaCq, gammaCkv: i.gammaCkv,
      sin: i.sin, cos: i.cos, cacheIndex: i.cacheIndex, kvCache: i.kvCache, krCache: i.krCache },
    { rmsNormEps: options.rmsNormEps },
  );
  const ip = indexerPrologReference(
    { x: i.x, qNorm: mla.qNorm, wIdxQb: i.wIdxQb, wIdxK: i.wIdxK, wIdxProj: i.wIdxProj, inGammaK: i.inGammaK,
      inBetaK: i.inBetaK, sin: i.sin, cos: i.cos, cacheIndex: i.cacheIndex, indexKCache: i.indexKCache },
    { layerNormEps: options.layerNormEps, indexerRope: options.indexerRope },
  );
  const li = lightningIndexerReference(
    { query: ip.query, weights: ip.weights, indexKCache: ip.indexKCache, blockTable: i.blockTable, actSeqs: i.actSeqs },
    { topk: options.topk, sparseMode: options.sparseMode },
  );
  const chosen = indices ?? li.indices;
  const sfa = sparseFlashAttentionReference(
    { qNope: mla.qNope, qRope: mla.qRope, kvCache: mla.kvCache, krCache: mla.krCache, indices: chosen,
      blockTable: i.blockTable, actSeqs: i.actSeqs },
    { softmaxScale: options.softmaxScale, sparseMode: options.sparseMode },
  );
  return {
    out: sfa.out, indices: chosen, scores: li.scores, kvCache: mla.kvCache, krCache: mla.krCache,
    indexKCache: ip.indexKCache, qNope: mla.qNope, qRope: mla.qRope, qNorm: mla.qNorm, query: ip.query, weights: ip.weights,
  };
}
