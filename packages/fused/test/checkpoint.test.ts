import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ToF32, checkWeight, dequantizeFp8Weight, f32ToBf16, Rng, type Bf16Tensor, type I32Tensor, type Weight } from '@dsa/tensor-core';
import { optionsFor, parseConfig, ropeAmplitude, ropeFrequencies } from '../src/checkpoint-config.js';
import { openCheckpoint, sparseAttention, type Checkpoint } from '../src/index.js';
import { attend, indexerScore, modelSoftmaxScale, modelToken, yarnFrequencies, type ModelSettings, type TokenState } from './checkpoint-model.js';
import { ALIGNED, configJson, ODD, writeCheckpoint, type ExactWeights, type TinyDims } from './checkpoint-writer.js';

const root = mkdtempSync(join(tmpdir(), 'dsa-ckpt-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function settingsOf(d: TinyDims): ModelSettings {
  const c = configJson(d);
  const s = c.rope_scaling as Record<string, number>;
  return {
    ropeTheta: c.rope_theta as number, factor: s.factor!, originalMax: s.original_max_position_embeddings!, betaFast: s.beta_fast!,
    betaSlow: s.beta_slow!, mscale: s.mscale!, mscaleAllDim: s.mscale_all_dim!, rmsNormEps: c.rms_norm_eps as number,
  };
}

const values = (t: Bf16Tensor): Float64Array => Float64Array.from(t.data, bf16ToF32);

interface EndToEnd {
  relL2: number;
  maxAbs: number;
  rows: number;
  indexerRows: number;
  indexerNearTies: number;
}

/**
 * Two calls (prefill 5 tokens, then 4 more) of two sequences at RoPE positions 1000+ and 37+ through
 * the operator with the checkpoint's layer, options and tables; compare `W_UV[h] · out[h]` with the
 * model's attention over the same keys, and the selected keys with the model's indexer top-k.
 */
async function endToEnd(ckpt: Checkpoint, d: TinyDims, exact: ExactWeights, layer: number, seed: number): Promise<EndToEnd> {
  const s = settingsOf(d);
  const w = await ckpt.layerWeights(layer);
  const kvB = exact.get(`model.layers.${layer}.self_attn.kv_b_proj.weight`)!.values;
  const rng = new Rng(seed);
  const b = 2;
  const bs = 4;
  const calls = [5, 4];
  const total = calls.reduce((a, c) => a + c, 0);
  const maxBlocks = Math.ceil(total / bs);
  const blocks = b * maxBlocks + 1;
  const perm = rng.shuffle(Array.from({ length: blocks }, (_, i) => i));
  const blockTable: I32Tensor = { dtype: 'int32', shape: [b, maxBlocks], data: Int32Array.from(perm.slice(0, b * maxBlocks)) };
  const start = [1000, 37];
  const caches = {
    kvCache: { dtype: 'bfloat16', shape: [blocks, bs, 1, d.kvLora], data: new Uint16Array(blocks * bs * d.kvLora) } as Bf16Tensor,
    krCache: { dtype: 'bfloat16', shape: [blocks, bs, 1, d.rope], data: new Uint16Array(blocks * bs * d.rope) } as Bf16Tensor,
    indexKCache: { dtype: 'bfloat16', shape: [blocks, bs, 1, d.idxDim], data: new Uint16Array(blocks * bs * d.idxDim) } as Bf16Tensor,
  };
  const tokens: TokenState[][] = [[], []];
  let len = 0;
  let err2 = 0;
  let ref2 = 0;
  let maxAbs = 0;
  let rows = 0;
  let indexerRows = 0;
  let nearTies = 0;
  for (const s1 of calls) {
    const x = rng.uniformTensor([b, s1, d.hidden], -1, 1);
    const xv = values(x);
    const positions = Int32Array.from({ length: b * s1 }, (_, t) => start[Math.floor(t / s1)]! + len + (t % s1));
    const cacheIndex: I32Tensor = {
      dtype: 'int32', shape: [b, s1],
      data: Int32Array.from({ length: b * s1 }, (_, t) => {
        const bi = Math.floor(t / s1);
        const p = len + (t % s1);
        return blockTable.data[bi * maxBlocks + Math.floor(p / bs)]! * bs + (p % bs);
      }),
    };
    const { sin, cos } = ckpt.rope({ shape: [b, s1], data: positions });
    expect(sin.shape).toEqual([b, s1, d.rope]);
    const actSeqs: I32Tensor = { dtype: 'int32', shape: [b], data: Int32Array.from([len + s1, len + s1]) };
    const r = sparseAttention({ x, ...w, sin, cos, cacheIndex, blockTable, actSeqs, ...caches }, { ...ckpt.options, returnIndices: true });
    for (let bi = 0; bi < b; bi++) {
      for (let i = 0; i < s1; i++) tokens[bi]!.push(modelToken(exact, d, layer, s, xv.subarray((bi * s1 + i) * d.hidden, (bi * s1 + i + 1) * d.hidden), positions[bi * s1 + i]!));
    }
    len += s1;
    const scale = modelSoftmaxScale(d, s);
    for (let bi = 0; bi < b; bi++) {
      for (let i = 0; i < s1; i++) {
        const visible = len - (s1 - 1 - i);
        const q = tokens[bi]![visible - 1]!;
        const row = Array.from(r.indices!.data.subarray((bi * s1 + i) * d.topk, (bi * s1 + i + 1) * d.topk));
        const chosen = row.filter((v) => v >= 0);
        // Causal, distinct, as many as the model selects, −1 padding after.
        expect(chosen.length).toBe(Math.min(d.topk, visible));
        expect(new Set(chosen).size).toBe(chosen.length);
        for (const k of chosen) expect(k >= 0 && k < visible).toBe(true);
        expect(row.slice(chosen.length).every((v) => v === -1)).toBe(true);
        // The model's indexer: the same top-k set, up to near-ties.
        const scores = tokens[bi]!.slice(0, visible).map((k) => indexerScore(q, k));
        const sorted = [...scores].sort((a, c) => c - a);
        const kth = sorted[Math.min(d.topk, visible) - 1]!;
        const tol = 0.02 * Math.max(...scores.map(Math.abs));
        for (const k of chosen) {
          if (scores[k]! < kth) {
            nearTies++;
            expect(scores[k]!).toBeGreaterThanOrEqual(kth - tol);
          }
        }
        indexerRows++;
        // Attention over the keys the operator chose, model side vs operator side.
        const keys = chosen.map((k) => tokens[bi]![k]!);
        for (let h = 0; h < d.heads; h++) {
          const want = attend(q, keys, h, scale);
          const lat = values({ ...r.out, data: r.out.data.subarray(((bi * s1 + i) * d.heads + h) * d.kvLora, ((bi * s1 + i) * d.heads + h + 1) * d.kvLora) });
          for (let e = 0; e < d.vHead; e++) {
            let got = 0;
            const o = (h * (d.nope + d.vHead) + d.nope + e) * d.kvLora;
            for (let c = 0; c < d.kvLora; c++) got += kvB[o + c]! * lat[c]!;
            err2 += (got - want[e]!) ** 2;
            ref2 += want[e]! ** 2;
            maxAbs = Math.max(maxAbs, Math.abs(got - want[e]!));
          }
        }
        rows++;
      }
    }
  }
  return { relL2: Math.sqrt(err2 / ref2), maxAbs, rows, indexerRows, indexerNearTies: nearTies };
}

/** Stored [rows, cols] exact values → the operator's [cols, rows] as bf16(f32(value)). */
function expectTransposedBf16(t: Weight, e: { shape: number[]; values: Float64Array }): void {
  if (t.dtype !== 'bfloat16') return expect.fail(`expected a bf16 weight, got ${t.dtype}`);
  const [rows, cols] = e.shape as [number, number];
  expect(t.shape).toEqual([cols, rows]);
  expect(t.format).toBe('ND');
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const want = f32ToBf16(Math.fround(e.values[r * cols + c]!));
      if (t.data[c * rows + r] !== want) throw new Error(`[${c}, ${r}]: ${t.data[c * rows + r]} vs ${want}`);
    }
  }
}

