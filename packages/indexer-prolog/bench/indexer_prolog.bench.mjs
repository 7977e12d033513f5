// Indexer prolog benchmark at DeepSeek-V3.2 dimensions (h 7168, q_lora 1536, 64 heads x 128, rope 64):
// decode with b*s1 = 1, 4, 32 and a 1024-token prefill chunk, 2 threads, weights rotated over enough
// copies (27.9 MB each) that the 480 MB L3 holds none of them. NZ weights (what the fused operator is
// given) and prepared weights (prepareIndexerProlog: packed, [wIdxK | wIdxProj] in one pass over x).
// The machine's ceilings are measured in the same run. BENCH_QUICK=1: fewer copies and repetitions.
import { mkdirSync, writeFileSync } from 'node:fs';
import { measureCeilings, Rng, setNumThreads, toNZ } from '@dsa/tensor-core';
import { indexerProlog, prepareIndexerProlog } from '../dist/index.js';

const THREADS = 2;
const QUICK = process.env.BENCH_QUICK === '1';
const H = 7168, Q_LORA = 1536, HEADS = 64, DI = 128, ROPE = 64, BLOCK = 128;
const WEIGHT_BYTES = 2 * (Q_LORA * HEADS * DI + H * DI + H * HEADS);
const L3 = 480 * 2 ** 20;
const COPIES = QUICK ? 2 : Math.ceil((1.15 * L3) / WEIGHT_BYTES);
const CASES = [
  { name: 'decode T=1', b: 1, s1: 1, reps: QUICK ? 10 : 60 },
  { name: 'decode T=4', b: 4, s1: 1, reps: QUICK ? 10 : 60 },
  { name: 'decode T=32', b: 32, s1: 1, reps: QUICK ? 5 : 40 },
  { name: 'prefill T=1024', b: 1, s1: 1024, reps: QUICK ? 1 : 6 },
];

setNumThreads(THREADS);
const rng = new Rng(2025);
// Measured before and after the cases; the better of the two is the machine's ceiling (the cores are
// shared, so a single probe can land in a busy moment).
const probe = (when) => {
  const c = measureCeilings(THREADS);
  console.log(`ceilings ${when} (${THREADS} threads): read ${c.readGBs.toFixed(1)} GB/s, bf16 dot ${c.bf16Gflops.toFixed(1)} GFLOP/s`);
  return c;
};
const ceilBefore = probe('before');
const ceil = { ...ceilBefore };

const base = {
  wIdxQb: rng.uniformTensor([Q_LORA, HEADS * DI], -0.05, 0.05),
  wIdxK: rng.uniformTensor([H, DI], -0.05, 0.05),
  wIdxProj: rng.uniformTensor([H, HEADS], -0.05, 0.05),
  inGammaK: rng.uniformTensor([DI], 0.5, 1.5),
  inBetaK: rng.uniformTensor([DI], -0.5, 0.5),
};
const copyOf = (t) => ({ ...t, shape: [...t.shape], data: t.data.slice() });

function stepInputs(b, s1) {
  const T = b * s1;
  const blocks = Math.ceil(T / BLOCK) + 1;
  const slots = rng.shuffle(Array.from({ length: blocks * BLOCK }, (_, i) => i)).slice(0, T);
  return {
    x: rng.uniformTensor([b, s1, H]),
    qNorm: rng.uniformTensor([b, s1, Q_LORA]),
    sin: rng.uniformTensor([b, s1, ROPE]),
    cos: rng.uniformTensor([b, s1, ROPE]),
    cacheIndex: { dtype: 'int32', shape: [b, s1], data: Int32Array.from(slots), format: 'ND' },
    indexKCache: rng.uniformTensor([blocks, BLOCK, 1, DI]),
  };
}

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

