// Benchmark of the shared bf16 GEMM at DeepSeek-V3.2 weight shapes (a benchmark, not a test).
// Each case rotates over enough weight copies that together they are DSA_BENCH_LLC_FACTOR (2; quick
// 1.25) times the measured last-level cache; medians with min/max against ceilings from this run.
// Each case writes into one output made by its first call (the `out` option), as the operator writes
// into its scratch: the page faults of a fresh output buffer are not part of the kernel's time.
//   node bench/matmul.bench.mjs [--quick]      (JSON: <workspace>/bench-results/matmul.json)
// To add a case: call measure({kind, shape, M, layout, bound, bytes, flops, x, call: (x, i, out) => ...})
// while its rotated weights are alive (they are dropped after each group to bound memory).
import { BenchRun, msStats, pct, rotationCount, stats, timeCalls } from '../dist/bench.js';
import { matmul, matmulBatched, packWeights, Rng, setNumThreads, toNZ } from '../dist/index.js';

const quick = process.argv.includes('--quick') || process.env.DSA_BENCH_QUICK === '1';
const options = {
  threads: Number(process.env.DSA_BENCH_THREADS ?? 2),
  quick,
  llcFactor: Number(process.env.DSA_BENCH_LLC_FACTOR ?? (quick ? 1.25 : 2)),
  minSeconds: quick ? 0.2 : 0.5,
  gemvM: quick ? [1, 4] : [1, 2, 4, 8],
  gemmM: quick ? [256] : [64, 256, 1024],
};
const run = new BenchRun('matmul', options);
setNumThreads(options.threads);
run.probe('before');

const rng = new Rng(2024);
// The huge-page copies of a group are freed by native finalizers, which run only when the event loop
// turns: let it turn (after a GC where --expose-gc allows) between groups, or the copies pile up.
const settle = async () => {
  globalThis.gc?.();
  await new Promise((r) => setImmediate(r));
};
const copiesOf = (w, bytes, label) => {
  const n = rotationCount(bytes, { factor: options.llcFactor });
  run.workingSet(label, bytes, n);
  return Array.from({ length: n }, (_, i) => (i === 0 ? w : { ...w, data: w.data.slice() }));
};

