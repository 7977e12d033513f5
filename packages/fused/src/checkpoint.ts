// openCheckpoint: a Hugging Face DeepSeek-V3.2 folder (config.json + model.safetensors.index.json
// and shards, or one model.safetensors) to the operator's inputs, one layer at a time. Only the byte
// ranges of the tensors asked for are read, in strips of rows (the next strip is read while the
// current one is converted), so memory stays near the size of the layer's result.
import { readFile, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import {
  allocateLarge, DsaError, ErrorCode, openSafetensors, rowsToBf16, SAFETENSORS_ITEMSIZE, signalOption,
  type Bf16Tensor, type Fp8Weight, type SafetensorsFile, type SafetensorsTensorInfo, type StoredWeightDtype,
} from '@dsa/tensor-core';
import { optionsFor, parseConfig, ropeTables, type CheckpointConfig } from './checkpoint-config.js';
import type { LayerWeights } from './inputs.js';
import type { SparseAttentionOptions } from './presets.js';

export type { CheckpointConfig, YarnScaling } from './checkpoint-config.js';

/** The FP8 form: the six FP8 weights as stored (Fp8Weight), wIdxProj and the norms in bf16. */
export interface Fp8LayerWeights {
  wDq: Fp8Weight;
  wUqQr: Fp8Weight;
  wUk: Fp8Weight;
  wDkvKr: Fp8Weight;
  gammaCq: Bf16Tensor;
  gammaCkv: Bf16Tensor;
  wIdxQb: Fp8Weight;
  wIdxK: Fp8Weight;
  wIdxProj: Bf16Tensor;
  inGammaK: Bf16Tensor;
  inBetaK: Bf16Tensor;
}

/** Bytes read so far of one load, out of its total. */
export interface LoadProgress {
  done: number;
  total: number;
  /** The tensor being read. */
  tensor: string;
}

export interface LayerLoadOptions<D extends 'bfloat16' | 'float8_e4m3fn' = 'bfloat16' | 'float8_e4m3fn'> {
  /** 'bfloat16' (default): dequantized, [in, out] ND. 'float8_e4m3fn': FP8 weights as stored. */
  dtype?: D;
  /** Called after each strip of rows is read and converted. */
  onProgress?: (p: LoadProgress) => void;
  /** Aborting stops the load at the next strip and rejects with DSA_E_ABORTED. */
  signal?: AbortSignal;
  /**
   * An earlier result of the same call (same dtype) whose arrays are overwritten instead of
   * allocating new ones: loading layer after layer then touches no fresh memory (first touches of
   * fresh pages can cost more than the reads). It must no longer be in use.
   */
  reuse?: object;
}

export interface OpenCheckpointOptions {
  /** Keep the results of this many recent layerWeights calls (default 0). Cached results are shared: do not modify them. */
  cacheLayers?: number;
  /** Bytes per positional read (default 4 MiB); two such buffers are alive during a load. */
  readChunkBytes?: number;
}

/** One stored tensor of a layer, as check-checkpoint reports it. */
export interface StoredTensor {
  name: string;
  file: string;
  dtype: string;
  shape: readonly number[];
}

const GAP_BYTES = 1 << 20;
const WEIGHT_DTYPES: readonly string[] = ['F8_E4M3', 'BF16', 'F16', 'F32'];
const NORM_DTYPES: readonly string[] = ['BF16', 'F32', 'F16'];

interface Located {
  file: SafetensorsFile;
  info: SafetensorsTensorInfo;
}

/** A checked stored matrix [rows, cols] (a linear weight [out, in]) and its scales when FP8. */
interface Matrix extends Located {
  dtype: StoredWeightDtype;
  rows: number;
  cols: number;
  scale?: { data: Float32Array; blockRows: number; blockCols: number; name: string };
}

/** What one load does between strips: abort and close checks, progress. */
interface LoadContext {
  /** Arrays of an earlier result to overwrite, by key. */
  reuse: Record<string, { data?: unknown }> | undefined;
  total: number;
  done: number;
  signal: AbortSignal | undefined;
  onProgress: ((p: LoadProgress) => void) | undefined;
}

function fail(file: string, tensor: string, what: string, code: ErrorCode = ErrorCode.CHECKPOINT): DsaError {
  return new DsaError(code, `${file}: tensor ${JSON.stringify(tensor)}: ${what}`, tensor);
}

/** An open checkpoint folder. Shards are opened on first use; `close()` closes them. */
export class Checkpoint {
  /** The model's dims and settings from config.json. */
  readonly config: CheckpointConfig;
  /** sparseAttention options for this model (softmaxScale, rmsNormEps, layerNormEps, indexerRope 'half', topk, sparseMode 3). */
  readonly options: SparseAttentionOptions;
  /** Layers with attention weights: num_hidden_layers, plus the MTP layers the index holds. */
  readonly layerCount: number;
  private readonly shards = new Map<string, Promise<SafetensorsFile>>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly cache = new Map<string, Promise<unknown>>();
  private readonly spare: Uint8Array[] = [];
  private closed = false;

  /** @internal use openCheckpoint */
  constructor(
    readonly dir: string,
    config: CheckpointConfig,
    /** Tensor name → shard file name (relative to dir). */
    private readonly weightMap: ReadonlyMap<string, string>,
    /** The file that maps tensors to shards (for messages). */
    private readonly indexFile: string,
    private readonly cacheLayers: number,
    private readonly stripBytes: number,
  ) {
    this.config = config;
    this.options = optionsFor(config);
    let extra = 0;
    while (extra < config.numNextnPredictLayers && weightMap.has(`${layerPrefix(config.numHiddenLayers + extra)}q_a_proj.weight`)) extra++;
    this.layerCount = config.numHiddenLayers + extra;
  }

  /** Shard file names, in first-use order of the index. */
  get files(): string[] {
    return [...new Set(this.weightMap.values())];
  }

  /**
   * Layer L's weights for sparseAttention / DsaLayer: bf16 [in, out] ND weights, wUk [heads,
   * qk_nope, kv_lora], bf16 norms. With `dtype: 'float8_e4m3fn'`, the FP8 weights as stored.
   */
  layerWeights(layer: number, options?: LayerLoadOptions<'bfloat16'>): Promise<LayerWeights>;
  layerWeights(layer: number, options: LayerLoadOptions<'float8_e4m3fn'>): Promise<Fp8LayerWeights>;
  async layerWeights(layer: number, options: LayerLoadOptions = {}): Promise<LayerWeights | Fp8LayerWeights> {
    const dtype = this.dtypeOption(options);
    return this.cached(`${layer}:${dtype}`, options, () => this.loadLayer(layer, dtype, options));
  }

  /**
   * W_UV of layer L, [heads, v_head, kv_lora] (rows of kv_b_proj as stored): the value of head h is
   * `W_UV[h] · out[h]` for the operator's latent output out[h]. bf16, or the FP8 form ('ND').
   */
  wUv(layer: number, options?: LayerLoadOptions<'bfloat16'>): Promise<Bf16Tensor>;
  wUv(layer: number, options: LayerLoadOptions<'float8_e4m3fn'>): Promise<Fp8Weight>;
  async wUv(layer: number, options: LayerLoadOptions = {}): Promise<Bf16Tensor | Fp8Weight> {
    const dtype = this.dtypeOption(options);
    return this.cached(`${layer}:wUv:${dtype}`, options, async () => {
      const c = this.config;
      const m = await this.matrix(layer, 'kv_b_proj', c.numAttentionHeads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank, '[heads · (qk_nope + v_head), kv_lora_rank]');
      const ctx = this.context({ ...options, reuse: options.reuse && { wUv: options.reuse } }, m.info.byteLength * (c.vHeadDim / (c.qkNopeHeadDim + c.vHeadDim)));
      return dtype === 'bfloat16' ? this.headsBf16(m, c.qkNopeHeadDim, c.vHeadDim, ctx, 'wUv') : this.headsFp8(m, c.qkNopeHeadDim, c.vHeadDim, ctx, 'wUv');
    });
  }

  /** bf16 sin/cos YaRN tables: [n, qk_rope] for a list of positions, [...shape, qk_rope] for an int32 tensor of positions. */
  rope(positions: ArrayLike<number> | { shape: readonly number[]; data: ArrayLike<number> }): { sin: Bf16Tensor; cos: Bf16Tensor } {
    return ropeTables(this.config, positions);
  }

  /** The stored tensors layer L's weights come from (name, shard, dtype, shape), without reading data. */
  async describeLayer(layer: number): Promise<StoredTensor[]> {
    this.checkLayer(layer);
    const out: StoredTensor[] = [];
    for (const t of LAYER_TENSORS) {
      const name = layerPrefix(layer) + t;
      const { file, info } = await this.locate(name);
      out.push({ name, file: file.path, dtype: info.dtype, shape: info.shape });
      const scale = `${layerPrefix(layer)}${t.replace(/\.weight$/, '.weight_scale_inv')}`;
      if (info.dtype === 'F8_E4M3' && this.weightMap.has(scale)) {
        const s = await this.locate(scale);
        out.push({ name: scale, file: s.file.path, dtype: s.info.dtype, shape: s.info.shape });
      }
    }
    return out;
  }

  /** Close every shard; loads in flight finish or fail first. Later calls throw DSA_E_STATE. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    this.cache.clear();
    this.spare.length = 0;
    const files = await Promise.allSettled([...this.shards.values()]);
    await Promise.all(files.map((f) => (f.status === 'fulfilled' ? f.value.close() : undefined)));
  }

  private dtypeOption(options: LayerLoadOptions): 'bfloat16' | 'float8_e4m3fn' {
    if (typeof options !== 'object' || options === null) throw new DsaError(ErrorCode.ARGUMENT, `options: expected an object, got ${String(options)}`, 'options');
    const d = options.dtype ?? 'bfloat16';
    if (d !== 'bfloat16' && d !== 'float8_e4m3fn') throw new DsaError(ErrorCode.ARGUMENT, `dtype: expected 'bfloat16' or 'float8_e4m3fn', got ${JSON.stringify(d)}`, 'dtype');
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
      throw new DsaError(ErrorCode.ARGUMENT, `onProgress: expected a function, got ${typeof options.onProgress}`, 'onProgress');
    }
    signalOption(options.signal);
    return d;
  }

  /** Run a load once per key when caching; track it so close() can wait for it. */
  private cached<T>(key: string, options: LayerLoadOptions, load: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new DsaError(ErrorCode.STATE, `${this.dir}: the checkpoint is closed`, 'checkpoint'));
    // A load into reused arrays is never cached (the next reuse would overwrite the cached result).
    const hit = options.reuse === undefined ? (this.cache.get(key) as Promise<T> | undefined) : undefined;
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit.then((v) => {
        options.onProgress?.({ done: 1, total: 1, tensor: '(cached)' });
        return v;
      });
    }
    const p = load();
    this.inflight.add(p);
    void p.then(() => this.inflight.delete(p), () => this.inflight.delete(p));
    if (this.cacheLayers > 0 && options.reuse === undefined) {
      this.cache.set(key, p);
      p.catch(() => this.cache.get(key) === p && this.cache.delete(key));
      while (this.cache.size > this.cacheLayers) this.cache.delete(this.cache.keys().next().value!);
    }
    return p;
  }

  private checkLayer(layer: number): void {
    if (!Number.isSafeInteger(layer) || layer < 0 || layer >= this.layerCount) {
      throw new DsaError(ErrorCode.RANGE, `layer: expected an integer in [0, ${this.layerCount}) (config.json num_hidden_layers${this.layerCount > this.config.numHiddenLayers ? ' + MTP layers' : ''}), got ${layer}`, 'layer');
    }
  }

  private async loadLayer(layer: number, dtype: 'bfloat16' | 'float8_e4m3fn', options: LayerLoadOptions): Promise<LayerWeights | Fp8LayerWeights> {
    this.checkLayer(layer);
    const c = this.config;
    const h = c.hiddenSize;
    const qLora = c.qLoraRank;
    const idxOut = c.indexNHeads * c.indexHeadDim;
    // Locate and check every tensor before reading any data.
    const wDq = await this.matrix(layer, 'q_a_proj', qLora, h, '[q_lora_rank, hidden_size]');
    const wUqQr = await this.matrix(layer, 'q_b_proj', c.numAttentionHeads * (c.qkNopeHeadDim + c.qkRopeHeadDim), qLora, '[heads · (qk_nope + qk_rope), q_lora_rank]');
    const kvB = await this.matrix(layer, 'kv_b_proj', c.numAttentionHeads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank, '[heads · (qk_nope + v_head), kv_lora_rank]');
    const wDkvKr = await this.matrix(layer, 'kv_a_proj_with_mqa', c.kvLoraRank + c.qkRopeHeadDim, h, '[kv_lora_rank + qk_rope, hidden_size]');
    const wIdxQb = await this.matrix(layer, 'indexer.wq_b', idxOut, qLora, '[index_n_heads · index_head_dim, q_lora_rank]');
    const wIdxK = await this.matrix(layer, 'indexer.wk', c.indexHeadDim, h, '[index_head_dim, hidden_size]');
    const wIdxProj = await this.matrix(layer, 'indexer.weights_proj', c.indexNHeads, h, '[index_n_heads, hidden_size]');
    const norms = [
      await this.vector(layer, 'q_a_layernorm.weight', qLora, 'q_lora_rank'),
      await this.vector(layer, 'kv_a_layernorm.weight', c.kvLoraRank, 'kv_lora_rank'),
      await this.vector(layer, 'indexer.k_norm.weight', c.indexHeadDim, 'index_head_dim'),
      await this.vector(layer, 'indexer.k_norm.bias', c.indexHeadDim, 'index_head_dim'),
    ];
    const fp8 = [wDq, wUqQr, wDkvKr, wIdxQb, wIdxK, kvB];
    if (dtype === 'float8_e4m3fn') {
      for (const m of fp8) {
        if (m.dtype !== 'F8_E4M3') throw fail(m.file.path, m.info.name, `stored as ${m.dtype}, so the FP8 form (dtype 'float8_e4m3fn') is not available; load the bf16 form`, ErrorCode.DTYPE);
        if (m.scale!.blockRows !== 128 || m.scale!.blockCols !== 128) {
          throw fail(m.file.path, m.info.name, `the FP8 form needs 128×128 scale blocks, the config gives ${m.scale!.blockRows}×${m.scale!.blockCols}`, ErrorCode.FORMAT);
        }
      }
    }
    const kFraction = c.qkNopeHeadDim / (c.qkNopeHeadDim + c.vHeadDim);
    const total = [wDq, wUqQr, wDkvKr, wIdxQb, wIdxK, wIdxProj].reduce((a, m) => a + m.info.byteLength, 0) +
      kvB.info.byteLength * kFraction + norms.reduce((a, v) => a + v.info.byteLength, 0);
    const ctx = this.context(options, total);
    if (dtype === 'bfloat16') {
      return {
        wDq: await this.transposed(wDq, ctx, 'wDq'),
        wUqQr: await this.transposed(wUqQr, ctx, 'wUqQr'),
        wUk: await this.headsBf16(kvB, 0, c.qkNopeHeadDim, ctx, 'wUk'),
        wDkvKr: await this.transposed(wDkvKr, ctx, 'wDkvKr'),
        gammaCq: await this.vectorBf16(norms[0]!, ctx, 'gammaCq'),
        gammaCkv: await this.vectorBf16(norms[1]!, ctx, 'gammaCkv'),
        wIdxQb: await this.transposed(wIdxQb, ctx, 'wIdxQb'),
        wIdxK: await this.transposed(wIdxK, ctx, 'wIdxK'),
        wIdxProj: await this.transposed(wIdxProj, ctx, 'wIdxProj'),
        inGammaK: await this.vectorBf16(norms[2]!, ctx, 'inGammaK'),
        inBetaK: await this.vectorBf16(norms[3]!, ctx, 'inBetaK'),
      };
    }
    return {
      wDq: await this.asStored(wDq, ctx, 'wDq'),
      wUqQr: await this.asStored(wUqQr, ctx, 'wUqQr'),
      wUk: await this.headsFp8(kvB, 0, c.qkNopeHeadDim, ctx, 'wUk'),
      wDkvKr: await this.asStored(wDkvKr, ctx, 'wDkvKr'),
      gammaCq: await this.vectorBf16(norms[0]!, ctx, 'gammaCq'),
      gammaCkv: await this.vectorBf16(norms[1]!, ctx, 'gammaCkv'),
      wIdxQb: await this.asStored(wIdxQb, ctx, 'wIdxQb'),
      wIdxK: await this.asStored(wIdxK, ctx, 'wIdxK'),
      wIdxProj: await this.transposed(wIdxProj, ctx, 'wIdxProj'),
      inGammaK: await this.vectorBf16(norms[2]!, ctx, 'inGammaK'),
      inBetaK: await this.vectorBf16(norms[3]!, ctx, 'inBetaK'),
    };
  }

  private context(options: LayerLoadOptions, total: number): LoadContext {
    const reuse = options.reuse as LoadContext['reuse'];
    if (reuse !== undefined && (typeof reuse !== 'object' || reuse === null)) {
      throw new DsaError(ErrorCode.ARGUMENT, `reuse: expected an earlier result of this call, got ${String(reuse)}`, 'reuse');
    }
    return { reuse, total: Math.round(total), done: 0, signal: options.signal, onProgress: options.onProgress };
  }

  /** The array for result `key`: the reused one (checked), or a new one. */
  private take<T extends Uint8Array | Uint16Array>(
    ctx: LoadContext, key: string, Ctor: { new (b: ArrayBuffer, o: number, n: number): T; name: string; BYTES_PER_ELEMENT: number }, n: number,
  ): T {
    if (!ctx.reuse) return new Ctor(allocateLarge(n * Ctor.BYTES_PER_ELEMENT), 0, n);
    const data = ctx.reuse[key]?.data;
    if (!(data instanceof Ctor) || data.length !== n) {
      const got = data === undefined ? 'nothing' : `${(data as object)?.constructor?.name}(${(data as { length?: number })?.length})`;
      throw new DsaError(ErrorCode.ARGUMENT, `reuse.${key}: expected data ${Ctor.name}(${n}) from an earlier load of this form, got ${got}`, 'reuse');
    }
    return data as T;
  }

  /** Find a tensor's shard (opened on first use) and its header entry. */
  private async locate(name: string): Promise<Located> {
    const shard = this.weightMap.get(name);
    if (shard === undefined) throw new DsaError(ErrorCode.CHECKPOINT, `${this.indexFile}: tensor ${JSON.stringify(name)} is missing`, name);
    let p = this.shards.get(shard);
    if (!p) {
      const path = resolve(this.dir, shard);
      if (!path.startsWith(resolve(this.dir) + sep)) {
        throw new DsaError(ErrorCode.CHECKPOINT, `${this.indexFile}: tensor ${JSON.stringify(name)}: shard ${JSON.stringify(shard)} lies outside the checkpoint folder`, name);
      }
      p = openSafetensors(path);
      this.shards.set(shard, p);
      // A shard that failed to open is retried on the next use (the file may have been fixed).
      p.catch(() => this.shards.get(shard) === p && this.shards.delete(shard));
    }
    const file = await p;
    if (!file.has(name)) throw new DsaError(ErrorCode.CHECKPOINT, `${file.path}: tensor ${JSON.stringify(name)} is not in this shard (${this.indexFile} says it is)`, name);
    return { file, info: file.info(name) };
  }

  /** A linear weight `<module>.weight` [rows, cols] of layer L, with its scales when FP8. */
  private async matrix(layer: number, module: string, rows: number, cols: number, dims: string): Promise<Matrix> {
    this.checkLayer(layer);
    const name = `${layerPrefix(layer)}${module}.weight`;
    const { file, info } = await this.locate(name);
    if (!WEIGHT_DTYPES.includes(info.dtype)) throw fail(file.path, name, `dtype ${info.dtype} is not a weight dtype (expected F8_E4M3, BF16, F16 or F32)`);
    if (info.shape.length !== 2 || info.shape[0] !== rows || info.shape[1] !== cols) {
      throw fail(file.path, name, `expected shape [${rows}, ${cols}] (${dims} from config.json), got [${info.shape.join(', ')}]`);
    }
    const m: Matrix = { file, info, dtype: info.dtype as StoredWeightDtype, rows, cols };
    if (m.dtype !== 'F8_E4M3') return m;
    const scaleName = `${layerPrefix(layer)}${module}.weight_scale_inv`;
    if (!this.weightMap.has(scaleName)) throw fail(file.path, name, `is F8_E4M3 but its block scales ${JSON.stringify(scaleName)} are missing`);
    const s = await this.locate(scaleName);
    const [br, bc] = this.config.weightBlockSize ?? [128, 128];
    const want = [Math.ceil(rows / br), Math.ceil(cols / bc)];
    if (s.info.dtype !== 'F32') throw fail(s.file.path, scaleName, `expected dtype F32, got ${s.info.dtype}`);
    if (s.info.shape.length !== 2 || s.info.shape[0] !== want[0] || s.info.shape[1] !== want[1]) {
      throw fail(s.file.path, scaleName, `expected shape [${want.join(', ')}] (ceil of [${rows}, ${cols}] / ${br}×${bc} blocks), got [${s.info.shape.join(', ')}]`);
    }
    const bytes = await s.file.read(scaleName);
    const data = new Float32Array(bytes.buffer, bytes.byteOffset, want[0]! * want[1]!);
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw fail(s.file.path, scaleName, `scale [${Math.floor(bad / want[1]!)}, ${bad % want[1]!}] is ${data[bad]}, expected a finite number`);
    m.scale = { data, blockRows: br, blockCols: bc, name: scaleName };
    return m;
  }

  /** A norm vector of layer L (BF16, F32 or F16). */
  private async vector(layer: number, tensor: string, len: number, dim: string): Promise<Matrix> {
    const name = layerPrefix(layer) + tensor;
    const { file, info } = await this.locate(name);
    if (!NORM_DTYPES.includes(info.dtype)) throw fail(file.path, name, `expected dtype BF16, F32 or F16, got ${info.dtype}`);
    if (info.shape.length !== 1 || info.shape[0] !== len) throw fail(file.path, name, `expected shape [${len}] (${dim} from config.json), got [${info.shape.join(', ')}]`);
    return { file, info, dtype: info.dtype as StoredWeightDtype, rows: 1, cols: len };
  }

  /**
   * Read row ranges [start, start + count) (ascending, disjoint) of a stored matrix in strips,
   * double-buffered; `fn` gets each piece of a range with its global first row and its row index in
   * the concatenation of the ranges. Ranges less than GAP_BYTES apart are read as one span (one
   * large read beats many small ones; kv_b_proj's per-head K rows are 64 KiB apart).
   */
  private async stream(m: Matrix, ranges: readonly [number, number][], ctx: LoadContext, fn: (rows: Uint8Array, row0: number, n: number, outRow: number) => void): Promise<void> {
    const rowBytes = m.cols * SAFETENSORS_ITEMSIZE[m.dtype]!;
    const block = m.scale?.blockRows ?? 1;
    let stripRows = Math.max(1, Math.floor(this.stripBytes / Math.max(1, rowBytes)));
    if (stripRows > block) stripRows -= stripRows % block;
    const parts: { start: number; end: number; outRow: number }[] = [];
    const spans: { start: number; end: number }[] = [];
    let outRow = 0;
    for (const [start, count] of ranges) {
      if (count === 0) continue;
      parts.push({ start, end: start + count, outRow });
      outRow += count;
      const last = spans[spans.length - 1];
      if (last && (start - last.end) * rowBytes < GAP_BYTES) last.end = start + count;
      else spans.push({ start, end: start + count });
    }
    const strips: { start: number; end: number }[] = [];
    for (const sp of spans) for (let r = sp.start; r < sp.end; r += stripRows) strips.push({ start: r, end: Math.min(sp.end, r + stripRows) });
    if (strips.length === 0) return;
    const cap = Math.max(...strips.map((s) => s.end - s.start)) * rowBytes;
    const bufs = [this.stripBuffer(cap), strips.length > 1 ? this.stripBuffer(cap) : undefined];
    const read = (i: number): Promise<Uint8Array> => {
      const s = strips[i]!;
      return m.file.read(m.info.name, s.start * rowBytes, (s.end - s.start) * rowBytes, bufs[i & 1]);
    };
    let pending: Promise<Uint8Array> | undefined = read(0);
    let p = 0;
    try {
      for (let i = 0; i < strips.length; i++) {
        const bytes: Uint8Array = await pending!;
        pending = undefined;
        this.checkLive(ctx);
        if (i + 1 < strips.length) pending = read(i + 1);
        const s = strips[i]!;
        // Hand over each part of a range that lies in this strip.
        for (; p < parts.length && parts[p]!.start < s.end; p++) {
          const part = parts[p]!;
          const a = Math.max(part.start, s.start);
          const b = Math.min(part.end, s.end);
          fn(bytes.subarray((a - s.start) * rowBytes, (b - s.start) * rowBytes), a, b - a, part.outRow + a - part.start);
          this.tick(ctx, m.info.name, (b - a) * rowBytes);
          if (part.end > s.end) break; // continues in the next strip
        }
      }
    } finally {
      // A read still in flight writes into its buffer: let it settle before the buffer is reused.
      await pending?.catch(() => undefined);
      for (const b of bufs) if (b && this.spare.length < 4) this.spare.push(b);
    }
  }

  /** A strip buffer of at least `bytes`, from the spare ones when possible (fresh pages are slow to touch). */
  private stripBuffer(bytes: number): Uint8Array {
    const i = this.spare.findIndex((b) => b.length >= bytes);
    return i >= 0 ? this.spare.splice(i, 1)[0]! : new Uint8Array(allocateLarge(Math.max(bytes, this.stripBytes)));
  }

  private checkLive(ctx: LoadContext): void {
    if (ctx.signal?.aborted) throw new DsaError(ErrorCode.ABORTED, `signal: loading from ${this.dir} was aborted`, 'signal');
    if (this.closed) throw new DsaError(ErrorCode.STATE, `${this.dir}: the checkpoint was closed during a load`, 'checkpoint');
  }

  private tick(ctx: LoadContext, tensor: string, bytes: number): void {
    ctx.done = Math.min(ctx.total, ctx.done + bytes);
    ctx.onProgress?.({ done: ctx.done, total: ctx.total, tensor });
  }

  private storedRows(m: Matrix, bytes: Uint8Array, row0: number, rows: number) {
    return { dtype: m.dtype, bytes, row0, rows, cols: m.cols, scale: m.scale };
  }

  /** A stored [out, in] weight as the operator's bf16 [in, out] ND. */
  private async transposed(m: Matrix, ctx: LoadContext, key: string): Promise<Bf16Tensor> {
    const out = this.take(ctx, key, Uint16Array, m.rows * m.cols);
    await this.stream(m, [[0, m.rows]], ctx, (bytes, row0, n, outRow) =>
      rowsToBf16(this.storedRows(m, bytes, row0, n), { data: out, offset: outRow, ld: m.rows, transposed: true }));
    return { dtype: 'bfloat16', shape: [m.cols, m.rows], data: out, format: 'ND' };
  }

  private async vectorBf16(m: Matrix, ctx: LoadContext, key: string): Promise<Bf16Tensor> {
    const out = this.take(ctx, key, Uint16Array, m.cols);
    await this.stream(m, [[0, 1]], ctx, (bytes, row0, n) => rowsToBf16(this.storedRows(m, bytes, row0, n), { data: out, offset: 0, ld: m.cols, transposed: false }));
    return { dtype: 'bfloat16', shape: [m.cols], data: out, format: 'ND' };
  }

  /** `count` rows from `skip` within each head of kv_b_proj, as stored: bf16 [heads, count, kv_lora]. */
  private async headsBf16(m: Matrix, skip: number, count: number, ctx: LoadContext, key: string): Promise<Bf16Tensor> {
    const c = this.config;
    const heads = c.numAttentionHeads;
    const stride = c.qkNopeHeadDim + c.vHeadDim;
    const out = this.take(ctx, key, Uint16Array, heads * count * m.cols);
    const ranges = Array.from({ length: heads }, (_, hd) => [hd * stride + skip, count] as [number, number]);
    await this.stream(m, ranges, ctx, (bytes, row0, n, outRow) =>
      rowsToBf16(this.storedRows(m, bytes, row0, n), { data: out, offset: outRow * m.cols, ld: m.cols, transposed: false }));
    return { dtype: 'bfloat16', shape: [heads, count, m.cols], data: out, format: 'ND' };
  }

  /** An FP8 weight as stored: the operator's [in, out] in NT form (rows are the stored [out, in]). */
  private async asStored(m: Matrix, ctx: LoadContext, key: string): Promise<Fp8Weight> {
    const data = this.take(ctx, key, Uint8Array, m.rows * m.cols);
    await this.stream(m, [[0, m.rows]], ctx, (bytes, _row0, n, outRow) => data.set(bytes.subarray(0, n * m.cols), outRow * m.cols));
    const s = m.scale!;
    return {
      dtype: 'float8_e4m3fn', shape: [m.cols, m.rows], format: 'NT', data,
      blockScale: { dtype: 'float32', shape: [Math.ceil(m.rows / 128), Math.ceil(m.cols / 128)], data: s.data.slice() },
    };
  }

  /**
   * `count` rows from `skip` within each head of kv_b_proj in FP8, 'ND' [heads, count, kv_lora] with
   * scales [heads, ceil(count/128), ceil(kv_lora/128)]. Needs every head's first row on a 128-row
   * block boundary (so each head's blocks are whole stored blocks, the last one possibly partial).
   */
  private async headsFp8(m: Matrix, skip: number, count: number, ctx: LoadContext, key: string): Promise<Fp8Weight> {
    const c = this.config;
    const heads = c.numAttentionHeads;
    const stride = c.qkNopeHeadDim + c.vHeadDim;
    for (let hd = 0; hd < heads; hd++) {
      if ((hd * stride + skip) % 128 !== 0) {
        throw fail(m.file.path, m.info.name, `the FP8 form of a per-head slice needs each head's rows to start on a 128-row scale block; head ${hd} starts at row ${hd * stride + skip} ` +
          `(qk_nope_head_dim ${c.qkNopeHeadDim} + v_head_dim ${c.vHeadDim} per head): load the bf16 form`, ErrorCode.FORMAT);
      }
    }
    const data = this.take(ctx, key, Uint8Array, heads * count * m.cols);
    const ranges = Array.from({ length: heads }, (_, hd) => [hd * stride + skip, count] as [number, number]);
    await this.stream(m, ranges, ctx, (bytes, _row0, n, outRow) => data.set(bytes.subarray(0, n * m.cols), outRow * m.cols));
    const sr = Math.ceil(count / 128);
    const sc = Math.ceil(m.cols / 128);
    const scale = new Float32Array(heads * sr * sc);
    for (let hd = 0; hd < heads; hd++) {
      const first = (hd * stride + skip) / 128;
      scale.set(m.scale!.data.subarray(first * sc, (first + sr) * sc), hd * sr * sc);
    }
    return { dtype: 'float8_e4m3fn', shape: [heads, count, m.cols], format: 'ND', data, blockScale: { dtype: 'float32', shape: [heads, sr, sc], data: scale } };
  }
}

