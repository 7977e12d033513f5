import { availableParallelism } from 'node:os';
import { DsaError, ErrorCode } from './errors.js';

export type Isa = 'scalar' | 'avx2' | 'avx512';
export const ISAS: readonly Isa[] = ['scalar', 'avx2', 'avx512'];

export interface CpuFeatures {
  avx2: boolean;
  fma: boolean;
  f16c: boolean;
  avx512f: boolean;
  avx512bw: boolean;
  avx512vl: boolean;
  avx512bf16: boolean;
  /** The fastest ISA path this CPU runs. */
  best: Isa;
}

/** What every addon of the project exports besides its kernels. */
export interface ConfigurableAddon {
  version: string;
  /** Set the addon's kernel thread count and ISA ('auto' = best); returns the ISA now active. */
  configure(threads: number, isa: string): string;
  cpuFeatures(): CpuFeatures;
}

interface RuntimeState {
  threads: number;
  isa: Isa | 'auto';
  addons: Set<ConfigurableAddon>;
}

// Shared through globalThis so that two copies of tensor-core in one process keep one setting.
const KEY = Symbol.for('@dsa/tensor-core/runtime');
function state(): RuntimeState {
  const g = globalThis as unknown as Record<symbol, RuntimeState | undefined>;
  let s = g[KEY];
  if (s === undefined) {
    s = { threads: threadsFromEnv(), isa: isaFromEnv(), addons: new Set() };
    g[KEY] = s;
  }
  return s;
}

function threadsFromEnv(): number {
  const v = process.env.DSA_NUM_THREADS;
  if (v === undefined || v === '') return availableParallelism();
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw new DsaError(ErrorCode.ARGUMENT, `DSA_NUM_THREADS: expected an integer in [1, 1024], got ${JSON.stringify(v)}`, 'DSA_NUM_THREADS');
  }
  return n;
}

function isaFromEnv(): Isa | 'auto' {
  const v = process.env.DSA_FORCE_ISA;
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if (!(ISAS as readonly string[]).includes(v)) {
    throw new DsaError(ErrorCode.ARGUMENT, `DSA_FORCE_ISA: expected scalar, avx2, avx512 or auto, got ${JSON.stringify(v)}`, 'DSA_FORCE_ISA');
  }
  return v as Isa;
}

function apply(addon: ConfigurableAddon): void {
  const s = state();
  const isa = s.isa;
  if (isa !== 'auto') {
    const f = addon.cpuFeatures();
    const ok = isa === 'scalar' || (isa === 'avx2' && f.avx2 && f.fma) || (isa === 'avx512' && f.best === 'avx512');
    if (!ok) throw new DsaError(ErrorCode.ARGUMENT, `isa: this CPU cannot run the ${isa} path (best available: ${f.best})`, 'isa');
  }
  addon.configure(s.threads, isa);
}

/** Called by the addon loader: the addon follows the process-wide settings from now on. */
export function registerAddon(addon: ConfigurableAddon): void {
  apply(addon);
  state().addons.add(addon);
}

/** Threads used by every kernel of every package (default: DSA_NUM_THREADS or all cores). */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw new DsaError(ErrorCode.ARGUMENT, `threads: expected an integer in [1, 1024], got ${String(n)}`, 'threads');
  }
  state().threads = n;
  for (const a of state().addons) apply(a);
}

export function getNumThreads(): number {
  return state().threads;
}

/** Force an ISA path ('auto' picks the best the CPU has). Same as DSA_FORCE_ISA. */
export function setIsa(isa: Isa | 'auto'): void {
  if (isa !== 'auto' && !(ISAS as readonly string[]).includes(isa)) {
    throw new DsaError(ErrorCode.ARGUMENT, `isa: expected scalar, avx2, avx512 or auto, got ${JSON.stringify(isa)}`, 'isa');
  }
  const s = state();
  const previous = s.isa;
  s.isa = isa;
  try {
    for (const a of s.addons) apply(a);
  } catch (e) {
    s.isa = previous;
    for (const a of s.addons) apply(a);
    throw e;
  }
}

/** The ISA setting ('auto' unless forced). */
export function getIsa(): Isa | 'auto' {
  return state().isa;
}
