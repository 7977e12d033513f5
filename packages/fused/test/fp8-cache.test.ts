// The whole operator on FP8 caches (656 B latent rows, 132 B Hadamard key rows), fused and chain, on
// every ISA: the two modes write the same cache bytes and select the same keys; both agree with the
// float64 reference of the FP8 semantics (indices as sets up to near-ties, out over the chosen set).
import { afterAll, describe, expect, it } from 'vitest';
import {
  cpuFeatures, encodeIndexKeyRow, encodeLatentRow, fp8IndexRowBytes, fp8KvRowBytes, ISAS, setIsa, type Bf16Tensor, type Isa,
  type U8Tensor,
} from '@dsa/tensor-core';
import { DsaLayer, PagedCacheManager, sparseAttention, sparseAttentionAsync, type SparseAttentionInputs } from '../src/index.js';
import { sparseAttentionReference } from '../src/reference.js';
import { expectClose, maxAct, randomProblem, sameBytes, topkMismatches, type ProblemConfig } from './helpers.js';

const best = cpuFeatures().best;
const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(best));
afterAll(() => setIsa('auto'));

/** The inputs with FP8 caches holding the FP8 form of their random bf16 history. */
function withFp8Caches(i: SparseAttentionInputs, which: 'both' | 'kv' | 'index' = 'both'): SparseAttentionInputs {
  const kv = i.kvCache as Bf16Tensor;
  const kr = i.krCache!;
  const ik = i.indexKCache as Bf16Tensor;
  const [blocks, bs, , kvLora] = kv.shape as [number, number, number, number];
  const rope = kr.shape[3]!;
  const dim = ik.shape[3]!;
  const rows = blocks * bs;
  const out: SparseAttentionInputs = { ...i };
  if (which !== 'index') {
    const rb = fp8KvRowBytes(kvLora, rope);
    const data = new Uint8Array(rows * rb);
    for (let s = 0; s < rows; s++) encodeLatentRow(kv.data.subarray(s * kvLora, (s + 1) * kvLora), kr.data.subarray(s * rope, (s + 1) * rope), data, s * rb);
    out.kvCache = { dtype: 'uint8', shape: [blocks, bs, 1, rb], data, format: 'ND' };
    delete out.krCache;
  }
  if (which !== 'kv') {
    const rb = fp8IndexRowBytes(dim);
    const data = new Uint8Array(rows * rb);
    for (let s = 0; s < rows; s++) encodeIndexKeyRow(ik.data.subarray(s * dim, (s + 1) * dim), data, s * rb);
    out.indexKCache = { dtype: 'uint8', shape: [blocks, bs, 1, rb], data, format: 'ND' };
  }
  return out;
}

function fresh(i: SparseAttentionInputs): SparseAttentionInputs {
  const c = (t: { data: Uint8Array | Uint16Array } & object) => ({ ...t, data: t.data.slice() });
  const r = { ...i, kvCache: c(i.kvCache), indexKCache: c(i.indexKCache) } as SparseAttentionInputs;
  if (i.krCache) r.krCache = c(i.krCache) as Bf16Tensor;
  return r;
}

const CFG: ProblemConfig = { b: 3, s1: 2, n: 5, kvLora: 128, rope: 8, idxHeads: 3, idxDim: 128, blockSize: 6, acts: [20, 7, 13], negativeSlot: true };

describe.each(isas)('FP8 caches (%s)', (isa: Isa) => {
  for (const which of ['both', 'kv', 'index'] as const) {
    it(`fused = chain, and both match the FP8 reference (${which === 'both' ? 'both caches FP8' : `only the ${which} cache FP8`})`, () => {
      setIsa(isa);
      const inputs = withFp8Caches(randomProblem(90 + which.length, CFG), which);
      const options = { topk: 6 };
      const f = fresh(inputs);
      const c = fresh(inputs);
      const rf = sparseAttention(f, { ...options, returnIndices: true });
      const rc = sparseAttention(c, { ...options, mode: 'chain', returnIndices: true });
      expect(sameBytes(f.kvCache.data, c.kvCache.data)).toBe(true);
      expect(sameBytes(f.indexKCache.data, c.indexKCache.data)).toBe(true);
      expect(Array.from(rf.indices!.data)).toEqual(Array.from(rc.indices!.data));
      expect(sameBytes(rf.out.data, rc.out.data)).toBe(true);
      const ref = sparseAttentionReference(fresh(inputs), options);
      expect(topkMismatches(rf.indices!, ref.indices, ref.scores, maxAct(inputs))).toBe(0);
      expectClose(rf.out, sparseAttentionReference(fresh(inputs), options, rf.indices).out, 'out');
      // Rows the call writes hold the reference's bytes up to a bf16 near-tie; others are untouched.
      const written = new Set(Array.from(inputs.cacheIndex.data).filter((s) => s >= 0));
      for (const k of ['kvCache', 'indexKCache'] as const) {
        const t = inputs[k];
        const w = t.shape[3]!;
        let differ = 0;
        for (let s = 0; s < t.data.length / w; s++) {
          const same = sameBytes(t.data.subarray(s * w, (s + 1) * w), f[k].data.subarray(s * w, (s + 1) * w));
          if (!written.has(s)) expect(same, `${k} row ${s} changed but was not written`).toBe(true);
          else if (!sameBytes(ref[k].data.subarray(s * w, (s + 1) * w), f[k].data.subarray(s * w, (s + 1) * w))) differ++;
        }
        expect(differ, `${k} rows unlike the reference`).toBeLessThanOrEqual(1);
      }
    });
  }
});

