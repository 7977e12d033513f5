// Lightning indexer at DeepSeek-V3.2 dimensions (64 heads x 128 dims, topk 2048, block 128), 2 threads,
// next to this machine's ceilings measured in the same run.
//
// Score part: 2 * heads * dim FLOP per key per query row, reported against the bf16 dot peak, both
// over the whole call and over the call's scoring share of it. The top-k share is the selection's
// CPU time over the scoring + selection CPU time (summed over threads, from the kernel's timers).
// Keys come from one index cache of DSA_BENCH_LLC_FACTOR (2; quick 1.25) times the measured
// last-level cache; each repetition reads different blocks of it through its own shuffled block
// table (as many tables as the cache holds disjoint copies of the case's blocks).
//   node bench/lightning_indexer.bench.mjs [--quick]
// To add a case: add a makeCase(...) line to `cases`.
import { randomFillSync } from 'node:crypto';
import { BenchRun, msStats, pct, stats, timeCalls } from '@dsa/tensor-core/bench';
import { largeZeros, Rng, setNumThreads } from '@dsa/tensor-core';
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

const decode = run.rows.filter((r) => r.s1 === 1);
const prefill = run.rows.filter((r) => r.s1 > 1);
const span = (v) => (pct(Math.min(...v)) === pct(Math.max(...v)) ? pct(v[0]) : `${pct(Math.min(...v))}–${pct(Math.max(...v))}`);
run.summarize(`lightning indexer decode (${decode.map((r) => r.case.replace(/^b=(\d+) act /, 'b=$1 ')).join('; ')})`,
  `whole call ${span(decode.map((r) => r.fracDot))} of the bf16 dot peak; scoring ${span(decode.map((r) => r.scoreFracDot))}; top-k ${span(decode.map((r) => r.topkShare))} of the stage's CPU time`);
for (const r of prefill) run.summarize(`lightning indexer ${r.case}`, `whole call ${pct(r.fracDot)} of the bf16 dot peak; top-k ${pct(r.topkShare)} of the CPU time`);
run.write();
