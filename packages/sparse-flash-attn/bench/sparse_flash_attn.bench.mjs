// Benchmark of @dsa/sparse-flash-attn at DeepSeek-V3.2 widths (128 heads, 576/512, topk 2048,
// block 128): decode b = 1, 4, 32, 128 and MTP s1 = 2, next to this machine's ceilings measured in
// the same run. FLOP per row: 2·n·L·(576 + 512) with L = 2048 valid keys. All cases gather from one
// shared pool of 4096 blocks (604 MB, above the 480 MB L3) through shuffled block tables.
// Usage: node bench/sparse_flash_attn.bench.mjs [--quick]   (JSON: bench-results/sparse_flash_attn.json)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { measureCeilings, setNumThreads } from '@dsa/tensor-core';
import { nativeAddon, sparseFlashAttention } from '../dist/index.js';

const THREADS = 2;
const quick = process.argv.includes('--quick');
const N = 128, KV = 512, ROPE = 64, TOPK = 2048, BS = 128, ACT = 4096;
const POOL_BLOCKS = 128 * (ACT / BS);

// Fast random bf16 in ±[0.125, 1): sign, exponent 0x7c..0x7e, random mantissa.
let state = 0x9e3779b9;
function fillBf16(a) {
  for (let i = 0; i < a.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    a[i] = (state & 0x8000) | (0x3e00 + ((state >>> 8) % 3) * 0x80) | (state & 0x7f);
  }
  return a;
}
function randInt(n) {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) % n;
}
function shuffle(a) {
  for (let i = a.length - 1; i > 0; i--) {
    const j = randInt(i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}
const bf16 = (shape, data) => ({ dtype: 'bfloat16', shape, data, format: 'ND' });
const i32 = (shape, data) => ({ dtype: 'int32', shape, data, format: 'ND' });

setNumThreads(THREADS);
// The cores are shared: probe the ceilings before and after the cases and keep the best of each,
// so a probe that ran beside someone else's job does not flatter the fractions.
console.log(`measuring ceilings (${THREADS} threads)...`);
const probes = [measureCeilings(THREADS)];

const kvCache = bf16([POOL_BLOCKS, BS, 1, KV], fillBf16(new Uint16Array(POOL_BLOCKS * BS * KV)));
const krCache = bf16([POOL_BLOCKS, BS, 1, ROPE], fillBf16(new Uint16Array(POOL_BLOCKS * BS * ROPE)));
const pool = shuffle([...Array(POOL_BLOCKS).keys()]);

function makeCase(b, s1) {
  const maxBlocks = ACT / BS;
  const table = new Int32Array(b * maxBlocks);
  for (let i = 0; i < table.length; i++) table[i] = pool[i];
  const indices = new Int32Array(b * s1 * TOPK);
  const positions = [...Array(ACT).keys()];
  for (let r = 0; r < b * s1; r++) {
    const eff = ACT - (s1 - 1 - (r % s1));
    shuffle(positions);
    let t = 0;
    for (const p of positions) if (p < eff && t < TOPK) indices[r * TOPK + t++] = p;
  }
  return {
    qNope: bf16([b, s1, N, KV], fillBf16(new Uint16Array(b * s1 * N * KV))),
    qRope: bf16([b, s1, N, ROPE], fillBf16(new Uint16Array(b * s1 * N * ROPE))),
    kvCache, krCache,
    indices: i32([b, s1, TOPK], indices),
    blockTable: i32([b, maxBlocks], table),
    actSeqs: i32([b], new Int32Array(b).fill(ACT)),
  };
}

const cases = quick
  ? [{ b: 4, s1: 1 }, { b: 32, s1: 1 }]
  : [{ b: 1, s1: 1 }, { b: 4, s1: 1 }, { b: 32, s1: 1 }, { b: 128, s1: 1 }, { b: 4, s1: 2 }, { b: 32, s1: 2 }];
const results = [];
for (const { b, s1 } of cases) {
  const inputs = makeCase(b, s1);
  const rows = b * s1;
  const flop = 2 * N * TOPK * (KV + ROPE + KV) * rows;
  const reps = Math.max(3, Math.min(20, Math.round(2e11 / flop)));
  sparseFlashAttention(inputs);  // warm-up: page faults, per-thread scratch
  // The dot peak right before and after this case (64 MB read buffer: only the dot figure is used).
  const dotProbe = () => measureCeilings(THREADS, { bytes: 1 << 26, reps: 1 }).bf16Gflops;
  const dotBefore = dotProbe();
  const times = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    sparseFlashAttention(inputs);
    times.push(Number(process.hrtime.bigint() - t0) * 1e-9);
  }
  const adjacentDot = Math.max(dotBefore, dotProbe());
  times.sort((x, y) => x - y);
  const t = times[0];  // best of reps: the cores are shared, the median is kept in the JSON
  const medianMs = times[Math.floor(times.length / 2)] * 1e3;
  const prof = nativeAddon().sparseFlashAttention(inputs, 0, 3, { profile: true });
  const gflops = flop / t / 1e9;
  // Bytes the call must move at least: each gathered row once per row, q in, out back.
  const bytes = rows * TOPK * (KV + ROPE) * 2 + rows * N * (KV + ROPE) * 2 + rows * N * KV * 2;
  const r = {
    case: `b=${b} s1=${s1}`, b, s1, rows, reps, ms: t * 1e3, medianMs, gflops, gbs: bytes / t / 1e9,
    gatherShare: prof.gatherSeconds / prof.threadSeconds, adjacentDot, fracAdjacentDot: gflops / adjacentDot,
  };
  results.push(r);
  console.log(`${r.case.padEnd(12)} ${r.ms.toFixed(2).padStart(9)} ms ${gflops.toFixed(1).padStart(7)} GFLOP/s, gather ${(100 * r.gatherShare).toFixed(1)}%`);
}

probes.push(measureCeilings(THREADS));
const ceil = {
  threads: THREADS,
  readGBs: Math.max(...probes.map((c) => c.readGBs)),
  bf16Gflops: Math.max(...probes.map((c) => c.bf16Gflops)),
};
console.log(`ceilings (best of ${probes.length} probes): read ${ceil.readGBs.toFixed(1)} GB/s, bf16 dot ${ceil.bf16Gflops.toFixed(1)} GFLOP/s`);
console.log('case              time    GFLOP/s  of dot peak  of adjacent probe    GB/s  of read  gather');
for (const r of results) {
  r.fracDotPeak = r.gflops / ceil.bf16Gflops;
  r.fracReadCeiling = r.gbs / ceil.readGBs;
  console.log(`${r.case.padEnd(12)} ${r.ms.toFixed(2).padStart(9)} ms ${r.gflops.toFixed(1).padStart(7)} ` +
    `${(100 * r.fracDotPeak).toFixed(1).padStart(9)}% ${(100 * r.fracAdjacentDot).toFixed(1).padStart(10)}% of ${r.adjacentDot.toFixed(0).padStart(3)} ` +
    `${r.gbs.toFixed(2).padStart(7)} ${(100 * r.fracReadCeiling).toFixed(1).padStart(7)}% ` +
    `${(100 * r.gatherShare).toFixed(1).padStart(6)}%`);
}

const target = results.filter((r) => r.b >= 4).every((r) => Math.max(r.fracDotPeak, r.fracAdjacentDot) >= 0.5);
console.log(`target ≥ 50% of the bf16 dot peak at b ≥ 4: ${target ? 'met' : 'MISSED'}`);
const dir = join(import.meta.dirname, '..', 'bench-results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'sparse_flash_attn.json'), JSON.stringify({
  date: new Date().toISOString(), threads: THREADS, isa: nativeAddon().cpuFeatures().best,
  dims: { n: N, kvLora: KV, rope: ROPE, topk: TOPK, blockSize: BS, act: ACT, poolBlocks: POOL_BLOCKS },
  ceilings: ceil, probes, results, targetMet: target,
}, null, 2));