// Weight-bound (M <= 8: 'read') and compute-bound ('dot') cases; x is small and stays cached.
const measured = [];
function measure(c) {
  const out = c.call(c.x, 0, undefined);
  const times = timeCalls((i) => c.call(c.x, i, out), { minSeconds: options.minSeconds, minReps: 5, maxReps: 2000 });
  process.stdout.write('.');
  // Keep the case's description only: its call closes over the rotated weights, which must be freed.
  const { call, x, ...described } = c;
  measured.push({ c: described, s: stats(times) });
}
const GEMV_SHAPES = [[7168, 1536], [1536, 24576], [7168, 576], [1536, 8192], [7168, 128], [7168, 64]];
for (const [K, N] of GEMV_SHAPES) {
  const bytes = K * N * 2;
  const w = rng.uniformTensor([K, N], -0.1, 0.1);
  for (const layout of ['NZ', 'PACKED']) {
    // PACKED copies come from packWeights (huge-page memory); NZ copies are plain JS memory, as given.
    const n = rotationCount(bytes, { factor: options.llcFactor });
    run.workingSet(`[${K},${N}] ${layout}`, bytes, n);
    const nz = toNZ(w);
    const ws = Array.from({ length: n }, () => (layout === 'NZ' ? { ...nz, data: nz.data.slice() } : packWeights(w)));
    for (const M of options.gemvM) {
      measure({ kind: 'gemv', shape: `[${K},${N}]`, M, layout, bound: 'read', bytes: bytes + M * K * 2 + M * N * 4, flops: 2 * M * K * N,
        x: rng.uniformTensor([M, K]), call: (x, i, out) => matmul(x, ws[i % ws.length], { out }) });
    }
    await settle();
  }
}
{
  // W_UK absorption: 128 heads, each [M,128] @ [128,512], as one batched call.
  const heads = 128;
  const bytes = heads * 128 * 512 * 2;
  const ws = copiesOf(rng.uniformTensor([heads, 128, 512], -0.1, 0.1), bytes, 'W_UK 128x[128,512] ND');
  for (const M of options.gemvM) {
    measure({ kind: 'gemv', shape: '128x[128,512] W_UK', M, layout: 'ND', bound: 'read', bytes, flops: 2 * M * 128 * 512 * heads,
      x: rng.uniformTensor([heads, M, 128]), call: (x, i, out) => matmulBatched(x, ws[i % ws.length], { out, outDtype: 'bfloat16' }) });
  }
}
await settle();
// FP8 e4m3 weights with one fp32 scale per 128x128 block (the checkpoint's form), prepared once by
// packWeights: bytes counted are the FP8 bytes plus the scales.
for (const [K, N] of GEMV_SHAPES) {
  const w = packWeights(rng.fp8Weight([K, N], 'NT'));
  const bytes = w.data.length + w.blockScale.data.length * 4;
  const n = rotationCount(bytes, { factor: options.llcFactor });
  run.workingSet(`[${K},${N}] FP8 PACKED`, bytes, n);
  const ws = Array.from({ length: n }, (_, i) => (i === 0 ? w : packWeights(rng.fp8Weight([K, N], 'NT'))));
  for (const M of options.gemvM) {
    measure({ kind: 'gemv', shape: `[${K},${N}]`, M, layout: 'FP8', bound: 'read', bytes: bytes + M * K * 2 + M * N * 4, flops: 2 * M * K * N,
      x: rng.uniformTensor([M, K]), call: (x, i, out) => matmul(x, ws[i % ws.length], { out }) });
  }
  await settle();
}
{
  const heads = 128;
  const w = packWeights(rng.fp8Weight([heads, 128, 512], 'ND'));
  const bytes = w.data.length + w.blockScale.data.length * 4;
  const ws = copiesOf(w, bytes, 'W_UK 128x[128,512] FP8 PACKED');
  for (const M of options.gemvM) {
    measure({ kind: 'gemv', shape: '128x[128,512] W_UK', M, layout: 'FP8', bound: 'read', bytes, flops: 2 * M * 128 * 512 * heads,
      x: rng.uniformTensor([heads, M, 128]), call: (x, i, out) => matmulBatched(x, ws[i % ws.length], { out, outDtype: 'bfloat16' }) });
  }
}
await settle();
for (const [K, N] of [[7168, 1536], [1536, 24576]]) {
  // Power-of-two block scales (DeepSeek's ue8m0) fold into the bf16 panel; others apply per 128-k block.
  for (const pow2 of [true, false]) {
    const w = packWeights(rng.fp8Weight([K, N], 'NT', { pow2 }));
    const bytes = w.data.length + w.blockScale.data.length * 4;
    const ws = copiesOf(w, bytes, `[${K},${N}] FP8 PACKED (GEMM${pow2 ? ', pow2 scales' : ''})`);
    for (const M of options.gemmM) {
      measure({ kind: 'gemm', shape: `[${K},${N}]`, M, layout: pow2 ? 'FP8p2' : 'FP8', bound: 'dot', bytes: bytes + M * K * 2 + M * N * 2,
        flops: 2 * M * K * N, x: rng.uniformTensor([M, K]), call: (x, i, out) => matmul(x, ws[i % ws.length], { out, outDtype: 'bfloat16' }) });
    }
    await settle();
  }
}
for (const [K, N] of [[7168, 1536], [1536, 24576]]) {
  const w = rng.uniformTensor([K, N], -0.1, 0.1);
  const bytes = K * N * 2;
  const packed = copiesOf(packWeights(w), bytes, `[${K},${N}] PACKED (GEMM)`);
  const nz = copiesOf(toNZ(w), bytes, `[${K},${N}] NZ (GEMM)`);
  for (const M of options.gemmM) {
    for (const [layout, ws] of [['PACKED', packed], ['NZ', nz]]) {
      measure({ kind: 'gemm', shape: `[${K},${N}]`, M, layout, bound: 'dot', bytes: bytes + M * K * 2 + M * N * 2, flops: 2 * M * K * N,
        x: rng.uniformTensor([M, K]), call: (x, i, out) => matmul(x, ws[i % ws.length], { out, outDtype: 'bfloat16' }) });
    }
  }
  await settle();
}

