import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeCheckpoint, type TinyDims } from './checkpoint-writer.js';

const CLI = join(import.meta.dirname, '../dist/cli.js');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, DSA_NUM_THREADS: '2' } });
const D: TinyDims = { hidden: 96, heads: 2, qLora: 48, kvLora: 32, nope: 64, rope: 8, vHead: 64, idxHeads: 2, idxDim: 16, topk: 8, layers: 3 };
const root = mkdtempSync(join(tmpdir(), 'dsa-cli-ckpt-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
beforeAll(async () => {
  await writeCheckpoint(join(root, 'good'), D, { shards: 2 });
  await writeCheckpoint(join(root, 'bad'), D, { shards: 'single', editTensors: (t) => ((t.get('model.layers.1.self_attn.kv_b_proj.weight_scale_inv')!.data as Float32Array)[0] = Infinity) });
});

describe('dsa with a checkpoint', () => {
  it('check-checkpoint loads every layer and reports dims, dtypes and times', () => {
    const r = run('check-checkpoint', join(root, 'good'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/3 layers, 2 shard file\(s\)/);
    expect(r.stdout).toMatch(/hidden 96, 2 heads, q_lora 48, kv_lora 32/);
    expect(r.stdout).toMatch(/softmaxScale 0\.\d+/);
    for (const L of [0, 1, 2]) expect(r.stdout).toMatch(new RegExp(`layer +${L} +q_a:F8_E4M3 .*proj:BF16 .* MB bf16 in \\d+ ms +ok`));
    expect(r.stdout).toMatch(/3\/3 layers ok/);
    const fp8 = run('check-checkpoint', join(root, 'good'), '--layer', '2', '--dtype', 'fp8');
    expect(fp8.status, fp8.stderr).toBe(0);
    expect(fp8.stdout).toMatch(/layer +2 .* MB fp8 in/);
    expect(fp8.stdout).toMatch(/1\/1 layers ok/);
  });

  it('check-checkpoint names the damaged layer and tensor, goes on, and exits 1', () => {
    const r = run('check-checkpoint', join(root, 'bad'));
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/layer +0 .* ok/);
    expect(r.stdout).toMatch(/layer +1 +FAILED DSA_E_CHECKPOINT: .*model.safetensors: tensor "model.layers.1.self_attn.kv_b_proj.weight_scale_inv": scale \[0, 0\] is Infinity/);
    expect(r.stdout).toMatch(/layer +2 .* ok/);
    expect(r.stdout).toMatch(/2\/3 layers ok/);
    const missing = run('check-checkpoint', join(root, 'nothing-here'));
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/DSA_E_IO: .*config.json/);
  });

  it('demo --checkpoint runs a layer of real weights and checks fused against chain', () => {
    const r = run('demo', '--checkpoint', join(root, 'good'), '--layer', '1', '--batch', '2', '--context', '40', '--prefill', '24', '--chunk', '8', '--steps', '2');
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/DSA demo: layer 1 of .*good/);
    expect(r.stdout).toMatch(/loaded layer 1 from 2 shard file\(s\)/);
    expect(r.stdout).toMatch(/fused vs chain on the last step: .* PASS/);
    // The FP8 weights as stored, kept FP8.
    const f = run('demo', '--checkpoint', join(root, 'good'), '--layer', '2', '--weights', 'fp8', '--batch', '1', '--context', '30', '--prefill', '10', '--chunk', '5', '--steps', '2');
    expect(f.status, f.stderr + f.stdout).toBe(0);
    expect(f.stdout).toMatch(/DSA demo: layer 2 of .*good, fp8 weights/);
    expect(f.stdout).toMatch(/MB of FP8 \(\+ scales; wIdxProj bf16\) weights/);
    expect(f.stdout).toMatch(/fused vs chain on the last step: .* PASS/);
    expect(run('demo', '--weights', 'fp16').stderr).toMatch(/--weights: expected bf16 or fp8, got "fp16"/);
    expect(run('demo', '--checkpoint', join(root, 'good'), '--layer', '3').stderr).toMatch(/--layer: expected an integer in \[0, 2\]/);
    expect(run('demo', '--checkpoint', join(root, 'good'), '--preset', 'pto').stderr).toMatch(/--preset: not used with --checkpoint/);
    expect(run('demo', '--layer', '1').stderr).toMatch(/--layer: needs --checkpoint/);
    const dir = join(root, 'truncated');
    return writeCheckpoint(dir, D, { shards: 'single' }).then(() => {
      truncateSync(join(dir, 'model.safetensors'), 1000);
      const t = run('demo', '--checkpoint', dir);
      expect(t.status).toBe(1);
      expect(t.stderr).toMatch(/DSA_E_CHECKPOINT: .*model.safetensors/);
    });
  });
});
