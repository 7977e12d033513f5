// What a benchmark says about the machine it ran on: CPU name, cores, threads, caches (sysfs where
// the kernel exposes it, cpuid otherwise), memory and the transparent-huge-page setting.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, release, totalmem, type as osType } from 'node:os';
import { activeIsa, cpuFeatures } from './matmul.js';
import { coreAddon } from './native.js';

export interface CacheLevel {
  level: number;
  type: string;
  /** Bytes of one instance. */
  bytes: number;
  /** Logical CPUs sharing one instance (0: not reported). */
  sharedBy: number;
}

export interface MachineInfo {
  /** The OS's name for the CPU (/proc/cpuinfo or equivalent). */
  cpuModel: string;
  /** The cpuid brand string (may differ under a hypervisor). */
  cpuBrand: string;
  vendor: string;
  family: number;
  model: number;
  stepping: number;
  /** Physical cores and logical CPUs this process can use. */
  cores: number;
  logicalCpus: number;
  threadsPerCore: number;
  caches: CacheLevel[];
  /** Size of the last-level cache (one instance) and where the figure came from. */
  llcBytes: number;
  llcSource: string;
  isa: string;
  memoryBytes: number;
  /** /sys/kernel/mm/transparent_hugepage/enabled, e.g. "always [madvise] never" ('' if absent). */
  transparentHugePages: string;
  os: string;
  node: string;
}

/** Used when neither sysfs nor cpuid reports a cache: bigger than any CPU's LLC of today. */
const UNKNOWN_LLC_BYTES = 512 * 2 ** 20;

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}

function sysfsCaches(): CacheLevel[] {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  if (!existsSync(dir)) return [];
  const out: CacheLevel[] = [];
  for (const e of readdirSync(dir).filter((n) => /^index\d+$/.test(n))) {
    const size = /^(\d+)([KMG]?)/.exec(readText(`${dir}/${e}/size`));
    if (!size) continue;
    const unit = { '': 1, K: 1024, M: 2 ** 20, G: 2 ** 30 }[size[2] as '' | 'K' | 'M' | 'G'];
    const shared = readText(`${dir}/${e}/shared_cpu_list`).split(',').reduce((n, r) => {
      const [a, b] = r.split('-').map(Number);
      return n + (b === undefined ? 1 : b! - a! + 1);
    }, 0);
    out.push({ level: Number(readText(`${dir}/${e}/level`)), type: readText(`${dir}/${e}/type`).toLowerCase(), bytes: Number(size[1]) * unit, sharedBy: shared });
  }
  return out;
}

/** Physical cores: distinct (physical id, core id) pairs in /proc/cpuinfo, else the logical count. */
function physicalCores(): number {
  const info = readText('/proc/cpuinfo');
  if (!info) return availableParallelism();
  const pairs = new Set<string>();
  for (const block of info.split('\n\n')) {
    const phys = /physical id\s*:\s*(\d+)/.exec(block)?.[1] ?? '0';
    const core = /core id\s*:\s*(\d+)/.exec(block)?.[1];
    if (core !== undefined) pairs.add(`${phys}:${core}`);
  }
  return pairs.size > 0 ? Math.min(pairs.size, availableParallelism()) : availableParallelism();
}

let cached: MachineInfo | undefined;

/** This machine, described once per process. */
export function describeMachine(): MachineInfo {
  if (cached) return cached;
  const id = coreAddon().cpuIdentity();
  const fromSysfs = sysfsCaches();
  const caches = fromSysfs.length > 0 ? fromSysfs : id.caches;
  const data = caches.filter((c) => c.type !== 'instruction');
  const top = Math.max(0, ...data.map((c) => c.level));
  const llc = data.filter((c) => c.level === top).reduce((m, c) => Math.max(m, c.bytes), 0);
  const logical = availableParallelism();
  const cores = physicalCores();
  cached = {
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    cpuBrand: id.brand,
    vendor: id.vendor,
    family: id.family,
    model: id.model,
    stepping: id.stepping,
    cores,
    logicalCpus: logical,
    threadsPerCore: Math.max(1, Math.round(logical / cores)),
    caches,
    llcBytes: llc > 0 ? llc : UNKNOWN_LLC_BYTES,
    llcSource: llc > 0 ? (fromSysfs.length > 0 ? 'sysfs' : id.cacheSource) : 'not reported (assumed 512 MiB)',
    isa: `${activeIsa()} (best ${cpuFeatures().best})`,
    memoryBytes: totalmem(),
    transparentHugePages: readText('/sys/kernel/mm/transparent_hugepage/enabled'),
    os: `${osType()} ${release()}`,
    node: process.version,
  };
  return cached;
}

/** Bytes of the last-level cache (see MachineInfo.llcSource for where the figure came from). */
export function lastLevelCacheBytes(): number {
  return describeMachine().llcBytes;
}

/** One line for a benchmark's header. */
export function machineLine(m: MachineInfo = describeMachine()): string {
  const brand = m.cpuBrand && m.cpuBrand !== m.cpuModel ? ` (cpuid: ${m.cpuBrand})` : '';
  return `${m.cpuModel}${brand}, ${m.vendor} family ${m.family} model ${m.model}; ${m.cores} cores, ${m.logicalCpus} threads; ` +
    `LLC ${(m.llcBytes / 2 ** 20).toFixed(0)} MiB (${m.llcSource}); ISA ${m.isa}; ${(m.memoryBytes / 2 ** 30).toFixed(0)} GiB RAM; THP ${m.transparentHugePages || 'n/a'}`;
}
