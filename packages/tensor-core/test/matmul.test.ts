import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import {
  activeIsa, cpuFeatures, fromFloat32, fromNZ, getNumThreads, isDsaError, type Isa, matmul, matmulBatched, packWeights, Rng, setIsa, setNumThreads,
  toFloat32, toNZ, type Bf16Tensor,
} from '../src/index.js';

function reference(x: Bf16Tensor, w: Bf16Tensor): Float64Array {
  const [M, K] = x.shape as [number, number];
  const N = w.shape[1]!;
  const xf = toFloat32(x);
  const wf = toFloat32(w.format === 'NZ' ? fromNZ(w) : w);
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < K; k++) {
      const a = xf[m * K + k]!;
      if (a === 0) continue;
      for (let n = 0; n < N; n++) y[m * N + n] += a * wf[k * N + n]!;
    }
  return y;
}

function maxRelErr(y: ArrayLike<number>, ref: Float64Array, scale: number): number {
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(y[i]! - ref[i]!) / scale);
  return worst;
}

const features = cpuFeatures();
const isas: Isa[] = (['scalar', 'avx2', 'avx512'] as Isa[]).filter(
  (i) => i === 'scalar' || (i === 'avx2' && features.avx2) || (i === 'avx512' && features.best === 'avx512'),
);
const threads0 = getNumThreads();
afterAll(() => {
  setIsa('auto');
  setNumThreads(threads0);
});

