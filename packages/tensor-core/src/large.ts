// Storage for buffers that kernels stream (paged caches, rotated benchmark weights): 2 MiB-aligned
// native memory with transparent huge pages advised, so a streaming read does not miss the TLB
// every 4 KiB. Where the OS or the runtime refuses (no such memory, a V8 sandbox), an ordinary
// ArrayBuffer is returned instead; either way it is zeroed and freed by the garbage collector.
import { DsaError, ErrorCode } from './errors.js';
import { coreAddon } from './native.js';
import { ARRAY_OF, checkShape, numel, type Dtype, type DataOf, type Format, type Tensor } from './tensor.js';

/** A zeroed ArrayBuffer of `bytes`, huge-page backed where possible (small sizes: ordinary memory). */
export function allocateLarge(bytes: number): ArrayBuffer {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new DsaError(ErrorCode.ARGUMENT, `bytes: expected a non-negative integer, got ${String(bytes)}`, 'bytes');
  }
  try {
    return coreAddon().allocateLarge(bytes);
  } catch (e) {
    throw new DsaError(ErrorCode.INTERNAL, `bytes: cannot allocate ${bytes} bytes (${(e as Error).message})`, 'bytes');
  }
}

/** `zeros(dtype, shape, format)` with its storage from allocateLarge. */
export function largeZeros<D extends Dtype>(dtype: D, shape: readonly number[], format: Format = 'ND'): Tensor<D> {
  checkShape(shape);
  const Ctor = ARRAY_OF[dtype];
  if (Ctor === undefined) throw new DsaError(ErrorCode.DTYPE, `dtype: expected one of ${Object.keys(ARRAY_OF).join(', ')}, got ${String(dtype)}`, 'dtype');
  const n = numel(shape);
  const data = new Ctor(allocateLarge(n * Ctor.BYTES_PER_ELEMENT), 0, n) as DataOf<D>;
  return { dtype, shape: [...shape], data, format };
}
