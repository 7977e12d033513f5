import { afterAll, describe, expect, it } from 'vitest';
import {
  activeIsa, cpuFeatures, dequantizeFp8Weight, f32ArrayToBf16, fp8PackedOffset, getNumThreads, isDsaError, type Isa, matmul,
  matmulBatched, packWeights, Rng, setIsa, setNumThreads, toFloat32, type Bf16Tensor, type Fp8Weight,
} from '../src/index.js';

// float64 reference on the exactly dequantized weight (byte value × block scale, no bf16 rounding).
function reference(x: Bf16Tensor, w: Float64Array, N: number): Float64Array {
  const [M, K] = x.shape as [number, number];
  const xf = toFloat32(x);
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < K; k++) {
      const a = xf[m * K + k]!;
      for (let n = 0; n < N; n++) y[m * N + n] += a * w[k * N + n]!;
    }
  return y;
}

// Sum of |x|·|w| of each output (the scale of fp32 summation errors).
function magnitude(x: Bf16Tensor, w: Float64Array, N: number): Float64Array {
  const [M, K] = x.shape as [number, number];
  const xf = toFloat32(x);
  const mag = new Float64Array(M * N).fill(1e-30);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < K; k++) {
      const a = Math.abs(xf[m * K + k]!);
      for (let n = 0; n < N; n++) mag[m * N + n] += a * Math.abs(w[k * N + n]!);
    }
  return mag;
}

// Largest |y - ref| relative to the magnitude of the same output.
function worst(y: ArrayLike<number>, ref: Float64Array, x: Bf16Tensor, w: Float64Array, N: number): number {
  const mag = magnitude(x, w, N);
  let bad = 0;
  for (let i = 0; i < ref.length; i++) bad = Math.max(bad, Math.abs(y[i]! - ref[i]!) / mag[i]!);
  return Number.isNaN(bad) ? Infinity : bad;
}

function mismatches(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let bad = a.length === b.length ? 0 : 1;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) bad++;
  return bad;
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

