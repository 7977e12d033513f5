import { type ConfigurableAddon, loadAddon, type Tensor } from '@dsa/tensor-core';

export interface IndexerPrologNativeResult {
  query: Tensor<'bfloat16'>;
  weights: Tensor<'bfloat16'>;
}

export interface StageAddon extends ConfigurableAddon {
  /** Validated again in C++; `wIdxKProj` is the optional [h, idx_dim + idx_heads] = [wIdxK | wIdxProj]. */
  indexerProlog(inputs: object, layerNormEps: number, indexerRope: string, wIdxKProj?: Tensor): IndexerPrologNativeResult;
  indexerPrologAsync(inputs: object, layerNormEps: number, indexerRope: string, wIdxKProj?: Tensor): Promise<IndexerPrologNativeResult>;
}

let addon: StageAddon | undefined;

/** This package's native addon, loaded on first use. */
export function nativeAddon(): StageAddon {
  addon ??= loadAddon<StageAddon>({ packageName: '@dsa/indexer-prolog', addonName: 'dsa_indexer_prolog', packageRoot: new URL('..', import.meta.url) });
  return addon;
}
