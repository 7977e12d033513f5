// Cancellation of async calls: with a signal, the call runs as a series of token chunks, checking the
// signal between them; the cache rows it writes are saved first and put back on an abort.
import { DsaError, ErrorCode, type Tensor } from '@dsa/tensor-core';

/** `options.signal`: undefined or an AbortSignal (checked by structure, as tensors are). */
export function signalOption(options: unknown): AbortSignal | undefined {
  const value = (options as { signal?: unknown } | undefined)?.signal;
  if (value === undefined) return undefined;
  const v = value as Partial<AbortSignal> | null;
  if (typeof v !== 'object' || v === null || typeof v.aborted !== 'boolean' || typeof v.addEventListener !== 'function') {
    throw new DsaError(ErrorCode.ARGUMENT, `signal: expected an AbortSignal, got ${value === null ? 'null' : typeof value === 'object' ? 'an object that is not one' : String(value)}`, 'signal');
  }
  return value as AbortSignal;
}

export function abortedError(): DsaError {
  return new DsaError(ErrorCode.ABORTED, 'signal: the call was aborted; the caches are as they were before it', 'signal');
}

// The kernel runs its tokens in passes of 256 (kTokenChunk in mla_prolog_kernel.cc), and every GEMM
// splits rows into blocks of 8 (192 per task) but takes other kernels for 8 rows or fewer. A chunk
// gives the same bytes as the whole call when it lies inside one pass, starts at a multiple of 8
// from the pass start, and is longer than 8 rows unless its whole pass is: so chunks are 64 tokens
// from each pass start, with a short last piece of a pass joined to the one before.
export const KERNEL_PASS = 256;
const CHUNK = 64;
const SMALL = 8;

/** [t0, t1) token ranges that together cover [0, tokens). */
export function tokenChunks(tokens: number, pass = KERNEL_PASS): [number, number][] {
  const out: [number, number][] = [];
  for (let p0 = 0; p0 < tokens; p0 += pass) {
    const p1 = Math.min(tokens, p0 + pass);
    const first = out.length;
    for (let t0 = p0; t0 < p1; t0 += CHUNK) out.push([t0, Math.min(p1, t0 + CHUNK)]);
    const last = out[out.length - 1]!;
    if (out.length - first > 1 && last[1] - last[0] <= SMALL) {
      out.pop();
      out[out.length - 1]![1] = last[1];
    }
  }
  return out;
}

/** Copies of the rows of [blocks, block_size, 1, d] caches at the non-negative slots, and their undo. */
export function saveRows(caches: readonly Tensor<'bfloat16'>[], slots: Int32Array): () => void {
  const saved = caches.map((cache) => {
    const d = cache.shape[3]!;
    const rows = slots.filter((s) => s >= 0);
    return { cache, d, rows, data: Array.from(rows, (s) => cache.data.slice(s * d, (s + 1) * d)) };
  });
  return () => {
    for (const { cache, d, rows, data } of saved) rows.forEach((s, i) => cache.data.set(data[i]!, s * d));
  };
}

/** Tokens [t0, t1) of a [b, s1, ...rest] tensor, as a [1, t1 − t0, ...rest] view of the same memory. */
export function tokenRows<T extends Tensor>(t: T, t0: number, t1: number): T {
  const rest = t.shape.slice(2);
  const w = rest.reduce((a, v) => a * v, 1);
  return { ...t, shape: [1, t1 - t0, ...rest], data: t.data.subarray(t0 * w, t1 * w) } as T;
}
