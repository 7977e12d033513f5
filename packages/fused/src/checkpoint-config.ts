// A checkpoint's config.json: the dimensions and settings the operator needs, checked, and what
// follows from them (sparseAttention options, YaRN RoPE tables). Nothing of DeepSeek's published
// values is assumed: every number comes from the file.
import { DsaError, ErrorCode, f32ToBf16, type Bf16Tensor } from '@dsa/tensor-core';
import type { SparseAttentionOptions } from './presets.js';

/** YaRN settings (`rope_scaling` with type "yarn"). */
export interface YarnScaling {
  factor: number;
  originalMaxPositionEmbeddings: number;
  betaFast: number;
  betaSlow: number;
  /** Amplitude mscale of the tables (default 1, as in Hugging Face's DeepSeek code). */
  mscale: number;
  /** mscale of the softmax scale; undefined when the config does not set it (then m = 1). */
  mscaleAllDim: number | undefined;
}

/** config.json in camelCase: what the operator needs, each field checked. `raw` is the whole file. */
export interface CheckpointConfig {
  hiddenSize: number;
  numAttentionHeads: number;
  qLoraRank: number;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  indexNHeads: number;
  indexHeadDim: number;
  indexTopk: number;
  numHiddenLayers: number;
  /** Multi-token-prediction layers stored after the main ones (0 when absent). */
  numNextnPredictLayers: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** null: plain RoPE. */
  ropeScaling: YarnScaling | null;
  /** quantization_config.weight_block_size ([rows, cols] of one FP8 scale block); null without FP8. */
  weightBlockSize: [number, number] | null;
  raw: Readonly<Record<string, unknown>>;
}

function field(raw: Record<string, unknown>, path: string, key: string): unknown {
  if (!(key in raw) || raw[key] === undefined) throw new DsaError(ErrorCode.CHECKPOINT, `${path}: field ${key} is missing`, key);
  return raw[key];
}

function intField(raw: Record<string, unknown>, path: string, key: string, min = 1): number {
  const v = field(raw, path, key);
  if (!Number.isSafeInteger(v) || (v as number) < min) throw new DsaError(ErrorCode.CHECKPOINT, `${path}: ${key}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`, key);
  return v as number;
}

function numField(raw: Record<string, unknown>, path: string, key: string, ok: (v: number) => boolean, want: string, dflt?: number): number {
  const v = dflt !== undefined && (raw[key] === undefined || raw[key] === null) ? dflt : field(raw, path, key);
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new DsaError(ErrorCode.CHECKPOINT, `${path}: ${key}: expected ${want}, got ${JSON.stringify(v)}`, key);
  return v;
}

/** Parse and check config.json (`path` names the file in messages). */
export function parseConfig(raw: unknown, path: string): CheckpointConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new DsaError(ErrorCode.CHECKPOINT, `${path}: expected a JSON object`, 'config');
  const r = raw as Record<string, unknown>;
  const c: CheckpointConfig = {
    hiddenSize: intField(r, path, 'hidden_size'),
    numAttentionHeads: intField(r, path, 'num_attention_heads'),
    qLoraRank: intField(r, path, 'q_lora_rank'),
    kvLoraRank: intField(r, path, 'kv_lora_rank'),
    qkNopeHeadDim: intField(r, path, 'qk_nope_head_dim'),
    qkRopeHeadDim: intField(r, path, 'qk_rope_head_dim'),
    vHeadDim: intField(r, path, 'v_head_dim'),
    indexNHeads: intField(r, path, 'index_n_heads'),
    indexHeadDim: intField(r, path, 'index_head_dim'),
    indexTopk: intField(r, path, 'index_topk'),
    numHiddenLayers: intField(r, path, 'num_hidden_layers'),
    numNextnPredictLayers: r.num_nextn_predict_layers === undefined ? 0 : intField(r, path, 'num_nextn_predict_layers', 0),
    rmsNormEps: numField(r, path, 'rms_norm_eps', (v) => v > 0 && Math.fround(v) > 0, 'a positive number'),
    ropeTheta: numField(r, path, 'rope_theta', (v) => v > 1, 'a number > 1'),
    ropeScaling: parseRopeScaling(r.rope_scaling, path),
    weightBlockSize: parseQuantization(r.quantization_config, path),
    raw: Object.freeze({ ...r }),
  };
  // The operator's own constraints (spec README §1), said in the config's terms.
  if (c.qkRopeHeadDim % 2 !== 0) throw new DsaError(ErrorCode.CHECKPOINT, `${path}: qk_rope_head_dim: the operator needs an even RoPE width, got ${c.qkRopeHeadDim}`, 'qk_rope_head_dim');
  if (c.indexHeadDim < c.qkRopeHeadDim) {
    throw new DsaError(ErrorCode.CHECKPOINT, `${path}: index_head_dim ${c.indexHeadDim} is smaller than qk_rope_head_dim ${c.qkRopeHeadDim} (the indexer ropes its first qk_rope dims)`, 'index_head_dim');
  }
  return c;
}

