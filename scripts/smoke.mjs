// Smoke test of the packages as a user installs them (scripts/dist-check.sh copies this file into a
// temporary npm project; scripts/dist-arm64.sh runs it on arm64 Node under qemu):
//   node smoke.mjs indexer   # @dsa/lightning-indexer (+ tensor-core) installed alone: top-k vs /reference
//   node smoke.mjs all       # every stage, then the operator in fused and chain modes, vs the references
// Small seeded random cases with odd sizes; outputs compared with the float64 references (top-k as
// sets, an index may differ only where the reference scores tie at the boundary; bf16 outputs by the
// spec's bar: relative L2 <= 1e-2, isclose on >= 97% of the elements). Prints one line per check and
// `SMOKE {"passed":N,"failed":N}` last; exit 1 on any failure.
import { activeIsa, compareBf16, Rng, toFloat32 } from '@dsa/tensor-core';

const which = process.argv[2] ?? 'all';
const results = [];
function check(name, ok, detail) {
  results.push(ok);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
}
function checkBf16(name, actual, expected) {
  const r = compareBf16(toFloat32(actual), toFloat32(expected));
  check(name, r.relL2 <= 1e-2 && r.close >= 0.97, `relL2 ${r.relL2.toExponential(2)}, isclose ${(100 * r.close).toFixed(1)}%`);
}
/** Rows whose top-k set differs from the reference's other than by ties at the boundary score. */
function topkMismatches(actual, expected, scores, maxAct) {
  const topk = expected.shape[2];
  let bad = 0;
  for (let r = 0; r < expected.data.length / topk; r++) {
    const a = new Set([...actual.data.subarray(r * topk, (r + 1) * topk)].filter((v) => v >= 0));
    const e = [...expected.data.subarray(r * topk, (r + 1) * topk)].filter((v) => v >= 0);
    const es = new Set(e);
    const diff = [...a].filter((v) => !es.has(v)).concat(e.filter((v) => !a.has(v)));
    if (a.size !== es.size) bad++;
    else if (diff.length) {
      const s = (p) => scores[r * maxAct + p];
      const boundary = Math.min(...e.map(s));
      if (!diff.every((p) => Math.abs(s(p) - boundary) <= 1e-3 * Math.max(1e-6, Math.abs(boundary)))) bad++;
    }
  }
  return bad;
}

/** Paged-cache bookkeeping: a shuffled block table, and the cache slot of each new token. */
function pages(rng, acts, s1, bs) {
  const b = acts.length;
  const maxBlocks = Math.max(1, ...acts.map((a) => Math.ceil(a / bs)));
  const blocks = acts.reduce((s, a) => s + Math.ceil(a / bs), 0) + 2;
  const perm = rng.shuffle(Array.from({ length: blocks }, (_, i) => i));
  const blockTable = { dtype: 'int32', shape: [b, maxBlocks], data: new Int32Array(b * maxBlocks).fill(-1) };
  const cacheIndex = { dtype: 'int32', shape: [b, s1], data: new Int32Array(b * s1) };
  let next = 0;
  for (let bi = 0; bi < b; bi++) {
    for (let j = 0; j < Math.ceil(acts[bi] / bs); j++) blockTable.data[bi * maxBlocks + j] = perm[next++];
    for (let i = 0; i < s1; i++) {
      const p = acts[bi] - s1 + i;
      cacheIndex.data[bi * s1 + i] = blockTable.data[bi * maxBlocks + Math.floor(p / bs)] * bs + (p % bs);
    }
  }
  return { blocks, blockTable, cacheIndex, actSeqs: { dtype: 'int32', shape: [b], data: Int32Array.from(acts) } };
}

async function indexerAlone() {
  const { lightningIndexer } = await import('@dsa/lightning-indexer');
  const { lightningIndexerReference } = await import('@dsa/lightning-indexer/reference');
  const rng = new Rng(11);
  const [s1, heads, dim, bs, topk] = [3, 5, 24, 8, 13];
  const { blocks, blockTable, actSeqs } = pages(rng, [37, 21, 3], s1, bs);
  const inputs = {
    query: rng.uniformTensor([3, s1, heads, dim]), weights: rng.uniformTensor([3, s1, heads]),
    indexKCache: rng.uniformTensor([blocks, bs, 1, dim]), blockTable, actSeqs,
  };
  for (const sparseMode of [3, 0]) {
    const got = lightningIndexer(inputs, { topk, sparseMode });
    const ref = lightningIndexerReference(inputs, { topk, sparseMode });
    const bad = topkMismatches(got.indices, ref.indices, ref.scores, ref.scoresShape[2]);
    check(`lightning-indexer top-k (sparseMode ${sparseMode})`, bad === 0, `${bad} of ${3 * s1} rows differ from the reference`);
  }
}

