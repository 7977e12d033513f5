// Lightning indexer at DeepSeek-V3.2 dimensions (64 heads x 128 dims, topk 2048, block 128), 2 threads,
// next to this machine's ceilings measured in the same run.
//
// Score part: 2 * heads * dim FLOP per key per query row, reported against the bf16 dot peak, both
// over the whole call and over the call's scoring share of it. The top-k share is the selection's
// CPU time over the scoring + selection CPU time (summed over threads, from the kernel's timers).
// Keys come from one index cache of DSA_BENCH_LLC_FACTOR (2; quick 1.25) times the measured
// last-level cache; each repetition reads different blocks of it through its own shuffled block
// table (as many tables as the cache holds disjoint copies of the case's blocks).
// FP8 key cache (132 B per key: e4m3 of the Hadamard-rotated key ‖ fp32 scale): the 128K decode case
// (quick: 32K) on an FP8 cache of as many blocks, in alternating rounds with the bf16 cache (medians),
// with shuffled blocks and with the blocks in address order,
// and the selection quality: top-k recall of the FP8 indexer against the bf16 indexer on the same
// random N(0, 1) queries, weights and keys (the FP8 keys are the bf16 keys as the prolog stores them).
//   node bench/lightning_indexer.bench.mjs [--quick]
// To add a case: add a makeCase(...) line to `cases`.
import { randomFillSync } from 'node:crypto';
import { BenchRun, msStats, pct, stats, timeCalls } from '@dsa/tensor-core/bench';
import { encodeIndexKeyRow, fp8IndexRowBytes, largeZeros, Rng, setNumThreads } from '@dsa/tensor-core';
import { nativeAddon } from '../dist/index.js';

const quick = process.argv.includes('--quick') || process.env.DSA_BENCH_QUICK === '1';
const HEADS = 64, DIM = 128, TOPK = 2048, BLOCK = 128;
const options = {
  threads: 2, quick, llcFactor: Number(process.env.DSA_BENCH_LLC_FACTOR ?? (quick ? 1.25 : 2)),
  heads: HEADS, dim: DIM, topk: TOPK, blockSize: BLOCK, minSeconds: quick ? 0.3 : 1, maxReps: 200,
};
const run = new BenchRun('lightning_indexer', options);
setNumThreads(options.threads);
const addon = nativeAddon();
run.probe('before');

const rng = new Rng(77);
/** Random bf16 values of either sign in [1, 2) (finite, no denormals), filled fast, into `a`. */
function fillBf16(a) {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length >> 1);
  for (let o = 0; o < u.length; o += 1 << 24) randomFillSync(u.subarray(o, Math.min(u.length, o + (1 << 24))));
  for (let i = 0; i < u.length; i++) u[i] = (u[i] & 0x807f807f) | 0x3f803f80;
  if (a.length & 1) a[a.length - 1] = 0x3f80;
  return a;
}
const bf16 = (shape) => fillBf16(new Uint16Array(shape.reduce((x, y) => x * y, 1)));

const blockBytes = BLOCK * DIM * 2;
const blockNum = Math.ceil((options.llcFactor * run.machine.llcBytes) / blockBytes);
const cache = largeZeros('bfloat16', [blockNum, BLOCK, 1, DIM]);
fillBf16(cache.data);

function makeCase(name, acts, s1, sparseMode = 3) {
  const b = acts.length;
  const maxBlocks = Math.max(...acts.map((a) => Math.ceil(a / BLOCK)));
  const used = acts.reduce((s, a) => s + Math.ceil(a / BLOCK), 0);
  const copies = Math.max(1, Math.floor(blockNum / used));
  // Table c uses blocks [c * used, (c + 1) * used), each sequence's blocks in shuffled order.
  const tables = [];
  for (let c = 0; c < copies; c++) {
    const ids = rng.shuffle(Array.from({ length: used }, (_, i) => c * used + i));
    const t = new Int32Array(b * maxBlocks).fill(-1);
    let next = 0;
    acts.forEach((a, bi) => {
      for (let j = 0; j < Math.ceil(a / BLOCK); j++) t[bi * maxBlocks + j] = ids[next++];
    });
    tables.push({ dtype: 'int32', shape: [b, maxBlocks], data: t });
  }
  let rowKeys = 0;
  for (const a of acts) for (let i = 0; i < s1; i++) rowKeys += Math.max(0, sparseMode === 3 ? a - (s1 - 1 - i) : a);
  run.workingSet(`${name}: keys`, used * blockBytes, copies);
  return {
    name, acts, s1, sparseMode, tables,
    query: { dtype: 'bfloat16', shape: [b, s1, HEADS, DIM], data: bf16([b, s1, HEADS, DIM]) },
    weights: { dtype: 'bfloat16', shape: [b, s1, HEADS], data: bf16([b, s1, HEADS]) },
    actSeqs: { dtype: 'int32', shape: [b], data: Int32Array.from(acts) },
    indices: { dtype: 'int32', shape: [b, s1, TOPK], data: new Int32Array(b * s1 * TOPK) },
    flop: 2 * HEADS * DIM * rowKeys,
    keyBytes: acts.reduce((s, a) => s + a, 0) * DIM * 2,
  };
}

