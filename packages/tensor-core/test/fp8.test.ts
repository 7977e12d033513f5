import { describe, expect, it } from 'vitest';
import {
  E4M3_VALUES, dequantizeFp8Weight, e4m3ToFloat, floatToE4m3, hadamardRotate, quantizeGroupE4m3, ue8m0Scale, Rng,
} from '../src/index.js';

describe('fp8 e4m3 codec', () => {
  it('decodes the format: subnormals, normals, max, NaN codes', () => {
    expect(e4m3ToFloat(0x01)).toBe(2 ** -9);
    expect(e4m3ToFloat(0x07)).toBe(7 * 2 ** -9);
    expect(e4m3ToFloat(0x08)).toBe(2 ** -6);
    expect(e4m3ToFloat(0x38)).toBe(1);
    expect(e4m3ToFloat(0x7e)).toBe(448);
    expect(e4m3ToFloat(0xfe)).toBe(-448);
    expect(e4m3ToFloat(0x7f)).toBeNaN();
    expect(e4m3ToFloat(0xff)).toBeNaN();
    expect(Object.is(e4m3ToFloat(0x80), -0)).toBe(true);
  });

  it('encodes every finite code back to itself and breaks ties to the even code', () => {
    for (let b = 0; b < 256; b++) {
      if (Number.isNaN(E4M3_VALUES[b]!)) continue;
      expect(floatToE4m3(E4M3_VALUES[b]!)).toBe(b);
    }
    for (let b = 0; b < 0x7e; b++) {
      const mid = (E4M3_VALUES[b]! + E4M3_VALUES[b + 1]!) / 2;
      expect(floatToE4m3(mid)).toBe(b & 1 ? b + 1 : b);
      expect(floatToE4m3(mid * (1 + 1e-9))).toBe(b + 1);
    }
  });

  it('saturates past 448 and maps NaN to 0x7F', () => {
    expect(floatToE4m3(449)).toBe(0x7e);
    expect(floatToE4m3(-1e30)).toBe(0xfe);
    expect(floatToE4m3(Infinity)).toBe(0x7e);
    expect(floatToE4m3(NaN)).toBe(0x7f);
  });

  it('ue8m0 scales are the smallest power of two that brings amax to <= 448, with a 1e-4 floor', () => {
    expect(ue8m0Scale(448)).toBe(1);
    expect(ue8m0Scale(449)).toBe(2);
    expect(ue8m0Scale(1)).toBe(2 ** -8);
    expect(ue8m0Scale(0)).toBe(2 ** -22);
    const rng = new Rng(7);
    for (let i = 0; i < 1000; i++) {
      const amax = Math.fround(Math.exp(rng.uniform(-9, 12)));
      const s = ue8m0Scale(amax);
      expect(Math.fround(amax / 448)).toBeLessThanOrEqual(s);
      expect(Math.fround(amax / 448)).toBeGreaterThan(s / 2);
    }
  });

  it('quantizes a group: values past 448 before scaling, all-zero groups', () => {
    const src = [1000, -3, 0.5, 0];
    const dst = new Uint8Array(4);
    const scale = quantizeGroupE4m3(src, 0, 4, dst, 0);
    expect(scale).toBe(4);
    expect(E4M3_VALUES[dst[0]!]! * scale).toBe(1024); // 250 rounds to 256 in e4m3
    expect(E4M3_VALUES[dst[1]!]! * scale).toBe(-3);
    const zero = new Uint8Array(3).fill(9);
    expect(quantizeGroupE4m3([0, 0, 0], 0, 3, zero, 0)).toBe(2 ** -22);
    expect([...zero]).toEqual([0, 0, 0]);
  });

  it('the normalized Hadamard transform is orthogonal and an involution', () => {
    const rng = new Rng(3);
    const v = Array.from({ length: 128 }, () => rng.normal());
    const w = [...v];
    hadamardRotate(w);
    const norm = (a: number[]) => Math.hypot(...a);
    expect(norm(w)).toBeCloseTo(norm(v), 10);
    hadamardRotate(w);
    for (let i = 0; i < 128; i++) expect(w[i]).toBeCloseTo(v[i]!, 12);
    expect(() => hadamardRotate([1, 2, 3])).toThrow(/power-of-two/);
  });

  it('dequantizes NT and ND weights by 128x128 block with partial edge blocks', () => {
    const K = 130, N = 3; // stored NT as [N, K]: two K-blocks, the second partial
    const data = new Uint8Array(N * K).fill(0x38); // 1.0
    const scale = new Float32Array([2, 5]);
    const w = dequantizeFp8Weight({ dtype: 'float8_e4m3fn', shape: [K, N], format: 'NT', data, blockScale: { dtype: 'float32', shape: [1, 2], data: scale } });
    expect(w[0 * N + 1]).toBe(2);
    expect(w[129 * N + 2]).toBe(5);
    const nd = dequantizeFp8Weight({ dtype: 'float8_e4m3fn', shape: [2, 3, 130], format: 'ND', data: new Uint8Array(2 * 3 * 130).fill(0x40), blockScale: { dtype: 'float32', shape: [2, 1, 2], data: new Float32Array([1, 3, 7, 11]) } });
    expect(nd[0 * 390 + 1 * 130 + 127]).toBe(2);
    expect(nd[0 * 390 + 1 * 130 + 128]).toBe(6);
    expect(nd[1 * 390 + 2 * 130 + 129]).toBe(22);
  });
});
