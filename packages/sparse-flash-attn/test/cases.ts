// Random, seeded stage-4 inputs for the tests. Every cache slot that no index selects is poisoned
// with NaN, so a kernel that reads one row too many (past eff, a skipped index, an unused block) fails.
import { Rng, type Bf16Tensor, type I32Tensor } from '@dsa/tensor-core';
import { rowEff, type SparseFlashAttentionInputs } from '../src/index.js';

export const NAN_BF16 = 0x7fc0;

export interface CaseSpec {
  b: number;
  s1: number;
  n: number;
  kvLora: number;
  rope: number;
  blockSize: number;
  topk: number;
  /** act per sequence. */
  acts: readonly number[];
  sparseMode?: 0 | 3;
  /** How many valid indices a row gets: 'full' = min(topk, eff), 'random' = 1..that, or a fixed count. */
  count?: 'full' | 'random' | number;
  /** Scatter the −1 entries among the valid ones instead of padding at the end. */
  holes?: boolean;
  /** Logit magnitude: the std of q (keys are N(0, 1)). */
  qStd?: number;
}

/** Inputs with the bf16 caches (what makeCase builds): a bf16 kvCache and a krCache. */
export type Bf16CacheInputs = SparseFlashAttentionInputs & { kvCache: Bf16Tensor; krCache: Bf16Tensor };

export interface Case {
  inputs: Bf16CacheInputs;
  /** Valid indices per row, in order. */
  rows: number[][];
}

export function makeCase(seed: number, spec: CaseSpec): Case {
  const rng = new Rng(seed);
  const { b, s1, n, kvLora, rope, blockSize, topk, acts } = spec;
  const sparseMode = spec.sparseMode ?? 3;
  const maxAct = Math.max(1, ...acts);
  const maxBlocks = Math.ceil(maxAct / blockSize) + 1;
  // Physical blocks in shuffled order, plus two spares nobody owns.
  const needed = acts.map((a) => Math.ceil(a / blockSize));
  const blocks = needed.reduce((x, y) => x + y, 0) + 2;
  const physical = rng.shuffle([...Array(blocks).keys()]);
  const table = new Int32Array(b * maxBlocks).fill(-1);
  let next = 0;
  for (let bi = 0; bi < b; bi++) for (let j = 0; j < needed[bi]!; j++) table[bi * maxBlocks + j] = physical[next++]!;

  const indices = new Int32Array(b * s1 * topk).fill(-1);
  const rows: number[][] = [];
  const used = new Set<number>();
  for (let bi = 0; bi < b; bi++) {
    for (let i = 0; i < s1; i++) {
      const eff = Math.max(0, rowEff(acts[bi]!, s1, i, sparseMode));
      const most = Math.min(topk, eff);
      const c = spec.count ?? 'full';
      const k = c === 'full' ? most : c === 'random' ? (most === 0 ? 0 : rng.int(1, most)) : Math.min(c, most);
      const chosen = rng.shuffle([...Array(eff).keys()]).slice(0, k);
      rows.push(chosen);
      const slots = new Array<number>(topk).fill(-1);
      if (spec.holes) {
        const where = rng.shuffle([...Array(topk).keys()]).slice(0, k).sort((x, y) => x - y);
        where.forEach((w, t) => (slots[w] = chosen[t]!));
      } else {
        chosen.forEach((p, t) => (slots[t] = p));
      }
      indices.set(slots, (bi * s1 + i) * topk);
      for (const p of chosen) used.add(table[bi * maxBlocks + Math.floor(p / blockSize)]! * blockSize + (p % blockSize));
    }
  }

  const kvCache = rng.normalTensor([blocks, blockSize, 1, kvLora]);
  const krCache = rng.normalTensor([blocks, blockSize, 1, rope]);
  for (let slot = 0; slot < blocks * blockSize; slot++) {
    if (used.has(slot)) continue;
    kvCache.data.fill(NAN_BF16, slot * kvLora, (slot + 1) * kvLora);
    krCache.data.fill(NAN_BF16, slot * rope, (slot + 1) * rope);
  }
  const qStd = spec.qStd ?? 1;
  const inputs: Bf16CacheInputs = {
    qNope: rng.normalTensor([b, s1, n, kvLora], 0, qStd),
    qRope: rng.normalTensor([b, s1, n, rope], 0, qStd),
    kvCache,
    krCache,
    indices: i32([b, s1, topk], indices),
    blockTable: i32([b, maxBlocks], table),
    actSeqs: i32([b], Int32Array.from(acts)),
  };
  return { inputs, rows };
}

export function i32(shape: number[], data: Int32Array): I32Tensor {
  return { dtype: 'int32', shape, data, format: 'ND' };
}

/** A bf16 tensor full of NaN bits: an output element the kernel forgets to write stays NaN. */
export function poisoned(shape: number[]): Bf16Tensor {
  return { dtype: 'bfloat16', shape, data: new Uint16Array(shape.reduce((x, y) => x * y, 1)).fill(NAN_BF16), format: 'ND' };
}

function bytes(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Byte equality of two arrays (vitest's toEqual walks large typed arrays slowly). */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return bytes(a).equals(bytes(b));
}

/** A copy of every input's storage, to prove a call changed nothing (compare with sameSnapshot). */
export function snapshot(inputs: SparseFlashAttentionInputs): Buffer[] {
  return Object.values(inputs).map((t) => Buffer.from(bytes(t.data)));
}

export function sameSnapshot(a: Buffer[], b: Buffer[]): boolean {
  return a.length === b.length && a.every((x, i) => x.equals(b[i]!));
}
