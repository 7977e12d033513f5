// MLA prolog at DeepSeek-V3.2 sizes: decode (b·s1 = 1, 4, 32) and a 1024-token prefill chunk, with the
// weights rotated over enough copies that the 480 MB L3 holds none of them between calls. Prints time,
// bytes and FLOPs moved next to this machine's ceilings measured in the same run, and writes
// bench-results/mla_prolog.json.   Usage: pnpm bench   (MLA_BENCH_ONLY=decode|prefill to run half)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { activeIsa, measureCeilings, Rng, setNumThreads, toNZ } from '@dsa/tensor-core';
import { mlaProlog, prepareMlaProlog } from '../dist/index.js';

const THREADS = 2;
const D = { h: 7168, qLora: 1536, n: 128, qkNope: 128, rope: 64, kvLora: 512, blockSize: 128, blockNum: 16 };
const L3_BYTES = 480 * 2 ** 20;
const only = process.env.MLA_BENCH_ONLY;

setNumThreads(THREADS);
// The machine is shared: contention only lowers a probe, so the ceilings are the best of probes taken
// at the start, between the decode and prefill cases, and at the end.
const probes = [measureCeilings(THREADS)];

const dq = D.qkNope + D.rope;
const weightElems = D.h * D.qLora + D.qLora * D.n * dq + D.n * D.qkNope * D.kvLora + D.h * (D.kvLora + D.rope);
const weightBytes = 2 * weightElems;
const copies = Math.ceil((1.5 * L3_BYTES) / weightBytes);

// One random set of weights (the golden's ranges), then copies: values do not change the timing.
const rng = new Rng(2025);
const base = {
  wDq: toNZ(rng.uniformTensor([D.h, D.qLora], -0.1, 0.1)),
  wUqQr: toNZ(rng.uniformTensor([D.qLora, D.n * dq], -0.1, 0.1)),
  wUk: rng.uniformTensor([D.n, D.qkNope, D.kvLora], -0.1, 0.1),
  wDkvKr: toNZ(rng.uniformTensor([D.h, D.kvLora + D.rope], -0.1, 0.1)),
  gammaCq: rng.uniformTensor([D.qLora], -1, 1),
  gammaCkv: rng.uniformTensor([D.kvLora], -1, 1),
};
const copy = (t) => ({ ...t, data: t.data.slice() });
const raw = Array.from({ length: copies }, (_, i) =>
  i === 0 ? base : Object.fromEntries(Object.entries(base).map(([k, t]) => [k, copy(t)])));
const prepared = raw.map((w) => prepareMlaProlog(w));

function stepInputs(T, s1) {
  const b = T / s1;
  const slots = rng.shuffle(Array.from({ length: D.blockNum * D.blockSize }, (_, i) => i)).slice(0, T);
  return {
    x: rng.uniformTensor([b, s1, D.h], -1, 1),
    sin: rng.uniformTensor([b, s1, D.rope], -1, 1),
    cos: rng.uniformTensor([b, s1, D.rope], -1, 1),
    cacheIndex: { dtype: 'int32', shape: [b, s1], data: Int32Array.from(slots), format: 'ND' },
    kvCache: rng.uniformTensor([D.blockNum, D.blockSize, 1, D.kvLora], -1, 1),
    krCache: rng.uniformTensor([D.blockNum, D.blockSize, 1, D.rope], -1, 1),
  };
}

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

const rows = [];
function bench(name, T, s1, weights, reps) {
  const step = stepInputs(T, s1);
  const out = {
    qNope: { dtype: 'bfloat16', shape: [T / s1, s1, D.n, D.kvLora], data: new Uint16Array(T * D.n * D.kvLora), format: 'ND' },
    qRope: { dtype: 'bfloat16', shape: [T / s1, s1, D.n, D.rope], data: new Uint16Array(T * D.n * D.rope), format: 'ND' },
    qNorm: { dtype: 'bfloat16', shape: [T / s1, s1, D.qLora], data: new Uint16Array(T * D.qLora), format: 'ND' },
  };
  const call = (i) => {
    const w = weights === 'prepared' ? prepared[i % copies] : raw[i % copies];
    return weights === 'prepared' ? w.run(step, { out }) : mlaProlog({ ...w, ...step }, { out });
  };
  for (let i = 0; i < (T >= 256 ? 1 : copies); i++) call(i); // warm-up: page faults, scratch, pool
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    call(i);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  rows.push({ case: name, weights, tokens: T, reps, times });
}

