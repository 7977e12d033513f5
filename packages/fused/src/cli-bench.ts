import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { activeIsa, measureCeilings, Rng, type Ceilings } from '@dsa/tensor-core';
import { PagedCacheManager } from './cache-manager.js';
import { fmt, pct, threadsFlag, type CliValues } from './cli-options.js';
import { sparseAttention } from './index.js';
import type { LayerWeights, StepInputs } from './inputs.js';
import { DsaLayer, type LayerTimes } from './layer.js';
import { callCost, DEEPSEEK_V32, fillHistory, randomLayerWeights, randomTokens } from './model.js';
import { Progress } from './progress.js';

const STAGES = ['projections', 'mlaProlog', 'indexerProlog', 'lightningIndexer', 'sparseFlashAttention'] as const;
const CHAIN_STAGES = ['mlaProlog', 'indexerProlog', 'lightningIndexer', 'sparseFlashAttention'] as const;

interface Row {
  name: string; b: number; s1: number; acts: number[]; mode: string;
  ms: number; floorMs: number; floorFraction: number; stages: Record<string, number>;
}

/** Something that runs one call on step inputs: a DsaLayer, or a plain call on given weights. */
interface Runner {
  forward(step: StepInputs): unknown;
  lastTimes?: LayerTimes;
}

/** One decode (or MTP) configuration: caches with random history, then timed calls over rotated runners. */
function measure(layers: Runner[], name: string, acts: number[], s1: number, mode: string, ceil: Ceilings, minMs: number): Row {
  const d = DEEPSEEK_V32;
  const blocksPerSeq = Math.ceil(Math.max(...acts) / d.blockSize);
  const numBlocks = acts.reduce((s, a) => s + Math.ceil(a / d.blockSize), 0);
  const cache = new PagedCacheManager({ numBlocks, blockSize: d.blockSize, kvLora: d.kvLora, rope: d.rope, indexDim: d.idxDim, maxBlocksPerSeq: blocksPerSeq });
  const seqs = acts.map((a, i) => {
    const s = cache.admit();
    fillHistory(cache, s, a - s1, 1000 + i);
    return s;
  });
  const plan = cache.plan(seqs, s1);
  const inputs = { ...randomTokens(d, acts.length, s1, new Rng(5)), ...plan, ...cache.tensors() };
  // The same tokens are rewritten on every call: each call is one full decode step.
  for (const l of layers) l.forward(inputs);
  const sums: Record<string, number> = {};
  let calls = 0;
  const t0 = performance.now();
  while (calls < 3 || performance.now() - t0 < minMs) {
    const layer = layers[calls % layers.length]!;
    layer.forward(inputs);
    if (layer.lastTimes) for (const k of mode === 'fused' ? STAGES : CHAIN_STAGES) sums[k] = (sums[k] ?? 0) + (layer.lastTimes[k] ?? 0);
    calls++;
  }
  const ms = (performance.now() - t0) / calls;
  const floorMs = callCost(d, acts, s1, ceil).floorMs;
  const stages = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / calls]));
  return { name, b: acts.length, s1, acts, mode, ms, floorMs, floorFraction: floorMs / ms, stages };
}