describe.each(isas)('FP8 weights on the %s path', (isa) => {
  // Odd sizes, partial 128-blocks in K and N, K not a multiple of 4, and M on both sides of the
  // GEMV/GEMM switch (8); 600 x 1450: row blocks shared out in chunks of two (31 column groups).
  const shapes: [number, number, number][] = [
    [1, 7, 5], [1, 130, 33], [2, 257, 129], [3, 128, 64], [4, 1030, 80], [5, 96, 17], [8, 300, 47], [9, 131, 50],
    [37, 260, 100], [1, 2048, 128], [2, 1536, 200], [20, 513, 70], [600, 70, 1450],
  ];
  it.each(shapes)('M=%i K=%i N=%i: NT, ND and packed match the float64 reference (plain and power-of-two scales)', (M, K, N) => {
    setIsa(isa);
    expect(activeIsa()).toBe(isa);
    const rng = new Rng(M * 7919 + K * 31 + N);
    const x = rng.uniformTensor([M, K]);
    for (const pow2 of [false, true]) {
      for (const format of ['NT', 'ND'] as const) {
        const w = rng.fp8Weight([K, N], format, { pow2 });
        const wf = dequantizeFp8Weight(w);
        const ref = reference(x, wf, N);
        const packed = packWeights(w);
        expect(packed.format).toBe('PACKED');
        expect(mismatches(dequantizeFp8Weight(packed), wf)).toBe(0);
        for (const v of [w, packed]) {
          const y = matmul(x, v);
          expect(y.shape).toEqual([M, N]);
          expect(worst(y.data, ref, x, wf, N)).toBeLessThan(2e-6);
          const yb = toFloat32(matmul(x, v, { outDtype: 'bfloat16' }));
          let off = 0;
          for (let i = 0; i < ref.length; i++) if (!(Math.abs(yb[i]! - y.data[i]!) <= Math.abs(y.data[i]!) * 2 ** -8)) off++;
          expect(off).toBe(0);
        }
      }
    }
  });

  it('turns every e4m3 code into its value: subnormals exact (not flushed), NaN codes give NaN columns', () => {
    setIsa(isa);
    const rng = new Rng(77);
    // K = 256: column n holds code (k + n) mod 256 in row k, so each column meets every code once,
    // among them the subnormals 0x01..0x07 / 0x81..0x87 and both NaN codes. Columns past 255 - K... all do.
    for (const M of [1, 3, 12]) {
      const K = 256;
      const N = 24;
      const data = new Uint8Array(N * K);
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) data[n * K + k] = (k + n) & 0xff;
      // Columns 20..23 hold subnormal codes and zeros only (no NaN): rows 0..7 / 128..135 of the pattern.
      for (let n = 20; n < N; n++) for (let k = 0; k < K; k++) data[n * K + k] = (k & 0x87) & ((k >> 3) & 1 ? 0 : 0xff);
      const w: Fp8Weight = {
        dtype: 'float8_e4m3fn', shape: [K, N], format: 'NT', data,
        blockScale: { dtype: 'float32', shape: [1, 2], data: Float32Array.of(0.75, 2 ** -3) },
      };
      const x = rng.uniformTensor([M, K]);
      for (const v of [w, packWeights(w)]) {
        const y = matmul(x, v).data;
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < 20; n++) expect(Number.isNaN(y[m * N + n]!)).toBe(true);
        }
        const wf = dequantizeFp8Weight(w).map((u) => (Number.isNaN(u) ? 0 : u));
        const ref = reference(x, wf, N);
        for (let m = 0; m < M; m++)
          for (let n = 20; n < N; n++) {
            expect(ref[m * N + n]).not.toBe(0);
            expect(Math.abs(y[m * N + n]! - ref[m * N + n]!)).toBeLessThanOrEqual(Math.abs(ref[m * N + n]!) * 1e-5);
          }
      }
    }
  });

  it('x of any finite magnitude (2^-120 .. 2^100 per row), Inf and NaN: as the float64 reference', () => {
    // The AVX2 GEMV scales x by a power of two chosen from each row's largest |x| (weights are
    // converted at 2^-120 of their value); rows near both ends of the range and non-finite x check it.
    // (Past about 2^110 the unscaled sum of a 128-k block, up to 128 * 448 * |x|, leaves fp32 range.)
    setIsa(isa);
    const rng = new Rng(41);
    const [K, N] = [300, 40];
    const exps = [-120, -60, 0, 7, 8, 40, 100];
    for (const M of [1, 3, 8, 9]) {
      const w = rng.fp8Weight([K, N], 'NT');
      const wf = dequantizeFp8Weight(w);
      const xf = new Float32Array(M * K);
      for (let m = 0; m < M; m++) {
        const e = exps[(m + M) % exps.length]!;
        for (let k = 0; k < K; k++) xf[m * K + k] = rng.uniform(-1, 1) * 2 ** e;
      }
      if (M > 1) xf[1 * K + 5] = Infinity;  // one Inf: columns become ±Inf, or NaN where the weight is 0
      if (M > 2) xf[2 * K + 200] = NaN;
      const x: Bf16Tensor = { dtype: 'bfloat16', shape: [M, K], data: f32ArrayToBf16(xf) };
      const xs = toFloat32(x);
      const finite: Bf16Tensor = { ...x, data: f32ArrayToBf16(xs.map((v) => (Number.isFinite(v) ? v : 0))) };
      const ref = reference(x, wf, N);
      const mag = magnitude(finite, wf, N);
      for (const v of [w, packWeights(w)]) {
        const y = matmul(x, v).data;
        let off = 0;
        for (let i = 0; i < ref.length; i++) {
          if (!Number.isFinite(ref[i]!)) {
            if (!Object.is(y[i], ref[i]) && !(Number.isNaN(y[i]!) && Number.isNaN(ref[i]!))) off++;
          } else if (!(Math.abs(y[i]! - ref[i]!) <= mag[i]! * 2e-6)) off++;
        }
        expect(off).toBe(0);
      }
    }
  });

  it('W_UK-style batched product (FP8 ND and packed per item) matches the reference', () => {
    setIsa(isa);
    const rng = new Rng(3);
    const [B, M, K, N] = [5, 2, 128, 160];
    const w = rng.fp8Weight([B, K, N], 'ND');
    const x = rng.uniformTensor([B, M, K]);
    const wf = dequantizeFp8Weight(w);
    for (const v of [w, packWeights(w)]) {
      const y = matmulBatched(x, v);
      for (let b = 0; b < B; b++) {
        const xb: Bf16Tensor = { dtype: 'bfloat16', shape: [M, K], data: x.data.subarray(b * M * K, (b + 1) * M * K) };
        const wb = wf.subarray(b * K * N, (b + 1) * K * N);
        const ref = reference(xb, wb, N);
        expect(worst((y.data as Float32Array).subarray(b * M * N, (b + 1) * M * N), ref, xb, wb, N)).toBeLessThan(2e-6);
      }
    }
  });
  // The GEMV hands each thread runs of consecutive column groups (and matmulBatched runs of items) and
  // prefetches into the next one: every group and item must still be computed once, on 1 and 2 threads.
  it('long runs of column groups and of batch items: poisoned outputs fully written, same bytes on 1 and 2 threads', () => {
    setIsa(isa);
    const rng = new Rng(23);
    for (const [M, K, N] of [[1, 136, 1111], [3, 128, 1600], [8, 64, 1030]] as const) {
      const w = packWeights(rng.fp8Weight([K, N], 'ND'));
      const wf = dequantizeFp8Weight(w);
      const x = rng.uniformTensor([M, K]);
      const ref = reference(x, wf, N);
      const got: Float32Array[] = [];
      for (const threads of [1, 2]) {
        setNumThreads(threads);
        const out = { dtype: 'float32' as const, shape: [M, N], data: new Float32Array(M * N).fill(NaN) };
        expect(matmul(x, w, { out })).toBe(out);
        expect(worst(out.data, ref, x, wf, N)).toBeLessThan(2e-6);
        got.push(out.data);
      }
      expect(mismatches(got[0]!, got[1]!)).toBe(0);
    }
    const [B, M, K, N] = [37, 1, 128, 80];
    const w = packWeights(rng.fp8Weight([B, K, N], 'ND'));
    const wf = dequantizeFp8Weight(w);
    const x = rng.uniformTensor([B, M, K]);
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      const out = { dtype: 'float32' as const, shape: [B, M, N], data: new Float32Array(B * M * N).fill(NaN) };
      matmulBatched(x, w, { out });
      for (let b = 0; b < B; b++) {
        const xb: Bf16Tensor = { dtype: 'bfloat16', shape: [M, K], data: x.data.subarray(b * M * K, (b + 1) * M * K) };
        const wb = wf.subarray(b * K * N, (b + 1) * K * N);
        expect(worst(out.data.subarray(b * M * N, (b + 1) * M * N), reference(xb, wb, N), xb, wb, N)).toBeLessThan(2e-6);
      }
    }
    setNumThreads(threads0);
  });
});

