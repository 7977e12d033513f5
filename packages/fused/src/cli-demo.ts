import { activeIsa, clone, compareBf16, DsaError, ErrorCode, machineLine, measureCeilings, Rng, toFloat32, type Bf16Tensor, type I32Tensor } from '@dsa/tensor-core';
import { msStats, stats } from '@dsa/tensor-core/bench';
import { PagedCacheManager } from './cache-manager.js';
import { openCheckpoint, type Checkpoint } from './checkpoint.js';
import { fmt, intFlag, pct, presetFlag, threadsFlag, type CliValues } from './cli-options.js';
import type { LayerWeights } from './inputs.js';
import { DsaLayer, type LayerTimes } from './layer.js';
import {
  callCost, DEEPSEEK_V32, fillHistory, randomFp8LayerWeights, randomLayerWeights, randomTokens, uniformBf16, weightBytes, type ModelDims,
  type WeightDtype,
} from './model.js';
import { presets, type SparseAttentionOptions } from './presets.js';
import { Progress } from './progress.js';

const STAGES = ['projections', 'mlaProlog', 'indexerProlog', 'lightningIndexer', 'sparseFlashAttention'] as const;

/** Where the demo's layer comes from: seeded random weights, or a checkpoint's layer. */
interface LayerSource {
  d: ModelDims;
  /** bf16, or the checkpoint's FP8 form (kept FP8 by the kernels). */
  dtype: WeightDtype;
  title: string;
  options: SparseAttentionOptions;
  weights(): Promise<LayerWeights>;
  /** x, sin, cos for the s1 new tokens of each sequence (positions from actSeqs). */
  tokens(b: number, s1: number, actSeqs: I32Tensor, rng: Rng): { x: Bf16Tensor; sin: Bf16Tensor; cos: Bf16Tensor };
  close(): Promise<void>;
}

function randomSource(values: CliValues, seed: number, dtype: WeightDtype): LayerSource {
  const d = DEEPSEEK_V32;
  const presetName = presetFlag(values);
  return {
    d,
    dtype,
    title: `DeepSeek-V3.2 layer with seeded random ${dtype === 'fp8' ? 'FP8 (block-scaled e4m3) ' : ''}weights, preset ${presetName}`,
    options: presets[presetName],
    weights: async () => {
      const wp = new Progress('weights ', dtype === 'fp8' ? 6 : 11);
      return dtype === 'fp8' ? randomFp8LayerWeights(d, seed, (i) => wp.update(i)) : randomLayerWeights(d, seed, (i) => wp.update(i));
    },
    tokens: (b, s1, _act, rng) => randomTokens(d, b, s1, rng),
    close: async () => undefined,
  };
}

async function checkpointSource(values: CliValues, dir: string, dtype: WeightDtype): Promise<LayerSource> {
  if (values.preset !== undefined) throw new DsaError(ErrorCode.ARGUMENT, '--preset: not used with --checkpoint (the options come from the checkpoint\'s config.json)', 'preset');
  const ckpt: Checkpoint = await openCheckpoint(dir);
  try {
    const layer = intFlag(values, 'layer', 0, 0, ckpt.layerCount - 1);
    const c = ckpt.config;
    const d: ModelDims = {
      h: c.hiddenSize, qLora: c.qLoraRank, n: c.numAttentionHeads, qkNope: c.qkNopeHeadDim, kvLora: c.kvLoraRank, rope: c.qkRopeHeadDim,
      idxHeads: c.indexNHeads, idxDim: c.indexHeadDim, topk: c.indexTopk, blockSize: 128,
    };
    return {
      d,
      dtype,
      title: `layer ${layer} of ${dir}, ${dtype} weights (random token embeddings as x, YaRN RoPE tables at each token's position), options from its config.json`,
      options: ckpt.options,
      weights: async () => {
        const lp = new Progress('weights ', 100, '%');
        const t0 = performance.now();
        const onProgress = (p: { done: number; total: number }): void => lp.update(Math.floor((100 * p.done) / p.total));
        const w: LayerWeights = dtype === 'fp8'
          ? await ckpt.layerWeights(layer, { dtype: 'float8_e4m3fn', onProgress })
          : await ckpt.layerWeights(layer, { onProgress });
        lp.update(100);
        console.log(`  loaded layer ${layer} from ${ckpt.files.length} shard file(s) in ${fmt((performance.now() - t0) / 1e3, 2)} s`);
        return w;
      },
      tokens: (b, s1, act, rng) => {
        const positions = Int32Array.from({ length: b * s1 }, (_, t) => act.data[Math.floor(t / s1)]! - s1 + (t % s1));
        return { x: uniformBf16(rng, [b, s1, d.h], -1, 1), ...ckpt.rope({ shape: [b, s1], data: positions }) };
      },
      close: () => ckpt.close(),
    };
  } catch (e) {
    await ckpt.close();
    throw e;
  }
}