describe('FP8 caches through PagedCacheManager', () => {
  it('allocates 656 + 132 bytes per token at DeepSeek size, no krCache, and runs with ...cache.tensors()', async () => {
    const big = new PagedCacheManager({ numBlocks: 1, blockSize: 128, kvLora: 512, rope: 64, indexDim: 128, dtype: 'float8_e4m3fn' });
    expect(big.bytesPerToken).toBe(656 + 132);
    expect(big.tensors().krCache).toBeUndefined();
    expect(new PagedCacheManager({ numBlocks: 1, blockSize: 128, kvLora: 512, rope: 64, indexDim: 128 }).bytesPerToken).toBe(1408);
    expect(() => new PagedCacheManager({ numBlocks: 1, blockSize: 4, kvLora: 512, rope: 64, indexDim: 64, dtype: 'float8_e4m3fn' })).toThrow(/indexDim/);

    const p = randomProblem(95, { ...CFG, b: 2, s1: 1, acts: [1, 1] });
    const cache = new PagedCacheManager({ numBlocks: 8, blockSize: 4, kvLora: 128, rope: 8, indexDim: 128, dtype: 'float8_e4m3fn' });
    const layer = new DsaLayer(p, { topk: 4 });
    const seqs = [cache.admit(), cache.admit()];
    for (let step = 0; step < 5; step++) {
      const inputs = { x: p.x, sin: p.sin, cos: p.cos, ...cache.plan(seqs, 1), ...cache.tensors() };
      const before = fresh(inputs as SparseAttentionInputs);
      const chain = layer.forward(fresh(inputs as SparseAttentionInputs), { mode: 'chain', returnIndices: true });
      const r = step % 2 ? await layer.forwardAsync(inputs, { returnIndices: true }) : layer.forward(inputs, { returnIndices: true });
      expect(sameBytes(r.out.data, chain.out.data)).toBe(true);
      expect(Array.from(r.indices!.data)).toEqual(Array.from(chain.indices!.data));
      expect(sameBytes(before.kvCache.data, cache.kvCache.data)).toBe(false);
    }
    layer.dispose();
  });

  it('an aborted async call leaves the FP8 caches as they were', async () => {
    const inputs = withFp8Caches(randomProblem(96, { ...CFG, b: 4, s1: 3, acts: [20, 19, 18, 17] }));
    for (const mode of ['fused', 'chain'] as const) {
      const f = fresh(inputs);
      const ac = new AbortController();
      const call = sparseAttentionAsync(f, { topk: 6, mode, signal: ac.signal });
      queueMicrotask(() => ac.abort());
      const settled = await call.then(() => 'done', (e: Error) => e.message);
      if (settled !== 'done') {
        expect(settled).toMatch(/abort/);
        expect(sameBytes(f.kvCache.data, inputs.kvCache.data)).toBe(true);
        expect(sameBytes(f.indexKCache.data, inputs.indexKCache.data)).toBe(true);
      }
    }
  });

  it('rejects a krCache beside an FP8 kvCache, and an FP8 key cache with idxDim != 128', () => {
    const inputs = withFp8Caches(randomProblem(97, CFG));
    const p = randomProblem(97, CFG);
    expect(() => sparseAttention({ ...inputs, krCache: p.krCache })).toThrow(/krCache: expected none/);
    const small = randomProblem(98, { ...CFG, idxDim: 16 });
    const u8: U8Tensor = { dtype: 'uint8', shape: [small.indexKCache.shape[0]!, 6, 1, 20], data: new Uint8Array(small.indexKCache.shape[0]! * 6 * 20), format: 'ND' };
    expect(() => sparseAttention({ ...small, indexKCache: u8 })).toThrow(/head dim of 128/);
  });
});
