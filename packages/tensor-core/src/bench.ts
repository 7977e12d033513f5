// The one place for what every benchmark of the project shares (imported as '@dsa/tensor-core/bench'):
// the machine and its ceilings measured in the same run, working sets sized from the measured
// last-level cache, timing with medians and min/max, and the JSON that `pnpm bench` summarizes.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { measureCeilings, type Ceilings } from './ceilings.js';
import { describeMachine, machineLine, type MachineInfo } from './machine.js';

export interface Stats {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Median (mean of the middle two for an even count), min and max. */
export function stats(samples: readonly number[]): Stats {
  if (samples.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const h = s.length >> 1;
  return { median: s.length & 1 ? s[h]! : (s[h - 1]! + s[h]!) / 2, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

export interface TimeOptions {
  /** Untimed calls first (page faults, scratch buffers, the thread pool). Default 1. */
  warmup?: number;
  /** At least this many timed calls (default 5) and at most maxReps (default 200)... */
  minReps?: number;
  maxReps?: number;
  /** ...and keep going until this much time has passed (default 1 s). */
  minSeconds?: number;
}

/**
 * Seconds per call of fn(i), one sample per call; `i` counts calls from 0 (warm-up included) so a
 * benchmark can rotate weights or caches with `i % copies`.
 */
export function timeCalls(fn: (i: number) => unknown, o: TimeOptions = {}): number[] {
  const warmup = o.warmup ?? 1, minReps = o.minReps ?? 5, maxReps = o.maxReps ?? 200, minSeconds = o.minSeconds ?? 1;
  let i = 0;
  for (; i < warmup; i++) fn(i);
  const times: number[] = [];
  const start = performance.now();
  while (times.length < maxReps && (times.length < minReps || performance.now() - start < minSeconds * 1e3)) {
    const t0 = performance.now();
    fn(i++);
    times.push((performance.now() - t0) / 1e3);
  }
  return times;
}

/** timeCalls for calls that return promises (one call at a time). */
export async function timeCallsAsync(fn: (i: number) => Promise<unknown>, o: TimeOptions = {}): Promise<number[]> {
  const warmup = o.warmup ?? 1, minReps = o.minReps ?? 5, maxReps = o.maxReps ?? 200, minSeconds = o.minSeconds ?? 1;
  let i = 0;
  for (; i < warmup; i++) await fn(i);
  const times: number[] = [];
  const start = performance.now();
  while (times.length < maxReps && (times.length < minReps || performance.now() - start < minSeconds * 1e3)) {
    const t0 = performance.now();
    await fn(i++);
    times.push((performance.now() - t0) / 1e3);
  }
  return times;
}

/**
 * How many copies of a `bytesEach` working set to rotate through so that together they are at
 * least `factor` times the last-level cache (default 2; at least `min`, default 2).
 */
export function rotationCount(bytesEach: number, options: { factor?: number; min?: number; llcBytes?: number } = {}): number {
  const llc = options.llcBytes ?? describeMachine().llcBytes;
  return Math.max(options.min ?? 2, Math.ceil(((options.factor ?? 2) * llc) / Math.max(1, bytesEach)));
}

/** The folder for JSON results: $DSA_BENCH_DIR, else bench-results/ at the workspace root (or here). */
export function benchDir(): string {
  if (process.env.DSA_BENCH_DIR) return resolve(process.env.DSA_BENCH_DIR);
  for (let d = process.cwd(); ; d = dirname(d)) {
    if (existsSync(join(d, 'pnpm-workspace.yaml'))) return join(d, 'bench-results');
    if (dirname(d) === d) return resolve('bench-results');
  }
}

export interface WorkingSet {
  label: string;
  /** Bytes one call reads from this set, and how many distinct copies the calls rotate through. */
  bytesEach: number;
  copies: number;
  totalBytes: number;
  llcBytes: number;
  exceedsLlc: boolean;
}

/** One line of `bench-results/summary.md` (and of the README table). */
export interface SummaryRow {
  what: string;
  figure: string;
}

const fix = (v: number, d = 1): string => v.toFixed(d);
export const pct = (v: number): string => `${(100 * v).toFixed(0)}%`;
/** "12.3 ms (min 11.9, max 13.4, n 20)" from seconds. */
export const msStats = (s: Stats, d = 2): string => `${fix(s.median * 1e3, d)} ms (min ${fix(s.min * 1e3, d)}, max ${fix(s.max * 1e3, d)}, n ${s.n})`;

/**
 * One benchmark run: prints the machine and the ceilings (1 and 2 threads, and `threads`) measured
 * now, records working sets, rows and summary lines, and writes `<benchDir>/<name>.json`.
 * Ceilings are the best of every probe of the run (call `probe()` again at the end): contention on
 * a shared machine only lowers a probe, and a higher ceiling never flatters a fraction.
 */
export class BenchRun {
  readonly machine: MachineInfo = describeMachine();
  readonly probes: Ceilings[] = [];
  readonly workingSets: WorkingSet[] = [];
  readonly rows: Record<string, unknown>[] = [];
  readonly summary: SummaryRow[] = [];
  /** 1-minute load average at the start and at write(): other work on the machine lowers every figure. */
  readonly loadAverage: { start: number; end?: number } = { start: loadavg()[0]! };
  private readonly started = performance.now();

  constructor(readonly name: string, readonly options: Record<string, unknown> & { threads: number; quick: boolean }) {
    console.log(`${name}: ${machineLine(this.machine)}`);
    console.log(`options: ${JSON.stringify(options)}; load average ${this.loadAverage.start.toFixed(2)}`);
  }

  get threads(): number {
    return this.options.threads;
  }

  /** Measure the ceilings now for 1, 2 and `threads` threads. */
  probe(label: string): void {
    const counts = [...new Set([1, 2, this.threads])].filter((t) => t <= Math.max(2, this.machine.logicalCpus));
    const now = counts.map((t) => measureCeilings(t));
    this.probes.push(...now);
    console.log(`ceilings ${label}: ` + now.map((c) => `${c.threads} thr: read ${fix(c.readGBs)} GB/s, bf16 dot ${fix(c.bf16Gflops, 0)} GFLOP/s`).join('; ') +
      ` (read probe ${fix(now[0]!.readBytes / 2 ** 20, 0)} MiB)`);
  }

  /** The best of this run's probes for `threads` threads (default: the benchmark's). */
  ceilings(threads = this.threads): Ceilings {
    const mine = this.probes.filter((p) => p.threads === threads);
    if (mine.length === 0) throw new Error(`no ceiling probed for ${threads} threads`);
    return {
      threads,
      readGBs: Math.max(...mine.map((p) => p.readGBs)),
      bf16Gflops: Math.max(...mine.map((p) => p.bf16Gflops)),
      readBytes: mine[0]!.readBytes,
    };
  }

  /** Record (and print) a working set; says plainly when it fits in the last-level cache. */
  workingSet(label: string, bytesEach: number, copies: number): WorkingSet {
    const llc = this.machine.llcBytes;
    const w = { label, bytesEach, copies, totalBytes: bytesEach * copies, llcBytes: llc, exceedsLlc: bytesEach * copies > llc };
    this.workingSets.push(w);
    console.log(`working set ${label}: ${copies} x ${fix(bytesEach / 1e6)} MB = ${fix(w.totalBytes / 1e6, 0)} MB, ` +
      `${fix(w.totalBytes / llc, 2)}x the ${fix(llc / 2 ** 20, 0)} MiB LLC${w.exceedsLlc ? '' : ' -- FITS IN THE LLC: figures are cache-resident'}`);
    return w;
  }

  row(r: Record<string, unknown>): void {
    this.rows.push(r);
  }

  summarize(what: string, figure: string): void {
    this.summary.push({ what, figure });
  }

  /** Write the JSON (machine, options, probes, best ceilings, working sets, rows, summary). */
  write(path?: string): string {
    const file = path ?? join(benchDir(), `${this.name}.json`);
    mkdirSync(dirname(file), { recursive: true });
    const threads = [...new Set(this.probes.map((p) => p.threads))];
    this.loadAverage.end = loadavg()[0]!;
    writeFileSync(file, JSON.stringify({
      name: this.name, date: new Date().toISOString(), seconds: (performance.now() - this.started) / 1e3,
      machine: this.machine, options: this.options, loadAverage: this.loadAverage,
      ceilings: Object.fromEntries(threads.map((t) => [t, this.ceilings(t)])), probes: this.probes,
      workingSets: this.workingSets, summary: this.summary, rows: this.rows,
    }, null, 2) + '\n');
    console.log(`wrote ${file}`);
    return file;
  }
}
