// Indexer prolog at DeepSeek-V3.2 dimensions (h 7168, q_lora 1536, 64 heads x 128, rope 64): decode
// with b·s1 = 1, 4, 32 and a 1024-token prefill chunk, on NZ weights (as the fused operator is given
// them) and prepared weights (prepareIndexerProlog: packed, [wIdxK | wIdxProj] in one pass over x),
// each rotated over enough copies to be DSA_BENCH_LLC_FACTOR (2; quick 1.25) times the measured
// last-level cache. The index cache is only written (T rows per call). Medians with min/max, against
// ceilings measured in the same run.
//   node bench/indexer_prolog.bench.mjs [--quick]
// To add a case: add an entry to CASES (or a weights kind to KINDS).
import { BenchRun, msStats, pct, rotationCount, stats, timeCalls } from '@dsa/tensor-core/bench';
import { Rng, setNumThreads, toNZ } from '@dsa/tensor-core';
import { indexerProlog, prepareIndexerProlog } from '../dist/index.js';

const quick = process.argv.includes('--quick') || process.env.DSA_BENCH_QUICK === '1' || process.env.BENCH_QUICK === '1';
const D = { h: 7168, qLora: 1536, heads: 64, idxDim: 128, rope: 64, blockSize: 128 };
const CASES = [
  ...[1, 4, 32].map((T) => ({ name: `decode T=${T}`, b: T, s1: 1, minSeconds: quick ? 0.3 : 1 })),
  { name: 'prefill T=1024', b: 1, s1: 1024, minSeconds: quick ? 0.5 : 2, minReps: 3 },
];
const options = { threads: 2, quick, llcFactor: Number(process.env.DSA_BENCH_LLC_FACTOR ?? (quick ? 1.25 : 2)), dims: D, cases: CASES.map((c) => c.name) };
const run = new BenchRun('indexer_prolog', options);
setNumThreads(options.threads);
run.probe('before');

const { h: H, qLora: Q_LORA, heads: HEADS, idxDim: DI, rope: ROPE, blockSize: BLOCK } = D;
const WEIGHT_BYTES = 2 * (Q_LORA * HEADS * DI + H * DI + H * HEADS);
const copies = rotationCount(WEIGHT_BYTES, { factor: options.llcFactor });
const rng = new Rng(2025);
const base = {
  wIdxQb: rng.uniformTensor([Q_LORA, HEADS * DI], -0.05, 0.05),
  wIdxK: rng.uniformTensor([H, DI], -0.05, 0.05),
  wIdxProj: rng.uniformTensor([H, HEADS], -0.05, 0.05),
  inGammaK: rng.uniformTensor([DI], 0.5, 1.5),
  inBetaK: rng.uniformTensor([DI], -0.5, 0.5),
};
const nz = { ...base, wIdxQb: toNZ(base.wIdxQb), wIdxK: toNZ(base.wIdxK), wIdxProj: toNZ(base.wIdxProj) };
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

// One kind of weights at a time (the rotated copies of both would double the memory).
const KINDS = [
  { weights: 'NZ', make: () => Array.from({ length: copies }, () => ({ ...nz, wIdxQb: copyOf(nz.wIdxQb), wIdxK: copyOf(nz.wIdxK), wIdxProj: copyOf(nz.wIdxProj) })),
    call: (w, step) => indexerProlog({ ...w, ...step }) },
  { weights: 'prepared', make: () => Array.from({ length: copies }, () => prepareIndexerProlog(base)), call: (p, step) => p.run(step) },
];
const measured = [];
for (const kind of KINDS) {
  run.workingSet(`${kind.weights} weights`, WEIGHT_BYTES, copies);
  const ws = kind.make();
  for (const c of CASES) {
    const step = stepInputs(c.b, c.s1);
    const times = timeCalls((i) => kind.call(ws[i % copies], step), { warmup: c.s1 > 1 ? 1 : copies, minSeconds: c.minSeconds, minReps: c.minReps ?? 10 });
    measured.push({ c, weights: kind.weights, s: stats(times) });
    console.log(`${c.name.padEnd(15)} ${kind.weights.padEnd(9)} ${msStats(stats(times), 3)}`);
  }
}
run.probe('after');
const ceil = run.ceilings();
const floorMs = (WEIGHT_BYTES / (ceil.readGBs * 1e9)) * 1e3;
console.log(`ceilings used (best of this run, ${options.threads} threads): read ${ceil.readGBs.toFixed(1)} GB/s, bf16 dot ${ceil.bf16Gflops.toFixed(0)} GFLOP/s; ` +
  `weight-stream floor ${floorMs.toFixed(3)} ms for ${(WEIGHT_BYTES / 1e6).toFixed(1)} MB`);
console.log('case            weights   median ms (min, max, n)                       GB/s  of read  x floor   GFLOP/s  of dot');
for (const { c, weights, s } of measured) {
  const T = c.b * c.s1;
  const actBytes = 2 * T * (H + Q_LORA + 2 * ROPE + HEADS * DI + HEADS + DI) + 4 * T;
  const flops = 2 * T * (Q_LORA * HEADS * DI + H * (DI + HEADS));
  const gbs = (WEIGHT_BYTES + actBytes) / s.median / 1e9, gflops = flops / s.median / 1e9;
  const r = { case: c.name, weights, tokens: T, medianMs: s.median * 1e3, minMs: s.min * 1e3, maxMs: s.max * 1e3, reps: s.n,
    weightMB: WEIGHT_BYTES / 1e6, GBs: gbs, fracRead: gbs / ceil.readGBs, vsFloor: (s.median * 1e3) / floorMs, GFLOPs: gflops, fracDot: gflops / ceil.bf16Gflops };
  run.row(r);
  console.log(`${c.name.padEnd(15)} ${weights.padEnd(9)} ${msStats(s, 3).padEnd(45)} ${gbs.toFixed(1).padStart(6)} ${pct(r.fracRead).padStart(6)} ` +
    `${r.vsFloor.toFixed(2).padStart(7)}  ${gflops.toFixed(1).padStart(8)} ${pct(r.fracDot).padStart(6)}`);
}
const get = (name, weights) => run.rows.find((r) => r.case === name && r.weights === weights);
for (const weights of ['prepared', 'NZ']) {
  const d1 = get('decode T=1', weights);
  run.summarize(`indexer prolog decode, 1 token, ${weights === 'NZ' ? 'NZ weights as given' : 'prepared weights'}`,
    `${d1.medianMs.toFixed(3)} ms = ${d1.vsFloor.toFixed(2)}× the time to stream its ${d1.weightMB.toFixed(1)} MB once at the read ceiling`);
}
const pf = get('prefill T=1024', 'prepared');
run.summarize('indexer prolog prefill, 1024 tokens, prepared weights', `${pct(pf.fracDot)} of the bf16 dot peak (${pf.GFLOPs.toFixed(0)} GFLOP/s)`);
run.write();
