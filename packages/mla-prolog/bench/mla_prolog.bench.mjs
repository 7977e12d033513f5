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
const ceilings = measureCeilings(THREADS);

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
  for (let i = 0; i < copies; i++) call(i); // warm-up: page faults, scratch, pool
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    call(i);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const s = median(times);
  const flops = 2 * weightElems * T;
  const actBytes = 2 * T * (D.h + 2 * D.rope + D.n * (D.kvLora + D.rope) + D.qLora + D.kvLora + D.rope);
  const floor = weightBytes / (ceilings.readGBs * 1e9);
  const row = {
    case: name, weights, tokens: T, reps, ms: s * 1e3, minMs: Math.min(...times) * 1e3,
    weightMB: weightBytes / 1e6, activationMB: actBytes / 1e6, GBs: (weightBytes + actBytes) / s / 1e9,
    fracRead: (weightBytes + actBytes) / s / 1e9 / ceilings.readGBs, streamFloorMs: floor * 1e3, vsFloor: s / floor,
    GFLOP: flops / 1e9, GFLOPs: flops / s / 1e9, fracDot: flops / s / 1e9 / ceilings.bf16Gflops,
  };
  rows.push(row);
  console.log(
    `${name.padEnd(16)} ${weights.padEnd(9)} T=${String(T).padStart(4)}  ${row.ms.toFixed(2).padStart(8)} ms` +
    `  ${row.GBs.toFixed(1).padStart(6)} GB/s (${(100 * row.fracRead).toFixed(0).padStart(3)}% read)` +
    `  ${row.vsFloor.toFixed(2).padStart(5)}x floor  ${row.GFLOPs.toFixed(1).padStart(6)} GFLOP/s (${(100 * row.fracDot).toFixed(0).padStart(3)}% dot)`);
}

console.log(`mla-prolog bench: ${THREADS} threads, isa ${activeIsa()}, ${copies} weight copies x ${(weightBytes / 1e6).toFixed(1)} MB`);
console.log(`ceilings: read ${ceilings.readGBs.toFixed(1)} GB/s, bf16 dot ${ceilings.bf16Gflops.toFixed(1)} GFLOP/s; ` +
  `weight-stream floor ${(weightBytes / ceilings.readGBs / 1e6).toFixed(2)} ms`);
if (only !== 'prefill') {
  for (const T of [1, 4, 32]) {
    bench(`decode b·s1=${T}`, T, 1, 'prepared', 24);
    bench(`decode b·s1=${T}`, T, 1, 'NZ', 12);
  }
}
if (only !== 'decode') {
  bench('prefill 1024', 1024, 1024, 'prepared', 3);
  bench('prefill 1024', 1024, 1024, 'NZ', 2);
}

const decode1 = rows.find((r) => r.tokens === 1 && r.weights === 'prepared');
const prefill = rows.find((r) => r.tokens === 1024 && r.weights === 'prepared');
const targets = {
  decode1VsFloor: decode1 ? { value: decode1.vsFloor, target: 1.25, met: decode1.vsFloor <= 1.25 } : undefined,
  prefillFracDot: prefill ? { value: prefill.fracDot, target: 0.5, met: prefill.fracDot >= 0.5 } : undefined,
};
console.log('targets:', JSON.stringify(targets));
const dir = join(import.meta.dirname, '..', 'bench-results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'mla_prolog.json'), JSON.stringify({
  date: new Date().toISOString(), threads: THREADS, isa: activeIsa(), dims: D, weightBytes, copies, ceilings, targets, rows,
}, null, 2) + '\n');
