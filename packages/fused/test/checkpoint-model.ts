// The model's attention for one layer written the non-absorbed way, in float64, straight from the
// checkpoint's exact weights ([out, in] as stored): q = W_UQ·norm(W_DQ x), k = W_UK·c, v = W_UV·c per
// head, RoPE as DeepSeek's code applies it (complex pairs (2j, 2j+1) for MLA; pairs (j, j + d/2) on
// the first d dims of each indexer head), softmax over the given keys. Independent of the operator.
import type { ExactWeights, TinyDims } from './checkpoint-writer.js';

export interface ModelSettings {
  ropeTheta: number; factor: number; originalMax: number; betaFast: number; betaSlow: number; mscale: number; mscaleAllDim: number;
  rmsNormEps: number;
}

/** YaRN frequencies as DeepSeek's precompute_freqs_cis builds them. */
export function yarnFrequencies(dim: number, s: ModelSettings): Float64Array {
  const freqs = Float64Array.from({ length: dim / 2 }, (_, i) => 1 / s.ropeTheta ** ((2 * i) / dim));
  const correctionDim = (rot: number): number => (dim * Math.log(s.originalMax / (rot * 2 * Math.PI))) / (2 * Math.log(s.ropeTheta));
  const low = Math.max(Math.floor(correctionDim(s.betaFast)), 0);
  let high = Math.min(Math.ceil(correctionDim(s.betaSlow)), dim - 1);
  if (low === high) high += 0.001;
  return freqs.map((f, i) => {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    const smooth = 1 - ramp;
    return (f / s.factor) * (1 - smooth) + f * smooth;
  });
}

export function modelSoftmaxScale(d: TinyDims, s: ModelSettings): number {
  const m = 0.1 * s.mscaleAllDim * Math.log(s.factor) + 1;
  return (d.nope + d.rope) ** -0.5 * m * m;
}

/** y = W x for W [rows, cols] stored row-major. */
function mv(w: Float64Array, rows: number, cols: number, x: Float64Array, xOff = 0, wRow0 = 0): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    const o = (wRow0 + r) * cols;
    for (let c = 0; c < cols; c++) acc += w[o + c]! * x[xOff + c]!;
    y[r] = acc;
  }
  return y;
}

function rmsNorm(v: Float64Array, g: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const a of v) ss += a * a;
  const inv = 1 / Math.sqrt(ss / v.length + eps);
  return v.map((a, i) => a * inv * g[i]!);
}

/** Rotate v[off .. off + d) in place: interleaved pairs (2j, 2j+1), or 'half' pairs (j, j + d/2). */
function rotate(v: Float64Array, off: number, d: number, pos: number, freqs: Float64Array, mode: 'interleaved' | 'half'): void {
  for (let j = 0; j < d / 2; j++) {
    const [a, b] = mode === 'interleaved' ? [off + 2 * j, off + 2 * j + 1] : [off + j, off + d / 2 + j];
    const c = Math.cos(pos * freqs[j]!);
    const s = Math.sin(pos * freqs[j]!);
    const re = v[a]!;
    const im = v[b]!;
    v[a] = re * c - im * s;
    v[b] = re * s + im * c;
  }
}

export interface TokenState {
  qNope: Float64Array[]; qRope: Float64Array[]; kNope: Float64Array[]; kRope: Float64Array; v: Float64Array[];
  idxQ: Float64Array[]; idxK: Float64Array; idxW: Float64Array;
}

