import { assertCachesIdle, DsaError, ErrorCode, withCaches, type Bf16Tensor, type I32Tensor } from '@dsa/tensor-core';
import { runChain, runChainAsync, type OperatorResult } from './chain.js';
import { checkStep, checkWeights, resolveOptions, WEIGHT_KEYS, type LayerWeights, type SparseAttentionInputs, type StepInputs } from './inputs.js';
import { cachesOf, DsaLayer } from './layer.js';
import type { SparseAttentionOptions } from './presets.js';

export { presets, type PresetName, type SparseAttentionOptions } from './presets.js';
export { DsaLayer, type LayerTimes } from './layer.js';
export { PagedCacheManager, type CacheTensors, type PagedCacheConfig, type StepPlan } from './cache-manager.js';
export type { LayerWeights, StepInputs, SparseAttentionInputs, OperatorDims } from './inputs.js';
export type { OperatorResult, StageTimes } from './chain.js';
export { nativeAddon } from './native.js';
export { versions, type Versions } from './versions.js';
export {
  openCheckpoint, Checkpoint,
  type CheckpointConfig, type YarnScaling, type Fp8LayerWeights, type LoadProgress, type LayerLoadOptions, type OpenCheckpointOptions, type StoredTensor,
} from './checkpoint.js';

const STEP_KEYS = ['x', 'sin', 'cos', 'cacheIndex', 'kvCache', 'krCache', 'blockTable', 'actSeqs', 'indexKCache'] as const;

/**
 * Layers prepared by plain `sparseAttention` calls, keyed by the wDq buffer. A hit needs the same 11
 * buffers with the same sampled fingerprints; weights must not be changed in place between calls
 * (a change the sample misses would go unnoticed: use a new buffer, or a DsaLayer you control).
 */
const prepared = new WeakMap<object, { buffers: readonly object[]; prints: readonly string[]; layer: DsaLayer }>();

/** Shape, format and a sample of the contents: what must match for a prepared layer to be reused. */
function fingerprint(t: { shape?: readonly number[]; format?: string; data: ArrayLike<number> }): string {
  const data = t.data;
  let h = 0x811c9dc5 ^ data.length;
  const step = Math.max(1, Math.floor(data.length / 257));
  for (let i = 0; i < data.length; i += step) h = Math.imul(h ^ data[i]!, 0x01000193);
  if (data.length > 0) h = Math.imul(h ^ data[data.length - 1]!, 0x01000193);
  return `${t.format ?? 'ND'}:${String(t.shape)}:${h >>> 0}`;
}

function layerFor(w: LayerWeights): DsaLayer {
  checkWeights(w);
  const buffers = WEIGHT_KEYS.map((k) => w[k].data);
  const prints = WEIGHT_KEYS.map((k) => fingerprint(w[k]));
  const hit = prepared.get(buffers[0]!);
  if (hit && hit.buffers.every((b, i) => b === buffers[i]) && hit.prints.every((p, i) => p === prints[i])) return hit.layer;
  hit?.layer.dispose();
  const layer = new DsaLayer(w);
  prepared.set(buffers[0]!, { buffers, prints, layer });
  return layer;
}

function split(inputs: SparseAttentionInputs): [LayerWeights, StepInputs] {
  if (typeof inputs !== 'object' || inputs === null) {
    throw new DsaError(ErrorCode.ARGUMENT, `inputs: expected an object with the operator's 20 tensors, got ${String(inputs)}`, 'inputs');
  }
  const w = Object.fromEntries(WEIGHT_KEYS.map((k) => [k, inputs[k]])) as unknown as LayerWeights;
  const s = Object.fromEntries(STEP_KEYS.filter((k) => inputs[k] !== undefined).map((k) => [k, inputs[k]])) as unknown as StepInputs;
  return [w, s];
}

/**
 * The whole DSA operator (`npu_sparse_attention_pto`): writes the new tokens into kvCache, krCache
 * and indexKCache, selects topk keys per query row and returns the latent attention output
 * `out` [b, s1, n, kv_lora] (bf16), plus `indices` [b, s1, topk] with `returnIndices`.
 * mode 'fused' (default) makes one native call on weights prepared once per weight set and reused
 * by later calls with the same buffers; 'chain' calls the four stage packages.
 */
export function sparseAttention(inputs: SparseAttentionInputs, options: SparseAttentionOptions = {}): OperatorResult {
  const [w, s] = split(inputs);
  if (options?.mode === 'chain') {
    const d = checkStep(s, checkWeights(w));
    const o = resolveOptions(options, d.kvLora, d.rope);
    assertCachesIdle(cachesOf(s));
    return runChain(inputs, o);
  }
  return layerFor(w).forward(s, options);
}

/** `sparseAttention` without blocking the event loop (same bytes). */
export async function sparseAttentionAsync(inputs: SparseAttentionInputs, options: SparseAttentionOptions = {}): Promise<OperatorResult> {
  const [w, s] = split(inputs);
  if (options?.mode === 'chain') {
    const d = checkStep(s, checkWeights(w));
    const o = resolveOptions(options, d.kvLora, d.rope);
    return withCaches(cachesOf(s), () => runChainAsync(inputs, o));
  }
  return layerFor(w).forwardAsync(s, options);
}

/**
 * The seed's positional form, in its argument order (sin before cos); returns `out`.
 */
export function npuSparseAttentionPto(
  x: Bf16Tensor, wDq: Bf16Tensor, wUqQr: Bf16Tensor, wUk: Bf16Tensor, wDkvKr: Bf16Tensor, gammaCq: Bf16Tensor,
  gammaCkv: Bf16Tensor, sin: Bf16Tensor, cos: Bf16Tensor, cacheIndex: I32Tensor, kvCache: Bf16Tensor, krCache: Bf16Tensor,
  blockTable: I32Tensor, actSeqs: I32Tensor, wIdxQb: Bf16Tensor, wIdxK: Bf16Tensor, wIdxProj: Bf16Tensor,
  inGammaK: Bf16Tensor, inBetaK: Bf16Tensor, indexKCache: Bf16Tensor, options: SparseAttentionOptions = {},
): Bf16Tensor {
  return sparseAttention(
    { x, wDq, wUqQr, wUk, wDkvKr, gammaCq, gammaCkv, sin, cos, cacheIndex, kvCache, krCache, blockTable, actSeqs, wIdxQb,
      wIdxK, wIdxProj, inGammaK, inBetaK, indexKCache },
    { ...options, returnIndices: false },
  ).out;
}