describe.each(isas)('matmul on the %s path', (isa) => {
  const shapes: [number, number, number][] = [
    [1, 7, 5], [1, 64, 48], [2, 33, 19], [3, 128, 64], [4, 257, 40], [5, 96, 33], [8, 31, 17], [9, 1030, 80], [37, 64, 100],
    [1, 1024, 64], [2, 2048, 128], [6, 64, 48], [8, 1056, 32], [7, 33, 40],
  ];
  it.each(shapes)('M=%i K=%i N=%i: ND, packed (and NZ) agree with the float64 reference', (M, K, N) => {
    setIsa(isa);
    expect(activeIsa()).toBe(isa);
    const rng = new Rng(M * 1000 + K * 10 + N);
    const x = rng.uniformTensor([M, K]);
    const w = rng.uniformTensor([K, N]);
    const ref = reference(x, w);
    const scale = Math.sqrt(K) * 0.34; // typical |y| for U(-1,1) operands
    const yNd = matmul(x, w);
    expect(maxRelErr(yNd.data, ref, scale)).toBeLessThan(1e-5);
    const yPk = matmul(x, packWeights(w));
    expect(maxRelErr(yPk.data, ref, scale)).toBeLessThan(1e-5);
    if (K % 16 === 0 && N % 16 === 0) {
      const nz = toNZ(w);
      const yNz = matmul(x, nz);
      expect(maxRelErr(yNz.data, ref, scale)).toBeLessThan(1e-5);
      expect(maxRelErr(matmul(x, packWeights(nz)).data, ref, scale)).toBeLessThan(1e-5);
    }
    // bf16 output is the fp32 result rounded once.
    const yb = matmul(x, w, { outDtype: 'bfloat16' });
    const yb32 = toFloat32(yb);
    for (let i = 0; i < ref.length; i++) expect(Math.abs(yb32[i]! - ref[i]!)).toBeLessThanOrEqual(Math.abs(ref[i]!) * 2 ** -8 + 1e-5 * scale);
  });

  it('bf16 output is the fp32 output rounded to nearest even (exact ties included; NaN and Inf rows stay NaN and Inf)', () => {
    setIsa(isa);
    const rng = new Rng(41);
    // Small integers make exact ties (e.g. 257 between 256 and 258) common; x rows 1 and 2 carry a NaN and an Inf.
    for (const [M, K, N] of [[3, 64, 37], [8, 96, 80], [13, 40, 50]] as const) {
      const ints = (n: number): Float32Array => Float32Array.from({ length: n }, () => Math.round(rng.uniform(-8, 8)));
      const x = fromFloat32(ints(M * K), [M, K], 'bfloat16');
      const w = fromFloat32(ints(K * N), [K, N], 'bfloat16');
      x.data[K + 5] = 0x7fc0;
      x.data[2 * K + 7] = 0x7f80;
      for (const ww of [w, packWeights(w)]) {
        const f = matmul(x, ww).data as Float32Array;
        const bits = new Uint32Array(f.buffer, f.byteOffset, f.length);
        const expected = Uint16Array.from(bits, (b) =>
          (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x0040 : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff);
        expect(Array.from(expected).some((h) => (h & 0x7fff) > 0x7f80)).toBe(true); // the NaN row is there
        expect(Array.from(matmul(x, ww, { outDtype: 'bfloat16' }).data)).toEqual(Array.from(expected));
      }
    }
  });

  it('DeepSeek-sized GEMV and a 64-row GEMM match the reference (ND, NZ, packed identical)', () => {
    setIsa(isa);
    const rng = new Rng(99);
    for (const [M, K, N] of [[1, 7168, 576], [64, 1536, 256]] as const) {
      const x = rng.uniformTensor([M, K]);
      const w = rng.uniformTensor([K, N], -0.1, 0.1);
      const ref = reference(x, w);
      const scale = Math.sqrt(K) * 0.034;
      const a = matmul(x, w).data;
      const b = matmul(x, toNZ(w)).data;
      const c = matmul(x, packWeights(w)).data;
      expect(maxRelErr(a, ref, scale)).toBeLessThan(1e-5);
      expect(maxRelErr(b, ref, scale)).toBeLessThan(1e-5);
      expect(maxRelErr(c, ref, scale)).toBeLessThan(1e-5);
    }
  });
});

describe('matmul threading and errors', () => {
  it('gives the same bytes with 1 and 2 threads', () => {
    setIsa('auto');
    const rng = new Rng(5);
    const x = rng.uniformTensor([3, 4096]);
    const w = rng.uniformTensor([4096, 64]);
    setNumThreads(1);
    const a = matmul(x, w).data;
    setNumThreads(2);
    const b = matmul(x, w).data;
    expect(b).toEqual(a);
  });

  it('rejects bad shapes, dtypes and formats with DsaError', () => {
    const rng = new Rng(1);
    const x = rng.uniformTensor([2, 8]);
    for (const [w, code] of [
      [rng.uniformTensor([9, 4]), 'DSA_E_SHAPE'],
      [{ dtype: 'float32', shape: [8, 4], data: new Float32Array(32) }, 'DSA_E_DTYPE'],
      [{ dtype: 'bfloat16', shape: [8, 4], data: new Uint16Array(32), format: 'XY' }, 'DSA_E_FORMAT'],
    ] as const) {
      let err: unknown;
      try {
        matmul(x, w as Bf16Tensor);
      } catch (e) {
        err = e;
      }
      expect(isDsaError(err)).toBe(true);
      expect((err as { code: string }).code).toBe(code);
    }
  });

  it('DSA_FORCE_ISA selects the path in a fresh process, and a bad value is a clear error', () => {
    const script = `import('${new URL('../dist/index.js', import.meta.url).href}').then(t => console.log(t.activeIsa()))`;
    const run = (v: string) => spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, DSA_FORCE_ISA: v }, encoding: 'utf8' });
    expect(run('scalar').stdout.trim()).toBe('scalar');
    const bad = run('sse9');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/DSA_FORCE_ISA: expected scalar, avx2, avx512 or auto, got "sse9"/);
  });
});

