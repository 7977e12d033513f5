import { freemem } from 'node:os';
import { lastLevelCacheBytes } from './machine.js';
import { coreAddon } from './native.js';

export interface Ceilings {
  threads: number;
  /** Streaming read of a buffer several times the last-level cache, GB/s (best 256 MiB segment). */
  readGBs: number;
  /** Peak bf16 dot-product rate (registers only), GFLOP/s (1 multiply-add = 2 FLOP; best run). */
  bf16Gflops: number;
  /** Bytes of the buffer the read probe streamed. */
  readBytes: number;
}

/**
 * The read probe's buffer: 4x the last-level cache (at least 256 MiB), but no more than a quarter
 * of the free memory.
 */
export function probeBytes(): number {
  const want = Math.max(256 * 2 ** 20, 4 * lastLevelCacheBytes());
  return Math.min(want, Math.max(256 * 2 ** 20, Math.floor(freemem() / 4)));
}

/**
 * Measure this machine's ceilings for `threads` threads: benchmarks report their figures as a
 * fraction of these, measured in the same run. The read probe streams a 2 MiB-aligned buffer with
 * huge pages advised (allocateLarge), with aligned AVX-512 loads, 8 lines in flight per thread,
 * each thread its own part: the way the GEMV kernels read packed weights. The dot probe keeps 24
 * independent vdpbf16ps chains per thread (enough for two 512-bit pipes of latency 6).
 * Each figure is the best of its samples (256 MiB segments of the read, runs of the dot loop):
 * contention on a shared machine only lowers a sample.
 */
export function measureCeilings(threads: number, options: { bytes?: number; reps?: number } = {}): Ceilings {
  const addon = coreAddon();
  const bytes = options.bytes ?? probeBytes();
  const r = addon.probeRead(bytes, threads, options.reps ?? 3);
  const read = r.bytes / Math.min(...r.passes);
  let dot = 0;
  for (let i = 0; i < 3; i++) {
    const d = addon.probeDot(20_000_000, threads);
    dot = Math.max(dot, d.flops / d.seconds);
  }
  return { threads, readGBs: read / 1e9, bf16Gflops: dot / 1e9, readBytes: bytes };
}