function bench(label, runners) {
  const rows = [];
  for (const c of CASES) {
    const T = c.b * c.s1;
    const step = stepInputs(c.b, c.s1);
    for (let i = 0; i < 2; i++) runners[i % runners.length](step);
    const times = [];
    for (let r = 0; r < c.reps; r++) {
      const run = runners[r % runners.length];
      const t0 = process.hrtime.bigint();
      run(step);
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    // The best repetition: the 2 cores are shared, and the best time is the one least disturbed.
    const s = Math.min(...times);
    const actBytes = 2 * T * (H + Q_LORA + 2 * ROPE + HEADS * DI + HEADS + DI) + 4 * T;
    const bytes = WEIGHT_BYTES + actBytes;
    const flops = 2 * T * (Q_LORA * HEADS * DI + H * (DI + HEADS));
    const streamOnce = WEIGHT_BYTES / (ceil.readGBs * 1e9);
    const row = {
      weights: label, case: c.name, tokens: T, ms: s * 1e3, medianMs: median(times) * 1e3, GBs: bytes / s / 1e9, GFLOPs: flops / s / 1e9,
      readFraction: bytes / s / 1e9 / ceil.readGBs, dotFraction: flops / s / 1e9 / ceil.bf16Gflops,
      vsStreamOnce: s / streamOnce,
    };
    rows.push(row);
    console.log(`${label.padEnd(9)} ${c.name.padEnd(15)} ${row.ms.toFixed(3).padStart(9)} ms (median ${row.medianMs.toFixed(3)}) ` +
      `${row.GBs.toFixed(1).padStart(6)} GB/s (${(100 * row.readFraction).toFixed(0).padStart(3)}% read) ` +
      `${row.GFLOPs.toFixed(1).padStart(6)} GFLOP/s (${(100 * row.dotFraction).toFixed(0).padStart(3)}% dot) ` +
      `${row.vsStreamOnce.toFixed(2)}x stream-once`);
  }
  return rows;
}

const results = [];
console.log(`\n${COPIES} weight copies of ${(WEIGHT_BYTES / 1e6).toFixed(1)} MB = ${(COPIES * WEIGHT_BYTES / 1e6).toFixed(0)} MB per format`);
console.log('weights   case                   time        bandwidth                compute           vs streaming the weights once');
{
  const nz = { ...base, wIdxQb: toNZ(base.wIdxQb), wIdxK: toNZ(base.wIdxK), wIdxProj: toNZ(base.wIdxProj) };
  const copies = Array.from({ length: COPIES }, () => ({
    ...nz, wIdxQb: copyOf(nz.wIdxQb), wIdxK: copyOf(nz.wIdxK), wIdxProj: copyOf(nz.wIdxProj),
  }));
  results.push(...bench('NZ', copies.map((w) => (step) => indexerProlog({ ...w, ...step }))));
}
{
  const copies = Array.from({ length: COPIES }, () => prepareIndexerProlog(base));
  results.push(...bench('prepared', copies.map((p) => (step) => p.run(step))));
}

const ceilAfter = probe('after');
ceil.readGBs = Math.max(ceilBefore.readGBs, ceilAfter.readGBs);
ceil.bf16Gflops = Math.max(ceilBefore.bf16Gflops, ceilAfter.bf16Gflops);
for (const r of results) {
  r.readFraction = r.GBs / ceil.readGBs;
  r.dotFraction = r.GFLOPs / ceil.bf16Gflops;
  r.vsStreamOnce = r.ms / 1e3 / (WEIGHT_BYTES / (ceil.readGBs * 1e9));
}
console.log(`\nwith the better ceilings (read ${ceil.readGBs.toFixed(1)} GB/s, dot ${ceil.bf16Gflops.toFixed(1)} GFLOP/s):`);
for (const r of results) {
  console.log(`${r.weights.padEnd(9)} ${r.case.padEnd(15)} ${r.ms.toFixed(3).padStart(9)} ms ` +
    `${(100 * r.readFraction).toFixed(0).padStart(3)}% read  ${(100 * r.dotFraction).toFixed(0).padStart(3)}% dot  ${r.vsStreamOnce.toFixed(2)}x stream-once`);
}
const decode1 = results.filter((r) => r.tokens === 1);
const prefill = results.filter((r) => r.tokens === 1024);
console.log('\ntargets: decode T=1 within 1.25x of streaming the weights once; prefill >= 50% of the bf16 dot peak');
for (const r of decode1) console.log(`  ${r.weights}: decode T=1 ${r.vsStreamOnce.toFixed(2)}x -> ${r.vsStreamOnce <= 1.25 ? 'met' : 'MISSED'}`);
for (const r of prefill) console.log(`  ${r.weights}: prefill ${(100 * r.dotFraction).toFixed(0)}% -> ${r.dotFraction >= 0.5 ? 'met' : 'MISSED'}`);

mkdirSync(new URL('../bench-results/', import.meta.url), { recursive: true });
writeFileSync(new URL('../bench-results/indexer_prolog.json', import.meta.url), JSON.stringify({
  date: new Date().toISOString(), threads: THREADS, quick: QUICK, ceilings: ceil, ceilingsBefore: ceilBefore, ceilingsAfter: ceilAfter, weightBytes: WEIGHT_BYTES, copies: COPIES,
  dims: { h: H, qLora: Q_LORA, heads: HEADS, idxDim: DI, rope: ROPE }, results,
}, null, 2));
console.log('wrote bench-results/indexer_prolog.json');
