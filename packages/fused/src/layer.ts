import {
  abortedError, assertCachesIdle, DimBinder, DsaError, ErrorCode, fromNativeError, isFp8Weight, packWeights, withCaches, type Bf16Tensor, type Tensor,
} from '@dsa/tensor-core';
import { runChain, runChainAsync, type OperatorResult, type StageTimes } from './chain.js';
import { checkStep, checkWeights, resolveOptions, WEIGHT_KEYS, type LayerWeights, type OperatorDims, type ResolvedOptions, type StepInputs } from './inputs.js';
import { callNative, nativeAddon, type NativeLayer, type NativeResult } from './native.js';
import type { SparseAttentionOptions } from './presets.js';

const PACKABLE = ['wDq', 'wUqQr', 'wDkvKr', 'wIdxQb', 'wIdxK', 'wIdxProj'] as const;

/** Per-phase wall times of the last forward call, in ms. */
export type LayerTimes = Partial<StageTimes & { projections: number }>;

/**
 * One DSA layer with its weights prepared once: for 'fused' the fused addon packs them (and joins
 * the four x-side weights into one, so x is read once per call) in native memory; for 'chain' each
 * 2-D weight is packed with packWeights. Then `forward` runs decode steps or prefill chunks on the
 * caller's caches. The original weight buffers are not used after preparation, so they may be
 * dropped. Call `dispose()` to free the native memory early.
 */
export class DsaLayer {
  readonly options: SparseAttentionOptions;
  /** Phase times of the last forward call (ms). */
  lastTimes: LayerTimes = {};
  private weights: LayerWeights | undefined;
  private readonly dims: DimBinder;
  private native: NativeLayer | undefined;
  private packed: LayerWeights | undefined;
  private disposed = false;

  constructor(weights: LayerWeights, options: SparseAttentionOptions = {}) {
    this.dims = checkWeights(weights);
    resolveOptions(options, this.dims.get('kv_lora'), this.dims.get('rope'));
    this.weights = weights;
    this.options = { ...options };
  }

  /** Run the operator for one call's tokens; options override the layer's. */
  forward(step: StepInputs, options: SparseAttentionOptions = {}): OperatorResult {
    const [o, d] = this.check(step, options);
    if (o.signal?.aborted) throw abortedError();
    assertCachesIdle(cachesOf(step));
    if (d.b === 0 || d.s1 === 0) return emptyResult(d, o);
    if (o.mode === 'chain') {
      const times: StageTimes = { mlaProlog: 0, indexerProlog: 0, lightningIndexer: 0, sparseFlashAttention: 0 };
      const r = runChain({ ...this.chainWeights(), ...step }, o, times);
      this.lastTimes = times;
      return r;
    }
    const layer = this.nativeLayer();
    return this.fromNative(callNative(() => layer.forward(step, o)));
  }

  /**
   * The same without blocking the event loop. Do not touch the caches until it settles. With
   * `options.signal`, an abort stops the call at its next check point and rejects with
   * DSA_E_ABORTED, leaving the caches as they were before the call.
   */
  async forwardAsync(step: StepInputs, options: SparseAttentionOptions = {}): Promise<OperatorResult> {
    const [o, d] = this.check(step, options);
    if (o.signal?.aborted) throw abortedError();
    if (d.b === 0 || d.s1 === 0) return emptyResult(d, o);
    // Calls on the same caches run one after the other (see tensor-core's cache lock).
    return withCaches(cachesOf(step), async () => {
      if (o.signal?.aborted) throw abortedError();
      if (o.mode === 'chain') return runChainAsync({ ...this.chainWeights(), ...step }, o);
      const layer = this.nativeLayer();
      const cell = o.signal ? new Int32Array(1) : undefined;
      const onAbort = (): void => {
        Atomics.store(cell!, 0, 1);
      };
      o.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        return this.fromNative(await layer.forwardAsync(step, o, cell));
      } catch (e) {
        throw fromNativeError(e);
      } finally {
        o.signal?.removeEventListener('abort', onAbort);
      }
    });
  }

  /** Free the prepared weights now (later calls throw DSA_E_STATE). */
  dispose(): void {
    this.native?.dispose();
    this.native = undefined;
    this.packed = undefined;
    this.weights = undefined;
    this.disposed = true;
  }

  /** Bytes of prepared weights held in native memory (0 until the first fused call). */
  get nativeBytes(): number {
    return this.native?.bytes ?? 0;
  }

  private check(step: StepInputs, options: SparseAttentionOptions): [ResolvedOptions, OperatorDims] {
    if (this.disposed) throw new DsaError(ErrorCode.STATE, 'layer: this DsaLayer was disposed', 'layer');
    if (typeof step !== 'object' || step === null) throw new DsaError(ErrorCode.ARGUMENT, `inputs: expected an object of tensors, got ${String(step)}`, 'inputs');
    const dims = this.dims.clone();
    const d = checkStep(step, dims);
    return [resolveOptions({ ...this.options, ...options }, d.kvLora, d.rope), d];
  }

  private nativeLayer(): NativeLayer {
    this.native ??= callNative(() => new (nativeAddon().Layer)(this.weights!));
    return this.native;
  }

  private chainWeights(): LayerWeights {
    if (this.packed === undefined) {
      // Only the weights: a full inputs object given as weights must not bring caches into the chain's calls.
      const w = Object.fromEntries(WEIGHT_KEYS.map((k) => [k, this.weights![k]])) as unknown as LayerWeights;
      for (const k of PACKABLE) if (w[k].format !== 'PACKED') w[k] = packWeights(w[k]);
      // An FP8 W_UK is packed too (all heads at once); a bf16 one is read as it is (ND).
      if (isFp8Weight(w.wUk) && w.wUk.format !== 'PACKED') w.wUk = packWeights(w.wUk);
      this.packed = w;
    }
    return this.packed;
  }

  private fromNative(r: NativeResult): OperatorResult {
    this.lastTimes = r.times;
    return r.indices ? { out: r.out, indices: r.indices } : { out: r.out };
  }
}

/** The caches a call writes (no krCache with an FP8 kvCache), for tensor-core's cache lock. */
export function cachesOf(s: StepInputs): [string, Tensor][] {
  return s.krCache
    ? [['kvCache', s.kvCache], ['krCache', s.krCache], ['indexKCache', s.indexKCache]]
    : [['kvCache', s.kvCache], ['indexKCache', s.indexKCache]];
}

function emptyResult(d: OperatorDims, o: ResolvedOptions): OperatorResult {
  const out: Bf16Tensor = { dtype: 'bfloat16', shape: [d.b, d.s1, d.n, d.kvLora], data: new Uint16Array(0), format: 'ND' };
  return o.returnIndices
    ? { out, indices: { dtype: 'int32', shape: [d.b, d.s1, o.topk], data: new Int32Array(0), format: 'ND' } }
    : { out };
}
