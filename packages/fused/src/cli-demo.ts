import { activeIsa, clone, compareBf16, machineLine, measureCeilings, Rng, toFloat32 } from '@dsa/tensor-core';
import { msStats, stats } from '@dsa/tensor-core/bench';
import { PagedCacheManager } from './cache-manager.js';
import { fmt, intFlag, pct, presetFlag, threadsFlag, type CliValues } from './cli-options.js';
import { DsaLayer, type LayerTimes } from './layer.js';
import { callCost, DEEPSEEK_V32, fillHistory, randomLayerWeights, randomTokens, weightBytes } from './model.js';
import { presets } from './presets.js';
import { Progress } from './progress.js';

const STAGES = ['projections', 'mlaProlog', 'indexerProlog', 'lightningIndexer', 'sparseFlashAttention'] as const;

/** `dsa demo`: a DeepSeek-V3.2-sized layer, prefill with a progress bar, decode steps, a chain check. */
export async function runDemo(values: CliValues): Promise<number> {
  const d = DEEPSEEK_V32;
  const batch = intFlag(values, 'batch', 2, 1, 128);
  const context = intFlag(values, 'context', 32768, 2, 1 << 20);
  const prefill = intFlag(values, 'prefill', Math.min(1024, context), 1, context);
  const chunk = intFlag(values, 'chunk', 512, 1, 1 << 16);
  const steps = intFlag(values, 'steps', 16, 1, 100000);
  const seed = intFlag(values, 'seed', 1, 0, 2 ** 31);
  const presetName = presetFlag(values);
  const threads = threadsFlag(values);
  const preset = presets[presetName];

  console.log(`DSA demo: DeepSeek-V3.2 layer (hidden ${d.h}, ${d.n} heads, q_lora ${d.qLora}, kv_lora ${d.kvLora}, rope ${d.rope}, ` +
    `indexer ${d.idxHeads}x${d.idxDim}, topk ${d.topk}, block ${d.blockSize}), preset ${presetName}`);
  console.log(`batch ${batch}, context ${context} (${context - prefill} tokens of random history + ${prefill} prefilled), ${steps} decode steps, ${threads} threads, ISA ${activeIsa()}`);

  console.log(`machine: ${machineLine()}`);
  console.log('measuring this machine\'s ceilings...');
  const ceil = measureCeilings(threads);
  console.log(`  streaming read ${fmt(ceil.readGBs)} GB/s, bf16 dot peak ${fmt(ceil.bf16Gflops, 0)} GFLOP/s`);

  const wp = new Progress('weights ', 11);
  const weights = randomLayerWeights(d, seed, (i) => wp.update(i));
  const layer = new DsaLayer(weights, { ...preset });
  console.log(`  ${fmt(weightBytes(d) / 1e6)} MB of bf16 weights (NZ)`);

  const blocksPerSeq = Math.ceil((context + steps) / d.blockSize);
  const cache = new PagedCacheManager({ numBlocks: batch * blocksPerSeq, blockSize: d.blockSize, kvLora: d.kvLora, rope: d.rope, indexDim: d.idxDim, maxBlocksPerSeq: blocksPerSeq });
  const seqs = Array.from({ length: batch }, () => cache.admit());
  seqs.forEach((s, i) => fillHistory(cache, s, context - prefill, seed + 17 * i));
  console.log(`  caches: ${fmt((cache.kvCache.data.byteLength + cache.krCache.data.byteLength + cache.indexKCache.data.byteLength) / 1e6)} MB in ${batch * blocksPerSeq} blocks`);

  const rng = new Rng(seed + 1);
  // Prefill: the last `prefill` tokens of every sequence go through the operator in chunks.
  const pp = new Progress('prefill ', prefill, ' tokens');
  let done = 0;
  let prefillMs = 0;
  let prefillFlops = 0;
  while (done < prefill) {
    const s1 = Math.min(chunk, prefill - done);
    const plan = cache.plan(seqs, s1);
    const t0 = performance.now();
    await layer.forwardAsync({ ...randomTokens(d, batch, s1, rng), ...plan, kvCache: cache.kvCache, krCache: cache.krCache, indexKCache: cache.indexKCache });
    prefillMs += performance.now() - t0;
    const cost = callCost(d, Array.from(plan.actSeqs.data), s1, ceil);
    prefillFlops += cost.prologFlops + cost.indexerFlops + cost.attentionFlops;
    done += s1;
    pp.update(done, `${fmt((done * batch) / (prefillMs / 1e3), 0)} tok/s`);
  }

  // Decode steps.
  const sums: Record<string, number> = {};
  let decodeMs = 0;
  const stepSeconds: number[] = [];
  let floorMs = 0;
  let check = '';
  const dp = new Progress('decode  ', steps, ' steps');
  for (let step = 0; step < steps; step++) {
    const plan = cache.plan(seqs, 1);
    const inputs = { ...randomTokens(d, batch, 1, rng), ...plan, kvCache: cache.kvCache, krCache: cache.krCache, indexKCache: cache.indexKCache };
    const last = step === steps - 1;
    const snapshot = last ? { kvCache: clone(cache.kvCache), krCache: clone(cache.krCache), indexKCache: clone(cache.indexKCache) } : undefined;
    const t0 = performance.now();
    const r = layer.forward(inputs, { returnIndices: last });
    decodeMs += performance.now() - t0;
    stepSeconds.push((performance.now() - t0) / 1e3);
    floorMs += callCost(d, Array.from(plan.actSeqs.data), 1, ceil).floorMs;
    for (const k of STAGES) sums[k] = (sums[k] ?? 0) + ((layer.lastTimes as LayerTimes)[k] ?? 0);
    dp.update(step + 1);
    if (snapshot) {
      const c = layer.forward({ ...inputs, ...snapshot }, { mode: 'chain', returnIndices: true });
      const cmp = compareBf16(toFloat32(r.out), toFloat32(c.out));
      let sameRows = 0;
      const topk = d.topk;
      for (let row = 0; row < batch; row++) {
        const a = new Set(r.indices!.data.subarray(row * topk, (row + 1) * topk));
        const b = c.indices!.data.subarray(row * topk, (row + 1) * topk);
        if (b.every((v) => a.has(v))) sameRows++;
      }
      const cachesEqual = (['kvCache', 'krCache', 'indexKCache'] as const).every((k) => snapshot[k].data.every((v, i) => v === cache[k].data[i]));
      check = `fused vs chain on the last step: out relative L2 ${cmp.relL2.toExponential(2)}, isclose ${pct(cmp.close)}, ` +
        `identical top-k sets ${sameRows}/${batch} rows, caches ${cachesEqual ? 'byte-identical' : 'DIFFERENT'} → ${cmp.pass && cachesEqual ? 'PASS' : 'FAIL'}`;
      if (!(cmp.pass && cachesEqual)) process.exitCode = 1;
    }
  }

  const per = decodeMs / steps;
  console.log(`\nprefill: ${prefill * batch} tokens in ${fmt(prefillMs / 1e3, 2)} s = ${fmt((prefill * batch) / (prefillMs / 1e3), 0)} tokens/s, ` +
    `${fmt(prefillFlops / (prefillMs / 1e3) / 1e9, 0)} GFLOP/s (${pct(prefillFlops / (prefillMs / 1e3) / 1e9 / ceil.bf16Gflops)} of the bf16 dot peak)`);
  console.log(`decode: ${fmt(per, 2)} ms per step (mean; median ${msStats(stats(stepSeconds))}) for ${batch} sequences at ~${context} keys = ${fmt((batch * 1000) / per, 1)} tokens/s`);
  console.log(`  floor (weights once at ${fmt(ceil.readGBs)} GB/s + indexer/attention FLOPs at ${fmt(ceil.bf16Gflops, 0)} GFLOP/s): ${fmt(floorMs / steps, 2)} ms → ${fmt((floorMs / decodeMs), 2)} of the ceiling`);
  console.log('  (one layer: its weights may stay in the last-level cache between steps; `dsa bench` rotates layers and caches beyond it)');
  console.log('  per stage (ms per step):');
  for (const k of STAGES) console.log(`    ${k.padEnd(22)} ${fmt((sums[k] ?? 0) / steps, 2).padStart(8)}`);
  console.log(check);
  layer.dispose();
  return process.exitCode === 1 ? 1 : 0;
}
