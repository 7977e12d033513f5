// Cancellation of async calls: with a signal, the call runs as a series of token chunks, checking the
// signal between them; the cache rows it writes are saved first and put back on an abort.
import { DsaError, ErrorCode, type Tensor } from '@dsa/tensor-core';

/** `options.signal`: undefined or an AbortSignal (checked by structure, as tensors are). */
export function signalOption(options: unknown): AbortSignal | undefined {
  const value = (options as { signal?: unknown } | undefined | null)?.signal;
  if (value === undefined) return undefined;
  const v = value as Partial<AbortSignal> | null;
  if (typeof v !== 'object' || v === null || typeof v.aborted !== 'boolean' || typeof v.addEventListener !== 'function') {
    throw new DsaError(ErrorCode.ARGUMENT, `signal: expected an AbortSignal, got ${value === null ? 'null' : typeof value === 'object' ? 'an object that is not one' : String(value)}`, 'signal');
  }
  return value as AbortSignal;
}

export function abortedError(): DsaError {
  return new DsaError(ErrorCode.ABORTED, 'signal: the call was aborted; the cache is as it was before it', 'signal');
}

// Every GEMM of the kernel splits rows into blocks of 8 (192 per task) but takes other kernels for
// 8 rows or fewer (the decode region up to 4 tokens, the GEMV kernel, a K split). A chunk gives the
// same bytes as the whole call when it starts at a multiple of 8 and is longer than 8 rows: so
// chunks are 64 tokens, with a short last piece joined to the one before. Calls of up to 64 tokens
// are one chunk.
const CHUNK = 64;
const SMALL = 8;

/** [t0, t1) token ranges that together cover [0, tokens). */
export function tokenChunks(tokens: number): [number, number][] {
  const out: [number, number][] = [];
  for (let t0 = 0; t0 < tokens; t0 += CHUNK) out.push([t0, Math.min(tokens, t0 + CHUNK)]);
  const last = out[out.length - 1];
  if (out.length > 1 && last![1] - last![0] <= SMALL) {
    out.pop();
    out[out.length - 1]![1] = last![1];
  }
  return out;
}

/** Copies of the rows of a [blocks, block_size, 1, d] cache at the non-negative slots, and their undo. */
export function saveRows(cache: Tensor<'bfloat16'>, slots: Int32Array): () => void {
  const d = cache.shape[3]!;
  const rows = slots.filter((s) => s >= 0);
  const data = Array.from(rows, (s) => cache.data.slice(s * d, (s + 1) * d));
  return () => rows.forEach((s, i) => cache.data.set(data[i]!, s * d));
}

/** Tokens [t0, t1) of a [b, s1, ...rest] tensor, as a [1, t1 − t0, ...rest] view of the same memory. */
export function tokenRows<T extends Tensor>(t: T, t0: number, t1: number): T {
  const rest = t.shape.slice(2);
  const w = rest.reduce((a, v) => a * v, 1);
  return { ...t, shape: [1, t1 - t0, ...rest], data: t.data.subarray(t0 * w, t1 * w) } as T;
}