describe('matmul into a given out', () => {
  it('writes every element of a poisoned out (float32 and bfloat16) and returns it, over many column groups', () => {
    setIsa('auto');
    const rng = new Rng(29);
    for (const [M, K, N] of [[1, 96, 1100], [5, 70, 1030]] as const) {
      const x = rng.uniformTensor([M, K]);
      const w = rng.uniformTensor([K, N]);
      for (const v of [w, packWeights(w)]) {
        const fresh = matmul(x, v);
        expect(maxRelErr(fresh.data, reference(x, w), 1)).toBeLessThan(1e-5);
        const out = { dtype: 'float32' as const, shape: [M, N], data: new Float32Array(M * N).fill(NaN) };
        expect(matmul(x, v, { out })).toBe(out);
        expect(out.data).toEqual(fresh.data);
        const outb = { dtype: 'bfloat16' as const, shape: [M, N], data: new Uint16Array(M * N).fill(0x7fc1) };
        matmul(x, v, { out: outb });
        expect(outb.data).toEqual(matmul(x, v, { outDtype: 'bfloat16' }).data);
      }
    }
    const x = rng.uniformTensor([3, 2, 40]);
    const w = rng.uniformTensor([3, 40, 24]);
    const out = { dtype: 'bfloat16' as const, shape: [3, 2, 24], data: new Uint16Array(144).fill(0x7fc1) };
    expect(matmulBatched(x, w, { out })).toBe(out);
    expect(out.data).toEqual(matmulBatched(x, w, { outDtype: 'bfloat16' }).data);
  });

  it('rejects a wrong out with DsaError naming it, before writing anything', () => {
    const rng = new Rng(2);
    const x = rng.uniformTensor([2, 8]);
    const w = rng.uniformTensor([8, 4]);
    const cases: [object, string, RegExp][] = [
      [{ out: { dtype: 'float32', shape: [2, 5], data: new Float32Array(10) } }, 'DSA_E_SHAPE', /out: .*shape/],
      [{ out: { dtype: 'int32', shape: [2, 4], data: new Int32Array(8) } }, 'DSA_E_DTYPE', /out: expected dtype float32 or bfloat16, got int32/],
      [{ out: { dtype: 'float32', shape: [2, 4], data: new Float32Array(8) }, outDtype: 'bfloat16' }, 'DSA_E_DTYPE', /out: expected dtype bfloat16 as outDtype says, got float32/],
      [{ out: { dtype: 'bfloat16', shape: [2, 4], data: x.data.subarray(0, 8) } }, 'DSA_E_ARGUMENT', /out: shares memory with x/],
      [{ outDtype: 'float16' }, 'DSA_E_ARGUMENT', /outDtype: expected float32 or bfloat16, got float16/],
    ];
    for (const [options, code, message] of cases) {
      const out = (options as { out?: { data: ArrayLike<number> } }).out;
      const before = out ? Array.from(out.data) : [];
      let err: unknown;
      try {
        matmul(x, w, options as never);
      } catch (e) {
        err = e;
      }
      expect(isDsaError(err)).toBe(true);
      expect((err as { code: string }).code).toBe(code);
      expect((err as Error).message).toMatch(message);
      expect(out ? Array.from(out.data) : []).toEqual(before);
    }
    const xb = rng.uniformTensor([3, 2, 8]);
    const wb = rng.uniformTensor([3, 8, 4]);
    expect(() => matmulBatched(xb, wb, { out: { dtype: 'float32', shape: [3, 4, 2], data: new Float32Array(24) } })).toThrow(/out: /);
  });
});

describe('matmulBatched', () => {
  it('equals one matmul per item', () => {
    setIsa('auto');
    const rng = new Rng(17);
    const B = 5, M = 3, K = 40, N = 24;
    const x = rng.uniformTensor([B, M, K]);
    const w = rng.uniformTensor([B, K, N]);
    const y = matmulBatched(x, w);
    expect(y.shape).toEqual([B, M, N]);
    for (let i = 0; i < B; i++) {
      const xi = { dtype: 'bfloat16' as const, shape: [M, K], data: x.data.slice(i * M * K, (i + 1) * M * K) };
      const wi = { dtype: 'bfloat16' as const, shape: [K, N], data: w.data.slice(i * K * N, (i + 1) * K * N) };
      expect(Array.from(y.data.slice(i * M * N, (i + 1) * M * N) as Float32Array)).toEqual(Array.from(matmul(xi, wi).data));
    }
  });
});
