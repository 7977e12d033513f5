import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { freemem } from 'node:os';
import { DsaError, ErrorCode, Rng } from '@dsa/tensor-core';
import { benchDir, BenchRun, msStats, rotationCount, stats } from '@dsa/tensor-core/bench';
import { PagedCacheManager } from './cache-manager.js';
import { fmt, pct, threadsFlag, type CliValues } from './cli-options.js';
import { sparseAttention } from './index.js';
import type { LayerWeights, StepInputs } from './inputs.js';
import { DsaLayer, type LayerTimes } from './layer.js';
import {
  callCost, DEEPSEEK_V32, fillHistory, randomFp8LayerWeights, randomLayerWeights, randomTokens, weightBytes, type ModelDims, type WeightDtype,
} from './model.js';
import { Progress } from './progress.js';

const STAGES = ['projections', 'mlaProlog', 'indexerProlog', 'lightningIndexer', 'sparseFlashAttention'] as const;
const CHAIN_STAGES = ['mlaProlog', 'indexerProlog', 'lightningIndexer', 'sparseFlashAttention'] as const;

interface Row {
  name: string; b: number; s1: number; acts: number[]; mode: string; weights: WeightDtype;
  /** Median, min and max ms per call, and the number of timed calls. */
  ms: number; minMs: number; maxMs: number; reps: number;
  /** Layers rotated (each with its own caches), bytes one call reads, their product against the LLC. */
  pairs: number; perCallMB: number; rotatedMB: number; exceedsLlc: boolean;
  floorMs: number; floorFraction: number; stages: Record<string, number>;
}

/** Something that runs one call on step inputs: a DsaLayer, or a plain call on given weights. */
interface Runner {
  forward(step: StepInputs): unknown;
  lastTimes?: LayerTimes;
}

/** Bytes one call must read: the weights, the indexer's keys, the selected KV rows. */
function perCallBytes(d: ModelDims, acts: number[], s1: number, dtype: WeightDtype): number {
  let keys = 0, rows = 0;
  for (const a of acts) {
    keys += a * d.idxDim * 2;
    rows += s1 * Math.min(a, d.topk) * (d.kvLora + d.rope) * 2;
  }
  return weightBytes(d, dtype) + keys + rows;
}

/** Cache bytes of one manager holding `acts`. */
function cacheBytes(d: ModelDims, acts: number[]): number {
  return acts.reduce((s, a) => s + Math.ceil(a / d.blockSize), 0) * d.blockSize * (d.kvLora + d.rope + d.idxDim) * 2;
}

/**
 * One decode (or MTP) configuration, timed over rotated (layer, cache) pairs: as many pairs as it
 * takes for the bytes the calls read to exceed `llcFactor` times the last-level cache (at most the
 * runners there are, and as many caches as a quarter of the free memory holds). Every pair has its
 * own cache manager with the same random history, so no call finds the previous call's caches in
 * the last-level cache.
 */
