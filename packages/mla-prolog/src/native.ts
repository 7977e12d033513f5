import { type Bf16Tensor, type ConfigurableAddon, loadAddon, type Tensor } from '@dsa/tensor-core';
import type { MlaPrologOutputs } from './validate.js';

export interface StageAddon extends ConfigurableAddon {
  mlaProlog(inputs: Record<string, Tensor>, rmsNormEps: number, out?: Partial<MlaPrologOutputs>): MlaPrologOutputs;
  mlaPrologAsync(inputs: Record<string, Tensor>, rmsNormEps: number, out?: Partial<MlaPrologOutputs>): Promise<MlaPrologOutputs>;
  /** W_UK [n, qk_nope, kv_lora] ND -> per-head packed (format 'PACKED', same shape). */
  packWUk(wUk: Bf16Tensor): Bf16Tensor;
}

let addon: StageAddon | undefined;

/** This package's native addon, loaded on first use. */
export function nativeAddon(): StageAddon {
  addon ??= loadAddon<StageAddon>({ packageName: '@dsa/mla-prolog', addonName: 'dsa_mla_prolog', packageRoot: new URL('..', import.meta.url) });
  return addon;
}
