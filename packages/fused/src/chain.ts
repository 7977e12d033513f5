// mode 'chain': the four stage packages called in order, each with its own addon. The whole call is
// validated first (inputs.ts), so a stage cannot throw after an earlier one has written a cache.
import { indexerProlog, indexerPrologAsync } from '@dsa/indexer-prolog';
import { lightningIndexer, lightningIndexerAsync } from '@dsa/lightning-indexer';
import { mlaProlog, mlaPrologAsync } from '@dsa/mla-prolog';
import { sparseFlashAttention, sparseFlashAttentionAsync } from '@dsa/sparse-flash-attn';
import { abortedError, saveCacheRows, type Bf16Tensor, type I32Tensor } from '@dsa/tensor-core';
import type { ResolvedOptions, SparseAttentionInputs } from './inputs.js';

export interface OperatorResult {
  out: Bf16Tensor;
  indices?: I32Tensor;
}

/** Wall time of each stage of a chained call, in ms (for the demo and benchmarks). */
export interface StageTimes {
  mlaProlog: number;
  indexerProlog: number;
  lightningIndexer: number;
  sparseFlashAttention: number;
}

type Mla = ReturnType<typeof mlaProlog>;
type Ip = ReturnType<typeof indexerProlog>;

// The stages' arguments, taken from the operator's inputs and the earlier stages' results.
const mlaArgs = (i: SparseAttentionInputs, o: ResolvedOptions) =>
  [
    { x: i.x, wDq: i.wDq, wUqQr: i.wUqQr, wUk: i.wUk, wDkvKr: i.wDkvKr, gammaCq: i.gammaCq, gammaCkv: i.gammaCkv,
      sin: i.sin, cos: i.cos, cacheIndex: i.cacheIndex, kvCache: i.kvCache, krCache: i.krCache },
    { rmsNormEps: o.rmsNormEps },
  ] as const;
const ipArgs = (i: SparseAttentionInputs, o: ResolvedOptions, mla: Mla) =>
  [
    { x: i.x, qNorm: mla.qNorm, wIdxQb: i.wIdxQb, wIdxK: i.wIdxK, wIdxProj: i.wIdxProj, inGammaK: i.inGammaK,
      inBetaK: i.inBetaK, sin: i.sin, cos: i.cos, cacheIndex: i.cacheIndex, indexKCache: i.indexKCache },
    { layerNormEps: o.layerNormEps, indexerRope: o.indexerRope },
  ] as const;
const liArgs = (i: SparseAttentionInputs, o: ResolvedOptions, ip: Ip) =>
  [
    { query: ip.query, weights: ip.weights, indexKCache: i.indexKCache, blockTable: i.blockTable, actSeqs: i.actSeqs },
    { topk: o.topk, sparseMode: o.sparseMode },
  ] as const;
const sfaArgs = (i: SparseAttentionInputs, o: ResolvedOptions, mla: Mla, indices: I32Tensor) =>
  [
    { qNope: mla.qNope, qRope: mla.qRope, kvCache: i.kvCache, krCache: i.krCache, indices, blockTable: i.blockTable,
      actSeqs: i.actSeqs },
    { softmaxScale: o.softmaxScale, sparseMode: o.sparseMode },
  ] as const;

const result = (o: ResolvedOptions, out: Bf16Tensor, indices: I32Tensor): OperatorResult =>
  o.returnIndices ? { out, indices } : { out };

export function runChain(i: SparseAttentionInputs, o: ResolvedOptions, times?: StageTimes): OperatorResult {
  let t = performance.now();
  const lap = (k: keyof StageTimes): void => {
    const now = performance.now();
    if (times) times[k] = now - t;
    t = now;
  };
  const mla = mlaProlog(...mlaArgs(i, o));
  lap('mlaProlog');
  const ip = indexerProlog(...ipArgs(i, o, mla));
  lap('indexerProlog');
  const li = lightningIndexer(...liArgs(i, o, ip));
  lap('lightningIndexer');
  const sfa = sparseFlashAttention(...sfaArgs(i, o, mla, li.indices));
  lap('sparseFlashAttention');
  return result(o, sfa.out, li.indices);
}

/** Async chain; with a signal, checked between stages, and an abort puts the written rows back. */
export async function runChainAsync(i: SparseAttentionInputs, o: ResolvedOptions): Promise<OperatorResult> {
  const signal = o.signal;
  if (signal?.aborted) throw abortedError();
  const restore = signal ? saveCacheRows([i.kvCache, ...(i.krCache ? [i.krCache] : []), i.indexKCache], i.cacheIndex.data) : undefined;
  const check = (): void => {
    if (signal?.aborted) {
      restore!();
      throw abortedError();
    }
  };
  const mla = await mlaPrologAsync(...mlaArgs(i, o));
  check();
  const ip = await indexerPrologAsync(...ipArgs(i, o, mla));
  check();
  const li = await lightningIndexerAsync(...liArgs(i, o, ip));
  check();
  const sfa = await sparseFlashAttentionAsync(...sfaArgs(i, o, mla, li.indices));
  check();
  return result(o, sfa.out, li.indices);
}
