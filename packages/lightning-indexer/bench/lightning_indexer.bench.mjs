// Lightning indexer benchmark at DeepSeek-V3.2 dimensions (64 heads x 128 dims, topk 2048, block 128):
// the cases of issue 5, on 2 threads, next to this machine's ceilings measured in the same run.
//
// Score part: 2 * heads * dim FLOP per key per query row, reported against the bf16 dot peak, both
// over the whole call and over the call's scoring share of it. The top-k share is the selection's
// CPU time over the scoring + selection CPU time (summed over threads, from the kernel's timers). Keys are read from one large cache
// through rotating block tables, so a decode case does not find its keys in the 480 MB L3.
//
// FP8 key cache (132 B per key: e4m3 of the Hadamard-rotated key ‖ fp32 scale): the 128K decode case
// timed on an FP8 cache of the same size in blocks, in alternating rounds with the bf16 cache (medians),
// and the selection quality: top-k recall of the FP8 indexer against the bf16 indexer on the same
// random N(0, 1) queries, weights and keys (the FP8 keys are the bf16 keys as the prolog stores them).
//
//   node bench/lightning_indexer.bench.mjs [--quick]     (writes bench-results/lightning_indexer.json)
import { randomFillSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { measureCeilings, setNumThreads, getIsa, cpuFeatures, encodeIndexKeyRow, fp8IndexRowBytes, Rng } from '@dsa/tensor-core';
import { nativeAddon } from '../dist/index.js';

const quick = process.argv.includes('--quick');
const THREADS = 2;
const HEADS = 64, DIM = 128, TOPK = 2048, BLOCK = 128;
const CACHE_BYTES = quick ? 64 << 20 : 544 << 20; // more than the L3
const MIN_SECONDS = quick ? 0.2 : 1.0;

setNumThreads(THREADS);
const addon = nativeAddon();

/** Random bf16 values of either sign in [1, 2) (finite, no denormals), filled fast. */
function randomBf16(n) {
  const a = new Uint16Array(n + (n & 1));
  const u = new Uint32Array(a.buffer);
  for (let o = 0; o < u.length; o += 1 << 24) randomFillSync(u.subarray(o, Math.min(u.length, o + (1 << 24))));
  for (let i = 0; i < u.length; i++) u[i] = (u[i] & 0x807f807f) | 0x3f803f80;
  return n & 1 ? a.subarray(0, n) : a;
}

const blockBytes = BLOCK * DIM * 2;
const blockNum = Math.floor(CACHE_BYTES / blockBytes);
const cache = { dtype: 'bfloat16', shape: [blockNum, BLOCK, 1, DIM], data: randomBf16(blockNum * BLOCK * DIM) };

function makeCase(name, acts, s1, sparseMode = 3) {
  const b = acts.length;
  const maxBlocks = Math.max(...acts.map((a) => Math.ceil(a / BLOCK)));
  const used = acts.reduce((s, a) => s + Math.ceil(a / BLOCK), 0);
  const copies = Math.max(1, Math.min(512, Math.floor(blockNum / used)));
  // Copy c uses blocks [c * used, (c + 1) * used), each sequence's blocks in shuffled order.
  const tables = [];
  for (let c = 0; c < copies; c++) {
    const ids = Array.from({ length: used }, (_, i) => c * used + i);
    for (let i = ids.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [ids[i], ids[j]] = [ids[j], ids[i]];
    }
    const t = new Int32Array(b * maxBlocks).fill(-1);
    let next = 0;
    acts.forEach((a, bi) => {
      for (let j = 0; j < Math.ceil(a / BLOCK); j++) t[bi * maxBlocks + j] = ids[next++];
    });
    tables.push({ dtype: 'int32', shape: [b, maxBlocks], data: t });
  }
  let rowKeys = 0;
  for (const a of acts) for (let i = 0; i < s1; i++) rowKeys += Math.max(0, sparseMode === 3 ? a - (s1 - 1 - i) : a);
  return {
    name, acts, s1, sparseMode, tables,
    query: { dtype: 'bfloat16', shape: [b, s1, HEADS, DIM], data: randomBf16(b * s1 * HEADS * DIM) },
    weights: { dtype: 'bfloat16', shape: [b, s1, HEADS], data: randomBf16(b * s1 * HEADS) },
    actSeqs: { dtype: 'int32', shape: [b], data: Int32Array.from(acts) },
    indices: { dtype: 'int32', shape: [b, s1, TOPK], data: new Int32Array(b * s1 * TOPK) },
    flop: 2 * HEADS * DIM * rowKeys,
    keyBytes: acts.reduce((s, a) => s + a, 0) * DIM * 2,
    rotatedBytes: copies * used * blockBytes,
  };
}

function runCase(c) {
  const timing = new Float64Array(3);
  const call = (i, t) => addon.run(c.query, c.weights, cache, c.tables[i % c.tables.length], c.actSeqs, c.indices, null, TOPK, c.sparseMode, t);
  call(0);
  const times = [];
  const split = [0, 0, 0];
  let i = 1;
  const start = performance.now();
  while (times.length < 3 || (performance.now() - start) / 1e3 < MIN_SECONDS) {
    timing.fill(0);
    const t0 = performance.now();
    call(i++, timing);
    times.push((performance.now() - t0) / 1e3);
    for (let k = 0; k < 3; k++) split[k] += timing[k];
    if (times.length >= 200) break;
  }
  times.sort((a, b) => a - b);
  const seconds = times[Math.floor(times.length / 2)];
  const n = times.length;
  const topkShare = split[1] / (split[0] + split[1]);
  return {
    case: c.name, acts: c.acts, s1: c.s1, reps: n,
    ms: seconds * 1e3,
    gflops: c.flop / seconds / 1e9,
    scoreGflops: c.flop / (seconds * (1 - topkShare)) / 1e9,
    topkShare,
    mergeWallShare: split[2] / n / seconds,
    keyGBs: c.keyBytes / seconds / 1e9,
    rotatedMB: c.rotatedBytes / 2 ** 20,
  };
}

const K = 1024;
const cases = quick
  ? [makeCase('b=1 act 32K', [32 * K], 1), makeCase('prefill 64 q over 2K', [2 * K], 64)]
  : [
      makeCase('b=1 act 4K', [4 * K], 1),
      makeCase('b=1 act 32K', [32 * K], 1),
      makeCase('b=1 act 128K', [128 * K], 1),
      makeCase('b=4 act [768, 4097, 8192, 131071]', [768, 4097, 8192, 131071], 1),
      makeCase('b=32 act 8K', new Array(32).fill(8 * K), 1),
      makeCase('prefill 1024 q over 8K', [8 * K], 1024),
    ];

/** An FP8 key cache of as many blocks as the bf16 one: random e4m3 bytes (never NaN), 2^-6 scales. */
function randomFp8Cache() {
  const rb = fp8IndexRowBytes(DIM);
  const data = new Uint8Array(blockNum * BLOCK * rb);
  for (let o = 0; o < data.length; o += 1 << 16) randomFillSync(data.subarray(o, Math.min(data.length, o + (1 << 16))));
  const scale = new Uint8Array(new Float32Array([2 ** -6]).buffer);
  for (let s = 0; s < blockNum * BLOCK; s++) {
    const o = s * rb;
    for (let d = 0; d < DIM; d++) if ((data[o + d] & 0x7f) === 0x7f) data[o + d] ^= 1;
    data.set(scale, o + DIM);
  }
  return { dtype: 'uint8', shape: [blockNum, BLOCK, 1, rb], data };
}

/** Median ms of the same case on the bf16 and the FP8 cache, measured in alternating rounds. */
function cacheComparison(c, fp8Cache, rounds) {
  const one = (k) => {
    const call = (i) => addon.run(c.query, c.weights, k, c.tables[i % c.tables.length], c.actSeqs, c.indices, null, TOPK, c.sparseMode);
    call(0);
    const t = [];
    for (let i = 1; i <= 5; i++) {
      const t0 = performance.now();
      call(i);
      t.push(performance.now() - t0);
    }
    return t.sort((a, b) => a - b)[2];
  };
  const bf = [], f8 = [];
  for (let r = 0; r < rounds; r++) {
    bf.push(one(cache));
    f8.push(one(fp8Cache));
  }
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
  return { case: c.name, bf16Ms: med(bf), fp8Ms: med(f8), bf16BytesPerKey: DIM * 2, fp8BytesPerKey: fp8IndexRowBytes(DIM) };
}

/**
 * Top-k recall of the FP8 indexer against the bf16 indexer: per query row |FP8 set ∩ bf16 set| / topk,
 * over `rows` query rows (s1 = rows, sparse mode 3) of one sequence of `keys` N(0, 1) keys.
 */
function recall(keys, rows) {
  const rng = new Rng(2026);
  const blocks = Math.ceil(keys / BLOCK);
  const kb = rng.normalTensor([blocks * BLOCK * DIM]).data;
  const rb = fp8IndexRowBytes(DIM);
  const k8 = new Uint8Array(blocks * BLOCK * rb);
  for (let s = 0; s < blocks * BLOCK; s++) encodeIndexKeyRow(kb.subarray(s * DIM, (s + 1) * DIM), k8, s * rb);
  const table = { dtype: 'int32', shape: [1, blocks], data: Int32Array.from({ length: blocks }, (_, i) => i) };
  const q = rng.normalTensor([1, rows, HEADS, DIM]);
  const w = rng.normalTensor([1, rows, HEADS]);
  const act = { dtype: 'int32', shape: [1], data: Int32Array.of(keys) };
  const run = (k) => {
    const idx = { dtype: 'int32', shape: [1, rows, TOPK], data: new Int32Array(rows * TOPK) };
    addon.run(q, w, k, table, act, idx, null, TOPK, 3);
    return idx.data;
  };
  const a = run({ dtype: 'bfloat16', shape: [blocks, BLOCK, 1, DIM], data: kb });
  const b = run({ dtype: 'uint8', shape: [blocks, BLOCK, 1, rb], data: k8 });
  const per = [];
  for (let r = 0; r < rows; r++) {
    const set = new Set(a.subarray(r * TOPK, (r + 1) * TOPK));
    let hit = 0;
    for (const j of b.subarray(r * TOPK, (r + 1) * TOPK)) if (set.has(j)) hit++;
    per.push(hit / TOPK);
  }
  return { keys, rows, heads: HEADS, dim: DIM, topk: TOPK, mean: per.reduce((x, y) => x + y, 0) / rows, worst: Math.min(...per) };
}

const ceilings = measureCeilings(THREADS);
const results = cases.map(runCase);
const fp8Case = quick ? cases[0] : cases.find((c) => c.name === 'b=1 act 128K');
const fp8 = cacheComparison(fp8Case, randomFp8Cache(), quick ? 3 : 7);
const quality = recall(quick ? 16 * K : 128 * K, quick ? 4 : 16);
const ceilingsAfter = measureCeilings(THREADS);

const pct = (x) => `${(100 * x).toFixed(1)}%`;
const peak = Math.max(ceilings.bf16Gflops, ceilingsAfter.bf16Gflops);
console.log(`lightning indexer, ${HEADS} heads x ${DIM} dims, topk ${TOPK}, block ${BLOCK}, ${THREADS} threads, isa ${getIsa()} (best ${cpuFeatures().best})`);
console.log(`ceilings (same run, before / after): bf16 dot ${ceilings.bf16Gflops.toFixed(1)} / ${ceilingsAfter.bf16Gflops.toFixed(1)} GFLOP/s, ` +
  `read ${ceilings.readGBs.toFixed(1)} / ${ceilingsAfter.readGBs.toFixed(1)} GB/s; fractions below use the higher peak ${peak.toFixed(1)}`);
const rows = results.map((r) => ({
  case: r.case,
  reps: r.reps,
  ms: r.ms.toFixed(2),
  'GFLOP/s (call)': r.gflops.toFixed(1),
  'of peak': pct(r.gflops / peak),
  'GFLOP/s (scoring)': r.scoreGflops.toFixed(1),
  'scoring of peak': pct(r.scoreGflops / peak),
  'top-k share (CPU)': pct(r.topkShare),
  'merge wall': pct(r.mergeWallShare),
  'key GB/s': r.keyGBs.toFixed(2),
  'keys rotated MB': r.rotatedMB.toFixed(0),
}));
console.table(rows);
console.log(`FP8 key cache (${fp8.fp8BytesPerKey} B per key vs ${fp8.bf16BytesPerKey}), ${fp8.case}: ${fp8.fp8Ms.toFixed(2)} ms vs bf16 ${fp8.bf16Ms.toFixed(2)} ms ` +
  '(medians of alternating rounds)');
console.log(`FP8 vs bf16 top-k recall, ${quality.keys} random N(0,1) keys, ${quality.rows} query rows, ${HEADS} heads, topk ${TOPK}: ` +
  `mean ${quality.mean.toFixed(4)}, worst row ${quality.worst.toFixed(4)}`);

const dir = join(import.meta.dirname, '..', 'bench-results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'lightning_indexer.json'), JSON.stringify({
  date: new Date().toISOString(), threads: THREADS, heads: HEADS, dim: DIM, topk: TOPK, blockSize: BLOCK, quick,
  ceilings: { before: ceilings, after: ceilingsAfter }, results, fp8Cache: fp8, fp8Recall: quality,
}, null, 2) + '\n');
