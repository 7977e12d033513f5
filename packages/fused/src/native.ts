import { type ConfigurableAddon, type Bf16Tensor, type I32Tensor, fromNativeError, loadAddon } from '@dsa/tensor-core';
import type { LayerWeights, StepInputs } from './inputs.js';

export interface NativeOptions {
  softmaxScale: number;
  rmsNormEps: number;
  layerNormEps: number;
  indexerRope: 'interleaved' | 'half';
  topk: number;
  sparseMode: 0 | 3;
  returnIndices: boolean;
}

export interface NativeResult {
  out: Bf16Tensor;
  indices?: I32Tensor;
  /** Milliseconds spent in each phase of the fused call. */
  times: { projections: number; mlaProlog: number; indexerProlog: number; lightningIndexer: number; sparseFlashAttention: number };
}

/** The fused addon's prepared layer: weights packed once in native memory, a reused workspace. */
export interface NativeLayer {
  forward(step: StepInputs, options: NativeOptions): NativeResult;
  /** `cancel`: an Int32Array cell; setting element 0 to 1 aborts the call at its next check point. */
  forwardAsync(step: StepInputs, options: NativeOptions, cancel?: Int32Array): Promise<NativeResult>;
  dispose(): void;
  readonly bytes: number;
}

export interface FusedAddon extends ConfigurableAddon {
  /** "mla-prolog=0.1.0,indexer-prolog=0.1.0,...": the stage sources compiled in. */
  stageVersions: string;
  Layer: new (weights: LayerWeights) => NativeLayer;
}

let addon: FusedAddon | undefined;

/** The fused operator's addon (the four stages' kernels compiled into one .node). */
export function nativeAddon(): FusedAddon {
  addon ??= loadAddon<FusedAddon>({ packageName: '@dsa/fused', addonName: 'dsa_fused', packageRoot: new URL('..', import.meta.url) });
  return addon;
}

export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNativeError(e);
  }
}