const LAYER_TENSORS = [
  'q_a_proj.weight', 'q_a_layernorm.weight', 'q_b_proj.weight', 'kv_a_proj_with_mqa.weight', 'kv_a_layernorm.weight', 'kv_b_proj.weight',
  'indexer.wq_b.weight', 'indexer.wk.weight', 'indexer.k_norm.weight', 'indexer.k_norm.bias', 'indexer.weights_proj.weight',
] as const;

function layerPrefix(layer: number): string {
  return `model.layers.${layer}.self_attn.`;
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new DsaError(ErrorCode.IO, `${path}: ${(e as Error).message}`, 'path');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new DsaError(ErrorCode.CHECKPOINT, `${path}: not valid JSON: ${(e as Error).message}`, 'path');
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return false;
    throw new DsaError(ErrorCode.IO, `${path}: ${(e as Error).message}`, 'path');
  }
}

/**
 * Open a checkpoint folder: config.json, and model.safetensors.index.json (sharded) or a single
 * model.safetensors. Reads the config and the index (or the single file's header) only.
 */
export async function openCheckpoint(dir: string, options: OpenCheckpointOptions = {}): Promise<Checkpoint> {
  if (typeof dir !== 'string' || dir === '') throw new DsaError(ErrorCode.ARGUMENT, `dir: expected a checkpoint folder path, got ${JSON.stringify(dir)}`, 'dir');
  const cacheLayers = options.cacheLayers ?? 0;
  if (!Number.isSafeInteger(cacheLayers) || cacheLayers < 0) {
    throw new DsaError(ErrorCode.ARGUMENT, `cacheLayers: expected a non-negative integer, got ${JSON.stringify(options.cacheLayers)}`, 'cacheLayers');
  }
  const stripBytes = options.readChunkBytes ?? 4 << 20;
  if (!Number.isSafeInteger(stripBytes) || stripBytes < 1) {
    throw new DsaError(ErrorCode.ARGUMENT, `readChunkBytes: expected a positive integer, got ${JSON.stringify(options.readChunkBytes)}`, 'readChunkBytes');
  }
  const configPath = join(dir, 'config.json');
  const config = parseConfig(await readJson(configPath), configPath);
  const indexPath = join(dir, 'model.safetensors.index.json');
  const singlePath = join(dir, 'model.safetensors');
  const weightMap = new Map<string, string>();
  let indexFile: string;
  if (await exists(indexPath)) {
    indexFile = indexPath;
    const index = (await readJson(indexPath)) as { weight_map?: unknown } | null;
    const wm = index?.weight_map;
    if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new DsaError(ErrorCode.CHECKPOINT, `${indexPath}: expected an object with a weight_map`, 'weight_map');
    for (const [name, shard] of Object.entries(wm)) {
      if (typeof shard !== 'string' || shard === '') throw new DsaError(ErrorCode.CHECKPOINT, `${indexPath}: weight_map[${JSON.stringify(name)}]: expected a shard file name, got ${JSON.stringify(shard)}`, name);
      weightMap.set(name, shard);
    }
  } else if (await exists(singlePath)) {
    indexFile = singlePath;
    const f = await openSafetensors(singlePath);
    try {
      for (const name of f.names()) weightMap.set(name, 'model.safetensors');
    } finally {
      await f.close();
    }
  } else {
    throw new DsaError(ErrorCode.IO, `${dir}: neither model.safetensors.index.json nor model.safetensors found`, 'dir');
  }
  return new Checkpoint(dir, config, weightMap, indexFile, cacheLayers, stripBytes);
}
