// The whole operator with FP8 weights (block-scaled e4m3, as the checkpoint stores the six FP8 ones;
// wIdxProj bf16): fused and chain against the float64 reference on the exactly dequantized weights,
// the layer's prepared form, and FP8 against the same weights dequantized to bf16.
import { dequantizeFp8Weight, f32ArrayToBf16, packWeights, Rng, type Bf16Tensor, type Fp8Weight } from '@dsa/tensor-core';
import { describe, expect, it } from 'vitest';
import { DsaLayer, sparseAttention, type SparseAttentionOptions } from '../src/index.js';
import { checkAgainstReference, expectClose, randomProblem, withFreshCaches, type Bf16CacheInputs, type ProblemConfig } from './helpers.js';

/** fp8Problem's inputs: the six checkpoint-FP8 weights FP8, the caches bf16. */
type Fp8Problem = Bf16CacheInputs & Record<'wDq' | 'wUqQr' | 'wUk' | 'wDkvKr' | 'wIdxQb' | 'wIdxK', Fp8Weight>;

/** randomProblem with the six checkpoint-FP8 weights as FP8 (NT; wUk ND), of about the same ranges. */
function fp8Problem(seed: number, c: ProblemConfig, pow2 = false): Fp8Problem {
  const i = randomProblem(seed, c);
  const rng = new Rng(seed + 77);
  const w = (t: { shape: readonly number[] }, range: number, format: 'NT' | 'ND' = 'NT'): Fp8Weight =>
    rng.fp8Weight(t.shape, format, { scale: range / 448, pow2 });
  return {
    ...i,
    wDq: w(i.wDq, 0.1), wUqQr: w(i.wUqQr, 0.1), wUk: w(i.wUk, 0.1, 'ND'), wDkvKr: w(i.wDkvKr, 0.1),
    wIdxQb: w(i.wIdxQb, 1), wIdxK: w(i.wIdxK, 1),
  };
}

const bf16Of = (w: Fp8Weight): Bf16Tensor => ({ dtype: 'bfloat16', shape: [...w.shape], data: f32ArrayToBf16(dequantizeFp8Weight(w)), format: 'ND' });

// Partial 128-blocks (h 160, q_lora 136, kv_lora 144); widths that are multiples of 16 (the x-side FP8
// weights are joined) and one that is not (q_lora 40: they stay apart).
const DIMS = { h: 160, qLora: 136, n: 3, qkNope: 16, kvLora: 144, rope: 8, idxHeads: 4, idxDim: 16 };
const configs: [string, ProblemConfig][] = [
  ['decode b=1', { ...DIMS, b: 1, s1: 1, acts: [20] }],
  ['decode b=3, MTP s1=2', { ...DIMS, b: 3, s1: 2, acts: [5, 17, 40] }],
  ['prefill s1=12 (GEMM path), q_lora 40', { ...DIMS, qLora: 40, b: 1, s1: 12, acts: [12], blockSize: 8 }],
  ['decode, q_lora 40 (x-side weights not joined)', { ...DIMS, qLora: 40, b: 2, s1: 1, acts: [9, 30] }],
];

describe('FP8 weights through the operator', () => {
  it.each(configs.map(([name, c], i) => [name, i, c] as const))('%s: fused = chain = reference', (_name, i, cfg) => {
    const inputs = fp8Problem(900 + i, cfg, i % 2 === 1);
    const opts: SparseAttentionOptions = { topk: 12, sparseMode: i % 2 === 0 ? 3 : 0 };
    const f = checkAgainstReference(inputs, opts, 'fused');
    const c = checkAgainstReference(inputs, opts, 'chain');
    expectClose(f.out, c.out, 'fused vs chain');
  });

  it('a DsaLayer prepares FP8 weights once (raw and PACKED given), and matches the one-shot call', () => {
    const inputs = fp8Problem(950, configs[1]![1]);
    const opts: SparseAttentionOptions = { topk: 12 };
    const one = sparseAttention(withFreshCaches(inputs), opts);
    const packed = { ...inputs, wDq: packWeights(inputs.wDq), wUk: packWeights(inputs.wUk) };
    for (const weights of [inputs, packed]) {
      for (const mode of ['fused', 'chain'] as const) {
        const layer = new DsaLayer(weights, { ...opts, mode });
        const r = layer.forward(withFreshCaches(inputs));
        expectClose(r.out, one.out, `layer (${mode})`);
        layer.dispose();
      }
    }
  });

  it('FP8 and the bf16-dequantized weights agree to the bf16 rounding', () => {
    const inputs = fp8Problem(960, configs[0]![1]);
    const bf: Bf16CacheInputs = {
      ...inputs, wDq: bf16Of(inputs.wDq), wUqQr: bf16Of(inputs.wUqQr), wUk: bf16Of(inputs.wUk),
      wDkvKr: bf16Of(inputs.wDkvKr), wIdxQb: bf16Of(inputs.wIdxQb), wIdxK: bf16Of(inputs.wIdxK),
    };
    const a = sparseAttention(withFreshCaches(inputs), { topk: 12, returnIndices: true });
    const b = sparseAttention(withFreshCaches(bf), { topk: 12, returnIndices: true });
    expect(Array.from(a.indices!.data).sort()).toEqual(Array.from(b.indices!.data).sort());
    expectClose(a.out, b.out, 'fp8 vs bf16');
  });

  it('rejects an inconsistent FP8 weight with a DsaError before touching a cache', () => {
    const inputs = fp8Problem(970, configs[0]![1]);
    const run = withFreshCaches(inputs);
    const w = inputs.wUqQr;
    for (const mode of ['fused', 'chain'] as const) {
      expect(() => sparseAttention({ ...run, wUqQr: { ...w, blockScale: { ...w.blockScale, data: new Float32Array(1), shape: [1] } } }, { mode }))
        .toThrow(expect.objectContaining({ code: 'DSA_E_SHAPE', message: expect.stringMatching(/^wUqQr\.blockScale: /) }));
      expect(() => sparseAttention({ ...run, wUk: { ...inputs.wUk, format: 'NT' } }, { mode }))
        .toThrow(expect.objectContaining({ code: 'DSA_E_FORMAT' }));
    }
    expect(run.kvCache.data).toEqual(inputs.kvCache.data);
  });
});
