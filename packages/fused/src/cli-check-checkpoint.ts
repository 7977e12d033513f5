import { DsaError, ErrorCode, isDsaError, type Bf16Tensor, type Fp8Weight } from '@dsa/tensor-core';
import { openCheckpoint } from './checkpoint.js';
import { fmt, intFlag, type CliValues } from './cli-options.js';

const SHORT: Record<string, string> = {
  'q_a_proj.weight': 'q_a', 'q_b_proj.weight': 'q_b', 'kv_a_proj_with_mqa.weight': 'kv_a', 'kv_b_proj.weight': 'kv_b', 'indexer.wq_b.weight': 'wq_b',
  'indexer.wk.weight': 'wk', 'indexer.weights_proj.weight': 'proj', 'q_a_layernorm.weight': 'q_norm', 'kv_a_layernorm.weight': 'kv_norm',
  'indexer.k_norm.weight': 'k_norm', 'indexer.k_norm.bias': 'k_bias',
};

/** Non-finite values in a loaded tensor (bf16: exponent all ones; FP8: the two NaN codes). */
function nonFinite(t: Bf16Tensor | Fp8Weight): number {
  let n = 0;
  if (t.dtype === 'bfloat16') for (const v of t.data) n += (v & 0x7f80) === 0x7f80 ? 1 : 0;
  else for (const v of t.data) n += (v & 0x7f) === 0x7f ? 1 : 0;
  return n;
}

/**
 * `dsa check-checkpoint DIR`: open a checkpoint, print its settings, then load every layer once
 * (or --layer L) and report per layer the stored dtypes, the time, and any damage found.
 */
export async function runCheckCheckpoint(dir: string | undefined, values: CliValues): Promise<number> {
  if (!dir) throw new DsaError(ErrorCode.ARGUMENT, 'dir: expected a checkpoint folder, e.g. dsa check-checkpoint ./DeepSeek-V3.2', 'dir');
  const dtype = (values.dtype as string | undefined) ?? 'bf16';
  if (dtype !== 'bf16' && dtype !== 'fp8') throw new DsaError(ErrorCode.ARGUMENT, `--dtype: expected bf16 or fp8, got ${JSON.stringify(dtype)}`, 'dtype');
  const ckpt = await openCheckpoint(dir);
  try {
    const c = ckpt.config;
    const o = ckpt.options;
    console.log(`checkpoint ${dir}: ${ckpt.layerCount} layers${ckpt.layerCount > c.numHiddenLayers ? ` (${c.numHiddenLayers} + ${ckpt.layerCount - c.numHiddenLayers} MTP)` : ''}, ${ckpt.files.length} shard file(s)`);
    console.log(`  hidden ${c.hiddenSize}, ${c.numAttentionHeads} heads, q_lora ${c.qLoraRank}, kv_lora ${c.kvLoraRank}, qk_nope ${c.qkNopeHeadDim}, qk_rope ${c.qkRopeHeadDim}, ` +
      `v_head ${c.vHeadDim}, indexer ${c.indexNHeads}x${c.indexHeadDim}, topk ${c.indexTopk}`);
    const rs = c.ropeScaling;
    console.log(`  RoPE theta ${c.ropeTheta}${rs ? `, YaRN factor ${rs.factor} over ${rs.originalMaxPositionEmbeddings} (beta ${rs.betaFast}/${rs.betaSlow}, mscale ${rs.mscale}/${rs.mscaleAllDim ?? '-'})` : ''}` +
      `; FP8 blocks ${c.weightBlockSize ? c.weightBlockSize.join('x') : 'none'}`);
    console.log(`  options: softmaxScale ${o.softmaxScale!.toPrecision(7)}, rmsNormEps ${o.rmsNormEps}, layerNormEps ${o.layerNormEps}, indexerRope ${o.indexerRope}, topk ${o.topk}`);
    const one = values.layer === undefined ? undefined : intFlag(values, 'layer', 0, 0, ckpt.layerCount - 1);
    const layers = one === undefined ? Array.from({ length: ckpt.layerCount }, (_, i) => i) : [one];
    let failed = 0;
    let totalMs = 0;
    let totalBytes = 0;
    for (const L of layers) {
      const t0 = performance.now();
      try {
        const stored = await ckpt.describeLayer(L);
        const dtypes = stored.filter((t) => !t.name.endsWith('_scale_inv')).map((t) => `${SHORT[t.name.replace(/^model\.layers\.\d+\.self_attn\./, '')] ?? t.name}:${t.dtype}`);
        const w = dtype === 'fp8' ? await ckpt.layerWeights(L, { dtype: 'float8_e4m3fn' }) : await ckpt.layerWeights(L);
        const ms = performance.now() - t0;
        const tensors = Object.values(w) as (Bf16Tensor | Fp8Weight)[];
        const bytes = tensors.reduce((a, t) => a + t.data.byteLength, 0);
        const bad = tensors.reduce((a, t) => a + nonFinite(t), 0);
        totalMs += ms;
        totalBytes += bytes;
        if (bad > 0) failed++;
        console.log(`  layer ${String(L).padStart(3)}  ${dtypes.join(' ')}  ${fmt(bytes / 1e6)} MB ${dtype} in ${fmt(ms, 0)} ms` +
          `  ${bad > 0 ? `DAMAGED: ${bad} NaN/Inf values` : 'ok'}`);
      } catch (e) {
        if (!isDsaError(e)) throw e;
        failed++;
        console.log(`  layer ${String(L).padStart(3)}  FAILED ${e.code}: ${e.message}`);
      }
    }
    console.log(`${layers.length - failed}/${layers.length} layers ok; ${fmt(totalBytes / 1e6)} MB loaded in ${fmt(totalMs / 1e3, 2)} s` +
      (totalMs > 0 ? ` (${fmt(totalBytes / 1e6 / (totalMs / 1e3), 0)} MB/s of output)` : ''));
    return failed === 0 ? 0 : 1;
  } finally {
    await ckpt.close();
  }
}
