import { describe, expect, it } from 'vitest';
import { dequantizeBlocks, E4M3_VALUES, f32ToBf16, floatToE4m3, Rng, rowsToBf16 } from '../src/index.js';
import { coreAddon } from '../src/native.js';

/** A [rows, cols] e4m3 matrix with random block scales; no NaN codes. */
function fp8Matrix(rng: Rng, rows: number, cols: number) {
  const bytes = Uint8Array.from({ length: rows * cols }, () => floatToE4m3(rng.uniform(-448, 448)));
  const scale = Float32Array.from({ length: Math.ceil(rows / 128) * Math.ceil(cols / 128) }, () => Math.fround(rng.uniform(1e-5, 1e-2)));
  return { bytes, scale };
}

const expected = (v: number): number => f32ToBf16(Math.fround(v));

describe('rowsToBf16', () => {
  it('FP8 strips (starting mid-block, partial edge blocks) match the exact dequantization, transposed and not', () => {
    const rng = new Rng(11);
    const rows = 300;
    const cols = 261;
    const { bytes, scale } = fp8Matrix(rng, rows, cols);
    const exact = dequantizeBlocks(bytes, scale, rows, cols);
    const t = new Uint16Array(rows * cols).fill(0x7fc1);
    const nd = new Uint16Array(rows * cols).fill(0x7fc1);
    // Strips of uneven sizes that cut blocks anywhere.
    for (const [r0, n] of [[0, 50], [50, 100], [150, 7], [157, 143]] as const) {
      const strip = { dtype: 'F8_E4M3' as const, bytes: bytes.subarray(r0 * cols, (r0 + n) * cols), row0: r0, rows: n, cols, scale: { data: scale, blockRows: 128, blockCols: 128 } };
      rowsToBf16(strip, { data: t, offset: r0, ld: rows, transposed: true });
      rowsToBf16(strip, { data: nd, offset: r0 * cols, ld: cols, transposed: false });
    }
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const want = expected(exact[r * cols + c]!);
        if (t[c * rows + r] !== want || nd[r * cols + c] !== want) throw new Error(`element (${r}, ${c}): ${t[c * rows + r]} / ${nd[r * cols + c]} vs ${want}`);
      }
    }
  });

  it('honours other block sizes and maps NaN codes to NaN', () => {
    const bytes = Uint8Array.from([0x7f, 0x38, 0xb8, 0x01, 0x38, 0x38]); // NaN, 1, -1, 2^-9, 1, 1
    const scale = Float32Array.from([2, 3]); // 2×2 blocks over [3, 2]: rows 0-1, then row 2
    const out = new Uint16Array(6);
    rowsToBf16({ dtype: 'F8_E4M3', bytes, row0: 0, rows: 3, cols: 2, scale: { data: scale, blockRows: 2, blockCols: 2 } }, { data: out, offset: 0, ld: 2, transposed: false });
    expect(Number.isNaN(E4M3_VALUES[0x7f]!)).toBe(true);
    expect((out[0]! & 0x7f80) === 0x7f80 && (out[0]! & 0x7f) !== 0).toBe(true);
    expect(Array.from(out.subarray(1))).toEqual([2, -2, 2 ** -9 * 2, 3, 3].map(expected));
  });

  it('BF16, F16 and F32 rows convert exactly (F32 rounds to nearest even) and transpose', () => {
    const rng = new Rng(5);
    const rows = 5;
    const cols = 70;
    const f32 = Float32Array.from({ length: rows * cols }, () => rng.normal());
    const bf = Uint16Array.from(f32, (v) => f32ToBf16(v));
    const f16 = Uint16Array.from({ length: rows * cols }, () => rng.int(0, 0x7c00) | (rng.int(0, 2) << 15));
    const f16Value = (h: number): number => {
      const e = (h >> 10) & 31;
      const m = h & 1023;
      return (h & 0x8000 ? -1 : 1) * (e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15));
    };
    const cases = [
      ['F32', new Uint8Array(f32.buffer), (i: number) => f32ToBf16(f32[i]!)],
      ['BF16', new Uint8Array(bf.buffer), (i: number) => bf[i]!],
      ['F16', new Uint8Array(f16.buffer), (i: number) => f32ToBf16(f16Value(f16[i]!))],
    ] as const;
    for (const [dtype, bytes, want] of cases) {
      const out = new Uint16Array(rows * cols + 3).fill(0xffff);
      // An odd byte offset forces the copy path for 16/32-bit views.
      const shifted = new Uint8Array(bytes.length + 1);
      shifted.set(bytes, 1);
      rowsToBf16({ dtype, bytes: shifted.subarray(1), row0: 0, rows, cols }, { data: out, offset: 3, ld: rows, transposed: true });
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expect(out[3 + c * rows + r]).toBe(want(r * cols + c));
      expect(Array.from(out.subarray(0, 3))).toEqual([0xffff, 0xffff, 0xffff]);
    }
  });

  it('rejects short strips, targets that do not fit, and FP8 rows without scales (the native kernel checks again)', () => {
    const out = new Uint16Array(8);
    const scale = { data: new Float32Array(1), blockRows: 128, blockCols: 128 };
    expect(() => rowsToBf16({ dtype: 'F8_E4M3', bytes: new Uint8Array(6), row0: 0, rows: 2, cols: 3, scale }, { data: out, offset: 3, ld: 3, transposed: false })).toThrow(/dst: 2×3 rows at offset 3 with ld 3 do not fit in 8/);
    expect(() => rowsToBf16({ dtype: 'F8_E4M3', bytes: new Uint8Array(6), row0: 0, rows: 2, cols: 3, scale }, { data: out, offset: 0, ld: 1, transposed: true })).toThrow(/dst:/);
    const addon = coreAddon();
    const code = (f: () => void): string => { try { f(); } catch (e) { return (e as { code: string }).code; } return 'none'; };
    expect(code(() => addon.e4m3RowsToBf16(new Uint8Array(5), 0, 2, 3, scale.data, 128, 128, out, 0, 3, false))).toBe('DSA_E_SHAPE');
    expect(code(() => addon.e4m3RowsToBf16(new Uint8Array(6), 127, 2, 3, scale.data, 128, 128, out, 0, 3, false))).toBe('DSA_E_SHAPE');
    expect(code(() => addon.e4m3RowsToBf16(new Uint8Array(6), 0, 2, 3, scale.data, 128, 128, out, 3, 3, false))).toBe('DSA_E_SHAPE');
    expect(code(() => addon.e4m3RowsToBf16(new Uint8Array(6), 0, 2, 3, scale.data, 128, 128, out, 0, 2 ** 52, true))).toBe('DSA_E_SHAPE');
    expect(code(() => addon.e4m3RowsToBf16(new Uint8Array(6), 0, 2, 3, scale.data, 0, 128, out, 0, 3, false))).toBe('DSA_E_ARGUMENT');
    expect(code(() => addon.e4m3RowsToBf16(new Uint16Array(6) as never, 0, 2, 3, scale.data, 128, 128, out, 0, 3, false))).toBe('DSA_E_DTYPE');
    expect(() => rowsToBf16({ dtype: 'BF16', bytes: new Uint8Array(6), row0: 0, rows: 2, cols: 2 }, { data: out, offset: 0, ld: 2, transposed: false })).toThrow(/expected 8 bytes/);
    expect(() => rowsToBf16({ dtype: 'F8_E4M3', bytes: new Uint8Array(4), row0: 0, rows: 2, cols: 2 }, { data: out, offset: 0, ld: 2, transposed: false })).toThrow(/block scales/);
  });
});
