// Cancellation helpers shared by every package's async calls: the `signal` option, the error of an
// aborted call, saving the cache rows a call will write (to put them back on an abort), and cutting
// a call into chunks of query rows or tokens that a signal is checked between.
import { DsaError, ErrorCode } from './errors.js';
import type { Tensor } from './tensor.js';

/** `options.signal`: undefined or an AbortSignal, checked by structure (an AbortSignal of any realm). */
export function signalOption(value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  const v = value as Partial<AbortSignal> | null;
  if (typeof v !== 'object' || v === null || typeof v.aborted !== 'boolean' || typeof v.addEventListener !== 'function') {
    const got = v === null ? 'null' : typeof v === 'object' ? 'an object without aborted/addEventListener' : `${typeof v} ${String(v)}`;
    throw new DsaError(ErrorCode.ARGUMENT, `signal: expected an AbortSignal, got ${got}`, 'signal');
  }
  return value as AbortSignal;
}

/** The error of an aborted call. */
export function abortedError(): DsaError {
  return new DsaError(ErrorCode.ABORTED, 'signal: the call was aborted; the caches are as they were before it', 'signal');
}

/** Copies of the rows of [blocks, block_size, 1, d] caches at the non-negative slots, and their undo. */
export function saveCacheRows(caches: readonly Tensor[], slots: ArrayLike<number>): () => void {
  const rows = Array.from(slots).filter((s) => s >= 0);
  const saved = caches.map((cache) => {
    const d = cache.shape[3]!;
    return { cache, d, data: rows.map((s) => cache.data.slice(s * d, (s + 1) * d)) };
  });
  return () => {
    for (const { cache, d, data } of saved) rows.forEach((s, i) => cache.data.set(data[i]!, s * d));
  };
}

/** Tokens [t0, t1) of a [b, s1, ...rest] tensor, as a [1, t1 − t0, ...rest] view of the same memory. */
export function tokenRows<T extends Tensor>(t: T, t0: number, t1: number): T {
  const rest = t.shape.slice(2);
  const w = rest.reduce((a, v) => a * v, 1);
  return { ...t, shape: [1, t1 - t0, ...rest], data: t.data.subarray(t0 * w, t1 * w) } as T;
}

/**
 * Query rows [i0, i1) of batch entries [b0, b1): either whole entries (i0 = 0, i1 = s1) or a range of
 * one entry's rows. Either way the rows are contiguous in every [b, s1, ...] tensor.
 */
export interface RowChunk {
  b0: number;
  b1: number;
  i0: number;
  i1: number;
}

/**
 * Cut the b × s1 query rows into chunks of about `budget` work each: consecutive whole batch entries
 * while they fit, else one entry's rows in runs. A chunk ends only at a row count that is a multiple
 * of `rowStep` (or at the end of the rows): the kernels spread rows over threads, so give them the
 * thread count. A single row larger than the budget is a chunk when `rowStep` is 1.
 */
export function planRowChunks(b: number, s1: number, rowCost: (bi: number, i: number) => number, budget: number, rowStep = 1): RowChunk[] {
  const chunks: RowChunk[] = [];
  if (s1 === 0) return chunks;
  const entry = (bi: number): number => {
    let c = 0;
    for (let i = 0; i < s1; i++) c += rowCost(bi, i);
    return c;
  };
  for (let bi = 0; bi < b;) {
    let total = entry(bi);
    if (total <= budget || s1 < rowStep) {
      let b1 = bi + 1;
      while (b1 < b) {
        const next = entry(b1);
        if (total + next > budget && ((b1 - bi) * s1) % rowStep === 0) break;
        total += next;
        b1++;
      }
      chunks.push({ b0: bi, b1, i0: 0, i1: s1 });
      bi = b1;
      continue;
    }
    for (let i0 = 0; i0 < s1;) {
      let i1 = i0 + 1;
      let run = rowCost(bi, i0);
      while (i1 < s1 && (run + rowCost(bi, i1) <= budget || (i1 - i0) % rowStep !== 0)) run += rowCost(bi, i1++);
      chunks.push({ b0: bi, b1: bi + 1, i0, i1 });
      i0 = i1;
    }
    bi++;
  }
  return chunks;
}

/**
 * The act to pass for rows [i0, i1) of an entry with `act` keys, so that each row keeps its key count:
 * under sparseMode 3, row i of s1 sees act − (s1 − 1 − i) keys, and as row i − i0 of i1 − i0 it sees
 * act' − (i1 − 1 − i). Rows whose count would be ≤ 0 stay without keys when act' is clamped to 0.
 */
export function chunkAct(act: number, s1: number, i1: number, sparseMode: 0 | 3): number {
  return sparseMode === 3 ? Math.max(0, act - (s1 - i1)) : act;
}