const K = 1024;
const cases = quick
  ? [makeCase('b=1 act 32K', [32 * K], 1), makeCase('b=32 act 8K', new Array(32).fill(8 * K), 1), makeCase('prefill 64 q over 2K', [2 * K], 64)]
  : [
      makeCase('b=1 act 4K', [4 * K], 1),
      makeCase('b=1 act 32K', [32 * K], 1),
      makeCase('b=1 act 128K', [128 * K], 1),
      makeCase('b=4 act [768, 4097, 8192, 131071]', [768, 4097, 8192, 131071], 1),
      makeCase('b=32 act 8K', new Array(32).fill(8 * K), 1),
      makeCase('prefill 1024 q over 8K', [8 * K], 1024),
    ];

const measured = cases.map((c) => {
  const timing = new Float64Array(3);
  const split = [0, 0, 0];
  const times = timeCalls((i) => {
    timing.fill(0);
    addon.run(c.query, c.weights, cache, c.tables[i % c.tables.length], c.actSeqs, c.indices, null, TOPK, c.sparseMode, timing);
    if (i > 0) for (let k = 0; k < 3; k++) split[k] += timing[k];
  }, { minSeconds: options.minSeconds, minReps: 3, maxReps: options.maxReps });
  const s = stats(times);
  console.log(`${c.name.padEnd(34)} ${msStats(s)}`);
  return { c, s, topkShare: split[1] / (split[0] + split[1]), mergeWallShare: split[2] / s.n / (times.reduce((a, v) => a + v, 0) / s.n) };
});
run.probe('after');
const peak = run.ceilings().bf16Gflops;
console.log(`ceilings used (best of this run, ${options.threads} threads): bf16 dot ${peak.toFixed(0)} GFLOP/s, read ${run.ceilings().readGBs.toFixed(1)} GB/s`);
const table = measured.map(({ c, s, topkShare, mergeWallShare }) => {
  const gflops = c.flop / s.median / 1e9;
  const scoreGflops = gflops / (1 - topkShare);
  const r = {
    case: c.name, acts: c.acts, s1: c.s1, reps: s.n, medianMs: s.median * 1e3, minMs: s.min * 1e3, maxMs: s.max * 1e3,
    gflops, fracDot: gflops / peak, scoreGflops, scoreFracDot: scoreGflops / peak, topkShare, mergeWallShare, keyGBs: c.keyBytes / s.median / 1e9,
  };
  run.row(r);
  return {
    case: c.name, 'median ms (min, max, n)': msStats(s), 'GFLOP/s': gflops.toFixed(1), 'of peak': pct(r.fracDot),
    'scoring of peak': pct(r.scoreFracDot), 'top-k share (CPU)': pct(topkShare), 'merge wall': pct(mergeWallShare), 'key GB/s': r.keyGBs.toFixed(1),
  };
});
console.table(table);

/** An FP8 key cache of as many blocks as the bf16 one, with its values: e4m3 ±[1, 2) (scale 1). */
function randomFp8Cache() {
  const rb = fp8IndexRowBytes(DIM);
  const c = largeZeros('uint8', [blockNum, BLOCK, 1, rb]);
  const data = c.data;
  for (let o = 0; o < data.length; o += 1 << 16) randomFillSync(data.subarray(o, Math.min(data.length, o + (1 << 16))));
  const scale = new Uint8Array(new Float32Array([1]).buffer);
  for (let s = 0; s < blockNum * BLOCK; s++) {
    for (let d = s * rb; d < s * rb + DIM; d++) data[d] = (data[d] & 0x87) | 0x38;
    data.set(scale, s * rb + DIM);
  }
  return c;
}

/** Median ms of one case on the bf16 and on the FP8 cache, in alternating rounds of 5 calls. */
function cacheComparison(c, fp8Cache, rounds) {
  const ms = [[], []];
  let i = 0;
  for (let r = 0; r < rounds; r++) {
    [cache, fp8Cache].forEach((k, which) => {
      const t = timeCalls(() => addon.run(c.query, c.weights, k, c.tables[i++ % c.tables.length], c.actSeqs, c.indices, null, TOPK, c.sparseMode),
        { minSeconds: 0, minReps: 5, maxReps: 5 });
      ms[which].push(stats(t).median * 1e3);
    });
  }
  const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  return { case: c.name, bf16Ms: med(ms[0]), fp8Ms: med(ms[1]), bf16BytesPerKey: DIM * 2, fp8BytesPerKey: fp8IndexRowBytes(DIM), rounds };
}

/**
 * Top-k recall of the FP8 indexer against the bf16 indexer: per query row |FP8 set ∩ bf16 set| / topk,
 * over `rows` query rows (s1 = rows, sparse mode 3) of one sequence of `keys` N(0, 1) keys.
 */
