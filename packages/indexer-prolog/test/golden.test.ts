// The golden cases of shared/golden (an independent float64 implementation): query, weights and the
// indexer key cache after the call. qNorm comes from the case's MLA-prolog output.
import { join } from 'node:path';
import { type Bf16Tensor, type I32Tensor, readGoldenCase } from '@dsa/tensor-core';
import { describe, expect, it } from 'vitest';
import { indexerProlog, type IndexerPrologOptions, prepareIndexerProlog } from '../src/index.js';
import { indexerPrologReference } from '../src/reference.js';
import { bf16Cache, expectBf16Close, expectCache, poisoned } from './helpers.js';

const GOLDEN = join(import.meta.dirname, '../../../../shared/golden');
const CASES = ['tiny', 'mtp-empty-row', 'prefill', 'model-heads', 'skip-slot'];

function load(name: string) {
  const c = readGoldenCase(join(GOLDEN, name));
  const i = c.inputs;
  const inputs = {
    x: i.x as Bf16Tensor, qNorm: c.outputs.qNorm as Bf16Tensor, wIdxQb: i.wIdxQb as Bf16Tensor, wIdxK: i.wIdxK as Bf16Tensor,
    wIdxProj: i.wIdxProj as Bf16Tensor, inGammaK: i.inGammaK as Bf16Tensor, inBetaK: i.inBetaK as Bf16Tensor,
    sin: i.sin as Bf16Tensor, cos: i.cos as Bf16Tensor, cacheIndex: i.cacheIndex as I32Tensor, indexKCache: i.indexKCache as Bf16Tensor,
  };
  const options: IndexerPrologOptions = {
    layerNormEps: c.options.layerNormEps as number,
    indexerRope: c.options.indexerRope as IndexerPrologOptions['indexerRope'],
  };
  return { c, inputs, options };
}

describe('golden cases', () => {
  it.each(CASES)('%s', (name) => {
    const { c, inputs, options } = load(name);
    const di = inputs.wIdxK.shape[1]!;
    const run = poisoned(inputs);
    const out = indexerProlog(run, options);
    expectBf16Close(out.query.data, (c.outputs.query as Bf16Tensor).data, `${name} query`);
    expectBf16Close(out.weights.data, (c.outputs.weights as Bf16Tensor).data, `${name} weights`);
    expectCache(run.indexKCache.data, (c.outputs.indexKCache as Bf16Tensor).data, inputs.indexKCache.data, inputs.cacheIndex.data, di, `${name} indexKCache`);
  });

  // The float64 reference is the yardstick of the other tests: it agrees with the golden too.
  it.each(CASES)('%s: the float64 reference matches the golden', (name) => {
    const { c, inputs, options } = load(name);
    const ref = indexerPrologReference(inputs, options);
    expectBf16Close(ref.query.data, (c.outputs.query as Bf16Tensor).data, `${name} reference query`);
    expectBf16Close(ref.weights.data, (c.outputs.weights as Bf16Tensor).data, `${name} reference weights`);
    expectCache(bf16Cache('reference indexKCache', ref.indexKCache).data, (c.outputs.indexKCache as Bf16Tensor).data, inputs.indexKCache.data, inputs.cacheIndex.data,
      inputs.wIdxK.shape[1]!, `${name} reference indexKCache`);
  });

  it('model-heads uses the half pairing (interleaved gives other queries)', () => {
    const { c, inputs, options } = load('model-heads');
    expect(options.indexerRope).toBe('half');
    const wrong = indexerProlog(poisoned(inputs), { ...options, indexerRope: 'interleaved' });
    expect(Buffer.from(wrong.query.data.buffer).equals(Buffer.from((c.outputs.query as Bf16Tensor).data.buffer))).toBe(false);
  });

  it('skip-slot: the token with a negative slot leaves the cache as it was', () => {
    const { c, inputs, options } = load('skip-slot');
    expect(Array.from(inputs.cacheIndex.data).some((s) => s < 0)).toBe(true);
    const run = poisoned(inputs);
    indexerProlog(run, options);
    expect(run.indexKCache.data).toEqual((c.outputs.indexKCache as Bf16Tensor).data);
  });

  it.each(['tiny', 'model-heads'])('%s through the prepared weights', (name) => {
    const { c, inputs, options } = load(name);
    const prepared = prepareIndexerProlog(inputs, options);
    const run = poisoned(inputs);
    const out = prepared.run(run);
    expectBf16Close(out.query.data, (c.outputs.query as Bf16Tensor).data, `${name} query`);
    expectBf16Close(out.weights.data, (c.outputs.weights as Bf16Tensor).data, `${name} weights`);
    expectCache(run.indexKCache.data, (c.outputs.indexKCache as Bf16Tensor).data, inputs.indexKCache.data, inputs.cacheIndex.data,
      inputs.wIdxK.shape[1]!, `${name} indexKCache`);
  });
});
