#!/usr/bin/env node
// The `dsa` command: `dsa demo` (the README's main job), `dsa bench`, `dsa check <folder>`,
// `dsa check-checkpoint <folder>`.
import { parseArgs } from 'node:util';
import { DsaError, ErrorCode, isDsaError } from '@dsa/tensor-core';
import { runBench } from './cli-bench.js';
import { runCacheBench } from './cli-bench-cache.js';
import { runCheck } from './cli-check.js';
import { runCheckCheckpoint } from './cli-check-checkpoint.js';
import { runDemo } from './cli-demo.js';
import { versions } from './versions.js';

const HELP = `dsa — DeepSeek-V3.2 sparse attention (DSA) on this machine

  dsa --version
      This package's version and the kernel versions inside (fused addon, stage packages).

  dsa demo  [--batch 2] [--context 32768] [--prefill 1024] [--chunk 512] [--steps 16]
            [--threads N] [--preset pto|deepseekV32] [--seed 1]
      Build a DeepSeek-V3.2-sized layer (hidden 7168, 128 heads, topk 2048, block 128) with seeded
      random weights; give each sequence (context − prefill) tokens of random cache history, prefill
      the last --prefill tokens through the operator in --chunk chunks, then run --steps decode steps.
      Prints per-stage times, tokens/s and the fraction of this machine's ceilings, and checks one
      decode step against the chained stages.

  dsa demo ... --weights fp8
      The same with random FP8 e4m3 weights with 128x128 block scales (the checkpoint's form),
      kept FP8 by the kernels (half the weight bytes per decode step).

  dsa demo --checkpoint DIR [--layer 0] [--weights bf16|fp8] [same flags, no --preset]
      The same on layer L's real weights from a DeepSeek-V3.2 checkpoint folder (config.json +
      safetensors), with its options (softmax scale, eps, top-k) and YaRN RoPE tables from config.json;
      x is random token embeddings. --weights fp8 loads the six FP8 weights as stored (no
      dequantization) and runs them as FP8.

  dsa bench [--threads N] [--quick] [--weights bf16|fp8] [--json bench-results/fused.json] [--svg bench-results/decode.svg]
      The whole operator at DeepSeek-V3.2 size: decode b=1 at 4K/32K/128K, b=4 at
      [768, 4097, 8192, 131071], b=32 at 8K, MTP s1=2; fused vs chain; a chart of time per decode
      step against context (4K..128K) for b = 1 and 4. Calls rotate over prepared layers, each with
      its own caches, until the bytes they read exceed 2x the last-level cache (--quick: 1.25x,
      DSA_BENCH_LLC_FACTOR to change). Medians with min/max next to the floor from the ceilings
      measured in the same run; the machine, options and working sets go into the JSON.
      --weights fp8: the layers hold random FP8 e4m3 weights with random 128x128 block scales (the
      checkpoint's form, kept FP8 by the kernels), and bf16 and FP8 layers are compared in
      alternating rounds at decode b=1 4K and 128K and a 1024-token prefill.

  dsa bench --cache fp8 [--threads N] [--quick] [--json bench-results/fused-cache.json]
      FP8 paged caches (656 B latent + 132 B index key per token) against bf16 caches (1408 B):
      decode b=1 at 128K and b=4 mixed, alternating rounds, medians; indexer and attention stage times.

  dsa check <folder> [--mode fused|chain]
      Run the operator on a folder in the shared/golden format and print the spec's accuracy
      measures per output (relative L2, the Ascend isclose rule, top-k agreement).

  dsa check-checkpoint DIR [--layer L] [--dtype bf16|fp8]
      Validate a checkpoint download: print its settings, load every layer once (or layer L) and
      report per layer the stored dtypes, the load time and any damage (exit code 1 if any).
`;

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      batch: { type: 'string' }, context: { type: 'string' }, prefill: { type: 'string' }, chunk: { type: 'string' },
      steps: { type: 'string' }, threads: { type: 'string' }, preset: { type: 'string' }, seed: { type: 'string' },
      json: { type: 'string' }, svg: { type: 'string' }, quick: { type: 'boolean' }, mode: { type: 'string' },
      checkpoint: { type: 'string' }, layer: { type: 'string' }, dtype: { type: 'string' }, weights: { type: 'string' },
      cache: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (command === undefined || command === 'help' || command === '--help' || command === '-h' || values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (command === '--version' || command === 'version') {
    const v = versions();
    const lines = [`@dsa/fused ${v.fused} (@dsa/tensor-core ${v.tensorCore})`];
    for (const [name, version] of Object.entries(v.stages)) lines.push(`  ${name} ${version} (fused kernel ${v.fusedKernels[name] ?? 'missing'})`);
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  }
  if (command === 'demo') return runDemo(values);
  if (command === 'bench' && values.cache !== undefined) {
    if (values.cache !== 'fp8') throw new DsaError(ErrorCode.ARGUMENT, `--cache: expected fp8, got ${JSON.stringify(values.cache)}`, 'cache');
    return runCacheBench(values);
  }
  if (command === 'bench') return runBench(values);
  if (command === 'check') return runCheck(positionals[0], values);
  if (command === 'check-checkpoint') return runCheckCheckpoint(positionals[0], values);
  process.stderr.write(`dsa: unknown command ${JSON.stringify(command)}\n\n${HELP}`);
  return 2;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (isDsaError(e)) process.stderr.write(`dsa: ${(e as DsaError).code}: ${(e as Error).message}\n`);
    else process.stderr.write(`dsa: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
