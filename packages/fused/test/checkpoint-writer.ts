// Writes small DeepSeek-V3.2-style checkpoints (config.json, safetensors shards + index, or one
// model.safetensors) from known values: FP8 weights are quantized per 128×128 block with fp8.ts,
// and the exact real weights (byte value × block scale) are returned for the float64 references.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dequantizeBlocks, E4M3_MAX, f32ToBf16, bf16ToF32, floatToE4m3, Rng, writeSafetensors, type SafetensorsWriteEntry } from '@dsa/tensor-core';

export interface TinyDims {
  hidden: number; heads: number; qLora: number; kvLora: number; nope: number; rope: number; vHead: number;
  idxHeads: number; idxDim: number; topk: number; layers: number;
}

/** Odd sizes whose FP8 blocks straddle heads and matrix edges. */
export const ODD: TinyDims = { hidden: 300, heads: 3, qLora: 200, kvLora: 160, nope: 48, rope: 16, vHead: 40, idxHeads: 5, idxDim: 32, topk: 6, layers: 2 };
/** Sizes where every head of kv_b_proj starts on a 128-row block (the FP8 wUk form). */
export const ALIGNED: TinyDims = { hidden: 136, heads: 2, qLora: 144, kvLora: 160, nope: 128, rope: 16, vHead: 128, idxHeads: 3, idxDim: 32, topk: 5, layers: 1 };

export interface WriteOptions {
  /** FP8 e4m3 weights with block scales (default), or BF16 weights without scales. */
  fp8?: boolean;
  /** Shard count (with an index), or 'single' for one model.safetensors. */
  shards?: number | 'single';
  /** dtype of the norm vectors (default BF16). */
  normDtype?: 'BF16' | 'F32';
  seed?: number;
  /** Edit the tensors (name → entry) before they are written. */
  editTensors?: (t: Map<string, SafetensorsWriteEntry>) => void;
  /** Edit config.json before it is written. */
  editConfig?: (c: Record<string, unknown>) => void;
}

/** The exact stored weights in float64, [out, in] as stored, by tensor name. */
export type ExactWeights = Map<string, { shape: number[]; values: Float64Array }>;

export function configJson(d: TinyDims): Record<string, unknown> {
  return {
    architectures: ['DeepseekV32ForCausalLM'], model_type: 'deepseek_v32',
    hidden_size: d.hidden, num_attention_heads: d.heads, q_lora_rank: d.qLora, kv_lora_rank: d.kvLora,
    qk_nope_head_dim: d.nope, qk_rope_head_dim: d.rope, v_head_dim: d.vHead, index_n_heads: d.idxHeads,
    index_head_dim: d.idxDim, index_topk: d.topk, num_hidden_layers: d.layers, num_nextn_predict_layers: 0,
    rms_norm_eps: 1e-6, rope_theta: 10000,
    // A stretched YaRN range for short test contexts: low/high fall inside the rope dims.
    rope_scaling: { type: 'yarn', factor: 8, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1, mscale: 0.9, mscale_all_dim: 0.9 },
    quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] },
  };
}

/** Quantize real values [rows, cols] per 128×128 block (scale = amax/448, float32). */
function quantize(values: Float64Array, rows: number, cols: number): { bytes: Uint8Array; scale: Float32Array } {
  const sr = Math.ceil(rows / 128);
  const sc = Math.ceil(cols / 128);
  const scale = new Float32Array(sr * sc);
  const bytes = new Uint8Array(rows * cols);
  for (let br = 0; br < sr; br++) {
    for (let bc = 0; bc < sc; bc++) {
      let amax = 0;
      for (let r = br * 128; r < Math.min(rows, br * 128 + 128); r++) for (let c = bc * 128; c < Math.min(cols, bc * 128 + 128); c++) amax = Math.max(amax, Math.abs(values[r * cols + c]!));
      const s = Math.fround(Math.max(amax, 1e-12) / E4M3_MAX);
      scale[br * sc + bc] = s;
      for (let r = br * 128; r < Math.min(rows, br * 128 + 128); r++) for (let c = bc * 128; c < Math.min(cols, bc * 128 + 128); c++) bytes[r * cols + c] = floatToE4m3(values[r * cols + c]! / s);
    }
  }
  return { bytes, scale };
}

/**
 * Write a checkpoint of `d` into `dir` and return the exact weights it holds. Tensors of each layer
 * go to shards round-robin, with unrelated tensors (MLP, embeddings) in between.
 */
