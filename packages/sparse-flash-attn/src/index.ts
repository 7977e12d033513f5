import { assertCachesIdle, fromNativeError, getNumThreads, withCaches, type Bf16Tensor, type Tensor } from '@dsa/tensor-core';
import { abortedError, chunkAct, planChunks } from './cancel.js';
import { checkSfaCall, rowEff, type SfaCall, type SparseFlashAttentionInputs, type SparseFlashAttentionOptions } from './check.js';
import { nativeAddon } from './native.js';

export { nativeAddon, type StageAddon, type SfaProfile, type NativeExtra } from './native.js';
export { rowEff, type SparseFlashAttentionInputs, type SparseFlashAttentionOptions, type SfaDims } from './check.js';

export interface SparseFlashAttentionResult {
  /** bf16 [b, s1, n, kvLora]: the latent attention output (before W_UV). */
  out: Bf16Tensor;
}

// The caches a call reads: async calls on them are serialized with every other call that holds them
// (the MLA prolog writes them), and a sync call while an async one holds them throws DSA_E_STATE.
function readCaches(inputs: SparseFlashAttentionInputs): [string, Tensor][] {
  return inputs.krCache ? [['kvCache', inputs.kvCache], ['krCache', inputs.krCache]] : [['kvCache', inputs.kvCache]];
}

/**
 * Stage 4 of DSA: every query row attends, per head, to the cache entries its top-k indices select
 * (−1 skipped), keys kv ‖ kr, values kv, softmax in fp32, output bf16. Rows without keys give zeros.
 * Everything is validated first; the caches are only read.
 */
export function sparseFlashAttention(inputs: SparseFlashAttentionInputs, options: SparseFlashAttentionOptions = {}): SparseFlashAttentionResult {
  const { softmaxScale, sparseMode, signal } = checkSfaCall(inputs, options);
  if (signal?.aborted) throw abortedError();
  assertCachesIdle(readCaches(inputs));
  try {
    return { out: nativeAddon().sparseFlashAttention(inputs, softmaxScale, sparseMode) };
  } catch (e) {
    throw fromNativeError(e);
  }
}

/**
 * The same on a worker thread: the event loop keeps running; resolves to the same bytes. Calls on the
 * same caches run one after the other; with `options.signal`, an abort rejects with DSA_E_ABORTED
 * after the chunk of query rows in flight.
 */
export async function sparseFlashAttentionAsync(inputs: SparseFlashAttentionInputs, options: SparseFlashAttentionOptions = {}): Promise<SparseFlashAttentionResult> {
  const call = checkSfaCall(inputs, options);
  const { softmaxScale, sparseMode, signal } = call;
  if (signal?.aborted) throw abortedError();
  return withCaches(readCaches(inputs), async () => {
    if (signal?.aborted) throw abortedError();
    try {
      if (signal) return { out: await runChunks(inputs, call, signal) };
      return { out: await nativeAddon().sparseFlashAttentionAsync(inputs, softmaxScale, sparseMode) };
    } catch (e) {
      throw fromNativeError(e);
    }
  });
}

/** The async call as native calls over chunks of query rows writing into views of one output. */
async function runChunks(inputs: SparseFlashAttentionInputs, call: SfaCall, signal: AbortSignal): Promise<Bf16Tensor> {
  const { b, s1, n, kvLora, rope, topk, maxBlocks } = call.dims;
  const { qNope, qRope, indices, blockTable, actSeqs } = inputs;
  const act = actSeqs.data;
  const out: Bf16Tensor = { dtype: 'bfloat16', shape: [b, s1, n, kvLora], data: new Uint16Array(b * s1 * n * kvLora), format: 'ND' };
  // Per row: the keys it may read (at most topk) times the multiply-adds of a key for all heads.
  const rowCost = (bi: number, i: number): number =>
    (Math.min(topk, Math.max(rowEff(act[bi]!, s1, i, call.sparseMode), 0)) + 1) * n * (2 * kvLora + rope) + topk;
  const view = <T extends Tensor>(t: T, r0: number, r1: number, shape: number[]): T => {
    const per = t.data.length / (b * s1);
    return { ...t, shape, data: t.data.subarray(r0 * per, r1 * per), format: 'ND' };
  };
  // Rows per chunk a multiple of the thread count: with fewer rows than threads the kernel splits rows
  // over head groups, each of which gathers the row's keys again.
  for (const { b0, b1, i0, i1 } of planChunks(b, s1, rowCost, undefined, getNumThreads())) {
    const nb = b1 - b0;
    const ns = i1 - i0;
    const r0 = b0 * s1 + i0;
    const r1 = r0 + nb * ns;
    await nativeAddon().sparseFlashAttentionAsync(
      {
        qNope: view(qNope, r0, r1, [nb, ns, n, kvLora]),
        qRope: view(qRope, r0, r1, [nb, ns, n, rope]),
        kvCache: inputs.kvCache,
        krCache: inputs.krCache,
        indices: view(indices, r0, r1, [nb, ns, topk]),
        blockTable: { ...blockTable, shape: [nb, maxBlocks], data: blockTable.data.subarray(b0 * maxBlocks, b1 * maxBlocks), format: 'ND' },
        actSeqs: { ...actSeqs, shape: [nb], data: ns === s1 ? act.subarray(b0, b1) : Int32Array.of(chunkAct(act[b0]!, s1, i1, call.sparseMode)), format: 'ND' },
      },
      call.softmaxScale,
      call.sparseMode,
      { out: view(out, r0, r1, [nb, ns, n, kvLora]) },
    );
    if (signal.aborted) throw abortedError();
  }
  return out;
}
