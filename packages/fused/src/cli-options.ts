import { DsaError, ErrorCode, getNumThreads, setNumThreads } from '@dsa/tensor-core';
import { presets, type PresetName } from './presets.js';

export type CliValues = Record<string, string | boolean | undefined>;

/** An integer flag within [lo, hi] (or the default). */
export function intFlag(values: CliValues, name: string, dflt: number, lo: number, hi: number): number {
  const v = values[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi) {
    throw new DsaError(ErrorCode.ARGUMENT, `--${name}: expected an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`, name);
  }
  return n;
}

export function presetFlag(values: CliValues): PresetName {
  const p = (values.preset as string | undefined) ?? 'pto';
  if (!(p in presets)) throw new DsaError(ErrorCode.ARGUMENT, `--preset: expected pto or deepseekV32, got ${JSON.stringify(p)}`, 'preset');
  return p as PresetName;
}

export function threadsFlag(values: CliValues): number {
  const t = intFlag(values, 'threads', getNumThreads(), 1, 1024);
  setNumThreads(t);
  return t;
}

export const fmt = (v: number, digits = 1): string => v.toFixed(digits);
export const pct = (v: number): string => `${(100 * v).toFixed(0)}%`;
