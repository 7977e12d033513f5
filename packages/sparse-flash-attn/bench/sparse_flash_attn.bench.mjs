// Sparse flash attention at DeepSeek-V3.2 widths (128 heads, 576/512, topk 2048, block 128): decode
// b = 1, 4, 32, 128 and MTP s1 = 2, next to this machine's ceilings measured in the same run.
// FLOP per row: 2·n·L·(576 + 512) with L = 2048 selected keys of 4096. The caches are one block pool
// of DSA_BENCH_LLC_FACTOR (2; quick 1.25) times the measured last-level cache (at least the blocks
// b = 128 needs); every repetition gathers other blocks (a fresh random block table, distinct blocks
// per call) and other rows (fresh random top-k indices), so no repetition finds its rows in the cache
// from the one before. Medians with min/max.
//   node bench/sparse_flash_attn.bench.mjs [--quick]
// To add a case: add {b, s1} to CASES.
import { BenchRun, msStats, pct, stats } from '@dsa/tensor-core/bench';
import { largeZeros, Rng, setNumThreads } from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention } from '../dist/index.js';

const quick = process.argv.includes('--quick') || process.env.DSA_BENCH_QUICK === '1';
const N = 128, KV = 512, ROPE = 64, TOPK = 2048, BS = 128, ACT = 4096;
const CASES = quick
  ? [{ b: 4, s1: 1 }, { b: 32, s1: 1 }]
  : [{ b: 1, s1: 1 }, { b: 4, s1: 1 }, { b: 32, s1: 1 }, { b: 128, s1: 1 }, { b: 4, s1: 2 }, { b: 32, s1: 2 }];
const options = {
  threads: 2, quick, llcFactor: Number(process.env.DSA_BENCH_LLC_FACTOR ?? (quick ? 1.25 : 2)),
  dims: { n: N, kvLora: KV, rope: ROPE, topk: TOPK, blockSize: BS, act: ACT }, cases: CASES,
  /** Repetitions per case: about 2·10^11 FLOP in all, between 3 and 20. */
  repsRule: 'clamp(round(2e11 / flop per call), 3, 20)',
};
const run = new BenchRun('sparse_flash_attn', options);
setNumThreads(options.threads);
run.probe('before');

const rowBytes = (KV + ROPE) * 2;
const maxBlocksPerSeq = ACT / BS;
const poolBlocks = Math.max(Math.max(...CASES.map((c) => c.b)) * maxBlocksPerSeq, Math.ceil((options.llcFactor * run.machine.llcBytes) / (BS * rowBytes)));
run.workingSet('KV block pool (kvCache + krCache)', poolBlocks * BS * rowBytes, 1);
const rng = new Rng(4242);
function fillBf16(a) {
  // ±[0.125, 1): sign, exponent 0x7c..0x7e, random mantissa (xorshift; 10^8 values in a second).
  let s = 0x9e3779b9;
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = (s & 0x8000) | (0x3e00 + ((s >>> 8) % 3) * 0x80) | (s & 0x7f);
  }
  return a;
}
const kvCache = largeZeros('bfloat16', [poolBlocks, BS, 1, KV]);
const krCache = largeZeros('bfloat16', [poolBlocks, BS, 1, ROPE]);
fillBf16(kvCache.data);
fillBf16(krCache.data);
const bf16 = (shape) => ({ dtype: 'bfloat16', shape, data: fillBf16(new Uint16Array(shape.reduce((x, y) => x * y, 1))), format: 'ND' });
const i32 = (shape, data) => ({ dtype: 'int32', shape, data, format: 'ND' });

