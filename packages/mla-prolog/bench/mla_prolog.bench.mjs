// MLA prolog at DeepSeek-V3.2 sizes: decode (b·s1 = 1, 4, 32) and a 1024-token prefill chunk, prepared
// (packed) weights and NZ weights as given, each rotated over enough copies to be DSA_BENCH_LLC_FACTOR
// (2; quick 1.25) times the measured last-level cache. The caches are only written (T rows per call).
// Medians with min/max, against ceilings measured in the same run.
//   node bench/mla_prolog.bench.mjs [--quick]     (MLA_BENCH_ONLY=decode|prefill runs half)
// To add a case: add an entry to CASES (or a weights kind to KINDS).
import { BenchRun, msStats, pct, rotationCount, stats, timeCalls } from '@dsa/tensor-core/bench';
import { Rng, setNumThreads, toNZ } from '@dsa/tensor-core';
import { mlaProlog, prepareMlaProlog } from '../dist/index.js';

const quick = process.argv.includes('--quick') || process.env.DSA_BENCH_QUICK === '1';
const only = process.env.MLA_BENCH_ONLY;
const D = { h: 7168, qLora: 1536, n: 128, qkNope: 128, rope: 64, kvLora: 512, blockSize: 128, blockNum: 16 };
const CASES = [
  ...(only === 'prefill' ? [] : [1, 4, 32].map((T) => ({ name: `decode T=${T}`, T, s1: 1, minSeconds: quick ? 0.3 : 1 }))),
  ...(only === 'decode' ? [] : [{ name: 'prefill T=1024', T: 1024, s1: 1024, minSeconds: quick ? 0.5 : 2, minReps: quick ? 2 : 3 }]),
];
const options = { threads: 2, quick, only: only ?? 'all', llcFactor: Number(process.env.DSA_BENCH_LLC_FACTOR ?? (quick ? 1.25 : 2)), dims: D, cases: CASES.map((c) => c.name) };
const run = new BenchRun('mla_prolog', options);
setNumThreads(options.threads);
run.probe('before');

const dq = D.qkNope + D.rope;
const weightElems = D.h * D.qLora + D.qLora * D.n * dq + D.n * D.qkNope * D.kvLora + D.h * (D.kvLora + D.rope);
const weightBytes = 2 * weightElems;
const copies = rotationCount(weightBytes, { factor: options.llcFactor });

const rng = new Rng(2025);
const base = {
  wDq: toNZ(rng.uniformTensor([D.h, D.qLora], -0.1, 0.1)),
  wUqQr: toNZ(rng.uniformTensor([D.qLora, D.n * dq], -0.1, 0.1)),
  wUk: rng.uniformTensor([D.n, D.qkNope, D.kvLora], -0.1, 0.1),
  wDkvKr: toNZ(rng.uniformTensor([D.h, D.kvLora + D.rope], -0.1, 0.1)),
  gammaCq: rng.uniformTensor([D.qLora], -1, 1),
  gammaCkv: rng.uniformTensor([D.kvLora], -1, 1),
};
const copyOf = (t) => ({ ...t, data: t.data.slice() });

function stepInputs(T, s1) {
  const b = T / s1;
  const slots = rng.shuffle(Array.from({ length: D.blockNum * D.blockSize }, (_, i) => i)).slice(0, T);
  const out = (shape) => ({ dtype: 'bfloat16', shape, data: new Uint16Array(shape.reduce((a, v) => a * v, 1)), format: 'ND' });
  return {
    step: {
      x: rng.uniformTensor([b, s1, D.h], -1, 1),
      sin: rng.uniformTensor([b, s1, D.rope], -1, 1),
      cos: rng.uniformTensor([b, s1, D.rope], -1, 1),
      cacheIndex: { dtype: 'int32', shape: [b, s1], data: Int32Array.from(slots), format: 'ND' },
      kvCache: rng.uniformTensor([D.blockNum, D.blockSize, 1, D.kvLora], -1, 1),
      krCache: rng.uniformTensor([D.blockNum, D.blockSize, 1, D.rope], -1, 1),
    },
    out: { qNope: out([b, s1, D.n, D.kvLora]), qRope: out([b, s1, D.n, D.rope]), qNorm: out([b, s1, D.qLora]) },
  };
}

