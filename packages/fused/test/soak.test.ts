import { describe, expect, it } from 'vitest';
import { soak } from '../src/soak.js';

describe('soak', () => {
  it('10,000 decode steps (sync and async mixed, sequences recycled) are reproducible and memory stays flat', async () => {
    const a = await soak(10_000, 3);
    const b = await soak(10_000, 3);
    expect(b.hash).toBe(a.hash);
    // After the first run has warmed every pool and workspace, the second must not grow.
    const growth = Math.max(...b.rssMB) - b.rssMB[0]!;
    console.log(`soak: ${(a.ms / 1e3).toFixed(1)} s + ${(b.ms / 1e3).toFixed(1)} s, RSS ${b.rssMB[0]!.toFixed(0)} → ${b.rssMB.at(-1)!.toFixed(0)} MB (max growth ${growth.toFixed(1)} MB)`);
    // AddressSanitizer keeps freed memory in quarantine, so RSS is only meaningful without it.
    if (!(process.env.LD_PRELOAD ?? '').includes('asan')) expect(growth).toBeLessThan(32);
  });
});
