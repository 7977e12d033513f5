// Damaged or wrong checkpoints: every case is a DsaError with a stable code and a message naming the
// file and the tensor (or config field); never a crash, a hang or a giant allocation.
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isDsaError } from '@dsa/tensor-core';
import { openCheckpoint } from '../src/index.js';
import { writeCheckpoint, type TinyDims, type WriteOptions } from './checkpoint-writer.js';

const TINY: TinyDims = { hidden: 40, heads: 2, qLora: 24, kvLora: 20, nope: 8, rope: 4, vHead: 6, idxHeads: 2, idxDim: 8, topk: 3, layers: 1 };
const root = mkdtempSync(join(tmpdir(), 'dsa-ckpt-bad-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const P = 'model.layers.0.self_attn.';

async function make(o: WriteOptions = {}): Promise<string> {
  const dir = join(root, `c${n++}`);
  await writeCheckpoint(dir, TINY, { shards: 2, ...o });
  return dir;
}

/** The shard that holds `tensor`, per the index. */
function shardOf(dir: string, tensor: string): string {
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  return join(dir, index.weight_map[tensor]!);
}

function editIndex(dir: string, edit: (wm: Record<string, string>) => void): void {
  const path = join(dir, 'model.safetensors.index.json');
  const index = JSON.parse(readFileSync(path, 'utf8')) as { weight_map: Record<string, string> };
  edit(index.weight_map);
  writeFileSync(path, JSON.stringify(index));
}

/** Rewrite a shard's header text (the data section stays as it was). */
function editHeader(path: string, edit: (text: string) => string): void {
  const buf = readFileSync(path);
  const len = Number(buf.readBigUInt64LE(0));
  const text = Buffer.from(edit(buf.subarray(8, 8 + len).toString('utf8')), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(text.length));
  writeFileSync(path, Buffer.concat([prefix, text, buf.subarray(8 + len)]));
}

/** Open the checkpoint and load layer 0; returns the DsaError (fails the test on success or another error). */
async function failure(dir: string, layer = 0): Promise<{ code: string; message: string }> {
  try {
    const ckpt = await openCheckpoint(dir);
    try {
      await ckpt.layerWeights(layer);
    } finally {
      await ckpt.close();
    }
  } catch (e) {
    if (!isDsaError(e)) throw e;
    return e;
  }
  throw new Error('expected a DsaError');
}

describe('damaged or wrong checkpoints', () => {
  it('a tensor missing from the index', async () => {
    const dir = await make({ editTensors: (t) => t.delete(`${P}q_b_proj.weight`) });
    const e = await failure(dir);
    expect(e.code).toBe('DSA_E_CHECKPOINT');
    expect(e.message).toContain('model.safetensors.index.json');
    expect(e.message).toContain(`"${P}q_b_proj.weight" is missing`);
  });

  it('a tensor the index places in a shard that does not hold it', async () => {
    const dir = await make();
    const other = shardOf(dir, `${P}q_a_proj.weight`).endsWith('00001-of-00002.safetensors') ? 'model-00002-of-00002.safetensors' : 'model-00001-of-00002.safetensors';
    editIndex(dir, (wm) => (wm[`${P}q_a_proj.weight`] = other));
    const e = await failure(dir);
    expect(e).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining(`${other}: tensor "${P}q_a_proj.weight" is not in this shard`) });
  });

  it('a truncated shard', async () => {
    const dir = await make();
    const shard = shardOf(dir, `${P}kv_b_proj.weight`);
    truncateSync(shard, Math.floor(readFileSync(shard).length * 0.6));
    const e = await failure(dir);
    expect(e.code).toBe('DSA_E_CHECKPOINT');
    expect(e.message).toContain(shard);
    expect(e.message).toMatch(/run past the end of the data section .*truncated/);
  });

  it('a header length past the end of the file, and a huge one (no giant allocation)', async () => {
    for (const len of [100000n, (1n << 64n) - 1n]) {
      const dir = await make();
      const shard = shardOf(dir, `${P}q_a_proj.weight`);
      const buf = readFileSync(shard);
      buf.writeBigUInt64LE(len, 0);
      writeFileSync(shard, buf);
      const e = await failure(dir);
      expect(e).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining(`${shard}: header length ${len} runs past the end of the file`) });
    }
  });

  it('tensor offsets past the end of the file', async () => {
    const dir = await make();
    const shard = shardOf(dir, `${P}indexer.wq_b.weight`);
    editHeader(shard, (t) => {
      const h = JSON.parse(t) as Record<string, { data_offsets: number[] }>;
      h[`${P}indexer.wq_b.weight`]!.data_offsets[1]! += 4096;
      return JSON.stringify(h);
    });
    const e = await failure(dir);
    expect(e.message).toContain(`${shard}: tensor "${P}indexer.wq_b.weight": data_offsets`);
  });

  it('a header that is not JSON', async () => {
    const dir = await make();
    const shard = shardOf(dir, `${P}q_a_proj.weight`);
    editHeader(shard, (t) => t.trimEnd().slice(0, -3));
    expect(await failure(dir)).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining(`${shard}: the header is not valid UTF-8 JSON`) });
  });

  it('a wrong dtype: weight, scale and norm', async () => {
    const weight = await failure(await make({ editTensors: (t) => (t.get(`${P}q_a_proj.weight`)!.dtype = 'I8') }));
    expect(weight).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringMatching(/q_a_proj.weight": dtype I8 is not a weight dtype/) });
    const scale = await failure(await make({
      editTensors: (t) => {
        const s = t.get(`${P}q_b_proj.weight_scale_inv`)!;
        t.set(`${P}q_b_proj.weight_scale_inv`, { dtype: 'BF16', shape: [...s.shape, 2], data: s.data });
      },
    }));
    expect(scale.message).toMatch(/q_b_proj.weight_scale_inv": expected dtype F32, got BF16/);
    const norm = await failure(await make({ editTensors: (t) => (t.get(`${P}kv_a_layernorm.weight`)!.dtype = 'I16') }));
    expect(norm.message).toMatch(/kv_a_layernorm.weight": expected dtype BF16, F32 or F16, got I16/);
  });

  it('a wrong shape: weight (names the config dims), scale and norm', async () => {
    const weight = await failure(await make({ editTensors: (t) => (t.get(`${P}kv_a_proj_with_mqa.weight`)!.shape = [40, 24]) }));
    expect(weight).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining(`"${P}kv_a_proj_with_mqa.weight": expected shape [24, 40] ([kv_lora_rank + qk_rope, hidden_size] from config.json), got [40, 24]`) });
    const scale = await failure(await make({
      editTensors: (t) => (t.get(`${P}q_a_proj.weight_scale_inv`)!.shape = [1, 1, 1]),
    }));
    expect(scale.message).toMatch(/q_a_proj.weight_scale_inv": expected shape \[1, 1\]/);
    const norm = await failure(await make({ editTensors: (t) => (t.get(`${P}indexer.k_norm.bias`)!.shape = [4, 2]) }));
    expect(norm.message).toContain(`"${P}indexer.k_norm.bias": expected shape [8] (index_head_dim from config.json), got [4, 2]`);
  });

  it('a missing weight_scale_inv, and a scale that is not finite', async () => {
    const missing = await failure(await make({ editTensors: (t) => t.delete(`${P}kv_b_proj.weight_scale_inv`) }));
    expect(missing).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringMatching(/kv_b_proj.weight": is F8_E4M3 but its block scales ".*kv_b_proj.weight_scale_inv" are missing/) });
    const nan = await failure(await make({ editTensors: (t) => ((t.get(`${P}indexer.wk.weight_scale_inv`)!.data as Float32Array)[0] = NaN) }));
    expect(nan.message).toMatch(/indexer.wk.weight_scale_inv": scale \[0, 0\] is NaN/);
  });

  it('a config field missing or wrong', async () => {
    for (const [edit, field] of [
      [(c: Record<string, unknown>) => delete c.kv_lora_rank, /config.json: field kv_lora_rank is missing/],
      [(c: Record<string, unknown>) => (c.num_attention_heads = '3'), /num_attention_heads: expected an integer ≥ 1, got "3"/],
      [(c: Record<string, unknown>) => (c.rms_norm_eps = -1), /rms_norm_eps: expected a positive number/],
      [(c: Record<string, unknown>) => delete (c.rope_scaling as Record<string, unknown>).beta_fast, /rope_scaling: field beta_fast is missing/],
      [(c: Record<string, unknown>) => ((c.rope_scaling as Record<string, unknown>).type = 'linear'), /only "yarn" is supported/],
      [(c: Record<string, unknown>) => (c.qk_rope_head_dim = 5), /qk_rope_head_dim: the operator needs an even RoPE width/],
      [(c: Record<string, unknown>) => ((c.quantization_config as Record<string, unknown>).weight_block_size = [128]), /weight_block_size: expected \[rows, cols\]/],
    ] as const) {
      const e = await failure(await make({ editConfig: edit }));
      expect(e.code).toBe('DSA_E_CHECKPOINT');
      expect(e.message).toMatch(field);
    }
  });

  it('a layer index out of range', async () => {
    const dir = await make();
    const ckpt = await openCheckpoint(dir);
    for (const L of [1, -1, 0.5, Number.NaN]) {
      await expect(ckpt.layerWeights(L)).rejects.toMatchObject({ code: 'DSA_E_RANGE', message: expect.stringContaining('layer: expected an integer in [0, 1)') });
      await expect(ckpt.wUv(L)).rejects.toMatchObject({ code: 'DSA_E_RANGE' });
    }
    await expect(ckpt.describeLayer(3)).rejects.toMatchObject({ code: 'DSA_E_RANGE' });
    await ckpt.close();
  });

  it('missing or unreadable folder files', async () => {
    const noConfig = await make();
    rmSync(join(noConfig, 'config.json'));
    expect(await failure(noConfig)).toMatchObject({ code: 'DSA_E_IO', message: expect.stringContaining('config.json') });
    const badConfig = await make();
    writeFileSync(join(badConfig, 'config.json'), '{"hidden_size": 4');
    expect(await failure(badConfig)).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining('config.json: not valid JSON') });
    const noWeights = await make();
    rmSync(join(noWeights, 'model.safetensors.index.json'));
    expect(await failure(noWeights)).toMatchObject({ code: 'DSA_E_IO', message: expect.stringContaining('neither model.safetensors.index.json nor model.safetensors') });
    const badIndex = await make();
    writeFileSync(join(badIndex, 'model.safetensors.index.json'), '{"weight_map": 5}');
    expect(await failure(badIndex)).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining('expected an object with a weight_map') });
    const missingShard = await make();
    rmSync(shardOf(missingShard, `${P}q_a_proj.weight`));
    expect(await failure(missingShard)).toMatchObject({ code: 'DSA_E_IO', message: expect.stringContaining('-of-00002.safetensors') });
    const escaping = await make();
    editIndex(escaping, (wm) => (wm[`${P}q_a_proj.weight`] = '../../etc/passwd'));
    expect(await failure(escaping)).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining('lies outside the checkpoint folder') });
    const single = await make({ shards: 'single' });
    truncateSync(join(single, 'model.safetensors'), 4);
    expect(await failure(single)).toMatchObject({ code: 'DSA_E_CHECKPOINT', message: expect.stringContaining('model.safetensors: 4 bytes: too short') });
  });

  it('describeLayer lists the stored tensors of a layer without reading data', async () => {
    const ckpt = await openCheckpoint(await make());
    const t = await ckpt.describeLayer(0);
    expect(t.map((x) => x.name.slice(P.length))).toContain('kv_b_proj.weight_scale_inv');
    expect(t.find((x) => x.name === `${P}q_a_proj.weight`)).toMatchObject({ dtype: 'F8_E4M3', shape: [24, 40] });
    expect(t.find((x) => x.name === `${P}indexer.weights_proj.weight`)).toMatchObject({ dtype: 'BF16', shape: [2, 40] });
    await ckpt.close();
  });
});
