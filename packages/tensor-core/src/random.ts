import { f32ArrayToBf16 } from './bf16.js';
import { FP8_BLOCK, type Fp8Weight } from './fp8.js';
import { numel, type Tensor } from './tensor.js';

/**
 * A small seeded generator (xoshiro128**, seeded through splitmix32) so tests and demos are
 * reproducible across runs and platforms.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | undefined;

  constructor(seed = 1) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  random(): number {
    return (this.nextU32() + (this.nextU32() >>> 11) / 2097152) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  uniform(lo = 0, hi = 1): number {
    return lo + (hi - lo) * this.random();
  }

  /** Integer uniform in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.random() * (hi - lo + 1));
  }

  /** Standard normal (Box–Muller). */
  normal(mean = 0, std = 1): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return mean + std * s;
    }
    let u = 0;
    while (u === 0) u = this.random();
    const v = this.random();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return mean + std * r * Math.cos(2 * Math.PI * v);
  }

  /** Fisher–Yates shuffle in place. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1));
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }

  /** A bf16 tensor with uniform values in [lo, hi). */
  uniformTensor(shape: readonly number[], lo = -1, hi = 1): Tensor<'bfloat16'> {
    const v = new Float32Array(numel(shape));
    for (let i = 0; i < v.length; i++) v[i] = this.uniform(lo, hi);
    return { dtype: 'bfloat16', shape: [...shape], data: f32ArrayToBf16(v), format: 'ND' };
  }

  /**
   * A block-scaled FP8 weight of logical shape [K, N] (or [items, K, N]) stored `format` ('NT': [N, K]
   * as the checkpoint; 'ND': [K, N]): uniformly random e4m3 codes (subnormals included, NaN codes
   * 0x7F/0xFF excluded) and one random scale per 128×128 block of the stored matrix, in
   * [scale/2, scale), or a power of two there when `pow2` (as DeepSeek's ue8m0 scales).
   */
  fp8Weight(shape: readonly number[], format: 'NT' | 'ND', options: { scale?: number; pow2?: boolean } = {}): Fp8Weight {
    const items = shape.length === 3 ? shape[0]! : 1;
    const K = shape[shape.length - 2]!;
    const N = shape[shape.length - 1]!;
    const data = new Uint8Array(items * K * N);
    for (let i = 0; i < data.length; i++) {
      let b = this.int(0, 254);
      if ((b & 0x7f) === 0x7f) b = 0x7e;
      data[i] = b;
    }
    const [rows, cols] = format === 'NT' ? [N, K] : [K, N];
    const grid = [Math.ceil(rows / FP8_BLOCK), Math.ceil(cols / FP8_BLOCK)];
    const scale = new Float32Array(items * grid[0]! * grid[1]!);
    const base = options.scale ?? 1 / 448;
    for (let i = 0; i < scale.length; i++) {
      scale[i] = options.pow2 ? 2 ** Math.floor(Math.log2(base) - this.int(0, 2)) : base * this.uniform(0.5, 1);
    }
    return {
      dtype: 'float8_e4m3fn', shape: [...shape], format, data,
      blockScale: { dtype: 'float32', shape: shape.length === 3 ? [items, ...grid] : grid, data: scale, format: 'ND' },
    };
  }

  /** A bf16 tensor with normal values. */
  normalTensor(shape: readonly number[], mean = 0, std = 1): Tensor<'bfloat16'> {
    const v = new Float32Array(numel(shape));
    for (let i = 0; i < v.length; i++) v[i] = this.normal(mean, std);
    return { dtype: 'bfloat16', shape: [...shape], data: f32ArrayToBf16(v), format: 'ND' };
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