/** Everything the model computes for one token at `pos` from its hidden state x. */
export function modelToken(exact: ExactWeights, d: TinyDims, layer: number, s: ModelSettings, x: Float64Array, pos: number): TokenState {
  const W = (n: string): Float64Array => exact.get(`model.layers.${layer}.self_attn.${n}`)!.values;
  const freqs = yarnFrequencies(d.rope, s);
  const cq = rmsNorm(mv(W('q_a_proj.weight'), d.qLora, d.hidden, x), W('q_a_layernorm.weight'), s.rmsNormEps);
  const q = mv(W('q_b_proj.weight'), d.heads * (d.nope + d.rope), d.qLora, cq);
  const kv = mv(W('kv_a_proj_with_mqa.weight'), d.kvLora + d.rope, d.hidden, x);
  const c = rmsNorm(kv.subarray(0, d.kvLora), W('kv_a_layernorm.weight'), s.rmsNormEps);
  const kRope = kv.slice(d.kvLora);
  rotate(kRope, 0, d.rope, pos, freqs, 'interleaved');
  const qNope: Float64Array[] = [];
  const qRope: Float64Array[] = [];
  const kNope: Float64Array[] = [];
  const v: Float64Array[] = [];
  const kvB = W('kv_b_proj.weight');
  for (let h = 0; h < d.heads; h++) {
    const base = h * (d.nope + d.rope);
    qNope.push(q.slice(base, base + d.nope));
    const r = q.slice(base + d.nope, base + d.nope + d.rope);
    rotate(r, 0, d.rope, pos, freqs, 'interleaved');
    qRope.push(r);
    kNope.push(mv(kvB, d.nope, d.kvLora, c, 0, h * (d.nope + d.vHead)));
    v.push(mv(kvB, d.vHead, d.kvLora, c, 0, h * (d.nope + d.vHead) + d.nope));
  }
  // Indexer: q from the normalized q latent, k LayerNorm'd, both roped on their first d.rope dims.
  const iq = mv(W('indexer.wq_b.weight'), d.idxHeads * d.idxDim, d.qLora, cq);
  const idxQ: Float64Array[] = [];
  for (let h = 0; h < d.idxHeads; h++) {
    const hq = iq.slice(h * d.idxDim, (h + 1) * d.idxDim);
    rotate(hq, 0, d.rope, pos, freqs, 'half');
    idxQ.push(hq);
  }
  const k = mv(W('indexer.wk.weight'), d.idxDim, d.hidden, x);
  const mean = k.reduce((a, b) => a + b, 0) / d.idxDim;
  const variance = k.reduce((a, b) => a + (b - mean) ** 2, 0) / d.idxDim;
  const g = W('indexer.k_norm.weight');
  const beta = W('indexer.k_norm.bias');
  const idxK = k.map((a, i) => ((a - mean) / Math.sqrt(variance + 1e-6)) * g[i]! + beta[i]!);
  rotate(idxK, 0, d.rope, pos, freqs, 'half');
  const idxW = mv(W('indexer.weights_proj.weight'), d.idxHeads, d.hidden, x);
  return { qNope, qRope, kNope, kRope, v, idxQ, idxK, idxW };
}

const dot = (a: Float64Array, b: Float64Array): number => a.reduce((s, x, i) => s + x * b[i]!, 0);

/** The indexer's score of key token k for query token q (positive scales dropped: ranks only). */
export function indexerScore(q: TokenState, k: TokenState): number {
  let s = 0;
  for (let h = 0; h < q.idxQ.length; h++) s += q.idxW[h]! * Math.max(0, dot(q.idxQ[h]!, k.idxK));
  return s;
}

/** Head h's output value for query q attending to `keys` (softmax with `scale`). */
export function attend(q: TokenState, keys: readonly TokenState[], h: number, scale: number): Float64Array {
  const scores = keys.map((k) => (dot(q.qNope[h]!, k.kNope[h]!) + dot(q.qRope[h]!, k.kRope)) * scale);
  const m = Math.max(...scores);
  const p = scores.map((x) => Math.exp(x - m));
  const z = p.reduce((a, b) => a + b, 0);
  const out = new Float64Array(keys[0]!.v[h]!.length);
  keys.forEach((k, j) => k.v[h]!.forEach((x, i) => (out[i] += (p[j]! / z) * x)));
  return out;
}