// One kind of weights at a time (the rotated copies of both would double the memory).
const KINDS = [
  { weights: 'prepared', make: () => Array.from({ length: copies }, () => prepareMlaProlog(base)), call: (w, s) => w.run(s.step, { out: s.out }) },
  { weights: 'NZ', make: () => Array.from({ length: copies }, (_, i) => (i === 0 ? base : Object.fromEntries(Object.entries(base).map(([k, t]) => [k, copyOf(t)])))),
    call: (w, s) => mlaProlog({ ...w, ...s.step }, { out: s.out }) },
];
const measured = [];
for (const kind of KINDS) {
  run.workingSet(`${kind.weights} weights`, weightBytes, copies);
  let ws = kind.make();
  for (const c of CASES) {
    const s = stepInputs(c.T, c.s1);
    const times = timeCalls((i) => kind.call(ws[i % copies], s), { warmup: c.T >= 256 ? 1 : copies, minSeconds: c.minSeconds, minReps: c.minReps ?? 10 });
    measured.push({ c, weights: kind.weights, s: stats(times) });
    console.log(`${c.name.padEnd(15)} ${kind.weights.padEnd(9)} ${msStats(stats(times))}`);
  }
  if (kind.weights === 'prepared') ws.forEach((w) => w.dispose());
  ws = undefined;
}
run.probe('after');
const ceil = run.ceilings();
const floorMs = (weightBytes / (ceil.readGBs * 1e9)) * 1e3;
console.log(`ceilings used (best of this run, ${options.threads} threads): read ${ceil.readGBs.toFixed(1)} GB/s, bf16 dot ${ceil.bf16Gflops.toFixed(0)} GFLOP/s; ` +
  `weight-stream floor ${floorMs.toFixed(2)} ms for ${(weightBytes / 1e6).toFixed(1)} MB`);
console.log('case            weights   median ms (min, max, n)                    GB/s  of read  x floor   GFLOP/s  of dot');
for (const { c, weights, s } of measured) {
  const flops = 2 * weightElems * c.T;
  const actBytes = 2 * c.T * (D.h + 2 * D.rope + D.n * (D.kvLora + D.rope) + D.qLora + D.kvLora + D.rope);
  const gbs = (weightBytes + actBytes) / s.median / 1e9, gflops = flops / s.median / 1e9;
  const r = { case: c.name, weights, tokens: c.T, medianMs: s.median * 1e3, minMs: s.min * 1e3, maxMs: s.max * 1e3, reps: s.n,
    weightMB: weightBytes / 1e6, activationMB: actBytes / 1e6, GBs: gbs, fracRead: gbs / ceil.readGBs, vsFloor: s.median * 1e3 / floorMs,
    GFLOPs: gflops, fracDot: gflops / ceil.bf16Gflops };
  run.row(r);
  console.log(`${c.name.padEnd(15)} ${weights.padEnd(9)} ${msStats(s).padEnd(42)} ${gbs.toFixed(1).padStart(6)} ${pct(r.fracRead).padStart(6)} ` +
    `${r.vsFloor.toFixed(2).padStart(7)}  ${gflops.toFixed(1).padStart(8)} ${pct(r.fracDot).padStart(6)}`);
}
const get = (name, weights) => run.rows.find((r) => r.case === name && r.weights === weights);
for (const weights of ['prepared', 'NZ']) {
  const d1 = get('decode T=1', weights);
  if (d1) run.summarize(`MLA prolog decode, 1 token, ${weights === 'NZ' ? 'NZ weights as given' : 'prepared weights'}`,
    `${d1.medianMs.toFixed(2)} ms = ${d1.vsFloor.toFixed(2)}× the time to stream its ${d1.weightMB.toFixed(1)} MB once at the read ceiling`);
}
const pf = get('prefill T=1024', 'prepared');
if (pf) run.summarize('MLA prolog prefill, 1024 tokens, prepared weights', `${pct(pf.fracDot)} of the bf16 dot peak (${pf.GFLOPs.toFixed(0)} GFLOP/s)`);
run.write();