async function everything() {
  const { mlaProlog } = await import('@dsa/mla-prolog');
  const { mlaPrologReference } = await import('@dsa/mla-prolog/reference');
  const { indexerProlog } = await import('@dsa/indexer-prolog');
  const { indexerPrologReference } = await import('@dsa/indexer-prolog/reference');
  const { lightningIndexer } = await import('@dsa/lightning-indexer');
  const { lightningIndexerReference } = await import('@dsa/lightning-indexer/reference');
  const { sparseFlashAttention } = await import('@dsa/sparse-flash-attn');
  const { sparseFlashAttentionReference } = await import('@dsa/sparse-flash-attn/reference');
  const { sparseAttention, versions } = await import('@dsa/fused');
  const { sparseAttentionReference } = await import('@dsa/fused/reference');
  const rng = new Rng(7);
  const [s1, h, qLora, n, qkNope, kvLora, rope, ih, id, bs] = [2, 48, 32, 3, 16, 32, 8, 4, 16, 8];
  const { blocks, blockTable, cacheIndex, actSeqs } = pages(rng, [29, 9], s1, bs);
  const i = {
    x: rng.uniformTensor([2, s1, h]), wDq: rng.uniformTensor([h, qLora], -0.1, 0.1),
    wUqQr: rng.uniformTensor([qLora, n * (qkNope + rope)], -0.1, 0.1), wUk: rng.uniformTensor([n, qkNope, kvLora], -0.1, 0.1),
    wDkvKr: rng.uniformTensor([h, kvLora + rope], -0.1, 0.1), gammaCq: rng.uniformTensor([qLora]), gammaCkv: rng.uniformTensor([kvLora]),
    sin: rng.uniformTensor([2, s1, rope]), cos: rng.uniformTensor([2, s1, rope]), cacheIndex,
    kvCache: rng.uniformTensor([blocks, bs, 1, kvLora]), krCache: rng.uniformTensor([blocks, bs, 1, rope]), blockTable, actSeqs,
    wIdxQb: rng.uniformTensor([qLora, ih * id]), wIdxK: rng.uniformTensor([h, id]), wIdxProj: rng.uniformTensor([h, ih]),
    inGammaK: rng.uniformTensor([id], 0.5, 1.5), inBetaK: rng.uniformTensor([id], -0.1, 0.1), indexKCache: rng.uniformTensor([blocks, bs, 1, id]),
  };
  const copy = (t) => ({ ...t, data: t.data.slice() });
  const fresh = () => ({ ...i, kvCache: copy(i.kvCache), krCache: copy(i.krCache), indexKCache: copy(i.indexKCache) });
  const opts = { topk: 11, sparseMode: 3 };

  // Each stage on the previous stage's outputs, against its own reference on the same inputs.
  const c = fresh();
  const mlaIn = { x: c.x, wDq: c.wDq, wUqQr: c.wUqQr, wUk: c.wUk, wDkvKr: c.wDkvKr, gammaCq: c.gammaCq, gammaCkv: c.gammaCkv, sin: c.sin, cos: c.cos, cacheIndex: c.cacheIndex, kvCache: c.kvCache, krCache: c.krCache };
  const mlaRef = mlaPrologReference({ ...mlaIn, kvCache: copy(c.kvCache), krCache: copy(c.krCache) });
  const a = mlaProlog(mlaIn);
  for (const k of ['qNope', 'qRope', 'qNorm']) checkBf16(`mla-prolog ${k}`, a[k], mlaRef[k]);
  checkBf16('mla-prolog kvCache', c.kvCache, mlaRef.kvCache);
  const ipIn = { x: c.x, qNorm: a.qNorm, wIdxQb: c.wIdxQb, wIdxK: c.wIdxK, wIdxProj: c.wIdxProj, inGammaK: c.inGammaK, inBetaK: c.inBetaK, sin: c.sin, cos: c.cos, cacheIndex: c.cacheIndex, indexKCache: c.indexKCache };
  const ipRef = indexerPrologReference({ ...ipIn, indexKCache: copy(c.indexKCache) });
  const b = indexerProlog(ipIn);
  for (const k of ['query', 'weights']) checkBf16(`indexer-prolog ${k}`, b[k], ipRef[k]);
  checkBf16('indexer-prolog indexKCache', c.indexKCache, ipRef.indexKCache);
  const liIn = { query: b.query, weights: b.weights, indexKCache: c.indexKCache, blockTable, actSeqs };
  const d = lightningIndexer(liIn, opts);
  const liRef = lightningIndexerReference(liIn, opts);
  const bad = topkMismatches(d.indices, liRef.indices, liRef.scores, liRef.scoresShape[2]);
  check('lightning-indexer top-k', bad === 0, `${bad} of ${2 * s1} rows differ from the reference`);
  const sfaIn = { qNope: a.qNope, qRope: a.qRope, kvCache: c.kvCache, krCache: c.krCache, indices: d.indices, blockTable, actSeqs };
  checkBf16('sparse-flash-attn out', sparseFlashAttention(sfaIn, opts).out, sparseFlashAttentionReference(sfaIn, opts).out);

  // The whole operator, both modes, against the composed float64 reference over the same index set.
  for (const mode of ['fused', 'chain']) {
    const r = sparseAttention(fresh(), { ...opts, mode, returnIndices: true });
    const ref = sparseAttentionReference(fresh(), opts);
    const rows = topkMismatches(r.indices, ref.indices, ref.scores, Math.max(...actSeqs.data));
    checkBf16(`fused operator (${mode}) out`, r.out, sparseAttentionReference(fresh(), opts, r.indices).out);
    check(`fused operator (${mode}) indices`, rows === 0, `${rows} rows differ from the reference`);
  }
  const v = versions();
  const same = Object.entries(v.stages).every(([name, version]) => v.fusedKernels[name] === version);
  check('fused versions()', same && v.fused.length > 0, JSON.stringify(v));
}

console.log(`smoke on ${process.platform}-${process.arch}, node ${process.version}, isa ${activeIsa()} (tensor-core addon loaded)`);
await (which === 'indexer' ? indexerAlone() : everything());
const passed = results.filter(Boolean).length;
console.log(`SMOKE ${JSON.stringify({ passed, failed: results.length - passed })}`);
process.exit(passed === results.length && passed > 0 ? 0 : 1);
