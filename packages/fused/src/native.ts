import { type ConfigurableAddon, loadAddon } from '@dsa/tensor-core';

export type StageAddon = ConfigurableAddon;

let addon: StageAddon | undefined;

/** This package's native addon, loaded on first use. */
export function nativeAddon(): StageAddon {
  addon ??= loadAddon<StageAddon>({ packageName: '@dsa/fused', addonName: 'dsa_fused', packageRoot: new URL('..', import.meta.url) });
  return addon;
}