async function measure(run: BenchRun, runners: Runner[], name: string, acts: number[], s1: number, mode: string, minMs: number, dtype: WeightDtype): Promise<Row> {
  const d = DEEPSEEK_V32;
  const llcFactor = run.options.llcFactor as number;
  const perCall = perCallBytes(d, acts, s1, dtype);
  const memoryCap = Math.max(1, Math.floor(freemem() / 4 / cacheBytes(d, acts)));
  const pairs = Math.min(runners.length, memoryCap, rotationCount(perCall, { factor: llcFactor }));
  const blocksPerSeq = Math.ceil(Math.max(...acts) / d.blockSize);
  const numBlocks = acts.reduce((s, a) => s + Math.ceil(a / d.blockSize), 0);
  const tokens = randomTokens(d, acts.length, s1, new Rng(5));
  let first: PagedCacheManager | undefined;
  const inputs = Array.from({ length: pairs }, (_, p) => {
    const cache = new PagedCacheManager({ numBlocks, blockSize: d.blockSize, kvLora: d.kvLora, rope: d.rope, indexDim: d.idxDim, maxBlocksPerSeq: blocksPerSeq });
    const seqs = acts.map((a, i) => {
      const s = cache.admit();
      if (p === 0) fillHistory(cache, s, a - s1, 1000 + i);
      else if (a > s1) cache.plan([s], a - s1); // same blocks as the first cache; its contents are copied below
      return s;
    });
    if (first === undefined) first = cache;
    else for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) cache[k]!.data.set(first[k]!.data);
    return { ...tokens, ...cache.plan(seqs, s1), ...cache.tensors() };
  });
  // The same tokens are rewritten on every call: each call is one full decode step.
  for (let p = 0; p < pairs; p++) runners[p]!.forward(inputs[p]!);
  const sums: Record<string, number> = {};
  const times: number[] = [];
  const t0 = performance.now();
  while (times.length < 5 || performance.now() - t0 < minMs) {
    const p = times.length % pairs;
    const layer = runners[p]!;
    const c0 = performance.now();
    layer.forward(inputs[p]!);
    times.push(performance.now() - c0);
    // Let the event loop turn between calls, as a server's does: outputs the GC has collected go back
    // to the addons' buffer cache only then (a prefill's output is 134 MB of otherwise fresh memory).
    await new Promise((resolve) => setImmediate(resolve));
    if (layer.lastTimes) for (const k of mode === 'fused' ? STAGES : CHAIN_STAGES) sums[k] = (sums[k] ?? 0) + (layer.lastTimes[k] ?? 0);
  }
  const st = stats(times);
  const stages = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / times.length]));
  const rotated = pairs * perCall;
  return {
    name, b: acts.length, s1, acts, mode, weights: dtype, ms: st.median, minMs: st.min, maxMs: st.max, reps: st.n,
    pairs, perCallMB: perCall / 1e6, rotatedMB: rotated / 1e6, exceedsLlc: rotated > run.machine.llcBytes,
    floorMs: NaN, floorFraction: NaN, stages,
  };
}

function copyWeights(w: LayerWeights): LayerWeights {
  return Object.fromEntries(Object.entries(w).map(([k, t]) => [k, { ...t, data: t.data.slice() }])) as unknown as LayerWeights;
}

/** The median round of alternating rounds, with the min/max over all of them. */
function medianRound(rs: Row[], name: string): Row {
  const mid = [...rs].sort((a, b) => a.ms - b.ms)[rs.length >> 1]!;
  const all = rs.flatMap((r) => [r.minMs, r.maxMs]);
  return { ...mid, name, minMs: Math.min(...all), maxMs: Math.max(...all), reps: rs.reduce((s, r) => s + r.reps, 0) };
}

function weightsFlag(values: CliValues): WeightDtype {
  const v = (values.weights as string | undefined) ?? 'bf16';
  if (v !== 'bf16' && v !== 'fp8') throw new DsaError(ErrorCode.ARGUMENT, `--weights: expected bf16 or fp8, got ${JSON.stringify(v)}`, 'weights');
  return v;
}

