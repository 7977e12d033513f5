// Stored weight rows (FP8 e4m3 with block scales, BF16, F16, F32) to bf16, as-is or transposed:
// what a checkpoint loader runs on each strip of rows it reads. FP8 strips go to the native kernel
// (native/dequant.cc: bf16(f32(e4m3 · scale)) as DeepSeek's own dequantization rounds, one 256-entry
// table per block, blocks on the thread pool); 16- and 32-bit rows are converted here.
import { f32ToBf16 } from './bf16.js';
import { DsaError, ErrorCode } from './errors.js';
import { coreAddon } from './native.js';

/** Dtypes of stored weights that `rowsToBf16` converts. */
export type StoredWeightDtype = 'F8_E4M3' | 'BF16' | 'F16' | 'F32';

/** A strip of consecutive rows of a stored [rows, cols] matrix. */
export interface StoredRows {
  dtype: StoredWeightDtype;
  /** The strip's bytes, row-major, `rows · cols · itemsize` long. */
  bytes: Uint8Array;
  /** Global index of the strip's first row (selects the FP8 scale rows). */
  row0: number;
  rows: number;
  cols: number;
  /** FP8 only: the whole matrix's scales [ceil(R/blockRows), ceil(cols/blockCols)] (multiply). */
  scale?: { data: Float32Array; blockRows: number; blockCols: number };
}

/**
 * Where converted rows go: row r of the strip (0-based within it), column c, lands at
 * `offset + c·ld + r` when `transposed`, otherwise at `offset + r·ld + c`.
 */
export interface Bf16Target {
  data: Uint16Array;
  offset: number;
  ld: number;
  transposed: boolean;
}

function f16ToF32(h: number): number {
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  const s = h & 0x8000 ? -1 : 1;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Convert a strip of stored rows to bf16 into `dst` (transposed or not). */
export function rowsToBf16(src: StoredRows, dst: Bf16Target): void {
  const { rows, cols, bytes } = src;
  const itemsize = src.dtype === 'F8_E4M3' ? 1 : src.dtype === 'F32' ? 4 : 2;
  if (bytes.length < rows * cols * itemsize) {
    throw new DsaError(ErrorCode.SHAPE, `bytes: expected ${rows * cols * itemsize} bytes for ${rows}×${cols} ${src.dtype}, got ${bytes.length}`, 'bytes');
  }
  const out = dst.data;
  const { offset, ld, transposed } = dst;
  if (rows === 0 || cols === 0) return;
  const [inner, outer] = transposed ? [rows, cols] : [cols, rows];
  if (!(ld >= inner) || !(offset >= 0) || offset + (outer - 1) * ld + inner > out.length) {
    throw new DsaError(ErrorCode.SHAPE, `dst: ${rows}×${cols} rows${transposed ? ' transposed' : ''} at offset ${offset} with ld ${ld} do not fit in ${out.length} elements`, 'dst');
  }
  if (src.dtype === 'F8_E4M3') {
    const sc = src.scale;
    if (!sc) throw new DsaError(ErrorCode.ARGUMENT, 'scale: FP8 rows need their block scales', 'scale');
    coreAddon().e4m3RowsToBf16(bytes, src.row0, rows, cols, sc.data, sc.blockRows, sc.blockCols, out, offset, ld, transposed);
    return;
  }
  // 16- and 32-bit rows: decode to bf16 bits element by element, in 64-column tiles when transposing.
  const aligned = bytes.byteOffset % itemsize === 0 ? bytes : bytes.slice(0, rows * cols * itemsize);
  const view = src.dtype === 'F32'
    ? new Float32Array(aligned.buffer, aligned.byteOffset, rows * cols)
    : new Uint16Array(aligned.buffer, aligned.byteOffset, rows * cols);
  const bits = src.dtype === 'BF16'
    ? (i: number): number => view[i]!
    : src.dtype === 'F32'
      ? (i: number): number => f32ToBf16(view[i]!)
      : (i: number): number => f32ToBf16(f16ToF32(view[i]!));
  for (let c0 = 0; c0 < cols; c0 += 64) {
    const c1 = Math.min(cols, c0 + 64);
    for (let r = 0; r < rows; r++) {
      const i = r * cols;
      if (transposed) for (let c = c0; c < c1; c++) out[offset + c * ld + r] = bits(i + c);
      else for (let c = c0; c < c1; c++) out[offset + r * ld + c] = bits(i + c);
    }
  }
}
