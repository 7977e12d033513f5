import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { activeIsa, describeMachine, measureCeilings, Rng, type CacheDtype } from '@dsa/tensor-core';
import { rotationCount } from '@dsa/tensor-core/bench';
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
 * b = 1 at 128K and b = 4 mixed, fused mode. Each case's caches are built once per dtype (random
 * history) and copied until the copies exceed DSA_BENCH_LLC_FACTOR (2; quick 1.25) times the
 * last-level cache: consecutive calls read different copies, as consecutive layers of the model read
 * different caches, so neither form is timed from the cache. The two forms are timed in alternating
 * rounds so drifts of a shared machine hit both alike; the medians are reported with the indexer and
 * attention stage times and the cache bytes per token. Each case runs twice: with each sequence's
 * blocks in address order (a cache filled by one sequence at a time), then with the blocks of every
 * copy moved to shuffled places (a pool shared by many sequences, where a sequence's blocks lie
 * anywhere; the hardware prefetcher no longer follows the keys from block to block).
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
  const llcFactor = Number(process.env.DSA_BENCH_LLC_FACTOR ?? (quick ? 1.25 : 2));
  const llcBytes = describeMachine().llcBytes;
  const rows: Record<string, unknown>[] = [];
  console.log(`\n${'case, blocks'.padEnd(28)} ${'cache'.padEnd(14)} ${'B/token'.padStart(8)} ${'ms'.padStart(8)} ${'floor'.padStart(7)} ${'indexer'.padStart(8)} ${'attention'.padStart(9)}   caches rotated (${llcFactor}x the ${fmt(llcBytes / 2 ** 20, 0)} MiB LLC)`);
  for (const [name, acts] of cases) {
    const steps = DTYPES.map((dtype) => {
      const blocksPerSeq = Math.ceil(acts.reduce((a, b) => Math.max(a, b), 0) / d.blockSize);
      const numBlocks = acts.reduce((s, a) => s + Math.ceil(a / d.blockSize), 0);
      const make = () => new PagedCacheManager({ numBlocks, blockSize: d.blockSize, kvLora: d.kvLora, rope: d.rope, indexDim: d.idxDim, maxBlocksPerSeq: blocksPerSeq, dtype });
      // Every copy admits and extends its sequences in the same order, so all get the same block tables.
      const build = (fill: boolean) => {
        const cache = make();
        const seqs = acts.map((a, i) => {
          const s = cache.admit();
          if (fill) fillHistory(cache, s, a - 1, 1000 + i);
          else if (a > 1) cache.plan([s], a - 1);
          return s;
        });
        return { cache, seqs };
      };
      const { cache: first, seqs } = build(true);
      const cacheBytes = Object.values(first.tensors()).reduce((n, t) => n + t.data.byteLength, 0);
      const caches = [first];
      for (let c = 1; c < rotationCount(cacheBytes, { factor: llcFactor, llcBytes }); c++) {
        const copy = build(false).cache;
        const from = Object.values(first.tensors());
        Object.values(copy.tensors()).forEach((t, k) => t.data.set(from[k]!.data as never));
        caches.push(copy);
      }
      const tokens = randomTokens(d, acts.length, 1, new Rng(5));
      const inputs = caches.map((c) => ({ ...tokens, ...c.plan(seqs, 1), ...c.tensors() }));
      for (const l of layers) l.forward(inputs[0]!);
      return { dtype, bytesPerToken: first.bytesPerToken, cacheBytes, inputs };
    });
    const floorMs = callCost(d, acts, 1, ceil).floorMs;
    for (const blocks of ['in order', 'shuffled'] as const) {
      if (blocks === 'shuffled') {
        const numBlocks = steps[0]!.inputs[0]!.kvCache.shape[0]!;
        const perm = new Rng(99).shuffle(Array.from({ length: numBlocks }, (_, b) => b));
        for (const s of steps) {
          const before = layers[0]!.forward(s.inputs[0]!).out.data.slice();
          s.inputs = s.inputs.map((i) => shuffleBlocks(i, perm, d.blockSize));
          // Same data, other addresses: the step's output must not change by a bit.
          const after = layers[0]!.forward(s.inputs[0]!).out.data;
          if (after.some((v, k) => v !== before[k])) throw new Error(`${name} (${s.dtype}): shuffling the cache blocks changed the output`);
        }
      }
      const samples: Timed[][] = DTYPES.map(() => []);
      let call = 0;
      for (let r = 0; r < rounds; r++) {
        steps.forEach((s, i) => {
          // The same token is rewritten on every call: each call is one full decode step.
          const t: Timed[] = [];
          for (let c = 0; c < Math.max(3, s.inputs.length); c++, call++) {
            const layer = layers[call % layers.length]!;
            const t0 = performance.now();
            layer.forward(s.inputs[call % s.inputs.length]!);
            t.push({ ms: performance.now() - t0, indexer: layer.lastTimes.lightningIndexer ?? 0, attention: layer.lastTimes.sparseFlashAttention ?? 0 });
          }
          samples[i]!.push(median(t));
        });
      }
      const med = samples.map(median);
      const label = `${name}, ${blocks}`;
      steps.forEach((s, i) => {
        const m = med[i]!;
        const copies = s.inputs.length, rotatedMB = (copies * s.cacheBytes) / 1e6;
        console.log(`${label.padEnd(28)} ${s.dtype.padEnd(14)} ${String(s.bytesPerToken).padStart(8)} ${fmt(m.ms, 2).padStart(8)} ${fmt(floorMs, 2).padStart(7)} ${fmt(m.indexer, 2).padStart(8)} ${fmt(m.attention, 2).padStart(9)}   ${copies} x ${fmt(s.cacheBytes / 1e6, 0)} MB`);
        rows.push({ name, blocks, acts, cache: s.dtype, bytesPerToken: s.bytesPerToken, ...m, floorMs, copies, cacheMB: s.cacheBytes / 1e6, rotatedMB, llcBytes, llcFactor });
      });
      console.log(`${label}: FP8 caches ${pct(med[1]!.ms / med[0]!.ms)} of the bf16 time (medians of ${rounds} alternating rounds); indexer ${fmt(med[1]!.indexer, 2)} vs ${fmt(med[0]!.indexer, 2)} ms`);
    }
  }
  layers.forEach((l) => l.dispose());
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify({ threads, isa: activeIsa(), machine: describeMachine(), ceilings: ceil, rounds, llcFactor, rows }, null, 2));
  console.log(`wrote ${jsonPath}`);
  return 0;
}