function svgChart(series: { label: string; color: string; points: [number, number][]; dashed?: boolean }[]): string {
  const W = 720, H = 420, L = 70, R = 170, T = 30, B = 50;
  const xs = series.flatMap((s) => s.points.map((p) => Math.log2(p[0])));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y1 = Math.max(...ys) * 1.1;
  const px = (x: number) => L + ((Math.log2(x) - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => H - B - (y / y1) * (H - T - B);
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">\n`;
  out += `<rect width="${W}" height="${H}" fill="white"/>\n<text x="${L}" y="18" font-size="14">DSA decode step time vs context (DeepSeek-V3.2 dims, this machine)</text>\n`;
  out += `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>\n`;
  for (const p of series[0]!.points) out += `<text x="${px(p[0])}" y="${H - B + 16}" text-anchor="middle">${p[0] >= 1024 ? `${Math.round(p[0] / 1024)}K` : p[0]}</text>\n`;
  for (let i = 0; i <= 5; i++) {
    const y = (y1 * i) / 5;
    out += `<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end">${y.toFixed(0)}</text><line x1="${L}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#ddd"/>\n`;
  }
  out += `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">context (keys per sequence)</text>\n<text x="16" y="${(T + H - B) / 2}" transform="rotate(-90 16 ${(T + H - B) / 2})" text-anchor="middle">ms per decode step</text>\n`;
  series.forEach((s, i) => {
    const pts = s.points.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ');
    out += `<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${pts}"/>\n`;
    for (const p of s.points) if (!s.dashed) out += `<circle cx="${px(p[0])}" cy="${py(p[1])}" r="3" fill="${s.color}"/>\n`;
    out += `<line x1="${W - R + 15}" y1="${T + 10 + i * 20}" x2="${W - R + 40}" y2="${T + 10 + i * 20}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/><text x="${W - R + 45}" y="${T + 14 + i * 20}">${s.label}</text>\n`;
  });
  return `${out}</svg>\n`;
}

/** `dsa bench`: the whole operator at DeepSeek-V3.2 size (the stages have their own benchmarks). */
export async function runBench(values: CliValues): Promise<number> {
  const threads = threadsFlag(values);
  const dtype = weightsFlag(values);
  const quick = values.quick === true || process.env.DSA_BENCH_QUICK === '1';
  const d = DEEPSEEK_V32;
  const cases: [string, number[], number][] = [
    ['decode b=1 4K', [4096], 1],
    ['decode b=1 32K', [32768], 1],
    ['decode b=1 128K', [131072], 1],
    ['decode b=4 mixed', [768, 4097, 8192, 131071], 1],
    ['decode b=32 8K', Array(32).fill(8192), 1],
    ['MTP s1=2 b=4 mixed', [768, 4097, 8192, 131071], 2],
  ];
  const options = {
    threads, quick, weights: dtype, llcFactor: Number(process.env.DSA_BENCH_LLC_FACTOR ?? (quick ? 1.25 : 2)),
    minMs: quick ? 300 : 1500, rounds: quick ? 3 : 7, contexts: quick ? [4096, 32768, 131072] : [4096, 8192, 16384, 32768, 65536, 131072],
    cases: cases.map((c) => c[0]),
    json: (values.json as string | undefined) ?? null, svg: (values.svg as string | undefined) ?? join(benchDir(), 'decode.svg'),
  };
  const run = new BenchRun('fused', options);
  run.probe('before');
  const wp = new Progress('weights ', dtype === 'fp8' ? 6 : 11);
  const weights = dtype === 'fp8' ? randomFp8LayerWeights(d, 7, (i) => wp.update(i)) : randomLayerWeights(d, 7, (i) => wp.update(i));
  // Enough prepared layers that their weights alone exceed llcFactor x the LLC.
  const nLayers = rotationCount(weightBytes(d, dtype), { factor: options.llcFactor });
  run.workingSet(`prepared layers (${dtype} weights)`, weightBytes(d, dtype), nLayers);
  const layers = Array.from({ length: nLayers }, () => new DsaLayer(weights, { topk: d.topk }));

  const rows: Row[] = [];
  const header = `${'case'.padEnd(20)} ${'mode'.padEnd(7)} ${'pairs'.padStart(5)} ${'MB/rot'.padStart(7)}  median ms (min, max, n)                     ` +
    [...STAGES].map((s) => s.replace('sparseFlashAttention', 'attention').replace('lightningIndexer', 'indexer').replace('indexerProlog', 'idxProlog').padStart(10)).join(' ');
  console.log(`\n${header}`);
  const print = (r: Row): void => {
    const st = msStats({ median: r.ms / 1e3, min: r.minMs / 1e3, max: r.maxMs / 1e3, n: r.reps });
    console.log(`${r.name.padEnd(20)} ${r.mode.padEnd(7)} ${String(r.pairs).padStart(5)} ${fmt(r.rotatedMB, 0).padStart(7)}${r.exceedsLlc ? ' ' : '!'} ${st.padEnd(44)}` +
      STAGES.map((s) => (r.stages[s] === undefined ? '-' : fmt(r.stages[s]!, 2)).padStart(10)).join(' '));
  };
  for (const [name, acts, s1] of cases) {
    const r = await measure(run, layers, name, acts, s1, 'fused', options.minMs, dtype);
    rows.push(r);
    print(r);
  }

  // Time per decode step against context, b = 1 and 4.
  const cp = new Progress('chart   ', options.contexts.length * 2, ' points');
  let n = 0;
  for (const ctx of options.contexts) {
    for (const b of [1, 4]) {
      rows.push(await measure(run, layers, `chart b=${b} ${ctx}`, Array(b).fill(ctx), 1, 'fused', options.minMs / 3, dtype));
      cp.update(++n);
    }
  }

  // Fused against the chain, once with every weight prepared (packed) like the fused layer, once on
  // the NZ weights as given (plain sparseAttention calls), each with as many weight copies as the
  // fused layers. Measured in alternating rounds so drifts of the shared machine hit all three
  // alike; the medians of the rounds' medians are reported.
  const chainLayers = Array.from({ length: layers.length }, () => new DsaLayer(weights, { topk: d.topk, mode: 'chain' }));
  const weightSets = Array.from({ length: layers.length }, (_, i) => (i === 0 ? weights : copyWeights(weights)));
  const plain = weightSets.map((w) => ({ forward: (step: StepInputs) => sparseAttention({ ...w, ...step }, { topk: d.topk, mode: 'chain' }) }));
  const contenders: [string, Runner[]][] = [['fused', layers], ['chain', chainLayers], ['chainNZ', plain]];
  const rounds: Row[][] = contenders.map(() => []);
  for (let round = 0; round < options.rounds; round++) {
    for (const [i, [mode, runners]] of contenders.entries()) rounds[i]!.push(await measure(run, runners, 'decode b=1 4K', [4096], 1, mode, options.minMs / 3, dtype));
  }
  chainLayers.forEach((l) => l.dispose());
  const cmp = rounds.map((rs) => medianRound(rs, 'fused vs chain b=1 4K'));
  for (const r of cmp) {
    rows.push(r);
    print(r);
  }

  // FP8 weights against bf16 ones (the same model), fused, in alternating rounds: decode b=1 at 4K
  // and 128K, and a 1024-token prefill.
  const dtypeCmp: { name: string; bf16: Row; fp8: Row }[] = [];
  if (dtype === 'fp8') {
    const bfWeights = randomLayerWeights(d, 7);
    const nBf = rotationCount(weightBytes(d), { factor: options.llcFactor });
    run.workingSet('prepared layers (bf16 weights, FP8 comparison)', weightBytes(d), nBf);
    const bfLayers = Array.from({ length: nBf }, () => new DsaLayer(bfWeights, { topk: d.topk }));
    const cmpCases: [string, number[], number][] = [['decode b=1 4K', [4096], 1], ['decode b=1 128K', [131072], 1], ['prefill 1024', [1024], 1024]];
    for (const [name, acts, s1] of cmpCases) {
      const rs: [Row[], Row[]] = [[], []];
      for (let round = 0; round < options.rounds; round++) {
        rs[0].push(await measure(run, bfLayers, name, acts, s1, 'fused', options.minMs / 3, 'bf16'));
        rs[1].push(await measure(run, layers, name, acts, s1, 'fused', options.minMs / 3, 'fp8'));
      }
      const pair = { name, bf16: medianRound(rs[0], `bf16 vs fp8: ${name}`), fp8: medianRound(rs[1], `bf16 vs fp8: ${name}`) };
      dtypeCmp.push(pair);
      for (const r of [pair.bf16, pair.fp8]) {
        rows.push(r);
        print({ ...r, mode: r.weights });
      }
    }
    bfLayers.forEach((l) => l.dispose());
  }
  layers.forEach((l) => l.dispose());

  run.probe('after');
  const ceil = run.ceilings();
  for (const r of rows) {
    r.floorMs = callCost(d, r.acts, r.s1, ceil, 3, r.weights).floorMs;
    r.floorFraction = r.floorMs / r.ms;
    run.row({ ...r });
  }
  console.log(`\nceilings used (best of this run, ${threads} threads): read ${fmt(ceil.readGBs)} GB/s, bf16 dot ${fmt(ceil.bf16Gflops, 0)} GFLOP/s. ` +
    'floor = weights once at the read ceiling + indexer and attention FLOPs at the dot peak');
  for (const r of rows.filter((x) => !x.name.startsWith('chart'))) {
    console.log(`${r.name.padEnd(22)} ${(r.weights === 'fp8' ? `${r.mode}/fp8` : r.mode).padEnd(10)} median ${fmt(r.ms, 2).padStart(7)} ms  floor ${fmt(r.floorMs, 2).padStart(6)} ms  = ${fmt(r.ms / r.floorMs, 2)}x the floor (${pct(r.floorFraction)} of the ceiling)`);
  }
  const [fusedCmp, chain, chainNz] = cmp;
  console.log(`fused is ${pct(1 - fusedCmp!.ms / chain!.ms)} faster than chain with prepared weights, ${pct(1 - fusedCmp!.ms / chainNz!.ms)} faster than chain on the NZ weights as given, at b=1, 4K (medians of ${options.rounds} alternating rounds)`);
  const small = rows.filter((r) => !r.exceedsLlc);
  if (small.length > 0) console.log(`NOTE: ${small.length} measurement(s) rotated less than the LLC (marked !): their figures are cache-flattered`);
  for (const [name] of cases) {
    const r = rows.find((x) => x.name === name)!;
    run.summarize(`whole operator (fused), ${name.replace('decode ', 'decode ').replace(/ (\d+K)$/, ' at $1')}`,
      `${fmt(r.ms, 2)} ms = ${fmt(r.ms / r.floorMs, 2)}× the floor (${pct(r.floorFraction)} of the ceiling)${r.exceedsLlc ? '' : ' (working set fits in the LLC)'}`);
  }
  run.summarize('fused vs chain, decode b=1 at 4K (alternating rounds)',
    `fused ${fmt(fusedCmp!.ms, 2)} ms; chain ${fmt(chain!.ms, 2)} ms (prepared weights), ${fmt(chainNz!.ms, 2)} ms (NZ weights as given)`);
  for (const c of dtypeCmp) {
    run.summarize(`FP8 vs bf16 weights (fused, alternating rounds), ${c.name}`,
      `fp8 ${fmt(c.fp8.ms, 2)} ms, bf16 ${fmt(c.bf16.ms, 2)} ms: ${fmt(c.bf16.ms / c.fp8.ms, 2)}× faster; ` +
      `floor with weights at 1 byte ${fmt(c.fp8.floorMs, 2)} ms (${pct(c.fp8.floorFraction)} of it reached; bf16 floor ${fmt(c.bf16.floorMs, 2)} ms)`);
  }
  run.write(options.json ?? undefined);

  const curve = (b: number, key: 'ms' | 'floorMs'): [number, number][] =>
    rows.filter((r) => r.name.startsWith(`chart b=${b} `)).map((r) => [r.acts[0]!, r[key]]);
  mkdirSync(dirname(options.svg), { recursive: true });
  writeFileSync(options.svg, svgChart([
    { label: 'b = 1', color: '#1f77b4', points: curve(1, 'ms') },
    { label: 'b = 4', color: '#d62728', points: curve(4, 'ms') },
    { label: 'floor b = 1', color: '#1f77b4', points: curve(1, 'floorMs'), dashed: true },
    { label: 'floor b = 4', color: '#d62728', points: curve(4, 'floorMs'), dashed: true },
  ]));
  console.log(`wrote ${options.svg}`);
  return 0;
}