// Partial Fisher–Yates over a permutation that stays a permutation: the first k entries are a fresh
// uniform sample without replacement.
function sample(perm, k, limit = perm.length) {
  for (let i = 0; i < k; i++) {
    const j = rng.int(i, limit - 1);
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm.subarray(0, k);
}
const blockPerm = Int32Array.from({ length: poolBlocks }, (_, i) => i);
const posPerm = Int32Array.from({ length: ACT }, (_, i) => i);

/** One repetition's block table and indices: distinct random blocks, random top-k rows per query. */
function variant(b, s1) {
  const table = Int32Array.from(sample(blockPerm, b * maxBlocksPerSeq));
  const indices = new Int32Array(b * s1 * TOPK);
  for (let r = 0; r < b * s1; r++) {
    const eff = ACT - (s1 - 1 - (r % s1)); // sparse mode 3: the last rows of an MTP step see fewer keys
    for (let i = 0; i < ACT; i++) posPerm[i] = i;
    indices.set(sample(posPerm, Math.min(TOPK, eff), eff), r * TOPK);
  }
  return { blockTable: i32([b, maxBlocksPerSeq], table), indices: i32([b, s1, TOPK], indices) };
}

const measured = [];
for (const { b, s1 } of CASES) {
  const rows = b * s1;
  const flop = 2 * N * TOPK * (KV + ROPE + KV) * rows;
  const reps = Math.max(3, Math.min(20, Math.round(2e11 / flop)));
  const fixed = { qNope: bf16([b, s1, N, KV]), qRope: bf16([b, s1, N, ROPE]), kvCache, krCache, actSeqs: i32([b], new Int32Array(b).fill(ACT)) };
  const variants = Array.from({ length: reps + 1 }, () => ({ ...fixed, ...variant(b, s1) }));
  sparseFlashAttention(variants[reps]); // warm-up (per-thread scratch, the pool), on a variant not timed
  const times = variants.slice(0, reps).map((inputs) => {
    const t0 = performance.now();
    sparseFlashAttention(inputs);
    return (performance.now() - t0) / 1e3;
  });
  const prof = nativeAddon().sparseFlashAttention({ ...fixed, ...variant(b, s1) }, 0, 3, { profile: true });
  const s = stats(times);
  measured.push({ b, s1, rows, flop, s, gatherShare: prof.gatherSeconds / prof.threadSeconds });
  console.log(`b=${b} s1=${s1}`.padEnd(12) + ` ${msStats(s)}  gather ${pct(prof.gatherSeconds / prof.threadSeconds)} of thread time`);
}
run.probe('after');
const ceil = run.ceilings();
console.log(`ceilings used (best of this run, ${options.threads} threads): bf16 dot ${ceil.bf16Gflops.toFixed(0)} GFLOP/s, read ${ceil.readGBs.toFixed(1)} GB/s`);
console.log('case         median ms (min, max, n)                 GFLOP/s  of dot    GB/s  of read  gather');
for (const m of measured) {
  // Bytes the call must move at least: each gathered row once per row, q in, out back.
  const bytes = m.rows * TOPK * rowBytes + m.rows * N * (KV + ROPE) * 2 + m.rows * N * KV * 2;
  const gflops = m.flop / m.s.median / 1e9, gbs = bytes / m.s.median / 1e9;
  const r = { case: `b=${m.b} s1=${m.s1}`, b: m.b, s1: m.s1, rows: m.rows, medianMs: m.s.median * 1e3, minMs: m.s.min * 1e3, maxMs: m.s.max * 1e3, reps: m.s.n,
    gflops, fracDot: gflops / ceil.bf16Gflops, gbs, fracRead: gbs / ceil.readGBs, gatherShare: m.gatherShare };
  run.row(r);
  console.log(`${r.case.padEnd(12)} ${msStats(m.s).padEnd(40)} ${gflops.toFixed(1).padStart(7)} ${pct(r.fracDot).padStart(6)} ${gbs.toFixed(1).padStart(7)} ${pct(r.fracRead).padStart(6)} ${pct(r.gatherShare).padStart(6)}`);
}
const line = (rs) => rs.map((r) => `b=${r.b}: ${pct(r.fracDot)}`).join(', ');
const decode = run.rows.filter((r) => r.s1 === 1), mtp = run.rows.filter((r) => r.s1 === 2);
const poolMB = (poolBlocks * BS * rowBytes / 1e6).toFixed(0);
if (decode.length) run.summarize(`sparse flash attention decode, topk 2048 of 4096 keys, random blocks of a ${poolMB} MB pool per repetition`, `${line(decode)} of the bf16 dot peak`);
if (mtp.length) run.summarize('sparse flash attention MTP s1 = 2, same pool', `${line(mtp)} of the bf16 dot peak`);
run.write();
