import {
  DsaError, ErrorCode, FP8_BLOCK, fp8IndexRowBytes, fp8KvRowBytes, largeZeros, zeros, type Bf16Tensor, type CacheDtype, type I32Tensor,
  type U8Tensor,
} from '@dsa/tensor-core';

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
  /**
   * 'bfloat16' (default): kvCache [.., kvLora] + krCache [.., rope] + indexKCache [.., indexDim], bf16
   * (1408 B per token at DeepSeek size). 'float8_e4m3fn': kvCache uint8 [.., kvLora + 4·kvLora/128 +
   * 2·rope] (656 B: e4m3 latent tiles ‖ fp32 tile scales ‖ bf16 rope; no krCache) and indexKCache uint8
   * [.., indexDim + 4] (132 B: e4m3 Hadamard-rotated key ‖ fp32 scale), 788 B per token (tensor-core
   * fp8-cache.ts). Needs kvLora % 128 == 0 and indexDim == 128.
   */
  dtype?: CacheDtype;
}

/** The cache tensors one operator call takes: spread them into the call's inputs. */
export interface CacheTensors {
  kvCache: Bf16Tensor | U8Tensor;
  /** Absent for FP8 caches (the rope part lives in the latent rows). */
  krCache?: Bf16Tensor;
  indexKCache: Bf16Tensor | U8Tensor;
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
  readonly dtype: CacheDtype;
  readonly kvCache: Bf16Tensor | U8Tensor;
  /** undefined for FP8 caches. */
  readonly krCache: Bf16Tensor | undefined;
  readonly indexKCache: Bf16Tensor | U8Tensor;
  /** Cache bytes per token (all caches of one layer): 1408 bf16, 788 FP8 at DeepSeek size. */
  readonly bytesPerToken: number;
  readonly blockSize: number;
  readonly kvLora: number;
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
    const { numBlocks, blockSize, kvLora, rope, indexDim } = config;
    const dtype = config.dtype ?? 'bfloat16';
    if (dtype !== 'bfloat16' && dtype !== 'float8_e4m3fn') {
      throw new DsaError(ErrorCode.ARGUMENT, `dtype: expected 'bfloat16' or 'float8_e4m3fn', got ${String(dtype)}`, 'dtype');
    }
    this.dtype = dtype;
    this.blockSize = blockSize;
    this.kvLora = kvLora;
    this.maxBlocksPerSeq = config.maxBlocksPerSeq ?? Math.max(1, numBlocks);
    // Streamed by the kernels: huge-page backed where the OS allows (largeZeros).
    if (dtype === 'float8_e4m3fn') {
      if (kvLora % FP8_BLOCK !== 0) throw new DsaError(ErrorCode.SHAPE, `kvLora: an FP8 latent cache needs a multiple of 128, got ${kvLora}`, 'kvLora');
      if (indexDim !== FP8_BLOCK) throw new DsaError(ErrorCode.SHAPE, `indexDim: an FP8 key cache needs 128 (the Hadamard size), got ${indexDim}`, 'indexDim');
      this.kvCache = largeZeros('uint8', [numBlocks, blockSize, 1, fp8KvRowBytes(kvLora, rope)]);
      this.krCache = undefined;
      this.indexKCache = largeZeros('uint8', [numBlocks, blockSize, 1, fp8IndexRowBytes(indexDim)]);
      this.bytesPerToken = fp8KvRowBytes(kvLora, rope) + fp8IndexRowBytes(indexDim);
    } else {
      this.kvCache = largeZeros('bfloat16', [numBlocks, blockSize, 1, kvLora]);
      this.krCache = largeZeros('bfloat16', [numBlocks, blockSize, 1, rope]);
      this.indexKCache = largeZeros('bfloat16', [numBlocks, blockSize, 1, indexDim]);
      this.bytesPerToken = 2 * (kvLora + rope + indexDim);
    }
    this.freeBlocks = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  /**
   * Every cache tensor the operator needs, for either dtype:
   * `layer.forward({ x, sin, cos, ...cache.plan(seqs, s1), ...cache.tensors() })`.
   */
  tensors(): CacheTensors {
    return this.krCache
      ? { kvCache: this.kvCache, krCache: this.krCache, indexKCache: this.indexKCache }
      : { kvCache: this.kvCache, indexKCache: this.indexKCache };
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
