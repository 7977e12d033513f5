// The spec's accuracy measures (§4), shared by tests, `dsa check` and benchmarks.

/** ||a − b||₂ / ||b||₂ (b is the reference; 0 when both are zero). */
export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i]! - expected[i]!;
    num += d * d;
    den += expected[i]! * expected[i]!;
  }
  if (den === 0) return num === 0 ? 0 : Infinity;
  return Math.sqrt(num / den);
}

/** Fraction of elements with |a − b| ≤ atol + rtol·|b| (numpy isclose; the Ascend test rule). */
export function iscloseFraction(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 0.03, atol = 1e-4): number {
  if (expected.length === 0) return 1;
  let ok = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    if (Math.abs(a - b) <= atol + rtol * Math.abs(b) || (Number.isNaN(a) && Number.isNaN(b))) ok++;
  }
  return ok / expected.length;
}

/** Both measures at once, with the spec's pass rule (relL2 ≤ 1e-2 and isclose on ≥ 97%). */
export function compareBf16(actual: ArrayLike<number>, expected: ArrayLike<number>): { relL2: number; close: number; pass: boolean } {
  const relL2 = relativeL2(actual, expected);
  const close = iscloseFraction(actual, expected);
  return { relL2, close, pass: relL2 <= 1e-2 && close >= 0.97 };
}