function copyWeights(w: LayerWeights): LayerWeights {
  return Object.fromEntries(Object.entries(w).map(([k, t]) => [k, { ...t, data: t.data.slice() }])) as unknown as LayerWeights;
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

/** `dsa bench`: every stage and the whole operator at DeepSeek-V3.2 size. */
export async function runBench(values: CliValues): Promise<number> {
  const threads = threadsFlag(values);
  const quick = values.quick === true;
  const jsonPath = (values.json as string | undefined) ?? 'bench-results/fused.json';
  const svgPath = (values.svg as string | undefined) ?? 'bench-results/decode.svg';
  const minMs = quick ? 300 : 1500;
  const d = DEEPSEEK_V32;
  console.log(`dsa bench: ${threads} threads, ISA ${activeIsa()}`);
  const ceil = measureCeilings(threads);
  console.log(`ceilings (same run): streaming read ${fmt(ceil.readGBs)} GB/s, bf16 dot peak ${fmt(ceil.bf16Gflops, 0)} GFLOP/s`);
  const wp = new Progress('weights ', 11);
  const weights = randomLayerWeights(d, 7, (i) => wp.update(i));
  // Four layers' worth of prepared weights (> 600 MB) rotate so the 480 MB L3 holds none of them.
  const layers = Array.from({ length: quick ? 2 : 4 }, () => new DsaLayer(weights, { topk: d.topk }));

  const cases: [string, number[], number][] = [
    ['decode b=1 4K', [4096], 1],
    ['decode b=1 32K', [32768], 1],
    ['decode b=1 128K', [131072], 1],
    ['decode b=4 mixed', [768, 4097, 8192, 131071], 1],
    ['decode b=32 8K', Array(32).fill(8192), 1],
    ['MTP s1=2 b=4 mixed', [768, 4097, 8192, 131071], 2],
  ];
  const rows: Row[] = [];
  const header = `${'case'.padEnd(20)} ${'mode'.padEnd(7)} ${'ms'.padStart(8)} ${'floor'.padStart(7)} ${'of ceil'.padStart(7)}  ${[...STAGES].map((s) => s.replace('sparseFlashAttention', 'attention').replace('lightningIndexer', 'indexer').replace('indexerProlog', 'idxProlog').padStart(10)).join(' ')}`;
  console.log(`\n${header}`);
  const print = (r: Row): void => {
    console.log(`${r.name.padEnd(20)} ${r.mode.padEnd(7)} ${fmt(r.ms, 2).padStart(8)} ${fmt(r.floorMs, 2).padStart(7)} ${pct(r.floorFraction).padStart(7)}  ` +
      STAGES.map((s) => (r.stages[s] === undefined ? '-' : fmt(r.stages[s]!, 2)).padStart(10)).join(' '));
  };
  for (const [name, acts, s1] of cases) {
    const r = measure(layers, name, acts, s1, 'fused', ceil, minMs);
    rows.push(r);
    print(r);
  }
  // Fused against the chain, once with every weight prepared (packed) like the fused layer, once on
  // the NZ weights as given (plain sparseAttention calls). Measured in alternating rounds so drifts
  // of the shared machine hit all three alike; the medians are reported.
  const chainLayers = Array.from({ length: layers.length }, () => new DsaLayer(weights, { topk: d.topk, mode: 'chain' }));
  const weightSets = Array.from({ length: layers.length }, (_, i) => (i === 0 ? weights : copyWeights(weights)));
  const plain = weightSets.map((w) => ({ forward: (step: StepInputs) => sparseAttention({ ...w, ...step }, { topk: d.topk, mode: 'chain' }) }));
  const contenders: [string, Runner[]][] = [['fused', layers], ['chain', chainLayers], ['chainNZ', plain]];
  const rounds: Row[][] = contenders.map(() => []);
  for (let round = 0; round < (quick ? 3 : 7); round++) {
    contenders.forEach(([mode, runners], i) => rounds[i]!.push(measure(runners, 'decode b=1 4K', [4096], 1, mode, ceil, minMs / 3)));
  }
  const [fusedCmp, chain, chainNz] = rounds.map((rs) => [...rs].sort((a, b) => a.ms - b.ms)[rs.length >> 1]!);
  for (const r of [fusedCmp!, chain!, chainNz!]) {
    rows.push({ ...r, name: 'fused vs chain b=1 4K' });
    print({ ...r, name: 'vs chain b=1 4K' });
  }
  chainLayers.forEach((l) => l.dispose());
  console.log(`fused is ${pct(1 - fusedCmp!.ms / chain!.ms)} faster than chain with prepared weights, ${pct(1 - fusedCmp!.ms / chainNz!.ms)} faster than chain on the NZ weights as given, at b=1, 4K (medians of alternating rounds: ${fmt(fusedCmp!.ms, 2)} vs ${fmt(chain!.ms, 2)} / ${fmt(chainNz!.ms, 2)} ms)`);
  const b1 = rows.find((r) => r.name === 'decode b=1 128K')!;
  console.log(`decode b=1 at 128K: ${fmt(b1.ms, 2)} ms = ${fmt(b1.ms / b1.floorMs, 2)}x the floor of ${fmt(b1.floorMs, 2)} ms`);

  // Time per decode step against context, b = 1 and 4.
  const contexts = quick ? [4096, 32768, 131072] : [4096, 8192, 16384, 32768, 65536, 131072];
  const curve: Record<string, [number, number][]> = { b1: [], b4: [], floor1: [], floor4: [] };
  const cp = new Progress('chart   ', contexts.length * 2, ' points');
  let n = 0;
  for (const ctx of contexts) {
    for (const b of [1, 4]) {
      const r = measure(layers, `chart b=${b} ${ctx}`, Array(b).fill(ctx), 1, 'fused', ceil, minMs / 3);
      rows.push(r);
      curve[`b${b}`]!.push([ctx, r.ms]);
      curve[`floor${b}`]!.push([ctx, r.floorMs]);
      cp.update(++n);
    }
  }
  layers.forEach((l) => l.dispose());
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify({ threads, isa: activeIsa(), ceilings: ceil, rows }, null, 2));
  mkdirSync(dirname(svgPath), { recursive: true });
  writeFileSync(svgPath, svgChart([
    { label: 'b = 1', color: '#1f77b4', points: curve.b1! },
    { label: 'b = 4', color: '#d62728', points: curve.b4! },
    { label: 'floor b = 1', color: '#1f77b4', points: curve.floor1!, dashed: true },
    { label: 'floor b = 4', color: '#d62728', points: curve.floor4!, dashed: true },
  ]));
  console.log(`wrote ${jsonPath} and ${svgPath}`);
  return 0;
}