type StepInput = ReturnType<PagedCacheManager['tensors']> & ReturnType<PagedCacheManager['plan']> & ReturnType<typeof randomTokens>;

/**
 * The same step with every cache block b moved to block perm[b]: the cache tensors are permuted in
 * place (blocks are their leading dimension) and the step gets a remapped block table and cacheIndex.
 */
function shuffleBlocks(step: StepInput, perm: number[], blockSize: number): StepInput {
  for (const t of [step.kvCache, step.krCache, step.indexKCache]) {
    if (t === undefined) continue;
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);  // moved as bytes
    const stride = bytes.length / perm.length;
    const moved = new Uint8Array(bytes.length);
    perm.forEach((to, from) => moved.set(bytes.subarray(from * stride, (from + 1) * stride), to * stride));
    bytes.set(moved);
  }
  const remap = (v: number) => (v < 0 ? v : perm[Math.floor(v / blockSize)]! * blockSize + (v % blockSize));
  return {
    ...step,
    blockTable: { ...step.blockTable, data: step.blockTable.data.map((b) => (b < 0 ? b : perm[b]!)) },
    cacheIndex: { ...step.cacheIndex, data: step.cacheIndex.data.map(remap) },
  };
}

/** The sample of median total time. */
function median(t: Timed[]): Timed {
  return [...t].sort((a, b) => a.ms - b.ms)[t.length >> 1]!;
}