function parseRopeScaling(v: unknown, path: string): YarnScaling | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new DsaError(ErrorCode.CHECKPOINT, `${path}: rope_scaling: expected an object or null, got ${JSON.stringify(v)}`, 'rope_scaling');
  const s = v as Record<string, unknown>;
  const type = s.type ?? s.rope_type;
  if (type !== 'yarn') throw new DsaError(ErrorCode.CHECKPOINT, `${path}: rope_scaling.type: only "yarn" is supported, got ${JSON.stringify(type)}`, 'rope_scaling');
  const p = `${path}: rope_scaling`;
  const pos = (x: number): boolean => x > 0;
  return {
    factor: numField(s, p, 'factor', pos, 'a positive number'),
    originalMaxPositionEmbeddings: intField(s, p, 'original_max_position_embeddings'),
    betaFast: numField(s, p, 'beta_fast', pos, 'a positive number'),
    betaSlow: numField(s, p, 'beta_slow', pos, 'a positive number'),
    mscale: numField(s, p, 'mscale', (x) => x >= 0, 'a number ≥ 0', 1),
    mscaleAllDim: s.mscale_all_dim === undefined || s.mscale_all_dim === null ? undefined : numField(s, p, 'mscale_all_dim', (x) => x >= 0, 'a number ≥ 0'),
  };
}

function parseQuantization(v: unknown, path: string): [number, number] | null {
  if (v === undefined || v === null) return null;
  const q = v as Record<string, unknown>;
  if (typeof q !== 'object' || Array.isArray(q)) throw new DsaError(ErrorCode.CHECKPOINT, `${path}: quantization_config: expected an object, got ${JSON.stringify(v)}`, 'quantization_config');
  if (q.quant_method !== undefined && q.quant_method !== 'fp8') {
    throw new DsaError(ErrorCode.CHECKPOINT, `${path}: quantization_config.quant_method: only "fp8" is supported, got ${JSON.stringify(q.quant_method)}`, 'quantization_config');
  }
  if (q.fmt !== undefined && q.fmt !== 'e4m3') {
    throw new DsaError(ErrorCode.CHECKPOINT, `${path}: quantization_config.fmt: only "e4m3" is supported, got ${JSON.stringify(q.fmt)}`, 'quantization_config');
  }
  const b = q.weight_block_size ?? [128, 128];
  if (!Array.isArray(b) || b.length !== 2 || !b.every((x) => Number.isSafeInteger(x) && (x as number) > 0)) {
    throw new DsaError(ErrorCode.CHECKPOINT, `${path}: quantization_config.weight_block_size: expected [rows, cols] of positive integers, got ${JSON.stringify(b)}`, 'quantization_config');
  }
  return [b[0] as number, b[1] as number];
}

/** YaRN's magnitude correction (1 when the factor does not stretch). */
function yarnMscale(factor: number, m: number): number {
  return factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1;
}

/** sparseAttention options for this model: checkpoint.md "Settings from config.json". */
export function optionsFor(c: CheckpointConfig): SparseAttentionOptions {
  const s = c.ropeScaling;
  const m = s && s.mscaleAllDim !== undefined ? yarnMscale(s.factor, s.mscaleAllDim) : 1;
  return Object.freeze({
    softmaxScale: (c.qkNopeHeadDim + c.qkRopeHeadDim) ** -0.5 * m * m,
    rmsNormEps: c.rmsNormEps,
    layerNormEps: 1e-6,
    indexerRope: 'half',
    topk: c.indexTopk,
    sparseMode: 3,
  } satisfies SparseAttentionOptions);
}

