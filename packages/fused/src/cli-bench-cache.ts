import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { activeIsa, measureCeilings, Rng, type CacheDtype } from '@dsa/tensor-core';
import { PagedCacheManager } from './cache-manager.js';
import { fmt, pct, threadsFlag, type CliValues } from './cli-options.js';
import { DsaLayer } from './layer.js';
import { callCost, DEEPSEEK_V32, fillHistory, randomLayerWeights, randomTokens } from './model.js';
import { Progress } from './progress.js';

const DTYPES: CacheDtype[] = ['bfloat16', 'float8_e4m3fn'];

interface Timed {
  ms: number;
  indexer: number;
  attention: number;
}

/**
 * `dsa bench --cache fp8`: the FP8 paged caches against the bf16 ones at DeepSeek-V3.2 size, decode
 * b = 1 at 128K and b = 4 mixed, fused mode. Both caches are built once per case (random history);
 * the two are then timed in alternating rounds so drifts of a shared machine hit both alike, and the
 * medians are reported with the indexer and attention stage times and the cache bytes per token.
 */
export async function runCacheBench(values: CliValues): Promise<number> {
  const threads = threadsFlag(values);
  const quick = values.quick === true;
  const jsonPath = (values.json as string | undefined) ?? 'bench-results/fused-cache.json';
  const d = DEEPSEEK_V32;
  console.log(`dsa bench --cache fp8: ${threads} threads, ISA ${activeIsa()}`);
  const ceil = measureCeilings(threads);
  console.log(`ceilings (same run): streaming read ${fmt(ceil.readGBs)} GB/s, bf16 dot peak ${fmt(ceil.bf16Gflops, 0)} GFLOP/s`);
  const wp = new Progress('weights ', 11);
  const weights = randomLayerWeights(d, 7, (i) => wp.update(i));
  const layers = Array.from({ length: 2 }, () => new DsaLayer(weights, { topk: d.topk }));
  const cases: [string, number[]][] = [
    ['decode b=1 128K', [131072]],
    ['decode b=4 mixed', [768, 4097, 8192, 131071]],
  ];
  const rounds = quick ? 3 : 7;
  const rows: Record<string, unknown>[] = [];
  console.log(`\n${'case'.padEnd(18)} ${'cache'.padEnd(14)} ${'B/token'.padStart(8)} ${'ms'.padStart(8)} ${'floor'.padStart(7)} ${'indexer'.padStart(8)} ${'attention'.padStart(9)}`);
  for (const [name, acts] of cases) {
    const steps = DTYPES.map((dtype) => {
      const blocksPerSeq = Math.ceil(acts.reduce((a, b) => Math.max(a, b), 0) / d.blockSize);
      const numBlocks = acts.reduce((s, a) => s + Math.ceil(a / d.blockSize), 0);
      const cache = new PagedCacheManager({ numBlocks, blockSize: d.blockSize, kvLora: d.kvLora, rope: d.rope, indexDim: d.idxDim, maxBlocksPerSeq: blocksPerSeq, dtype });
      const seqs = acts.map((a, i) => {
        const s = cache.admit();
        fillHistory(cache, s, a - 1, 1000 + i);
        return s;
      });
      const inputs = { ...randomTokens(d, acts.length, 1, new Rng(5)), ...cache.plan(seqs, 1), ...cache.tensors() };
      for (const l of layers) l.forward(inputs);
      return { dtype, cache, inputs };
    });
    const samples: Timed[][] = DTYPES.map(() => []);
    for (let r = 0; r < rounds; r++) {
      steps.forEach((s, i) => {
        // The same token is rewritten on every call: each call is one full decode step.
        const t: Timed[] = [];
        for (let c = 0; c < 3; c++) {
          const layer = layers[c % layers.length]!;
          const t0 = performance.now();
          layer.forward(s.inputs);
          t.push({ ms: performance.now() - t0, indexer: layer.lastTimes.lightningIndexer ?? 0, attention: layer.lastTimes.sparseFlashAttention ?? 0 });
        }
        samples[i]!.push(median(t));
      });
    }
    const floorMs = callCost(d, acts, 1, ceil).floorMs;
    const med = samples.map(median);
    steps.forEach((s, i) => {
      const m = med[i]!;
      console.log(`${name.padEnd(18)} ${s.dtype.padEnd(14)} ${String(s.cache.bytesPerToken).padStart(8)} ${fmt(m.ms, 2).padStart(8)} ${fmt(floorMs, 2).padStart(7)} ${fmt(m.indexer, 2).padStart(8)} ${fmt(m.attention, 2).padStart(9)}`);
      rows.push({ name, acts, cache: s.dtype, bytesPerToken: s.cache.bytesPerToken, ...m, floorMs });
    });
    console.log(`${name}: FP8 caches ${pct(med[1]!.ms / med[0]!.ms)} of the bf16 time (medians of ${rounds} alternating rounds); indexer ${fmt(med[1]!.indexer, 2)} vs ${fmt(med[0]!.indexer, 2)} ms`);
  }
  layers.forEach((l) => l.dispose());
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify({ threads, isa: activeIsa(), ceilings: ceil, rounds, rows }, null, 2));
  console.log(`wrote ${jsonPath}`);
  return 0;
}

/** The sample of median total time. */
function median(t: Timed[]): Timed {
  return [...t].sort((a, b) => a.ms - b.ms)[t.length >> 1]!;
}