export async function writeCheckpoint(dir: string, d: TinyDims, o: WriteOptions = {}): Promise<ExactWeights> {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(o.seed ?? 1);
  const fp8 = o.fp8 ?? true;
  const tensors = new Map<string, SafetensorsWriteEntry>();
  const exact: ExactWeights = new Map();
  const linear = (name: string, rows: number, cols: number, q = fp8): void => {
    const bound = 1.5 / Math.sqrt(cols);
    const v = Float64Array.from({ length: rows * cols }, () => rng.uniform(-bound, bound));
    if (q) {
      const { bytes, scale } = quantize(v, rows, cols);
      tensors.set(`${name}.weight`, { dtype: 'F8_E4M3', shape: [rows, cols], data: bytes });
      tensors.set(`${name}.weight_scale_inv`, { dtype: 'F32', shape: [Math.ceil(rows / 128), Math.ceil(cols / 128)], data: scale });
      exact.set(`${name}.weight`, { shape: [rows, cols], values: dequantizeBlocks(bytes, scale, rows, cols) });
    } else {
      const bits = Uint16Array.from(v, (x) => f32ToBf16(x));
      tensors.set(`${name}.weight`, { dtype: 'BF16', shape: [rows, cols], data: bits });
      exact.set(`${name}.weight`, { shape: [rows, cols], values: Float64Array.from(bits, bf16ToF32) });
    }
  };
  const vector = (name: string, n: number, lo: number, hi: number): void => {
    const v = Float64Array.from({ length: n }, () => rng.uniform(lo, hi));
    const f32 = o.normDtype === 'F32';
    const data = f32 ? Float32Array.from(v) : Uint16Array.from(v, (x) => f32ToBf16(x));
    tensors.set(name, { dtype: f32 ? 'F32' : 'BF16', shape: [n], data });
    exact.set(name, { shape: [n], values: f32 ? Float64Array.from(data as Float32Array) : Float64Array.from(data as Uint16Array, bf16ToF32) });
  };
  tensors.set('model.embed_tokens.weight', { dtype: 'BF16', shape: [7, d.hidden], data: new Uint16Array(7 * d.hidden) });
  for (let L = 0; L < d.layers; L++) {
    const p = `model.layers.${L}.self_attn.`;
    linear(`${p}q_a_proj`, d.qLora, d.hidden);
    vector(`${p}q_a_layernorm.weight`, d.qLora, 0.5, 1.5);
    linear(`${p}q_b_proj`, d.heads * (d.nope + d.rope), d.qLora);
    linear(`${p}kv_a_proj_with_mqa`, d.kvLora + d.rope, d.hidden);
    vector(`${p}kv_a_layernorm.weight`, d.kvLora, 0.5, 1.5);
    linear(`${p}kv_b_proj`, d.heads * (d.nope + d.vHead), d.kvLora);
    linear(`${p}o_proj`, d.hidden, d.heads * d.vHead);
    linear(`${p}indexer.wq_b`, d.idxHeads * d.idxDim, d.qLora);
    linear(`${p}indexer.wk`, d.idxDim, d.hidden);
    vector(`${p}indexer.k_norm.weight`, d.idxDim, 0.5, 1.5);
    vector(`${p}indexer.k_norm.bias`, d.idxDim, -0.1, 0.1);
    linear(`${p}indexer.weights_proj`, d.idxHeads, d.hidden, false);
    tensors.set(`model.layers.${L}.mlp.gate.weight`, { dtype: 'BF16', shape: [4, d.hidden], data: new Uint16Array(4 * d.hidden) });
  }
  o.editTensors?.(tensors);
  const config = configJson(d);
  if (!fp8) delete config.quantization_config;
  o.editConfig?.(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const shards = o.shards ?? 3;
  if (shards === 'single') {
    await writeSafetensors(join(dir, 'model.safetensors'), Object.fromEntries(tensors), { format: 'pt' });
    return exact;
  }
  const names = [...tensors.keys()];
  const files = Array.from({ length: shards }, (_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const mine = names.filter((_, i) => i % shards === s);
    for (const n of mine) weightMap[n] = files[s]!;
    await writeSafetensors(join(dir, files[s]!), Object.fromEntries(mine.map((n) => [n, tensors.get(n)!])), { format: 'pt' });
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
  return exact;
}