describe('openCheckpoint: mapping of a sharded FP8 checkpoint with odd sizes', () => {
  const dir = join(root, 'odd');
  let exact: ExactWeights;
  let ckpt: Checkpoint;

  it('config, options and layer count come from config.json', async () => {
    exact = await writeCheckpoint(dir, ODD, { shards: 3 });
    ckpt = await openCheckpoint(dir);
    expect(ckpt.config).toMatchObject({ hiddenSize: 300, numAttentionHeads: 3, qLoraRank: 200, kvLoraRank: 160, indexTopk: 6, weightBlockSize: [128, 128] });
    expect(ckpt.layerCount).toBe(2);
    expect(ckpt.files).toHaveLength(3);
    const s = settingsOf(ODD);
    expect(ckpt.options).toMatchObject({ rmsNormEps: 1e-6, layerNormEps: 1e-6, indexerRope: 'half', topk: 6, sparseMode: 3 });
    expect(ckpt.options.softmaxScale).toBeCloseTo(modelSoftmaxScale(ODD, s), 12);
  });

  it('bf16 weights are the exact FP8 × scale values, transposed to [in, out], kv_b_proj split per head', async () => {
    const w = await ckpt.layerWeights(1);
    const E = (n: string) => exact.get(`model.layers.1.self_attn.${n}`)!;
    expectTransposedBf16(w.wDq, E('q_a_proj.weight'));
    expectTransposedBf16(w.wUqQr, E('q_b_proj.weight'));
    expectTransposedBf16(w.wDkvKr, E('kv_a_proj_with_mqa.weight'));
    expectTransposedBf16(w.wIdxQb, E('indexer.wq_b.weight'));
    expectTransposedBf16(w.wIdxK, E('indexer.wk.weight'));
    expectTransposedBf16(w.wIdxProj, E('indexer.weights_proj.weight'));
    const kvB = E('kv_b_proj.weight').values;
    const uv = await ckpt.wUv(1);
    expect(w.wUk.shape).toEqual([3, 48, 160]);
    expect(uv.shape).toEqual([3, 40, 160]);
    for (let h = 0; h < 3; h++) {
      for (let i = 0; i < 88; i++) {
        for (let c = 0; c < 160; c++) {
          const want = f32ToBf16(Math.fround(kvB[(h * 88 + i) * 160 + c]!));
          const got = i < 48 ? w.wUk.data[(h * 48 + i) * 160 + c] : uv.data[(h * 40 + i - 48) * 160 + c];
          if (got !== want) throw new Error(`kv_b_proj head ${h} row ${i} col ${c}: ${got} vs ${want}`);
        }
      }
    }
    for (const [k, n] of [['gammaCq', 'q_a_layernorm.weight'], ['gammaCkv', 'kv_a_layernorm.weight'], ['inGammaK', 'indexer.k_norm.weight'], ['inBetaK', 'indexer.k_norm.bias']] as const) {
      expect(Array.from(values(w[k]))).toEqual(Array.from(E(n).values));
    }
    // Layer 0 is a different layer.
    const w0 = await ckpt.layerWeights(0);
    expect(w0.wDq.data).not.toEqual(w.wDq.data);
    // Reads of a few rows at a time (strips that cut FP8 blocks and kv_b_proj's heads) give the same bytes.
    const small = await openCheckpoint(dir, { readChunkBytes: 1000 });
    const ws = await small.layerWeights(1);
    for (const k of Object.keys(w) as (keyof typeof w)[]) expect(ws[k].data, k).toEqual(w[k].data);
    expect((await small.wUv(1)).data).toEqual(uv.data);
    await small.close();
    await expect(openCheckpoint(dir, { readChunkBytes: 0 })).rejects.toMatchObject({ code: 'DSA_E_ARGUMENT' });
  });

  it('rope(): YaRN tables with c[j] = c[j + d/2], [n, d] for a list and [...shape, d] for a tensor', () => {
    const s = settingsOf(ODD);
    const freqs = yarnFrequencies(ODD.rope, s);
    const positions = [0, 1, 5, 37, 1000, 163839];
    const { sin, cos } = ckpt.rope(positions);
    expect(sin.shape).toEqual([6, 16]);
    positions.forEach((p, i) => {
      for (let j = 0; j < 16; j++) {
        // Within one bf16 rounding of the model's angle (the two frequency formulas may differ in the last bit).
        for (const [t, f] of [[cos, Math.cos], [sin, Math.sin]] as const) {
          const want = f(p * freqs[j % 8]!);
          expect(Math.abs(bf16ToF32(t.data[i * 16 + j]!) - want)).toBeLessThanOrEqual(Math.abs(want) * 2 ** -8 + 1e-12);
        }
      }
    });
    expect(ckpt.rope({ shape: [2, 3], data: Int32Array.from([0, 1, 2, 3, 4, 5]) }).cos.shape).toEqual([2, 3, 16]);
    expect(() => ckpt.rope([1.5])).toThrow(/positions\[0\]: expected a non-negative integer/);
    expect(() => ckpt.rope([-1])).toThrow(/positions\[0\]/);
  });

  it('end to end: latent output × W_UV matches the model\'s non-absorbed attention in float64', async () => {
    const r = await endToEnd(ckpt, ODD, exact, 1, 7);
    console.log(`checkpoint end-to-end (FP8, odd dims): relative L2 ${r.relL2.toExponential(2)}, max |err| ${r.maxAbs.toExponential(2)} over ${r.rows} rows; ` +
      `indexer top-k = model's on ${r.indexerRows} rows (${r.indexerNearTies} near-tie swaps)`);
    expect(r.relL2).toBeLessThan(1e-2);
  });

  it('FP8 form: a clear error for wUk when heads do not start on 128-row blocks', async () => {
    await expect(ckpt.layerWeights(0, { dtype: 'float8_e4m3fn' })).rejects.toMatchObject({ code: 'DSA_E_FORMAT', message: expect.stringMatching(/kv_b_proj.weight.*head 1 starts at row 88/) });
    await ckpt.close();
  });
});

