import { type ConfigurableAddon, loadAddon, type Tensor } from '@dsa/tensor-core';
import type { SparseFlashAttentionInputs } from './check.js';

export interface SfaProfile {
  out: Tensor<'bfloat16'>;
  /** Time spent gathering rows through the block table, summed over threads. */
  gatherSeconds: number;
  /** All kernel task time, summed over threads. */
  threadSeconds: number;
}

/** Native-only extras: `out` writes into a given bf16 [b, s1, n, kvLora] tensor (tests poison it). */
export interface NativeExtra {
  out?: Tensor<'bfloat16'>;
  profile?: boolean;
}

/**
 * The addon. It checks shapes and every index again (a bad call throws a coded error and writes
 * nothing); softmaxScale 0 selects the default.
 */
export interface StageAddon extends ConfigurableAddon {
  sparseFlashAttention(inputs: SparseFlashAttentionInputs, softmaxScale?: number, sparseMode?: number, extra?: NativeExtra & { profile?: false }): Tensor<'bfloat16'>;
  sparseFlashAttention(inputs: SparseFlashAttentionInputs, softmaxScale: number | undefined, sparseMode: number | undefined, extra: NativeExtra & { profile: true }): SfaProfile;
  sparseFlashAttentionAsync(inputs: SparseFlashAttentionInputs, softmaxScale?: number, sparseMode?: number, extra?: { out?: Tensor<'bfloat16'> }): Promise<Tensor<'bfloat16'>>;
}

let addon: StageAddon | undefined;

/** This package's native addon, loaded on first use. */
export function nativeAddon(): StageAddon {
  addon ??= loadAddon<StageAddon>({ packageName: '@dsa/sparse-flash-attn', addonName: 'dsa_sparse_flash_attn', packageRoot: new URL('..', import.meta.url) });
  return addon;
}