describe('FP8 weights: agreement, threads, layout and errors', () => {
  it('the FP8 path and the bf16-dequantized path agree to the bf16 rounding of the weights', () => {
    setIsa('auto');
    const rng = new Rng(11);
    for (const M of [1, 4, 64]) {
      const [K, N] = [1536, 96];
      const w = rng.fp8Weight([K, N], 'NT');
      const wf = dequantizeFp8Weight(w);
      const wb: Bf16Tensor = { dtype: 'bfloat16', shape: [K, N], data: f32ArrayToBf16(wf), format: 'ND' };
      const x = rng.uniformTensor([M, K]);
      const a = matmul(x, packWeights(w)).data;
      const b = matmul(x, wb).data;
      const mag = magnitude(x, wf, N);
      let off = 0;
      for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i]! - b[i]!) <= mag[i]! * (2 ** -8 + 1e-5))) off++;
      expect(off).toBe(0);
    }
  });

  it('gives the same bytes with 1 and 2 threads (K split included)', () => {
    setIsa('auto');
    const rng = new Rng(5);
    const w = packWeights(rng.fp8Weight([4096, 64], 'NT'));
    for (const M of [1, 3, 20]) {
      const x = rng.uniformTensor([M, 4096]);
      setNumThreads(1);
      const a = matmul(x, w).data;
      setNumThreads(2);
      expect(matmul(x, w).data).toEqual(a);
    }
    setNumThreads(threads0);
  });

  it('packs to the documented byte layout', () => {
    const rng = new Rng(8);
    const w = rng.fp8Weight([37, 21], 'ND');
    const p = packWeights(w);
    let off = 0;
    for (let k = 0; k < 37; k++) for (let n = 0; n < 21; n++) if (p.data[fp8PackedOffset(37, k, n)] !== w.data[k * 21 + n]) off++;
    expect(off).toBe(0);
    expect(p.blockScale.shape).toEqual([2, 1]);
  });

  it('rejects inconsistent FP8 weights with DsaError naming the argument', () => {
    const rng = new Rng(1);
    const x = rng.uniformTensor([2, 200]);
    const w = rng.fp8Weight([200, 140], 'NT');
    const cases: [unknown, string, RegExp][] = [
      [{ ...w, data: w.data.subarray(1) }, 'DSA_E_SHAPE', /w: shape \[200, 140\] \(NT\) needs 28000 bytes/],
      [{ ...w, blockScale: { ...w.blockScale, shape: [2, 1], data: new Float32Array(2) } }, 'DSA_E_SHAPE', /w\.blockScale: expected shape \[2, 2\]/],
      [{ ...w, format: 'NZ' }, 'DSA_E_FORMAT', /w: expected format NT or ND or PACKED/],
      [{ ...w, data: new Uint16Array(28000) }, 'DSA_E_DTYPE', /Uint8Array/],
      [{ ...w, blockScale: undefined }, 'DSA_E_ARGUMENT', /w\.blockScale/],
      [rng.fp8Weight([199, 140], 'NT'), 'DSA_E_SHAPE', /w: expected shape\[0\] \(K\) = 200/],
    ];
    for (const [bad, code, msg] of cases) {
      let err: unknown;
      try {
        matmul(x, bad as Fp8Weight);
      } catch (e) {
        err = e;
      }
      expect(isDsaError(err)).toBe(true);
      expect((err as { code: string }).code).toBe(code);
      expect((err as Error).message).toMatch(msg);
    }
  });
});
