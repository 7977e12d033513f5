// A long decode run at small dimensions through the cache manager, sync and async calls mixed,
// sequences admitted and freed along the way. Used by the soak benchmark (10,000 steps) and a
// bounded test. Returns a hash of every output and the resident memory along the run.
import { createHash } from 'node:crypto';
import { Rng } from '@dsa/tensor-core';
import { PagedCacheManager } from './cache-manager.js';
import { DsaLayer } from './layer.js';
import { randomLayerWeights, uniformBf16, type ModelDims } from './model.js';

export const SOAK_DIMS: ModelDims = { h: 128, qLora: 64, n: 8, qkNope: 16, kvLora: 64, rope: 16, idxHeads: 4, idxDim: 32, topk: 32, blockSize: 16 };

export interface SoakResult {
  steps: number;
  hash: string;
  /** Resident set size (MB) sampled every `sampleEvery` steps. */
  rssMB: number[];
  ms: number;
}

export async function soak(steps: number, seed = 1, sampleEvery = 500): Promise<SoakResult> {
  const d = SOAK_DIMS;
  const layer = new DsaLayer(randomLayerWeights(d, seed), { topk: d.topk });
  const maxLen = 200;
  const cache = new PagedCacheManager({ numBlocks: 64, blockSize: d.blockSize, kvLora: d.kvLora, rope: d.rope, indexDim: d.idxDim, maxBlocksPerSeq: Math.ceil(maxLen / d.blockSize) });
  const rng = new Rng(seed);
  const hash = createHash('sha256');
  let seqs = [cache.admit(), cache.admit(), cache.admit()];
  const rssMB: number[] = [];
  const t0 = performance.now();
  for (let step = 0; step < steps; step++) {
    // A sequence that reached maxLen is freed and a new one admitted (its blocks are reused).
    seqs = seqs.map((s) => {
      if (cache.length(s) < maxLen) return s;
      cache.free(s);
      return cache.admit();
    });
    const s1 = cache.length(seqs[0]!) === 0 ? 4 : 1;
    const plan = cache.plan(seqs, s1);
    const b = seqs.length;
    const inputs = {
      x: uniformBf16(rng, [b, s1, d.h], -1, 1), sin: uniformBf16(rng, [b, s1, d.rope], -1, 1), cos: uniformBf16(rng, [b, s1, d.rope], -1, 1),
      ...plan, ...cache.tensors(),
    };
    const r = step % 2 === 0 ? layer.forward(inputs) : await layer.forwardAsync(inputs);
    hash.update(new Uint8Array(r.out.data.buffer, r.out.data.byteOffset, r.out.data.byteLength));
    if (step % sampleEvery === 0 || step === steps - 1) {
      rssMB.push(process.memoryUsage().rss / 1e6);
    }
  }
  layer.dispose();
  return { steps, hash: hash.digest('hex'), rssMB, ms: performance.now() - t0 };
}
