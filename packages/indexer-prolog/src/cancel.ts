// Cancellation of async calls: with a signal, the call runs as a series of token chunks, checking the
// signal between them; the cache rows it writes are saved first and put back on an abort.
export { abortedError, saveCacheRows, signalOption, tokenRows } from '@dsa/tensor-core';

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