/** `dsa demo`: a DeepSeek-V3.2-sized layer, prefill with a progress bar, decode steps, a chain check. */
export async function runDemo(values: CliValues): Promise<number> {
  const dir = values.checkpoint;
  if (dir !== undefined && (typeof dir !== 'string' || dir === '')) throw new DsaError(ErrorCode.ARGUMENT, '--checkpoint: expected a checkpoint folder', 'checkpoint');
  if (dir === undefined && values.layer !== undefined) throw new DsaError(ErrorCode.ARGUMENT, '--layer: needs --checkpoint', 'layer');
  const w = (values.weights as string | undefined) ?? 'bf16';
  if (w !== 'bf16' && w !== 'fp8') throw new DsaError(ErrorCode.ARGUMENT, `--weights: expected bf16 or fp8, got ${JSON.stringify(w)}`, 'weights');
  const source = dir === undefined ? randomSource(values, intFlag(values, 'seed', 1, 0, 2 ** 31), w) : await checkpointSource(values, dir, w);
  try {
    return await demo(values, source);
  } finally {
    await source.close();
  }
}

async function demo(values: CliValues, source: LayerSource): Promise<number> {
  const d = source.d;
  const batch = intFlag(values, 'batch', 2, 1, 128);
  const context = intFlag(values, 'context', 32768, 2, 1 << 20);
  const prefill = intFlag(values, 'prefill', Math.min(1024, context), 1, context);
  const chunk = intFlag(values, 'chunk', 512, 1, 1 << 16);
  const steps = intFlag(values, 'steps', 16, 1, 100000);
  const seed = intFlag(values, 'seed', 1, 0, 2 ** 31);
  const threads = threadsFlag(values);

  console.log(`DSA demo: ${source.title}`);
  console.log(`  hidden ${d.h}, ${d.n} heads, q_lora ${d.qLora}, kv_lora ${d.kvLora}, rope ${d.rope}, indexer ${d.idxHeads}x${d.idxDim}, topk ${d.topk}, block ${d.blockSize}`);
  console.log(`batch ${batch}, context ${context} (${context - prefill} tokens of random history + ${prefill} prefilled), ${steps} decode steps, ${threads} threads, ISA ${activeIsa()}`);

  console.log(`machine: ${machineLine()}`);
  console.log('measuring this machine\'s ceilings...');
  const ceil = measureCeilings(threads);
  console.log(`  streaming read ${fmt(ceil.readGBs)} GB/s, bf16 dot peak ${fmt(ceil.bf16Gflops, 0)} GFLOP/s`);

  const weights = await source.weights();
  const layer = new DsaLayer(weights, { ...source.options });
  console.log(`  ${fmt(weightBytes(d, source.dtype) / 1e6)} MB of ${source.dtype === 'fp8' ? 'FP8 (+ scales; wIdxProj bf16)' : 'bf16'} weights`);

  const blocksPerSeq = Math.ceil((context + steps) / d.blockSize);
  const cache = new PagedCacheManager({ numBlocks: batch * blocksPerSeq, blockSize: d.blockSize, kvLora: d.kvLora, rope: d.rope, indexDim: d.idxDim, maxBlocksPerSeq: blocksPerSeq });
  const seqs = Array.from({ length: batch }, () => cache.admit());
  seqs.forEach((s, i) => fillHistory(cache, s, context - prefill, seed + 17 * i));
  console.log(`  caches: ${fmt(Object.values(cache.tensors()).reduce((a, t) => a + t.data.byteLength, 0) / 1e6)} MB in ${batch * blocksPerSeq} blocks`);

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
    await layer.forwardAsync({ ...source.tokens(batch, s1, plan.actSeqs, rng), ...plan, ...cache.tensors() });
    prefillMs += performance.now() - t0;
    const cost = callCost(d, Array.from(plan.actSeqs.data), s1, ceil, 3, source.dtype);
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
    const inputs = { ...source.tokens(batch, 1, plan.actSeqs, rng), ...plan, ...cache.tensors() };
    const last = step === steps - 1;
    const snapshot = last ? Object.fromEntries(Object.entries(cache.tensors()).map(([k, t]) => [k, clone(t)])) : undefined;
    const t0 = performance.now();
    const r = layer.forward(inputs, { returnIndices: last });
    decodeMs += performance.now() - t0;
    stepSeconds.push((performance.now() - t0) / 1e3);
    floorMs += callCost(d, Array.from(plan.actSeqs.data), 1, ceil, 3, source.dtype).floorMs;
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
      const now = cache.tensors() as unknown as Record<string, { data: ArrayLike<number> }>;
      const cachesEqual = Object.entries(snapshot).every(([k, t]) => Array.prototype.every.call(t.data, (v: number, i: number) => v === now[k]!.data[i]));
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