/** The RoPE frequencies freq[j], j < d/2, with YaRN applied (checkpoint.md). */
export function ropeFrequencies(c: CheckpointConfig): Float64Array {
  const d = c.qkRopeHeadDim;
  const base = c.ropeTheta;
  const freq = Float64Array.from({ length: d / 2 }, (_, j) => base ** ((-2 * j) / d));
  const s = c.ropeScaling;
  if (!s) return freq;
  const corr = (rot: number): number => (d * Math.log(s.originalMaxPositionEmbeddings / (2 * Math.PI * rot))) / (2 * Math.log(base));
  const low = Math.max(Math.floor(corr(s.betaFast)), 0);
  let high = Math.min(Math.ceil(corr(s.betaSlow)), d - 1);
  if (high === low) high += 0.001;
  for (let j = 0; j < d / 2; j++) {
    const smooth = 1 - Math.min(Math.max((j - low) / (high - low), 0), 1);
    freq[j] = (freq[j]! / s.factor) * (1 - smooth) + freq[j]! * smooth;
  }
  return freq;
}

/**
 * Amplitude of the cos/sin tables: mscale / mscale_all_dim corrections (Hugging Face's DeepSeek
 * YaRN); 1 when they are equal, as in the published config.
 */
export function ropeAmplitude(c: CheckpointConfig): number {
  const s = c.ropeScaling;
  return s ? yarnMscale(s.factor, s.mscale) / yarnMscale(s.factor, s.mscaleAllDim ?? 0) : 1;
}

/** Positions as a flat list plus the shape they came in. */
function positionList(positions: ArrayLike<number> | { shape: readonly number[]; data: ArrayLike<number> }): [ArrayLike<number>, number[]] {
  if (typeof positions === 'object' && positions !== null && 'shape' in positions && 'data' in positions) {
    const shape = [...positions.shape];
    const n = shape.reduce((a, b) => a * b, 1);
    if (positions.data?.length !== n) throw new DsaError(ErrorCode.SHAPE, `positions: shape [${shape.join(', ')}] needs ${n} values, data has ${positions.data?.length}`, 'positions');
    return [positions.data, shape];
  }
  if (typeof positions !== 'object' || positions === null || typeof (positions as ArrayLike<number>).length !== 'number') {
    throw new DsaError(ErrorCode.ARGUMENT, `positions: expected an array of token positions or an int32 tensor, got ${String(positions)}`, 'positions');
  }
  return [positions, [positions.length]];
}

/**
 * bf16 sin/cos tables for token positions: shape [n, qk_rope] for a list, [...shape, qk_rope] for a
 * tensor (e.g. [b, s1] positions give the operator's [b, s1, rope]). c[j] = c[j + d/2] = cos θ(p, j).
 */
export function ropeTables(c: CheckpointConfig, positions: ArrayLike<number> | { shape: readonly number[]; data: ArrayLike<number> }): { sin: Bf16Tensor; cos: Bf16Tensor } {
  const [list, shape] = positionList(positions);
  const d = c.qkRopeHeadDim;
  const half = d / 2;
  const freq = ropeFrequencies(c);
  const amp = ropeAmplitude(c);
  const sin = new Uint16Array(list.length * d);
  const cos = new Uint16Array(list.length * d);
  for (let i = 0; i < list.length; i++) {
    const p = list[i]!;
    if (!Number.isSafeInteger(p) || p < 0) throw new DsaError(ErrorCode.RANGE, `positions[${i}]: expected a non-negative integer, got ${p}`, 'positions');
    for (let j = 0; j < half; j++) {
      const s = f32ToBf16(amp * Math.sin(p * freq[j]!));
      const co = f32ToBf16(amp * Math.cos(p * freq[j]!));
      sin[i * d + j] = sin[i * d + half + j] = s;
      cos[i * d + j] = cos[i * d + half + j] = co;
    }
  }
  return {
    sin: { dtype: 'bfloat16', shape: [...shape, d], data: sin, format: 'ND' },
    cos: { dtype: 'bfloat16', shape: [...shape, d], data: cos, format: 'ND' },
  };
}