describe('config.json settings', () => {
  it('the published DeepSeek-V3.2 RoPE settings give the spec\'s numbers (nothing hard-coded)', () => {
    const raw = { ...configJson({ ...ODD, nope: 128, rope: 64, idxDim: 128 }), rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 } };
    const c = parseConfig(raw, 'config.json');
    expect(optionsFor(c).softmaxScale).toBeCloseTo(0.1352338, 7);
    expect(ropeAmplitude(c)).toBe(1);
    const f = ropeFrequencies(c);
    for (let j = 0; j < 32; j++) {
      const inv = 10000 ** (-j / 32);
      if (j <= 10) expect(f[j]).toBeCloseTo(inv, 15);
      else if (j >= 23) expect(f[j]! / (inv / 40)).toBeCloseTo(1, 12);
      else expect(f[j]! < inv && f[j]! > inv / 40).toBe(true);
    }
    // Without rope_scaling: plain RoPE, m = 1.
    const plain = parseConfig({ ...raw, rope_scaling: null }, 'config.json');
    expect(optionsFor(plain).softmaxScale).toBeCloseTo(192 ** -0.5, 15);
    expect(ropeFrequencies(plain)[5]).toBeCloseTo(10000 ** (-5 / 32), 15);
    // mscale ≠ mscale_all_dim scales the tables (Hugging Face's DeepSeek YaRN).
    expect(ropeAmplitude(parseConfig({ ...raw, rope_scaling: { ...raw.rope_scaling, mscale: 1, mscale_all_dim: 0 } }, 'c'))).toBeCloseTo(0.1 * Math.log(40) + 1, 12);
  });
});

