// The indexer prolog writing the FP8 key cache (per slot: e4m3 of bf16(H · key) ‖ fp32 scale, 132 B),
// on every ISA. The kernel computes the rotation in fp32 as the spec says: its bytes must equal an fp32
// emulation of the same butterflies applied to the bf16 key the bf16 path writes, quantized by
// tensor-core's quantizeCacheGroup. Against the float64 reference (the rotation in float64, rounded
// once to bf16) a row may differ only where a rotated value lies within fp32 error of a bf16 tie.
import { afterAll, describe, expect, it } from 'vitest';
import {
  bf16ToF32, cpuFeatures, f32ToBf16, fp8IndexRowBytes, quantizeCacheGroup, setIsa, type Bf16Tensor, type Isa,
  type U8Tensor,
} from '@dsa/tensor-core';
import { indexerProlog, type IndexerPrologInputs } from '../src/index.js';
import { indexerPrologReference } from '../src/reference.js';
import { type Dims, makeCase } from './helpers.js';

const f = cpuFeatures();
const ISAS_HERE: Isa[] = ['scalar', ...(f.avx2 && f.fma ? (['avx2'] as const) : []), ...(f.best === 'avx512' ? (['avx512'] as const) : [])];
afterAll(() => setIsa('auto'));

const D: Dims = { b: 2, s1: 3, h: 40, qLora: 24, heads: 3, di: 128, rope: 16, blocks: 3, blockSize: 5 };
const RB = fp8IndexRowBytes(128);

/** The kernel's rotation: the same butterflies in fp32, times fp32(128^-1/2), then bf16. */
function hadamardF32(key: Uint16Array): Float64Array {
  const v = Float32Array.from(key, bf16ToF32);
  for (let h = 1; h < v.length; h *= 2) {
    for (let i = 0; i < v.length; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const a = v[j]!;
        const b = v[j + h]!;
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  const s = Math.fround(1 / Math.sqrt(v.length));
  return Float64Array.from(v, (x) => bf16ToF32(f32ToBf16(Math.fround(x * s))));
}

function fp8Cache(fill: number): U8Tensor {
  return { dtype: 'uint8', shape: [D.blocks, D.blockSize, 1, RB], data: new Uint8Array(D.blocks * D.blockSize * RB).fill(fill), format: 'ND' };
}

function check(inputs: IndexerPrologInputs): U8Tensor {
  const bf = { ...inputs, indexKCache: { ...(inputs.indexKCache as Bf16Tensor), data: (inputs.indexKCache as Bf16Tensor).data.slice() } };
  const outBf = indexerProlog(bf);
  const cache = fp8Cache(0x5a);
  const out8 = indexerProlog({ ...inputs, indexKCache: cache });
  expect(Array.from(out8.query.data)).toEqual(Array.from(outBf.query.data));
  expect(Array.from(out8.weights.data)).toEqual(Array.from(outBf.weights.data));
  const written = new Set(Array.from(inputs.cacheIndex.data).filter((s) => s >= 0));
  for (let s = 0; s < D.blocks * D.blockSize; s++) {
    const row = cache.data.subarray(s * RB, (s + 1) * RB);
    if (!written.has(s)) {
      expect(row.every((v) => v === 0x5a), `slot ${s} was not written`).toBe(true);
      continue;
    }
    const want = new Uint8Array(RB);
    const scale = quantizeCacheGroup(hadamardF32(bf.indexKCache.data.subarray(s * 128, (s + 1) * 128)), 0, 128, want, 0);
    new DataView(want.buffer).setFloat32(128, scale, true);
    expect(Array.from(row), `slot ${s}`).toEqual(Array.from(want));
  }
  return cache;
}

/** Whether some value of bf16(H·key) in float64 lies within fp32 error of a bf16 rounding tie. */
function nearBf16Tie(key: Uint16Array): boolean {
  const v = Float64Array.from(key, bf16ToF32);
  // fp32 error of 7 butterfly levels and the scaling, at most (8 · 2^-24) · Σ|v| / √128.
  const bound = (8 * 2 ** -24 * v.reduce((a, x) => a + Math.abs(x), 0)) / Math.sqrt(128);
  for (let i = 0; i < 128; i++) {
    let r = 0;
    for (let j = 0; j < 128; j++) r += (popcount(i & j) & 1 ? -1 : 1) * v[j]!;
    r /= Math.sqrt(128);
    const ulp = 2 ** (Math.floor(Math.log2(Math.abs(r) || 1e-30)) - 7);
    const frac = Math.abs(r / ulp - Math.floor(r / ulp) - 0.5);
    if (frac * ulp <= bound) return true;
  }
  return false;
}

function popcount(x: number): number {
  let c = 0;
  for (; x; x &= x - 1) c++;
  return c;
}

describe.each(ISAS_HERE)('FP8 key cache (%s)', (isa) => {
  it('writes the quantized fp32 rotation of the bf16 key exactly (negative slot, partial blocks)', () => {
    setIsa(isa);
    const inputs = makeCase(D, 41);
    const cache = check(inputs);
    const ref = indexerPrologReference({ ...inputs, indexKCache: fp8Cache(0x5a) });
    const bf = indexerPrologReference(inputs);
    for (const s of inputs.cacheIndex.data) {
      if (s < 0) continue;
      const same = Buffer.from(ref.indexKCache.data.subarray(s * RB, (s + 1) * RB) as Uint8Array).equals(Buffer.from(cache.data.subarray(s * RB, (s + 1) * RB)));
      if (!same) expect(nearBf16Tie((bf.indexKCache.data as Uint16Array).subarray(s * 128, (s + 1) * 128)), `slot ${s}`).toBe(true);
    }
  });

  it('scales keys far past 448 and all-zero keys (the amax floor)', () => {
    setIsa(isa);
    const big = makeCase(D, 42);
    big.inGammaK.data.forEach((v, i) => (big.inGammaK.data[i] = 0x4700 | (i & 0x7f))); // gamma ~ 32768
    check(big);
    const zero = makeCase(D, 43);
    zero.inGammaK.data.fill(0);
    zero.inBetaK.data.fill(0);
    const cache = check(zero);
    const s = zero.cacheIndex.data[0]!;
    expect(cache.data.subarray(s * RB, s * RB + 128).every((v) => (v & 0x7f) === 0)).toBe(true);  // ±0
    expect(new DataView(cache.data.buffer).getFloat32(s * RB + 128, true)).toBe(2 ** -22);
  });
});

describe('FP8 key cache arguments', () => {
  it('rejects a head dim other than 128 and rows of the wrong width, writing nothing', () => {
    const d64: Dims = { ...D, di: 64 };
    const c = makeCase(d64, 44);
    const cache: U8Tensor = { dtype: 'uint8', shape: [D.blocks, D.blockSize, 1, 68], data: new Uint8Array(D.blocks * D.blockSize * 68), format: 'ND' };
    expect(() => indexerProlog({ ...c, indexKCache: cache })).toThrow(/head dim of 128/);
    const wrong = fp8Cache(3);
    wrong.shape = [D.blocks, D.blockSize, 1, 128];
    wrong.data = new Uint8Array(D.blocks * D.blockSize * 128).fill(3);
    expect(() => indexerProlog({ ...makeCase(D, 45), indexKCache: wrong })).toThrow(/indexKCache/);
    expect(wrong.data.every((v) => v === 3)).toBe(true);
  });
});
