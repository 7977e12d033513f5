import { DsaError, ErrorCode, largeZeros, zeros, type Bf16Tensor, type I32Tensor } from '@dsa/tensor-core';

export interface PagedCacheConfig {
  /** Physical blocks in the pool (shared by all sequences). */
  numBlocks: number;
  /** Tokens per block (DeepSeek-V3.2: 128). */
  blockSize: number;
  /** Latent width of kvCache (512). */
  kvLora: number;
  /** RoPE width of krCache (64). */
  rope: number;
  /** Indexer key width of indexKCache (128). */
  indexDim: number;
  /** Longest sequence in blocks (default: the whole pool); the width of blockTable. */
  maxBlocksPerSeq?: number;
}

/** What one operator call needs besides x, sin, cos and the weights. */
export interface StepPlan {
  cacheIndex: I32Tensor;
  blockTable: I32Tensor;
  actSeqs: I32Tensor;
}

/**
 * Owns the three paged caches and the block pool. `admit()` opens a sequence, `plan(seqs, s1)`
 * reserves room for s1 new tokens of each and returns the `cacheIndex`, `blockTable` and `actSeqs`
 * of that call, `free(seq)` returns a sequence's blocks to the pool. Blocks are handed out lowest
 * first; a plan that does not fit throws DSA_E_STATE and changes nothing.
 */
export class PagedCacheManager {
  readonly kvCache: Bf16Tensor;
  readonly krCache: Bf16Tensor;
  readonly indexKCache: Bf16Tensor;
  readonly blockSize: number;
  readonly maxBlocksPerSeq: number;
  private readonly freeBlocks: number[];
  private readonly seqs = new Map<number, { blocks: number[]; length: number }>();
  private nextId = 0;

  constructor(config: PagedCacheConfig) {
    for (const k of ['numBlocks', 'blockSize', 'kvLora', 'rope', 'indexDim'] as const) {
      const v = config[k];
      if (!Number.isInteger(v) || v < (k === 'numBlocks' ? 0 : 1)) {
        throw new DsaError(ErrorCode.ARGUMENT, `${k}: expected a positive integer, got ${String(v)}`, k);
      }
    }
    const { numBlocks, blockSize } = config;
    this.blockSize = blockSize;
    this.maxBlocksPerSeq = config.maxBlocksPerSeq ?? Math.max(1, numBlocks);
    // Streamed by the kernels: huge-page backed where the OS allows (largeZeros).
    this.kvCache = largeZeros('bfloat16', [numBlocks, blockSize, 1, config.kvLora]);
    this.krCache = largeZeros('bfloat16', [numBlocks, blockSize, 1, config.rope]);
    this.indexKCache = largeZeros('bfloat16', [numBlocks, blockSize, 1, config.indexDim]);
    this.freeBlocks = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  /** Open a new (empty) sequence and return its id. */
  admit(): number {
    const id = this.nextId++;
    this.seqs.set(id, { blocks: [], length: 0 });
    return id;
  }

  /** Release a sequence's blocks (their contents are left as they are). */
  free(seq: number): void {
    const s = this.get(seq);
    for (const b of s.blocks.reverse()) this.freeBlocks.push(b);
    this.seqs.delete(seq);
  }

  /** Tokens stored for a sequence. */
  length(seq: number): number {
    return this.get(seq).length;
  }

  /** Blocks not owned by any sequence. */
  get freeBlockCount(): number {
    return this.freeBlocks.length;
  }

  /**
   * Reserve s1 new tokens for each sequence (in this order: batch row i is seqs[i]) and return the
   * call's cacheIndex [b, s1], blockTable [b, maxBlocksPerSeq] (−1 past the used blocks) and
   * actSeqs [b] (lengths including the new tokens). Lengths advance now.
   */
  plan(seqs: readonly number[], s1 = 1): StepPlan {
    if (!Number.isInteger(s1) || s1 < 1) throw new DsaError(ErrorCode.ARGUMENT, `s1: expected a positive integer, got ${String(s1)}`, 's1');
    if (new Set(seqs).size !== seqs.length) throw new DsaError(ErrorCode.ARGUMENT, `seqs: a sequence appears twice in one step`, 'seqs');
    const states = seqs.map((id) => this.get(id));
    const bs = this.blockSize;
    const need = states.map((s) => Math.ceil((s.length + s1) / bs) - s.blocks.length);
    states.forEach((s, i) => {
      if (s.blocks.length + need[i]! > this.maxBlocksPerSeq) {
        throw new DsaError(ErrorCode.STATE, `seqs[${i}]: sequence ${seqs[i]} would need ${s.blocks.length + need[i]!} blocks, maxBlocksPerSeq is ${this.maxBlocksPerSeq}`, 'seqs');
      }
    });
    const total = need.reduce((a, b) => a + b, 0);
    if (total > this.freeBlocks.length) {
      throw new DsaError(ErrorCode.STATE, `cache: the block pool is full (${total} blocks needed, ${this.freeBlocks.length} free)`, 'cache');
    }
    const b = seqs.length;
    const cacheIndex = zeros('int32', [b, s1]);
    const blockTable = zeros('int32', [b, this.maxBlocksPerSeq]);
    blockTable.data.fill(-1);
    const actSeqs = zeros('int32', [b]);
    states.forEach((s, i) => {
      for (let k = 0; k < need[i]!; k++) s.blocks.push(this.freeBlocks.pop()!);
      for (let t = 0; t < s1; t++) {
        const p = s.length + t;
        cacheIndex.data[i * s1 + t] = s.blocks[Math.floor(p / bs)]! * bs + (p % bs);
      }
      s.length += s1;
      s.blocks.forEach((blk, j) => (blockTable.data[i * this.maxBlocksPerSeq + j] = blk));
      actSeqs.data[i] = s.length;
    });
    return { cacheIndex, blockTable, actSeqs };
  }

  private get(seq: number): { blocks: number[]; length: number } {
    const s = this.seqs.get(seq);
    if (s === undefined) throw new DsaError(ErrorCode.ARGUMENT, `seq: no admitted sequence ${String(seq)}`, 'seq');
    return s;
  }
}