function finish(r, ceilings) {
  const s = median(r.times);
  const best = Math.min(...r.times);
  const T = r.tokens;
  const flops = 2 * weightElems * T;
  const actBytes = 2 * T * (D.h + 2 * D.rope + D.n * (D.kvLora + D.rope) + D.qLora + D.kvLora + D.rope);
  const bytes = weightBytes + actBytes;
  const floor = weightBytes / (ceilings.readGBs * 1e9);
  return {
    case: r.case, weights: r.weights, tokens: T, reps: r.reps, ms: s * 1e3, minMs: best * 1e3,
    weightMB: weightBytes / 1e6, activationMB: actBytes / 1e6, GFLOP: flops / 1e9, streamFloorMs: floor * 1e3,
    GBs: bytes / s / 1e9, fracRead: bytes / s / 1e9 / ceilings.readGBs, vsFloor: s / floor, vsFloorMin: best / floor,
    GFLOPs: flops / s / 1e9, fracDot: flops / s / 1e9 / ceilings.bf16Gflops, fracDotMin: flops / best / 1e9 / ceilings.bf16Gflops,
  };
}

console.log(`mla-prolog bench: ${THREADS} threads, isa ${activeIsa()}, ${copies} weight copies x ${(weightBytes / 1e6).toFixed(1)} MB`);
if (only !== 'prefill') {
  for (const T of [1, 4, 32]) {
    bench(`decode b·s1=${T}`, T, 1, 'prepared', 24);
    bench(`decode b·s1=${T}`, T, 1, 'NZ', 12);
  }
  probes.push(measureCeilings(THREADS));
}
if (only !== 'decode') {
  bench('prefill 1024', 1024, 1024, 'prepared', 3);
  bench('prefill 1024', 1024, 1024, 'NZ', 2);
}
probes.push(measureCeilings(THREADS));
const ceilings = {
  threads: THREADS,
  readGBs: Math.max(...probes.map((p) => p.readGBs)),
  bf16Gflops: Math.max(...probes.map((p) => p.bf16Gflops)),
};
console.log(`ceilings (best of ${probes.length} probes in this run): read ${ceilings.readGBs.toFixed(1)} GB/s, ` +
  `bf16 dot ${ceilings.bf16Gflops.toFixed(1)} GFLOP/s; weight-stream floor ${(weightBytes / ceilings.readGBs / 1e6).toFixed(2)} ms ` +
  `(probes: ${probes.map((p) => `${p.readGBs.toFixed(1)} GB/s ${p.bf16Gflops.toFixed(0)} GFLOP/s`).join('; ')})`);
console.log('case             weights   tokens   median ms (min)      GB/s  %read  x floor (min)  GFLOP/s  %dot (min)');
const results = rows.map((r) => finish(r, ceilings));
for (const r of results) {
  console.log(`${r.case.padEnd(16)} ${r.weights.padEnd(9)} ${String(r.tokens).padStart(6)}  ${r.ms.toFixed(2).padStart(9)} (${r.minMs.toFixed(2).padStart(8)})` +
    `  ${r.GBs.toFixed(1).padStart(6)}  ${(100 * r.fracRead).toFixed(0).padStart(4)}%  ${r.vsFloor.toFixed(2).padStart(6)} (${r.vsFloorMin.toFixed(2).padStart(5)})` +
    `  ${r.GFLOPs.toFixed(1).padStart(7)}  ${(100 * r.fracDot).toFixed(0).padStart(3)}% (${(100 * r.fracDotMin).toFixed(0).padStart(3)}%)`);
}

const decode1 = results.find((r) => r.tokens === 1 && r.weights === 'prepared');
const prefill = results.find((r) => r.tokens === 1024 && r.weights === 'prepared');
const targets = {
  decode1VsFloor: decode1 ? { value: decode1.vsFloor, target: 1.25, met: decode1.vsFloor <= 1.25 } : undefined,
  prefillFracDot: prefill ? { value: prefill.fracDot, target: 0.5, met: prefill.fracDot >= 0.5 } : undefined,
};
console.log('targets (median times):', JSON.stringify(targets));
const dir = join(import.meta.dirname, '..', 'bench-results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'mla_prolog.json'), JSON.stringify({
  date: new Date().toISOString(), threads: THREADS, isa: activeIsa(), dims: D, weightBytes, copies, ceilings, probes, targets,
  results: results.map((r, i) => ({ ...r, timesMs: rows[i].times.map((t) => t * 1e3) })),
}, null, 2) + '\n');
