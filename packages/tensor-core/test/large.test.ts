import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { stats, rotationCount, timeCalls } from '../src/bench.js';
import {
  allocateLarge, describeMachine, isDsaError, largeZeros, matmul, measureCeilings, packWeights, Rng, toFloat32,
} from '../src/index.js';

describe('allocateLarge / largeZeros', () => {
  it('returns zeroed, writable buffers of the asked size, small and huge-page sized', () => {
    for (const bytes of [0, 1, 100, 3 * 2 ** 20 + 7]) {
      const ab = allocateLarge(bytes);
      expect(ab.byteLength).toBe(bytes);
      const u = new Uint8Array(ab);
      expect(u.every((v) => v === 0)).toBe(true);
      for (let i = 0; i < u.length; i += 4093) u[i] = (i % 251) + 1;
      for (let i = 0; i < u.length; i += 4093) expect(u[i]).toBe((i % 251) + 1);
    }
  });

  it('recycled blocks (freed buffers kept for reuse) come back zeroed, and outputs written over them are right', () => {
    // In a child with --expose-gc: buffers are freed (and kept in the block cache) only when collected.
    const core = new URL('../dist/index.js', import.meta.url).href;
    const script = `const t = await import('${core}');
      const turn = () => new Promise((r) => setImmediate(r));
      const rng = new t.Rng(9);
      const x = rng.uniformTensor([64, 512]), w = rng.uniformTensor([512, 9000]);
      const want = Buffer.from(t.matmul(x, w).data.buffer);
      let bad = 0;
      for (let i = 0; i < 6; i++) {
        const u = new Uint8Array(t.allocateLarge(6 << 20));
        if (u.some((v) => v !== 0)) bad++;
        u.fill(0xff);
        const y = t.matmul(x, w);
        if (!Buffer.from(y.data.buffer).equals(want)) bad++;
        y.data.fill(NaN);
        globalThis.gc();
        await turn();
      }
      console.log(bad);`;
    for (const cacheMb of ['1024', '0']) {
      const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
        encoding: 'utf8', env: { ...process.env, DSA_BUFFER_CACHE_MB: cacheMb }, timeout: 60_000,
      });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('0');
    }
  });

  it('rejects a size that is not a non-negative integer', () => {
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 60]) {
      let err: unknown;
      try {
        allocateLarge(bad);
      } catch (e) {
        err = e;
      }
      expect(isDsaError(err)).toBe(true);
      expect((err as { code: string }).code).toBe('DSA_E_ARGUMENT');
    }
  });

  it('largeZeros builds a zero tensor with the typed array of its dtype and checks the shape', () => {
    const t = largeZeros('bfloat16', [3, 2 ** 20 / 3 + 1 | 0, 1]);
    expect(t.data).toBeInstanceOf(Uint16Array);
    expect(t.data.length).toBe(3 * (2 ** 20 / 3 + 1 | 0));
    expect(t.data.every((v) => v === 0)).toBe(true);
    expect(largeZeros('int32', [5]).data).toBeInstanceOf(Int32Array);
    expect(() => largeZeros('bfloat16', [-1, 4])).toThrow(/shape/);
  });

  it('packed weights in huge-page memory give the reference product', () => {
    const rng = new Rng(31);
    const K = 1024, N = 1040; // packed > 2 MiB: the large_alloc path
    const w = rng.uniformTensor([K, N], -1, 1);
    const x = rng.uniformTensor([3, K], -1, 1);
    const y = toFloat32(matmul(x, packWeights(w)));
    const xf = toFloat32(x), wf = toFloat32(w);
    let worst = 0;
    for (let m = 0; m < 3; m++) {
      for (let n = 0; n < N; n++) {
        let ref = 0;
        for (let k = 0; k < K; k++) ref += xf[m * K + k]! * wf[k * N + n]!;
        worst = Math.max(worst, Math.abs(y[m * N + n]! - ref));
      }
    }
    expect(worst).toBeLessThan(1e-3 * Math.sqrt(K));
  });
});

describe('benchmark helpers', () => {
  it('stats: median (middle pair averaged), min, max', () => {
    expect(stats([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3, n: 3 });
    expect(stats([4, 1, 3, 2])).toEqual({ median: 2.5, min: 1, max: 4, n: 4 });
    expect(stats([]).n).toBe(0);
  });

  it('rotationCount covers factor x the LLC', () => {
    expect(rotationCount(100, { llcBytes: 1000 })).toBe(20);
    expect(rotationCount(100, { llcBytes: 1000, factor: 4 })).toBe(40);
    expect(rotationCount(5000, { llcBytes: 1000 })).toBe(2);
  });

  it('timeCalls passes a running call index (warm-up included) and honours minReps', () => {
    const seen: number[] = [];
    const t = timeCalls((i) => seen.push(i), { warmup: 2, minReps: 4, maxReps: 4, minSeconds: 0 });
    expect(t.length).toBe(4);
    expect(seen).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('describes the machine and measures finite ceilings', () => {
    const m = describeMachine();
    expect(m.cpuModel.length).toBeGreaterThan(0);
    expect(m.cores).toBeGreaterThanOrEqual(1);
    expect(m.logicalCpus).toBeGreaterThanOrEqual(m.cores);
    expect(m.llcBytes).toBeGreaterThan(0);
    const c = measureCeilings(1, { bytes: 16 * 2 ** 20, reps: 1 });
    expect(Number.isFinite(c.readGBs) && c.readGBs > 0).toBe(true);
    expect(Number.isFinite(c.bf16Gflops) && c.bf16Gflops > 0).toBe(true);
    expect(c.readBytes).toBe(16 * 2 ** 20);
  });
});
