import { join } from 'node:path';
import { readGoldenCase, type Bf16Tensor } from '@dsa/tensor-core';
import { describe, expect, it } from 'vitest';
import { mlaProlog } from '../src/index.js';
import { mlaPrologReference } from '../src/reference.js';
import { bf16Cache, cloneTensor, expectCacheRows, expectClose, poisoned, writtenSlots, type Bf16CacheInputs } from './helpers.js';

const GOLDEN = join(import.meta.dirname, '../../../../shared/golden');
const CASES = ['tiny', 'mtp-empty-row', 'prefill', 'model-heads', 'skip-slot'];

describe('golden cases (shared/golden, independent float64 implementation)', () => {
  for (const name of CASES) {
    it(name, () => {
      const g = readGoldenCase(join(GOLDEN, name));
      const inputs = { ...g.inputs } as unknown as Bf16CacheInputs;
      const before = { kv: cloneTensor(inputs.kvCache), kr: cloneTensor(inputs.krCache) };
      inputs.kvCache = cloneTensor(inputs.kvCache);
      inputs.krCache = cloneTensor(inputs.krCache);
      const eps = g.options.rmsNormEps as number;
      const [b, s1] = inputs.x.shape as [number, number];
      const [n, , kvLora] = inputs.wUk.shape as [number, number, number];
      const rope = inputs.cos.shape[2]!;
      const out = {
        qNope: poisoned([b, s1, n, kvLora]),
        qRope: poisoned([b, s1, n, rope]),
        qNorm: poisoned([b, s1, inputs.wDq.shape[1]!]),
      };
      const r = mlaProlog(inputs, { rmsNormEps: eps, out });
      expect(r.qNope).toBe(out.qNope);
      const want = g.outputs as Record<string, Bf16Tensor>;
      expectClose('qNorm', r.qNorm, want.qNorm!);
      expectClose('qNope', r.qNope, want.qNope!);
      expectClose('qRope', r.qRope, want.qRope!);
      const slots = writtenSlots(inputs.cacheIndex);
      expectCacheRows('kvCache', inputs.kvCache, before.kv, want.kvCache!, slots);
      expectCacheRows('krCache', inputs.krCache, before.kr, want.krCache!, slots);
      if (name === 'skip-slot') expect([...inputs.cacheIndex.data].some((s) => s < 0)).toBe(true);

      // The float64 reference agrees with the golden too (it is the yardstick of the other tests).
      const ref = mlaPrologReference({ ...inputs, kvCache: before.kv, krCache: before.kr }, { rmsNormEps: eps });
      expectClose('reference qNope', ref.qNope, want.qNope!);
      expectClose('reference qRope', ref.qRope, want.qRope!);
      expectClose('reference qNorm', ref.qNorm, want.qNorm!);
      expectCacheRows('reference kvCache', bf16Cache('reference kvCache', ref.kvCache), before.kv, want.kvCache!, slots);
      expectCacheRows('reference krCache', bf16Cache('reference krCache', ref.krCache), before.kr, want.krCache!, slots);
    });
  }
});
