// Every stage package and the fused operator on one golden case, async, hashing all outputs and the
// caches after. Plain ESM so a worker thread can import it as it is (the worker test runs it on the
// main thread and in workers and compares).
import { createHash } from 'node:crypto';

const dist = (pkg) => new URL(`../../${pkg}/dist/index.js`, import.meta.url).href;

export async function runAllStages(golden) {
  const core = await import(dist('tensor-core'));
  const mla = await import(dist('mla-prolog'));
  const ip = await import(dist('indexer-prolog'));
  const li = await import(dist('lightning-indexer'));
  const sfa = await import(dist('sparse-flash-attn'));
  const fused = await import(dist('fused'));
  const c = core.readGoldenCase(golden);
  const i = { ...c.inputs };
  for (const k of ['kvCache', 'krCache', 'indexKCache']) i[k] = core.clone(i[k]);
  const o = c.options;
  const a = await mla.mlaPrologAsync({ x: i.x, wDq: i.wDq, wUqQr: i.wUqQr, wUk: i.wUk, wDkvKr: i.wDkvKr, gammaCq: i.gammaCq, gammaCkv: i.gammaCkv, sin: i.sin, cos: i.cos, cacheIndex: i.cacheIndex, kvCache: i.kvCache, krCache: i.krCache }, { rmsNormEps: o.rmsNormEps });
  const b = await ip.indexerPrologAsync({ x: i.x, qNorm: a.qNorm, wIdxQb: i.wIdxQb, wIdxK: i.wIdxK, wIdxProj: i.wIdxProj, inGammaK: i.inGammaK, inBetaK: i.inBetaK, sin: i.sin, cos: i.cos, cacheIndex: i.cacheIndex, indexKCache: i.indexKCache }, { layerNormEps: o.layerNormEps, indexerRope: o.indexerRope });
  const d = await li.lightningIndexerAsync({ query: b.query, weights: b.weights, indexKCache: i.indexKCache, blockTable: i.blockTable, actSeqs: i.actSeqs }, { topk: o.topk, sparseMode: o.sparseMode });
  const e = await sfa.sparseFlashAttentionAsync({ qNope: a.qNope, qRope: a.qRope, kvCache: i.kvCache, krCache: i.krCache, indices: d.indices, blockTable: i.blockTable, actSeqs: i.actSeqs }, { softmaxScale: o.softmaxScale, sparseMode: o.sparseMode });
  const f = await fused.sparseAttentionAsync({ ...c.inputs, kvCache: core.clone(c.inputs.kvCache), krCache: core.clone(c.inputs.krCache), indexKCache: core.clone(c.inputs.indexKCache) }, o);
  const hash = createHash('sha256');
  for (const t of [a.qNope, a.qRope, a.qNorm, b.query, b.weights, d.indices, e.out, f.out, i.kvCache, i.krCache, i.indexKCache]) {
    hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return hash.digest('hex');
}
