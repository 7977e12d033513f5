import { type Bf16Tensor, type ConfigurableAddon, type F32Tensor, type I32Tensor, loadAddon, type U8Tensor } from '@dsa/tensor-core';

/** The addon's kernel entry points. Outputs are caller-allocated and fully overwritten. */
export interface StageAddon extends ConfigurableAddon {
  run(
    query: Bf16Tensor, weights: Bf16Tensor, indexKCache: Bf16Tensor | U8Tensor, blockTable: I32Tensor, actSeqs: I32Tensor,
    indices: I32Tensor, scores: F32Tensor | null, topk: number, sparseMode: number,
    /** Benchmarks: receives [score CPU s, top-k CPU s, merge wall s] (summed over threads). */
    timing?: Float64Array,
  ): void;
  runAsync(
    query: Bf16Tensor, weights: Bf16Tensor, indexKCache: Bf16Tensor | U8Tensor, blockTable: I32Tensor, actSeqs: I32Tensor,
    indices: I32Tensor, scores: F32Tensor | null, topk: number, sparseMode: number,
  ): Promise<void>;
}

let addon: StageAddon | undefined;

/** This package's native addon, loaded on first use. */
export function nativeAddon(): StageAddon {
  addon ??= loadAddon<StageAddon>({ packageName: '@dsa/lightning-indexer', addonName: 'dsa_lightning_indexer', packageRoot: new URL('..', import.meta.url) });
  return addon;
}
