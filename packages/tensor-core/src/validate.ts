import { DsaError, ErrorCode } from './errors.js';
import { ARRAY_OF, describeData, numel, type Dtype, type Format, type Tensor } from './tensor.js';

export interface TensorRule {
  dtype: Dtype | readonly Dtype[];
  /** Allowed formats (default: ND only). */
  formats?: readonly Format[];
  optional?: boolean;
}

/**
 * Check that `value` has the tensor form: dtype string, integer shape, a typed array of the dtype's
 * kind holding exactly the elements the shape (and format) needs. Structural: no instanceof on the tensor.
 */
export function checkTensor<D extends Dtype = Dtype>(name: string, value: unknown, rule: TensorRule): Tensor<D> {
  if (typeof value !== 'object' || value === null) {
    throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected a tensor {dtype, shape, data}, got ${value === null ? 'null' : typeof value}`, name);
  }
  const t = value as Partial<Tensor>;
  const dtypes = typeof rule.dtype === 'string' ? [rule.dtype] : rule.dtype;
  if (typeof t.dtype !== 'string' || !dtypes.includes(t.dtype as Dtype)) {
    throw new DsaError(ErrorCode.DTYPE, `${name}: expected dtype ${dtypes.join(' or ')}, got ${String(t.dtype)}`, name);
  }
  if (!Array.isArray(t.shape) || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new DsaError(ErrorCode.SHAPE, `${name}: expected shape to be an array of non-negative integers, got ${JSON.stringify(t.shape)}`, name);
  }
  const format = t.format ?? 'ND';
  const formats = rule.formats ?? ['ND'];
  if (!formats.includes(format)) {
    throw new DsaError(ErrorCode.FORMAT, `${name}: expected format ${formats.join(' or ')}, got ${String(format)}`, name);
  }
  const Ctor = ARRAY_OF[t.dtype as Dtype];
  if (!(t.data instanceof (Ctor as new () => unknown))) {
    throw new DsaError(ErrorCode.DTYPE, `${name}: expected data to be a ${Ctor.name} for ${t.dtype}, got ${describeData(t.data)}`, name);
  }
  const need = storageElements(t.shape, format);
  if ((t.data as ArrayLike<number>).length !== need) {
    throw new DsaError(ErrorCode.SHAPE, `${name}: shape [${t.shape.join(', ')}] (${format}) needs ${need} elements, data has ${(t.data as ArrayLike<number>).length}`, name);
  }
  if (format === 'NZ') {
    if (t.shape.length !== 2) throw new DsaError(ErrorCode.SHAPE, `${name}: NZ weights must be 2-D [K, N], got shape [${t.shape.join(', ')}]`, name);
    const [K, N] = t.shape as [number, number];
    if (K % 16 !== 0 || N % 16 !== 0) {
      throw new DsaError(ErrorCode.SHAPE, `${name}: NZ weights need K % 16 == 0 and N % 16 == 0, got [${K}, ${N}]`, name);
    }
  }
  return value as Tensor<D>;
}

/** True when the two tensors' data share any byte (views of one buffer that overlap). */
export function sharesMemory(a: Tensor, b: Tensor): boolean {
  const x = a.data;
  const y = b.data;
  if (x.buffer !== y.buffer || x.byteLength === 0 || y.byteLength === 0) return false;
  return x.byteOffset < y.byteOffset + y.byteLength && y.byteOffset < x.byteOffset + x.byteLength;
}

/** Storage elements of a tensor in `format` (PACKED pads K to even and N to 16). */
export function storageElements(shape: readonly number[], format: Format): number {
  if (format === 'PACKED' && shape.length === 2) {
    const [K, N] = shape as [number, number];
    return (K + (K & 1)) * (Math.ceil(N / 16) * 16);
  }
  return numel(shape);
}

/**
 * Binds symbolic dimensions across arguments: the first argument that mentions a name fixes it,
 * later ones must agree, and the message says where the expected value came from.
 */
export class DimBinder {
  private readonly dims = new Map<string, { value: number; from: string }>();

  /** Match `t.shape` against a pattern of names and literal numbers. */
  match(name: string, t: Tensor, pattern: readonly (string | number)[]): void {
    const shape = t.shape;
    if (shape.length !== pattern.length) {
      throw new DsaError(ErrorCode.SHAPE, `${name}: expected rank ${pattern.length} [${pattern.join(', ')}], got rank ${shape.length} [${shape.join(', ')}]`, name);
    }
    pattern.forEach((p, i) => this.bind(name, i, p, shape[i]!, shape));
  }

  private bind(name: string, axis: number, p: string | number, actual: number, shape: readonly number[]): void {
    if (typeof p === 'number') {
      if (actual !== p) {
        throw new DsaError(ErrorCode.SHAPE, `${name}: expected shape[${axis}] = ${p}, got ${actual} (shape [${shape.join(', ')}])`, name);
      }
      return;
    }
    const known = this.dims.get(p);
    if (known === undefined) {
      this.dims.set(p, { value: actual, from: `${name}.shape[${axis}]` });
    } else if (known.value !== actual) {
      throw new DsaError(ErrorCode.SHAPE, `${name}: expected shape[${axis}] (${p}) = ${known.value} as given by ${known.from}, got ${actual} (shape [${shape.join(', ')}])`, name);
    }
  }

  /** Fix a dimension from a computed value (e.g. a head split); `from` explains where it came from. */
  set(dim: string, value: number, from: string): void {
    this.dims.set(dim, { value, from });
  }

  get(dim: string): number {
    const d = this.dims.get(dim);
    if (d === undefined) throw new DsaError(ErrorCode.INTERNAL, `dimension ${dim} was never bound`);
    return d.value;
  }

  has(dim: string): boolean {
    return this.dims.has(dim);
  }

  /** An independent copy (bind a call's dimensions on top of a layer's without changing it). */
  clone(): DimBinder {
    const c = new DimBinder();
    for (const [k, v] of this.dims) c.dims.set(k, { ...v });
    return c;
  }
}

/** Throw unless `cond`; the message must name the argument, the expected and the actual value. */
export function require_(cond: boolean, code: ErrorCode, argument: string, message: string): asserts cond {
  if (!cond) throw new DsaError(code, `${argument}: ${message}`, argument);
}

/** Every element of an int32 tensor lies in [lo, hi] (inclusive); names the first offender. */
export function checkIntRange(name: string, t: Tensor<'int32'>, lo: number, hi: number): void {
  const d = t.data;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (v < lo || v > hi) {
      throw new DsaError(ErrorCode.RANGE, `${name}[${unravel(i, t.shape).join(', ')}]: expected a value in [${lo}, ${hi}], got ${v}`, name);
    }
  }
}

/** Multi-index of flat offset `i` in `shape` (for messages). */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length).fill(0);
  for (let a = shape.length - 1; a >= 0; a--) {
    const d = shape[a]!;
    if (d > 0) {
      idx[a] = i % d;
      i = Math.floor(i / d);
    }
  }
  return idx;
}

/** A positive integer option (or the default when undefined). */
export function intOption(name: string, value: unknown, dflt: number, lo = 1, hi = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return dflt;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < lo || value > hi) {
    throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected an integer in [${lo}, ${hi}], got ${String(value)}`, name);
  }
  return value;
}

/** A finite number option (or the default). */
export function numberOption(name: string, value: unknown, dflt: number, positive = true): number {
  if (value === undefined) return dflt;
  if (typeof value !== 'number' || !Number.isFinite(value) || (positive && value <= 0)) {
    throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected a finite${positive ? ' positive' : ''} number, got ${String(value)}`, name);
  }
  return value;
}

/** One of a fixed set of values (or the default). */
export function enumOption<T extends string | number>(name: string, value: unknown, allowed: readonly T[], dflt: T): T {
  if (value === undefined) return dflt;
  if (!allowed.includes(value as T)) {
    throw new DsaError(ErrorCode.ARGUMENT, `${name}: expected one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(value)}`, name);
  }
  return value as T;
}
