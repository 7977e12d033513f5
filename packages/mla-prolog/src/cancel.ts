// Cancellation of async calls: with a signal, the call runs as a series of token chunks, checking the
// signal between them; the cache rows it writes are saved first and put back on an abort.
export { abortedError, saveCacheRows, signalOption, tokenRows } from '@dsa/tensor-core';

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