run.probe('after');
const ceil = run.ceilings();
console.log(`\nceilings used (best of this run, ${options.threads} threads): read ${ceil.readGBs.toFixed(1)} GB/s, bf16 dot ${ceil.bf16Gflops.toFixed(0)} GFLOP/s`);
console.log('kind  shape                  M     layout  median ms (min, max, n)                     GB/s   GFLOP/s  of ceiling');
for (const { c, s } of measured) {
  const gbs = c.bytes / s.median / 1e9, gflops = c.flops / s.median / 1e9;
  const frac = c.bound === 'read' ? gbs / ceil.readGBs : gflops / ceil.bf16Gflops;
  run.row({ kind: c.kind, shape: c.shape, M: c.M, layout: c.layout, bound: c.bound, bytes: c.bytes, flops: c.flops,
    medianMs: s.median * 1e3, minMs: s.min * 1e3, maxMs: s.max * 1e3, reps: s.n, GBs: gbs, GFLOPs: gflops, fractionOfCeiling: frac });
  console.log(`${c.kind.padEnd(5)} ${c.shape.padEnd(22)} ${String(c.M).padEnd(5)} ${c.layout.padEnd(7)} ${msStats(s, 3).padEnd(42)} ` +
    `${gbs.toFixed(1).padStart(6)} ${gflops.toFixed(1).padStart(8)}  ${pct(frac).padStart(4)} of ${c.bound}`);
}

const range = (rows) => {
  const f = rows.map((r) => r.fractionOfCeiling);
  if (f.length === 0) return "n/a";
  return pct(Math.min(...f)) === pct(Math.max(...f)) ? pct(f[0]) : `${pct(Math.min(...f))}–${pct(Math.max(...f))}`;
};
const pick = (p) => run.rows.filter(p);
const big = (r) => ['[7168,1536]', '[1536,24576]', '[1536,8192]', '[7168,576]'].includes(r.shape);
run.summarize('bf16 GEMV M = 1, PACKED, shapes [7168,1536] [1536,24576] [1536,8192] [7168,576]',
  `${range(pick((r) => r.kind === 'gemv' && r.M === 1 && r.layout === 'PACKED' && big(r)))} of the read ceiling`);
run.summarize('bf16 GEMV M = 1, NZ (as given), same shapes',
  `${range(pick((r) => r.kind === 'gemv' && r.M === 1 && r.layout === 'NZ' && big(r)))} of the read ceiling`);
run.summarize('W_UK batched GEMV 128 × [128,512], M = 1', `${range(pick((r) => r.shape.includes('W_UK') && r.M === 1 && r.layout === 'ND'))} of the read ceiling`);
const fp8Gemv = (r) => r.kind === 'gemv' && r.M === 1 && r.layout === 'FP8';
run.summarize('FP8 GEMV M = 1, PACKED, shapes [7168,1536] [1536,24576] [7168,576] [1536,8192] [7168,128] and W_UK (FP8 bytes + scales)',
  `${range(pick((r) => fp8Gemv(r) && r.shape !== '[7168,64]'))} of the read ceiling`);
const speedups = pick(fp8Gemv).map((r) => {
  const b = run.rows.find((q) => q.kind === 'gemv' && q.M === 1 && q.shape === r.shape && (q.layout === 'PACKED' || (q.layout === 'ND' && r.shape.includes('W_UK'))));
  return b ? `${r.shape} ${(b.medianMs / r.medianMs).toFixed(2)}x` : undefined;
}).filter(Boolean);
run.summarize('FP8 vs bf16 GEMV M = 1 (time ratio, same run)', speedups.join(', '));
for (const M of options.gemmM.filter((m) => m >= 256)) {
  run.summarize(`FP8 GEMM M = ${M}, [7168,1536] and [1536,24576] (pow2 scales / other scales)`,
    `${range(pick((r) => r.kind === 'gemm' && r.M === M && r.layout === 'FP8p2'))} / ${range(pick((r) => r.kind === 'gemm' && r.M === M && r.layout === 'FP8'))} of the bf16 dot peak`);
}
for (const M of options.gemmM.filter((m) => m >= 256)) {
  run.summarize(`bf16 GEMM M = ${M}, PACKED, [7168,1536] and [1536,24576]`,
    `${range(pick((r) => r.kind === 'gemm' && r.M === M && r.layout === 'PACKED'))} of the bf16 dot peak`);
}
run.write();
