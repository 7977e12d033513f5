import { fromNativeError, type Bf16Tensor } from '@dsa/tensor-core';
import { checkSfaCall, type SparseFlashAttentionInputs, type SparseFlashAttentionOptions } from './check.js';
import { nativeAddon } from './native.js';

export { nativeAddon, type StageAddon, type SfaProfile, type NativeExtra } from './native.js';
export { rowEff, type SparseFlashAttentionInputs, type SparseFlashAttentionOptions, type SfaDims } from './check.js';

export interface SparseFlashAttentionResult {
  /** bf16 [b, s1, n, kvLora]: the latent attention output (before W_UV). */
  out: Bf16Tensor;
}

/**
 * Stage 4 of DSA: every query row attends, per head, to the cache entries its top-k indices select
 * (−1 skipped), keys kv ‖ kr, values kv, softmax in fp32, output bf16. Rows without keys give zeros.
 * Everything is validated first; the caches are only read.
 */
export function sparseFlashAttention(inputs: SparseFlashAttentionInputs, options: SparseFlashAttentionOptions = {}): SparseFlashAttentionResult {
  const { softmaxScale, sparseMode } = checkSfaCall(inputs, options);
  try {
    return { out: nativeAddon().sparseFlashAttention(inputs, softmaxScale, sparseMode) };
  } catch (e) {
    throw fromNativeError(e);
  }
}

/** The same on a worker thread: the event loop keeps running; resolves to the same bytes. */
export async function sparseFlashAttentionAsync(inputs: SparseFlashAttentionInputs, options: SparseFlashAttentionOptions = {}): Promise<SparseFlashAttentionResult> {
  const { softmaxScale, sparseMode } = checkSfaCall(inputs, options);
  try {
    return { out: await nativeAddon().sparseFlashAttentionAsync(inputs, softmaxScale, sparseMode) };
  } catch (e) {
    throw fromNativeError(e);
  }
}