function recall(keys, rows) {
  const r = new Rng(2026);
  const blocks = Math.ceil(keys / BLOCK);
  const kb = r.normalTensor([blocks * BLOCK * DIM]).data;
  const rb = fp8IndexRowBytes(DIM);
  const k8 = new Uint8Array(blocks * BLOCK * rb);
  for (let s = 0; s < blocks * BLOCK; s++) encodeIndexKeyRow(kb.subarray(s * DIM, (s + 1) * DIM), k8, s * rb);
  const table = { dtype: 'int32', shape: [1, blocks], data: Int32Array.from({ length: blocks }, (_, i) => i) };
  const q = r.normalTensor([1, rows, HEADS, DIM]);
  const w = r.normalTensor([1, rows, HEADS]);
  const act = { dtype: 'int32', shape: [1], data: Int32Array.of(keys) };
  const select = (k) => {
    const idx = { dtype: 'int32', shape: [1, rows, TOPK], data: new Int32Array(rows * TOPK) };
    addon.run(q, w, k, table, act, idx, null, TOPK, 3);
    return idx.data;
  };
  const a = select({ dtype: 'bfloat16', shape: [blocks, BLOCK, 1, DIM], data: kb });
  const b = select({ dtype: 'uint8', shape: [blocks, BLOCK, 1, rb], data: k8 });
  const per = [];
  for (let row = 0; row < rows; row++) {
    const set = new Set(a.subarray(row * TOPK, (row + 1) * TOPK));
    let hit = 0;
    for (const j of b.subarray(row * TOPK, (row + 1) * TOPK)) if (set.has(j)) hit++;
    per.push(hit / TOPK);
  }
  return { keys, rows, mean: per.reduce((x, y) => x + y, 0) / rows, worst: Math.min(...per) };
}

/** The case's block tables with each copy's blocks in ascending order (a sequence stored in order). */
function inOrder(c) {
  const tables = c.tables.map((t) => ({ ...t, data: Int32Array.from(t.data).sort((x, y) => x - y) }));
  return { ...c, name: `${c.name}, blocks in order`, tables };
}
const fp8Case = cases.find((c) => c.name === (quick ? 'b=1 act 32K' : 'b=1 act 128K'));
const fp8Cache = randomFp8Cache();
// Shuffled blocks (as a busy server's pool hands them out) and blocks in address order (one sequence
// filled alone): the hardware prefetcher helps the bf16 keys much more in the second.
const fp8Runs = [cacheComparison(fp8Case, fp8Cache, quick ? 3 : 7), cacheComparison(inOrder(fp8Case), fp8Cache, quick ? 3 : 7)];
const quality = recall(quick ? 16 * K : 128 * K, quick ? 4 : 16);
for (const fp8 of fp8Runs) {
  console.log(`FP8 key cache, ${fp8.case}: ${fp8.fp8Ms.toFixed(2)} ms vs bf16 ${fp8.bf16Ms.toFixed(2)} ms (${pct(fp8.fp8Ms / fp8.bf16Ms)})`);
  run.summarize(`lightning indexer FP8 key cache (${fp8.fp8BytesPerKey} B per key vs ${fp8.bf16BytesPerKey}), ${fp8.case}`,
    `${fp8.fp8Ms.toFixed(2)} ms vs bf16 ${fp8.bf16Ms.toFixed(2)} ms = ${pct(fp8.fp8Ms / fp8.bf16Ms)} (medians of ${fp8.rounds} alternating rounds)`);
}
console.log(`FP8 vs bf16 top-k recall over ${quality.rows} rows of ${quality.keys} keys: mean ${quality.mean.toFixed(4)}, worst ${quality.worst.toFixed(4)}`);
run.summarize(`lightning indexer FP8 vs bf16 top-k recall (${quality.keys} random N(0,1) keys, ${quality.rows} query rows, topk ${TOPK})`,
  `mean ${quality.mean.toFixed(4)}, worst row ${quality.worst.toFixed(4)}`);

const decode = run.rows.filter((r) => r.s1 === 1);
const prefill = run.rows.filter((r) => r.s1 > 1);
const span = (v) => (pct(Math.min(...v)) === pct(Math.max(...v)) ? pct(v[0]) : `${pct(Math.min(...v))}–${pct(Math.max(...v))}`);
run.summarize(`lightning indexer decode (${decode.map((r) => r.case.replace(/^b=(\d+) act /, 'b=$1 ')).join('; ')})`,
  `whole call ${span(decode.map((r) => r.fracDot))} of the bf16 dot peak; scoring ${span(decode.map((r) => r.scoreFracDot))}; top-k ${span(decode.map((r) => r.topkShare))} of the stage's CPU time`);
for (const r of prefill) run.summarize(`lightning indexer ${r.case}`, `whole call ${pct(r.fracDot)} of the bf16 dot peak; top-k ${pct(r.topkShare)} of the CPU time`);
run.write();
