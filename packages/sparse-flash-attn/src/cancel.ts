// Cancellation of async calls: with a signal, a call runs as a series of native calls over ranges of
// query rows (tensor-core's planRowChunks) and checks the signal between them. The attention only reads the caches, so an
// abort has nothing to restore; the native call in flight always finishes first (the call keeps the
// cache locked until then).
import { planRowChunks, type RowChunk } from '@dsa/tensor-core';

export { abortedError, chunkAct, signalOption } from '@dsa/tensor-core';

/**
 * Work per native call, in multiply-adds: about 2.5 ms on the AVX-512 path, so an abort takes effect
 * within a few ms while the extra calls cost ~4% (2^27: ~8%). Mutable for tests.
 */
export const chunking = { budget: 2 ** 28 };

/** planRowChunks with this package's budget by default. */
export function planChunks(b: number, s1: number, rowCost: (bi: number, i: number) => number, budget = chunking.budget, rowStep = 1): RowChunk[] {
  return planRowChunks(b, s1, rowCost, budget, rowStep);
}
