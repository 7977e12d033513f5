import { bf16ArrayToF32, f32ArrayToBf16 } from './bf16.js';
import { DsaError, ErrorCode } from './errors.js';
import { e4m3ToFloat, floatToE4m3 } from './fp8.js';

/** 'float8_e4m3fn': FP8 weights (see fp8.ts); 'uint8': byte rows of mixed content (FP8 cache rows). */
export type Dtype = 'bfloat16' | 'float32' | 'int32' | 'float8_e4m3fn' | 'uint8';
/**
 * 'ND' row-major; 'NZ' fractal weights [K,N] stored [N/16, K, 16]; 'NT' a [K,N] weight stored as its
 * transpose [N,K] (the checkpoint's [out, in]); 'PACKED' is made by packWeights only.
 */
export type Format = 'ND' | 'NZ' | 'NT' | 'PACKED';

export type DataOf<D extends Dtype> = D extends 'bfloat16'
  ? Uint16Array
  : D extends 'float32'
    ? Float32Array
    : D extends 'int32'
      ? Int32Array
      : Uint8Array;

/** A tensor is any object of this form; nothing is checked with instanceof. */
export interface Tensor<D extends Dtype = Dtype> {
  dtype: D;
  shape: readonly number[];
  data: DataOf<D>;
  format?: Format;
}

export type Bf16Tensor = Tensor<'bfloat16'>;
export type F32Tensor = Tensor<'float32'>;
export type I32Tensor = Tensor<'int32'>;

/** The typed array that holds each dtype's storage. */
export const ARRAY_OF = { bfloat16: Uint16Array, float32: Float32Array, int32: Int32Array, float8_e4m3fn: Uint8Array, uint8: Uint8Array } as const;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new DsaError(ErrorCode.SHAPE, `shape: expected non-negative integers, got [${shape.join(', ')}]`, 'shape');
    }
  }
}

/** Wrap existing storage (no copy). `data.length` must equal the product of `shape`. */
export function tensor<D extends Dtype>(dtype: D, shape: readonly number[], data: DataOf<D>, format: Format = 'ND'): Tensor<D> {
  checkShape(shape);
  const Ctor = ARRAY_OF[dtype];
  if (Ctor === undefined) throw new DsaError(ErrorCode.DTYPE, `dtype: expected one of ${Object.keys(ARRAY_OF).join(', ')}, got ${String(dtype)}`, 'dtype');
  if (!(data instanceof Ctor)) {
    throw new DsaError(ErrorCode.DTYPE, `data: expected ${Ctor.name} for ${dtype}, got ${describeData(data)}`, 'data');
  }
  if (data.length !== numel(shape)) {
    throw new DsaError(ErrorCode.SHAPE, `data: expected ${numel(shape)} elements for shape [${shape.join(', ')}], got ${data.length}`, 'data');
  }
  return { dtype, shape: [...shape], data, format };
}

/** A new zero-filled tensor. */
export function zeros<D extends Dtype>(dtype: D, shape: readonly number[], format: Format = 'ND'): Tensor<D> {
  checkShape(shape);
  const Ctor = ARRAY_OF[dtype];
  if (Ctor === undefined) throw new DsaError(ErrorCode.DTYPE, `dtype: expected one of ${Object.keys(ARRAY_OF).join(', ')}, got ${String(dtype)}`, 'dtype');
  return { dtype, shape: [...shape], data: new Ctor(numel(shape)) as DataOf<D>, format };
}

/** Build a tensor of `dtype` from float values (bf16 rounds to nearest even; int32 truncates). */
export function fromFloat32<D extends Dtype = 'bfloat16'>(values: ArrayLike<number>, shape: readonly number[], dtype: D = 'bfloat16' as D): Tensor<D> {
  checkShape(shape);
  if (values.length !== numel(shape)) {
    throw new DsaError(ErrorCode.SHAPE, `values: expected ${numel(shape)} elements for shape [${shape.join(', ')}], got ${values.length}`, 'values');
  }
  let data: Uint16Array | Float32Array | Int32Array | Uint8Array;
  if (dtype === 'bfloat16') data = f32ArrayToBf16(values);
  else if (dtype === 'float8_e4m3fn') data = Uint8Array.from(values, floatToE4m3);
  else if (dtype === 'float32') data = Float32Array.from(values);
  else if (dtype === 'int32') data = Int32Array.from(values);
  else throw new DsaError(ErrorCode.DTYPE, `dtype: expected bfloat16, float32, int32 or float8_e4m3fn, got ${String(dtype)}`, 'dtype');
  return { dtype, shape: [...shape], data: data as DataOf<D>, format: 'ND' };
}

/** The values of any tensor as float32, in storage order (exact for bf16). */
export function toFloat32(t: Tensor): Float32Array {
  if (t.dtype === 'bfloat16') return bf16ArrayToF32(t.data as Uint16Array);
  if (t.dtype === 'float32') return Float32Array.from(t.data as Float32Array);
  if (t.dtype === 'int32') return Float32Array.from(t.data as Int32Array);
  if (t.dtype === 'float8_e4m3fn') return Float32Array.from(t.data as Uint8Array, e4m3ToFloat);
  throw new DsaError(ErrorCode.DTYPE, `t.dtype: expected bfloat16, float32, int32 or float8_e4m3fn, got ${String((t as Tensor).dtype)}`, 'dtype');
}

/** A deep copy (new storage). */
export function clone<D extends Dtype>(t: Tensor<D>): Tensor<D> {
  return { dtype: t.dtype, shape: [...t.shape], data: t.data.slice() as DataOf<D>, format: t.format ?? 'ND' };
}

export function describeData(data: unknown): string {
  if (data === null) return 'null';
  if (typeof data !== 'object') return typeof data;
  const name = (data as object).constructor?.name ?? 'object';
  const len = (data as { length?: unknown }).length;
  return typeof len === 'number' ? `${name}(${len})` : name;
}
