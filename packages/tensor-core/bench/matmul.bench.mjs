// Benchmark of the shared bf16 GEMM at DeepSeek-V3.2 weight shapes (a benchmark, not a test).
// Ceilings (streaming read, bf16 dot peak) are measured in the same run; weights are rotated over
// enough copies that the 480 MB L3 holds none of them between calls.
import { mkdirSync, writeFileSync } from 'node:fs';
import { measureCeilings, matmul, matmulBatched, packWeights, Rng, setNumThreads, toNZ } from '../dist/index.js';

const THREADS = Number(process.env.DSA_BENCH_THREADS ?? 2);
const ROTATE_BYTES = Number(process.env.DSA_BENCH_ROTATE_MB ?? 640) * 1e6;
const QUICK = process.env.DSA_BENCH_QUICK === '1';

const ceil = { 1: measureCeilings(1), 2: measureCeilings(2) };
setNumThreads(THREADS);
const c = ceil[THREADS] ?? measureCeilings(THREADS);
console.log(`ceilings: read ${ceil[1].readGBs.toFixed(1)} GB/s (1 thread), ${ceil[2].readGBs.toFixed(1)} GB/s (2 threads); ` +
  `bf16 dot ${ceil[1].bf16Gflops.toFixed(0)} GFLOP/s (1), ${ceil[2].bf16Gflops.toFixed(0)} GFLOP/s (2); using ${THREADS} threads`);

const rng = new Rng(2024);
const rows = [];

function copies(w, bytesEach) {
  const n = Math.max(2, Math.ceil(ROTATE_BYTES / bytesEach));
  return Array.from({ length: n }, (_, i) => (i === 0 ? w : { ...w, data: w.data.slice() }));
}

function time(fn, minSeconds = QUICK ? 0.2 : 0.6) {
  fn(0);
  let calls = 0;
  const t0 = process.hrtime.bigint();
  let el = 0;
  do {
    fn(++calls);
    el = Number(process.hrtime.bigint() - t0) / 1e9;
  } while (el < minSeconds);
  return el / calls;
}

function report(kind, shape, M, layout, seconds, bytes, flops) {
  const gbs = bytes / seconds / 1e9;
  const gflops = flops / seconds / 1e9;
  const bound = M <= 8 ? 'read' : 'dot';
  const frac = bound === 'read' ? gbs / c.readGBs : gflops / c.bf16Gflops;
  const row = { kind, shape, M, layout, ms: seconds * 1e3, GBs: gbs, GFLOPs: gflops, bound, fractionOfCeiling: frac };
  rows.push(row);
  console.log(
    `${kind.padEnd(5)} ${shape.padEnd(22)} M=${String(M).padEnd(5)} ${layout.padEnd(6)} ${row.ms.toFixed(3).padStart(9)} ms ` +
    `${gbs.toFixed(1).padStart(7)} GB/s ${gflops.toFixed(1).padStart(8)} GFLOP/s  ${(frac * 100).toFixed(0).padStart(3)}% of ${bound} ceiling`,
  );
}

const GEMV_SHAPES = [[7168, 1536], [1536, 24576], [7168, 576], [1536, 8192], [7168, 128], [7168, 64]];
const SMALL_M = QUICK ? [1, 4] : [1, 2, 4, 8];

console.log('\nGEMV and small M (weights read once per call)');
for (const [K, N] of GEMV_SHAPES) {
  const w = rng.uniformTensor([K, N], -0.1, 0.1);
  const bytes = K * N * 2;
  for (const layout of ['NZ', 'PACKED']) {
    const base = layout === 'NZ' ? toNZ(w) : packWeights(w);
    const ws = copies(base, bytes);
    for (const M of SMALL_M) {
      const x = rng.uniformTensor([M, K]);
      const s = time((i) => matmul(x, ws[i % ws.length]));
      report('gemv', `[${K},${N}]`, M, layout, s, bytes + M * K * 2 + M * N * 4, 2 * M * K * N);
    }
  }
}

// W_UK absorption: 128 heads, each [M,128] @ [128,512], as one batched call.
{
  const heads = 128;
  const w = rng.uniformTensor([heads, 128, 512], -0.1, 0.1);
  const bytes = heads * 128 * 512 * 2;
  const ws = copies(w, bytes);
  for (const M of SMALL_M) {
    const x = rng.uniformTensor([heads, M, 128]);
    const s = time((i) => matmulBatched(x, ws[i % ws.length], { outDtype: 'bfloat16' }));
    report('gemv', '128 x [128,512] (W_UK)', M, 'ND', s, bytes, 2 * M * 128 * 512 * heads);
  }
}

console.log('\nGEMM (compute-bound)');
for (const [K, N] of [[7168, 1536], [1536, 24576]]) {
  const w = rng.uniformTensor([K, N], -0.1, 0.1);
  const packed = packWeights(w);
  const nz = toNZ(w);
  for (const M of QUICK ? [256] : [64, 256, 1024]) {
    const x = rng.uniformTensor([M, K]);
    for (const [layout, ww] of [['PACKED', packed], ['NZ', nz]]) {
      const s = time(() => matmul(x, ww, { outDtype: 'bfloat16' }), QUICK ? 0.3 : 1);
      report('gemm', `[${K},${N}]`, M, layout, s, K * N * 2 + M * K * 2 + M * N * 2, 2 * M * K * N);
    }
  }
}

mkdirSync('bench-results', { recursive: true });
writeFileSync('bench-results/matmul.json', JSON.stringify({ threads: THREADS, ceilings: ceil, rows }, null, 2));
console.log('\nwrote bench-results/matmul.json');
