import { coreAddon } from './native.js';

export interface Ceilings {
  threads: number;
  /** Streaming read of a buffer far larger than the last-level cache, GB/s. */
  readGBs: number;
  /** Peak bf16 dot-product rate (registers only), GFLOP/s (1 multiply-add = 2 FLOP). */
  bf16Gflops: number;
}

/**
 * Measure this machine's ceilings for `threads` threads: benchmarks report their figures as a
 * fraction of these, measured in the same run. `bytes` defaults to 1 GiB (the L3 here is 480 MiB).
 */
export function measureCeilings(threads: number, options: { bytes?: number; reps?: number } = {}): Ceilings {
  const addon = coreAddon();
  const bytes = options.bytes ?? 1 << 30;
  const reps = options.reps ?? 3;
  let best = Infinity;
  let moved = 0;
  for (let i = 0; i < 2; i++) {
    const r = addon.probeRead(bytes, threads, reps);
    if (r.seconds < best) {
      best = r.seconds;
      moved = r.bytes;
    }
  }
  let dot = 0;
  for (let i = 0; i < 3; i++) {
    const d = addon.probeDot(20_000_000, threads);
    dot = Math.max(dot, d.flops / d.seconds);
  }
  return { threads, readGBs: moved / best / 1e9, bf16Gflops: dot / 1e9 };
}
