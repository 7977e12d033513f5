// bfloat16 <-> float32, bit-exact. bf16 values live in Uint16Array as raw bit patterns.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Round a number to the nearest bf16 (ties to even). NaN stays NaN (quiet, sign kept). */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
    // NaN: the rounding trick below could carry into the exponent and turn it into Inf.
    return ((bits >>> 16) | 0x0040) & 0xffff;
  }
  const lsb = (bits >>> 16) & 1;
  return ((bits + 0x7fff + lsb) >>> 16) & 0xffff;
}

/** Widen bf16 bits to a number (exact). */
export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** Round a number to bf16 precision and return it as a number (handy in references). */
export function roundBf16(x: number): number {
  return bf16ToF32(f32ToBf16(x));
}

/** Convert a float array to bf16 bits (round to nearest even). */
export function f32ArrayToBf16(src: ArrayLike<number>, dst = new Uint16Array(src.length)): Uint16Array {
  const n = src.length;
  const tmp = new Float32Array(Math.min(n, 65536));
  const tmpBits = new Uint32Array(tmp.buffer);
  for (let base = 0; base < n; base += tmp.length) {
    const m = Math.min(tmp.length, n - base);
    for (let i = 0; i < m; i++) tmp[i] = src[base + i]!;
    for (let i = 0; i < m; i++) {
      const bits = tmpBits[i]!;
      if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
        dst[base + i] = ((bits >>> 16) | 0x0040) & 0xffff;
      } else {
        dst[base + i] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
      }
    }
  }
  return dst;
}

/** Widen bf16 bits to float32 (exact). */
export function bf16ArrayToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return dst;
}
