import { type ConfigurableAddon, loadAddon } from '@dsa/tensor-core';

export type StageAddon = ConfigurableAddon;

let addon: StageAddon | undefined;

/** This package's native addon, loaded on first use. */
export function nativeAddon(): StageAddon {
  addon ??= loadAddon<StageAddon>({ packageName: '@dsa/indexer-prolog', addonName: 'dsa_indexer_prolog', packageRoot: new URL('..', import.meta.url) });
  return addon;
}
