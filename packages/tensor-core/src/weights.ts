import { DsaError, ErrorCode } from './errors.js';
import { FP8_BLOCK, fp8PackedBytes, type Fp8Weight } from './fp8.js';
import { describeData, numel, type Bf16Tensor, type Format } from './tensor.js';
import { checkTensor } from './validate.js';

/** A weight the matrix kernels accept: bf16 (ND, NZ, PACKED) or block-scaled FP8 (NT, ND, PACKED). */
export type Weight = Bf16Tensor | Fp8Weight;

export function isFp8Weight(w: unknown): w is Fp8Weight {
  return typeof w === 'object' && w !== null && (w as { dtype?: unknown }).dtype === 'float8_e4m3fn';
}

export interface WeightRule {
  /** bf16 formats accepted (default ND, NZ, PACKED). */
  bf16Formats?: readonly Format[];
  /** FP8 formats accepted (default NT, ND, PACKED); empty: bf16 only. */
  fp8Formats?: readonly Fp8Weight['format'][];
  /** 2 (default): [K, N]; 3: [items, K, N] (e.g. wUk). */
  rank?: 2 | 3;
}

/** The [rows, cols] grid of block scales of one [K, N] FP8 weight in `format`. */
export function fp8ScaleGrid(format: Fp8Weight['format'], K: number, N: number): [number, number] {
  const b = (d: number): number => Math.ceil(d / FP8_BLOCK);
  if (format === 'NT') return [b(N), b(K)];
  if (format === 'ND') return [b(K), b(N)];
  return [Math.ceil(N / 16), b(K)];
}

/**
 * Check a weight: a bf16 tensor (checkTensor with the bf16 formats) or an FP8 weight whose bytes and
 * blockScale fit its shape and format. Messages name the argument, the expectation and what was given.
 */
export function checkWeight(name: string, value: unknown, rule: WeightRule = {}): Weight {
  const rank = rule.rank ?? 2;
  const fp8Formats = rule.fp8Formats ?? ['NT', 'ND', 'PACKED'];
  if (!isFp8Weight(value) || fp8Formats.length === 0) {
    const t = checkTensor<'bfloat16'>(name, value, {
      dtype: fp8Formats.length === 0 ? 'bfloat16' : (['bfloat16', 'float8_e4m3fn'] as const),
      formats: rule.bf16Formats ?? (rank === 2 ? ['ND', 'NZ', 'PACKED'] : ['ND']),
    });
    if (t.shape.length !== rank) {
      throw new DsaError(ErrorCode.SHAPE, `${name}: expected rank ${rank}, got shape [${t.shape.join(', ')}]`, name);
    }
    return t;
  }
  const w = value as Partial<Fp8Weight>;
  if (!Array.isArray(w.shape) || w.shape.length !== rank || w.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new DsaError(ErrorCode.SHAPE, `${name}: expected a float8_e4m3fn shape of ${rank} non-negative integers, got ${JSON.stringify(w.shape)}`, name);
  }
  if (!fp8Formats.includes(w.format as Fp8Weight['format'])) {
    throw new DsaError(ErrorCode.FORMAT, `${name}: expected format ${fp8Formats.join(' or ')} for a float8_e4m3fn weight, got ${String(w.format)}`, name);
  }
  const format = w.format as Fp8Weight['format'];
  if (!(w.data instanceof Uint8Array)) {
    throw new DsaError(ErrorCode.DTYPE, `${name}: expected data to be a Uint8Array for float8_e4m3fn, got ${describeData(w.data)}`, name);
  }
  const items = rank === 3 ? w.shape[0]! : 1;
  const K = w.shape[rank - 2]!;
  const N = w.shape[rank - 1]!;
  const bytes = items * (format === 'PACKED' ? fp8PackedBytes(K, N) : K * N);
  if (w.data.length !== bytes) {
    throw new DsaError(ErrorCode.SHAPE, `${name}: shape [${w.shape.join(', ')}] (${format}) needs ${bytes} bytes, data has ${w.data.length}`, name);
  }
  const grid = rank === 3 ? [items, ...fp8ScaleGrid(format, K, N)] : fp8ScaleGrid(format, K, N);
  const s = checkTensor<'float32'>(`${name}.blockScale`, w.blockScale, { dtype: 'float32' });
  if (s.shape.length !== grid.length || s.shape.some((d, i) => d !== grid[i]) || s.data.length !== numel(grid)) {
    throw new DsaError(ErrorCode.SHAPE,
      `${name}.blockScale: expected shape [${grid.join(', ')}] (one scale per ${format === 'PACKED' ? '16 columns and 128 k' : '128×128 block of the stored matrix'} of the ${format} weight [${w.shape.join(', ')}]), got [${s.shape.join(', ')}]`,
      `${name}.blockScale`);
  }
  return value as Fp8Weight;
}
