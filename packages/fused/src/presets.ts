/** Options of the whole operator: every stage's options plus how to run it. */
export interface SparseAttentionOptions {
  /** Attention softmax scale τ (default (kv_lora + rope)^-0.5, the Ascend operator's). */
  softmaxScale?: number;
  /** RMSNorm eps of the q and kv norms (default 1e-5). */
  rmsNormEps?: number;
  /** LayerNorm eps of the indexer key (default 1e-6). */
  layerNormEps?: number;
  /** Indexer RoPE pairing: 'interleaved' (default) or 'half'. */
  indexerRope?: 'interleaved' | 'half';
  /** Keys selected per query row (default 2048). */
  topk?: number;
  /** 3: causal, query i of s1 sees act − (s1−1−i) keys (default); 0: every query sees act keys. */
  sparseMode?: 0 | 3;
  /** 'fused' (default): one native call. 'chain': the four stage packages in order. */
  mode?: 'fused' | 'chain';
  /** Also return the top-k indices [b, s1, topk]. */
  returnIndices?: boolean;
  /**
   * Async calls only: aborting stops the call at the next check point (between stages, between
   * chunks of batch rows) and rejects with DSA_E_ABORTED; the caches are left as they were before it.
   */
  signal?: AbortSignal;
}

/**
 * `pto` reproduces the Ascend operator's golden (the defaults); `deepseekV32` reproduces the model
 * (background.md §1, §7): the YaRN-scaled softmax scale, eps 1e-6 and the non-interleaved indexer RoPE.
 */
export const presets = Object.freeze({
  pto: Object.freeze({
    rmsNormEps: 1e-5,
    layerNormEps: 1e-6,
    indexerRope: 'interleaved',
    topk: 2048,
    sparseMode: 3,
  } satisfies SparseAttentionOptions),
  deepseekV32: Object.freeze({
    softmaxScale: 192 ** -0.5 * (0.1 * Math.log(40) + 1) ** 2,
    rmsNormEps: 1e-6,
    layerNormEps: 1e-6,
    indexerRope: 'half',
    topk: 2048,
    sparseMode: 3,
  } satisfies SparseAttentionOptions),
});

export type PresetName = keyof typeof presets;
