import { describe, expect, it } from 'vitest';
import { bf16ArrayToF32, bf16ToF32, f32ArrayToBf16, f32ToBf16 } from '../src/index.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number): number => {
  u32[0] = b >>> 0;
  return f32[0]!;
};

describe('bf16 conversion', () => {
  it('rounds raw bit patterns to nearest even, bit-exact', () => {
    const cases: [number, number][] = [
      [0x00000000, 0x0000], // +0
      [0x80000000, 0x8000], // -0
      [0x3f800000, 0x3f80], // 1
      [0x3f808000, 0x3f80], // tie, even stays
      [0x3f818000, 0x3f82], // tie, odd rounds up
      [0x3f808001, 0x3f81], // just above the tie
      [0x3f807fff, 0x3f80], // just below the tie
      [0x00000001, 0x0000], // smallest subnormal rounds to 0
      [0x00008000, 0x0000], // subnormal tie to even (0)
      [0x00018000, 0x0002], // subnormal tie to even (up)
      [0x007fffff, 0x0080], // largest subnormal rounds into the normals
      [0x7f7fffff, 0x7f80], // max float rounds to Inf
      [0x7f7f7fff, 0x7f7f], // largest value that stays finite
      [0x7f800000, 0x7f80], // +Inf
      [0xff800000, 0xff80], // -Inf
      [0xc0490fdb, 0xc049], // -pi
    ];
    for (const [bits, want] of cases) expect(f32ToBf16(fromBits(bits)), bits.toString(16)).toBe(want);
  });

  it('keeps every NaN a NaN (the carry trick would make some Inf)', () => {
    for (const bits of [0x7fc00000, 0x7f800001, 0x7fffffff, 0xffffffff, 0xff800001, 0x7f80ffff]) {
      const h = f32ToBf16(fromBits(bits));
      expect(Number.isNaN(bf16ToF32(h)), bits.toString(16)).toBe(true);
      expect(h >>> 15).toBe(bits >>> 31);
    }
  });

  it('widens exactly and the array forms agree with the scalar ones', () => {
    const bits = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) bits[i] = i;
    const wide = bf16ArrayToF32(bits);
    for (let i = 0; i < 65536; i += 7) {
      u32[0] = i << 16;
      expect(Object.is(wide[i], f32[0]) || (Number.isNaN(wide[i]) && Number.isNaN(f32[0]))).toBe(true);
    }
    // Round trip: every non-NaN bf16 converts back to itself.
    const back = f32ArrayToBf16(wide);
    for (let i = 0; i < 65536; i++) {
      if (!Number.isNaN(wide[i])) expect(back[i]).toBe(i);
    }
    const vals = [1.00390625, -3.14159, 65504, 1e-40, 3.4e38, -0];
    const arr = f32ArrayToBf16(vals);
    vals.forEach((v, i) => expect(arr[i]).toBe(f32ToBf16(v)));
  });
});