describe('openCheckpoint: FP8 form, single file, BF16 checkpoints', () => {
  it('the FP8 form holds the stored bytes and scales; dequantized it is the exact weight in the operator orientation', async () => {
    const dir = join(root, 'aligned');
    const exact = await writeCheckpoint(dir, ALIGNED, { shards: 'single', normDtype: 'F32', seed: 3 });
    const ckpt = await openCheckpoint(dir);
    const w = await ckpt.layerWeights(0, { dtype: 'float8_e4m3fn' });
    const E = (n: string) => exact.get(`model.layers.0.self_attn.${n}`)!;
    for (const [k, n] of [['wDq', 'q_a_proj'], ['wUqQr', 'q_b_proj'], ['wDkvKr', 'kv_a_proj_with_mqa'], ['wIdxQb', 'indexer.wq_b'], ['wIdxK', 'indexer.wk']] as const) {
      const e = E(`${n}.weight`);
      const [rows, cols] = e.shape as [number, number];
      expect(w[k]).toMatchObject({ dtype: 'float8_e4m3fn', shape: [cols, rows], format: 'NT' });
      expect(w[k].blockScale.shape).toEqual([Math.ceil(rows / 128), Math.ceil(cols / 128)]);
      const logical = dequantizeFp8Weight(w[k]);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) if (logical[c * rows + r] !== e.values[r * cols + c]) throw new Error(`${k} [${c}, ${r}]`);
    }
    // The form tensor-core's FP8 weight check (and so the FP8 kernels) accept.
    for (const k of ['wDq', 'wUqQr', 'wDkvKr', 'wIdxQb', 'wIdxK'] as const) expect(checkWeight(k, w[k])).toBe(w[k]);
    expect(checkWeight('wUk', w.wUk, { rank: 3 })).toBe(w.wUk);
    expect(w.wUk).toMatchObject({ shape: [2, 128, 160], format: 'ND' });
    expect(w.wUk.blockScale.shape).toEqual([2, 1, 2]);
    const uk = dequantizeFp8Weight(w.wUk);
    const kvB = E('kv_b_proj.weight').values;
    for (let h = 0; h < 2; h++) for (let i = 0; i < 128; i++) for (let c = 0; c < 160; c++) {
      if (uk[(h * 128 + i) * 160 + c] !== kvB[(h * 256 + i) * 160 + c]) throw new Error(`wUk [${h}, ${i}, ${c}]`);
    }
    const small = await openCheckpoint(dir, { readChunkBytes: 700 });
    const ws = await small.layerWeights(0, { dtype: 'float8_e4m3fn' });
    for (const k of ['wDq', 'wUqQr', 'wUk', 'wDkvKr', 'wIdxQb', 'wIdxK'] as const) {
      expect(ws[k].data).toEqual(w[k].data);
      expect(ws[k].blockScale.data).toEqual(w[k].blockScale.data);
    }
    await small.close();
    const uv = await ckpt.wUv(0, { dtype: 'float8_e4m3fn' });
    const v = dequantizeFp8Weight(uv);
    for (let h = 0; h < 2; h++) for (let i = 0; i < 128; i++) for (let c = 0; c < 160; c++) {
      if (v[(h * 128 + i) * 160 + c] !== kvB[(h * 256 + 128 + i) * 160 + c]) throw new Error(`wUv [${h}, ${i}, ${c}]`);
    }
    // wIdxProj and the (F32-stored) norms are bf16, as in the bf16 form.
    expect(w.wIdxProj).toMatchObject({ dtype: 'bfloat16', shape: [136, 3] });
    expect(Array.from(w.gammaCq.data)).toEqual(Array.from(E('q_a_layernorm.weight').values, (x) => f32ToBf16(x)));
    const r = await endToEnd(ckpt, ALIGNED, exact, 0, 9);
    console.log(`checkpoint end-to-end (FP8, single file, aligned dims): relative L2 ${r.relL2.toExponential(2)}, max |err| ${r.maxAbs.toExponential(2)}; ${r.indexerNearTies} indexer near-tie swaps in ${r.indexerRows} rows`);
    expect(r.relL2).toBeLessThan(1e-2);
    await ckpt.close();
  });

  it('a BF16 checkpoint (no scales) loads and runs; asking it for FP8 is a clear DSA_E_DTYPE', async () => {
    const dir = join(root, 'bf16');
    const exact = await writeCheckpoint(dir, ODD, { fp8: false, shards: 2, seed: 5 });
    const ckpt = await openCheckpoint(dir);
    expect(ckpt.config.weightBlockSize).toBeNull();
    const r = await endToEnd(ckpt, ODD, exact, 0, 11);
    console.log(`checkpoint end-to-end (BF16 checkpoint): relative L2 ${r.relL2.toExponential(2)}, max |err| ${r.maxAbs.toExponential(2)}`);
    expect(r.relL2).toBeLessThan(1e-2);
    await expect(ckpt.layerWeights(0, { dtype: 'float8_e4m3fn' })).rejects.toMatchObject({ code: 'DSA_E_DTYPE', message: expect.stringMatching(/q_a_proj.weight.*stored as BF16/) });
    await ckpt.close();
  });

  it('progress, abort, the layer cache and close', async () => {
    const dir = join(root, 'odd-progress');
    await writeCheckpoint(dir, ODD, { shards: 2 });
    const ckpt = await openCheckpoint(dir, { cacheLayers: 1 });
    const seen: { done: number; total: number }[] = [];
    const w = await ckpt.layerWeights(0, { onProgress: (p) => seen.push(p) });
    expect(seen.length).toBeGreaterThan(5);
    expect(seen.every((p, i) => p.total === seen[0]!.total && (i === 0 || p.done >= seen[i - 1]!.done))).toBe(true);
    expect(seen.at(-1)!.done).toBe(seen[0]!.total);
    expect(await ckpt.layerWeights(0)).toBe(w);
    // reuse: layer 1 loaded into layer 0's arrays gives the same bytes as a fresh load.
    const fresh = await openCheckpoint(dir);
    const w1 = await fresh.layerWeights(1);
    const uv1 = await fresh.wUv(1);
    await fresh.close();
    const copy = Object.fromEntries(Object.entries(await ckpt.layerWeights(0, {})).map(([k, t]) => [k, { ...t, data: t.data.slice() }]));
    const into = await ckpt.layerWeights(1, { reuse: copy });
    for (const k of Object.keys(w1) as (keyof typeof w1)[]) {
      expect(into[k].data).toBe(copy[k]!.data);
      expect(into[k].data).toEqual(w1[k].data);
    }
    const uvInto = await ckpt.wUv(1, { reuse: await ckpt.wUv(0) });
    expect(uvInto.data).toEqual(uv1.data);
    await expect(ckpt.layerWeights(1, { reuse: { ...copy, wDq: { data: new Uint16Array(3) } } })).rejects.toMatchObject({ code: 'DSA_E_ARGUMENT', message: expect.stringMatching(/^reuse.wDq: expected data Uint16Array\(60000\)/) });
    await expect(ckpt.layerWeights(1, { reuse: 5 as never })).rejects.toMatchObject({ code: 'DSA_E_ARGUMENT' });
    const ac = new AbortController();
    ac.abort();
    await expect(ckpt.layerWeights(1, { signal: ac.signal })).rejects.toMatchObject({ code: 'DSA_E_ABORTED' });
    await expect(ckpt.layerWeights(1, { dtype: 'int8' as never })).rejects.toMatchObject({ code: 'DSA_E_ARGUMENT' });
    // A load in flight when close() is called either finishes first or fails with DSA_E_STATE.
    const pending = ckpt.layerWeights(1).then(() => 'loaded', (e: { code: string }) => e.code);
    await ckpt.close();
    expect(['loaded', 'DSA_E_STATE']).toContain(await pending);
    await expect(ckpt.layerWeights(0)).rejects.toMatchObject({ code: 'DSA_E_STATE' });
  });
});
