import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  bf16ArrayToF32, clone, isDsaError, readGoldenCase, setIsa, type Bf16Tensor, type I32Tensor, type Isa,
  cpuFeatures,
} from '@dsa/tensor-core';
import {
  DsaLayer, npuSparseAttentionPto, PagedCacheManager, presets, sparseAttention, sparseAttentionAsync,
  type SparseAttentionInputs, type SparseAttentionOptions,
} from '../src/index.js';
import { sparseAttentionReference } from '../src/reference.js';
import {
  bf16Cache, bf16Caches, checkAgainstReference, expectCacheRows, expectClose, randomProblem, sameBytes, topkMismatches, withFreshCaches,
  type Bf16CacheInputs,
} from './helpers.js';

const GOLDEN = join(import.meta.dirname, '../../../../shared/golden');
const CASES = ['tiny', 'mtp-empty-row', 'prefill', 'model-heads', 'skip-slot'];
afterAll(() => setIsa('auto'));

describe('golden cases (independent implementation)', () => {
  it.each(CASES)('%s: fused and chain match the golden outputs', (name) => {
    const c = readGoldenCase(join(GOLDEN, name));
    const inputs = c.inputs as unknown as Bf16CacheInputs;
    const options = c.options as SparseAttentionOptions;
    for (const mode of ['fused', 'chain'] as const) {
      const run = withFreshCaches(inputs);
      const r = sparseAttention(run, { ...options, mode, returnIndices: true });
      for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) expectCacheRows(`${name} ${mode} ${k}`, run[k], inputs[k], c.outputs[k] as Bf16Tensor, inputs.cacheIndex);
      expect(r.out.shape).toEqual(c.outputs.out!.shape);
      expectClose(r.out, c.outputs.out as Bf16Tensor, `${name} ${mode} out`);
      const golden = c.outputs.indices as I32Tensor;
      expect(topkMismatches(r.indices!, golden, c.outputs.scores!.data as Float32Array, c.outputs.scores!.shape[2]!)).toBe(0);
    }
  });

  // The float64 reference is the yardstick of the other tests: it agrees with the golden too.
  it.each(CASES)('%s: the float64 reference matches the golden outputs', (name) => {
    const c = readGoldenCase(join(GOLDEN, name));
    const inputs = c.inputs as unknown as Bf16CacheInputs;
    const ref = sparseAttentionReference(inputs, c.options as SparseAttentionOptions);
    for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) expectCacheRows(`${name} reference ${k}`, bf16Cache(`${name} reference ${k}`, ref[k]), inputs[k], c.outputs[k] as Bf16Tensor, inputs.cacheIndex);
    for (const k of ['qNorm', 'qNope', 'qRope', 'query', 'weights'] as const) expectClose(ref[k], c.outputs[k] as Bf16Tensor, `${name} reference ${k}`);
    expect(topkMismatches(ref.indices, c.outputs.indices as I32Tensor, c.outputs.scores!.data as Float32Array, c.outputs.scores!.shape[2]!)).toBe(0);
    expectClose(ref.out, c.outputs.out as Bf16Tensor, `${name} reference out`);
  });

  // The goldens use sparseMode 3. The last query row of each sequence sees act keys under both rules,
  // so those rows check sparseMode 0 against the golden too (every row of tiny, where s1 = 1).
  it.each(CASES)('%s: sparseMode 0 gives the golden result on the last row of each sequence', (name) => {
    const c = readGoldenCase(join(GOLDEN, name));
    const inputs = c.inputs as unknown as Bf16CacheInputs;
    const options = { ...(c.options as SparseAttentionOptions), sparseMode: 0 as const };
    const [b, s1, n, kv] = c.outputs.out!.shape as [number, number, number, number];
    const topk = options.topk!;
    const maxAct = c.outputs.scores!.shape[2]!;
    // Row s1 − 1 of each sequence, as [b, 1, width].
    const lastRows = <T extends Bf16Tensor | I32Tensor>(t: T, width: number): T => {
      const data = new (t.data.constructor as Uint16ArrayConstructor | Int32ArrayConstructor)(b * width);
      for (let bi = 0; bi < b; bi++) data.set(t.data.subarray((bi * s1 + s1 - 1) * width, (bi * s1 + s1) * width), bi * width);
      return { ...t, shape: [b, 1, width], data } as T;
    };
    const goldScores = new Float32Array(b * maxAct);
    for (let bi = 0; bi < b; bi++) goldScores.set((c.outputs.scores!.data as Float32Array).subarray((bi * s1 + s1 - 1) * maxAct, (bi * s1 + s1) * maxAct), bi * maxAct);
    const want = { out: lastRows(c.outputs.out as Bf16Tensor, n * kv), indices: lastRows(c.outputs.indices as I32Tensor, topk) };
    for (const mode of ['fused', 'chain'] as const) {
      const run = withFreshCaches(inputs);
      const r = sparseAttention(run, { ...options, mode, returnIndices: true });
      for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) expectCacheRows(`${name} ${mode} ${k}`, run[k], inputs[k], c.outputs[k] as Bf16Tensor, inputs.cacheIndex);
      expect(topkMismatches(lastRows(r.indices!, topk), want.indices, goldScores, maxAct)).toBe(0);
      expectClose(lastRows(r.out, n * kv), want.out, `${name} ${mode} out, last rows`);
    }
    const ref = sparseAttentionReference(inputs, options);
    expect(topkMismatches(lastRows(ref.indices, topk), want.indices, goldScores, maxAct)).toBe(0);
    expectClose(lastRows(ref.out, n * kv), want.out, `${name} reference out, last rows`);
  });

  it('mtp-empty-row: the row with no keys gets all −1 indices and an all-zero output', () => {
    const c = readGoldenCase(join(GOLDEN, 'mtp-empty-row'));
    const inputs = withFreshCaches(c.inputs as unknown as Bf16CacheInputs);
    const r = sparseAttention(inputs, { ...(c.options as SparseAttentionOptions), returnIndices: true });
    const [b, s1, topk] = r.indices!.shape as [number, number, number];
    const n = r.out.shape[2]!, kv = r.out.shape[3]!;
    let emptyRows = 0;
    for (let bi = 0; bi < b; bi++) {
      const act = inputs.actSeqs.data[bi]!;
      for (let i = 0; i < s1; i++) {
        if (act - (s1 - 1 - i) > 0) continue;
        emptyRows++;
        const row = bi * s1 + i;
        expect(Array.from(r.indices!.data.subarray(row * topk, (row + 1) * topk)).every((v) => v === -1)).toBe(true);
        expect(Array.from(r.out.data.subarray(row * n * kv, (row + 1) * n * kv)).every((v) => v === 0)).toBe(true);
      }
    }
    expect(emptyRows).toBeGreaterThan(0);
  });
});

describe('random configurations against the float64 reference', () => {
  const configs = [
    { b: 1, s1: 1, acts: [1] },
    { b: 2, s1: 1, acts: [7, 30], nz: true },
    { b: 3, s1: 2, acts: [2, 17, 40] },
    { b: 2, s1: 4, acts: [3, 25], negativeSlot: true },
    { b: 4, s1: 3, acts: [9, 16, 33, 5], nz: true },
    { b: 1, s1: 24, acts: [24], blockSize: 8 },
    { b: 1, s1: 16, acts: [57], nz: true },
  ];
  it.each(configs.map((c, i) => [i, c] as const))('config %i: fused = chain = reference', (i, cfg) => {
    const inputs = randomProblem(100 + i, cfg);
    const opts: SparseAttentionOptions = { topk: 12, sparseMode: i % 2 === 0 ? 3 : 0 };
    const f = checkAgainstReference(inputs, opts, 'fused');
    const c = checkAgainstReference(inputs, opts, 'chain');
    expectClose(f.out, c.out, 'fused vs chain');
  });

  it.each([0, 3] as const)('a negative slot writes nothing; a row without keys gets −1 indices and zeros (sparseMode %i)', (sparseMode) => {
    // Sequence 0 has act 3 < s1 4: token 0 has no position, token 1 (position 0) is given slot −1.
    const inputs = randomProblem(103, { b: 2, s1: 4, acts: [3, 25], negativeSlot: true });
    const [b, s1] = inputs.cacheIndex.shape as [number, number];
    expect(Array.from(inputs.cacheIndex.data.subarray(0, 2))).toEqual([-1, -1]);
    const bs = inputs.kvCache.shape[1]!;
    const unwritten = inputs.blockTable.data[0]! * bs; // the slot of sequence 0, position 0
    const topk = 12;
    for (const mode of ['fused', 'chain'] as const) {
      const run = withFreshCaches(inputs);
      const r = sparseAttention(run, { topk, sparseMode, mode, returnIndices: true });
      for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) {
        const d = run[k].shape[3]!;
        const at = (t: Bf16Tensor) => t.data.subarray(unwritten * d, (unwritten + 1) * d);
        expect(sameBytes(at(run[k]), at(inputs[k])), `${mode} ${k}: the skipped token's slot changed`).toBe(true);
      }
      const rowSize = r.out.shape[2]! * r.out.shape[3]!;
      let empty = 0;
      for (let row = 0; row < b * s1; row++) {
        const bi = Math.floor(row / s1);
        const act = inputs.actSeqs.data[bi]!;
        const eff = sparseMode === 3 ? act - (s1 - 1 - (row % s1)) : act;
        const picked = Array.from(r.indices!.data.subarray(row * topk, (row + 1) * topk));
        const n = Math.min(topk, Math.max(eff, 0));
        expect(new Set(picked.slice(0, n)).size, `${mode} row ${row}`).toBe(n);
        expect(picked.slice(0, n).every((p) => p >= 0 && p < eff), `${mode} row ${row}`).toBe(true);
        expect(picked.slice(n).every((p) => p === -1), `${mode} row ${row}`).toBe(true);
        const out = r.out.data.subarray(row * rowSize, (row + 1) * rowSize);
        if (eff <= 0) {
          empty++;
          expect(out.every((v) => v === 0), `${mode} row ${row}: no keys, zero output`).toBe(true);
        } else {
          expect(bf16ArrayToF32(out).every(Number.isFinite) && out.some((v) => v !== 0), `${mode} row ${row}: finite output`).toBe(true);
        }
      }
      // Only sparseMode 3 leaves a row without keys: row 0 (sequence 0, the token without a position).
      expect(empty).toBe(sparseMode === 3 ? 1 : 0);
      checkAgainstReference(inputs, { topk, sparseMode }, mode);
    }
  });

  it('the deepseekV32 preset (half indexer RoPE, eps 1e-6, model scale) matches the reference', () => {
    const inputs = randomProblem(7, { b: 2, s1: 2, acts: [11, 20] });
    checkAgainstReference(inputs, { ...presets.deepseekV32, topk: 8 }, 'fused');
  });

  const isas = (['scalar', 'avx2', 'avx512'] as Isa[]).filter((isa) => isa !== 'avx512' || cpuFeatures().best === 'avx512');
  it.each(isas)('the %s path gives the reference result', (isa) => {
    setIsa(isa);
    checkAgainstReference(randomProblem(55, { b: 2, s1: 2, acts: [13, 21], nz: true }), { topk: 10 }, 'fused');
    setIsa('auto');
  });
});

describe('API forms', () => {
  const inputs = randomProblem(3, { b: 2, s1: 2, acts: [9, 14] });

  it('the positional form equals the object form', () => {
    const a = withFreshCaches(inputs);
    const b = withFreshCaches(inputs);
    const out1 = sparseAttention(a, { topk: 8 }).out;
    const out2 = npuSparseAttentionPto(
      b.x, b.wDq, b.wUqQr, b.wUk, b.wDkvKr, b.gammaCq, b.gammaCkv, b.sin, b.cos, b.cacheIndex, b.kvCache, b.krCache,
      b.blockTable, b.actSeqs, b.wIdxQb, b.wIdxK, b.wIdxProj, b.inGammaK, b.inBetaK, b.indexKCache, { topk: 8 },
    );
    expect(sameBytes(out2.data, out1.data)).toBe(true);
    expect(sameBytes(b.kvCache.data, a.kvCache.data)).toBe(true);
  });

  it('plain calls reuse prepared weights, and notice a weight changed in place', () => {
    const w = { ...inputs, wDq: clone(inputs.wDq) };
    const first = sparseAttention(withFreshCaches(w), { topk: 8 }).out;
    expect(sparseAttention(withFreshCaches(w), { topk: 8 }).out.data).toEqual(first.data);
    w.wDq.data[0] = w.wDq.data[0]! ^ 0x4000; // a sampled element: the fingerprint changes
    const changed = sparseAttention(withFreshCaches(w), { topk: 8 }).out;
    const fresh = sparseAttention(withFreshCaches({ ...w, wDq: clone(w.wDq) }), { topk: 8 }).out;
    expect(sameBytes(changed.data, fresh.data)).toBe(true);
    expect(sameBytes(changed.data, first.data)).toBe(false);
  });

  it('returns indices only when asked', () => {
    expect(sparseAttention(withFreshCaches(inputs), { topk: 8 }).indices).toBeUndefined();
    const r = sparseAttention(withFreshCaches(inputs), { topk: 8, returnIndices: true });
    expect(r.indices!.shape).toEqual([2, 2, 8]);
  });

  it('async gives the same bytes as sync and keeps the event loop running', async () => {
    const big = randomProblem(4, { b: 2, s1: 64, acts: [300, 200], h: 256, qLora: 64, n: 8, kvLora: 64, rope: 16, idxHeads: 8, idxDim: 32, blockSize: 16 });
    const a = withFreshCaches(big);
    const b = withFreshCaches(big);
    const sync = sparseAttention(a, { topk: 64, returnIndices: true });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const pending = sparseAttentionAsync(b, { topk: 64, returnIndices: true });
    const asyncR = await pending;
    clearInterval(timer);
    expect(sameBytes(asyncR.out.data, sync.out.data)).toBe(true);
    expect(sameBytes(asyncR.indices!.data, sync.indices!.data)).toBe(true);
    expect(sameBytes(b.kvCache.data, a.kvCache.data)).toBe(true);
    expect(sameBytes(b.indexKCache.data, a.indexKCache.data)).toBe(true);
    expect(ticks).toBeGreaterThan(0);
  });

  it('a DsaLayer reuses its prepared weights, accepts per-call options and can be disposed', async () => {
    const layer = new DsaLayer(inputs, { topk: 8 });
    const step = withFreshCaches(inputs);
    const r1 = layer.forward(step);
    const r2 = await layer.forwardAsync(withFreshCaches(inputs));
    expect(sameBytes(r2.out.data, r1.out.data)).toBe(true);
    expect(layer.nativeBytes).toBeGreaterThan(0);
    expect(layer.lastTimes.sparseFlashAttention).toBeGreaterThanOrEqual(0);
    const chained = layer.forward(withFreshCaches(inputs), { mode: 'chain' });
    expectClose(chained.out, r1.out, 'layer chain vs fused');
    layer.dispose();
    expect(() => layer.forward(withFreshCaches(inputs))).toThrow(/disposed/);
  });
});

describe('concurrency', () => {
  const inputs = randomProblem(31, { b: 2, s1: 8, acts: [40, 64], blockSize: 8 });

  it('many async calls in flight on independent caches give the same bytes as sequential calls', async () => {
    const seeds = [1, 2, 3, 4, 5, 6, 7, 8];
    const problems = seeds.map((s) => ({ ...withFreshCaches(inputs), x: randomProblem(500 + s, { b: 2, s1: 8, acts: [40, 64] }).x }));
    const sequential = problems.map((p) => {
      const c = withFreshCaches(p);
      return { out: sparseAttention(c, { topk: 16 }).out, kv: c.kvCache };
    });
    const concurrent = await Promise.all(problems.map(async (p) => {
      const c = withFreshCaches(p);
      return { out: (await sparseAttentionAsync(c, { topk: 16, mode: p === problems[0] ? 'chain' : 'fused' })).out, kv: c.kvCache };
    }));
    concurrent.forEach((r, i) => {
      if (i === 0) expectClose(r.out, sequential[i]!.out, 'chain in flight');
      else expect(sameBytes(r.out.data, sequential[i]!.out.data)).toBe(true);
      expect(sameBytes(r.kv.data, sequential[i]!.kv.data)).toBe(true);
    });
  });

  it('calls on the same caches are serialized (async) or rejected (sync while one is in flight)', async () => {
    const shared = withFreshCaches(inputs);
    const steps = [1, 2, 3].map((s) => ({ ...shared, x: randomProblem(700 + s, { b: 2, s1: 8, acts: [40, 64] }).x }));
    const pending = steps.map((st) => sparseAttentionAsync(st, { topk: 16 }));
    expect(() => sparseAttention(steps[0]!, { topk: 16 })).toThrow(/kvCache: an async call on this cache has not settled/);
    const results = await Promise.all(pending);
    // Sequential replay on a fresh copy: the same bytes, so the three calls did not interleave.
    const replay = withFreshCaches(inputs);
    steps.forEach((st, i) => {
      const r = sparseAttention({ ...st, kvCache: replay.kvCache, krCache: replay.krCache, indexKCache: replay.indexKCache }, { topk: 16 });
      expect(sameBytes(results[i]!.out.data, r.out.data)).toBe(true);
    });
    expect(sameBytes(shared.kvCache.data, replay.kvCache.data)).toBe(true);
    expect(() => sparseAttention(steps[0]!, { topk: 16 })).not.toThrow();
  });

  it('the event loop keeps turning while an async call is in flight', async () => {
    const big = randomProblem(9, { b: 8, s1: 32, acts: Array(8).fill(700), h: 512, qLora: 128, n: 16, kvLora: 128, rope: 32, idxHeads: 16, idxDim: 64, blockSize: 32 });
    await sparseAttentionAsync(withFreshCaches(big), { topk: 128 }); // prepares the layer: the call below only computes
    // Timer callbacks run only when the main thread is free. A call that computed on the main thread
    // (before its promise, or in a continuation of it) would let none fire until it settled.
    const inputs = withFreshCaches(big);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = performance.now();
    await sparseAttentionAsync(inputs, { topk: 128 });
    const ms = performance.now() - t0;
    clearInterval(timer);
    console.log(`async call ${ms.toFixed(1)} ms, ${ticks} timer callbacks while in flight`);
    expect(ticks, 'timer callbacks while the call was in flight').toBeGreaterThanOrEqual(3);
  });
});

describe('cancellation', () => {
  const big = randomProblem(8, { b: 16, s1: 4, acts: Array.from({ length: 16 }, (_, i) => 200 + 37 * i), h: 256, qLora: 64, n: 16, kvLora: 64, rope: 16, idxHeads: 8, idxDim: 32, blockSize: 16 });

  it.each(['fused', 'chain'] as const)('%s: an abort during the call rejects with DSA_E_ABORTED and leaves the caches as they were', async (mode) => {
    const inputs = withFreshCaches(big);
    const before = [inputs.kvCache, inputs.krCache, inputs.indexKCache].map((t) => t.data.slice());
    const ctrl = new AbortController();
    const pending = sparseAttentionAsync(inputs, { topk: 32, mode, signal: ctrl.signal });
    ctrl.abort();
    let err: unknown;
    try {
      await pending;
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string })?.code).toBe('DSA_E_ABORTED');
    [inputs.kvCache, inputs.krCache, inputs.indexKCache].forEach((t, k) => expect(sameBytes(t.data, before[k])).toBe(true));
  });

  it('aborts landing later in the call (after caches were written) also put every row back', async () => {
    const reference = sparseAttention(withFreshCaches(big), { topk: 32 }); // also prepares the layer
    // The duration of a warm async call (the shortest of three) sets when the aborts land.
    let ms = Infinity;
    for (let k = 0; k < 3; k++) {
      const t0 = performance.now();
      await sparseAttentionAsync(withFreshCaches(big), { topk: 32 });
      ms = Math.min(ms, performance.now() - t0);
    }
    let aborted = 0;
    for (const f of [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]) {
      const inputs = withFreshCaches(big);
      const before = [inputs.kvCache, inputs.krCache, inputs.indexKCache].map((t) => t.data.slice());
      const ctrl = new AbortController();
      const pending = sparseAttentionAsync(inputs, { topk: 32, signal: ctrl.signal });
      setTimeout(() => ctrl.abort(), ms * f);
      try {
        const r = await pending;
        expect(sameBytes(r.out.data, reference.out.data)).toBe(true);
      } catch (e) {
        expect((e as { code?: string }).code).toBe('DSA_E_ABORTED');
        [inputs.kvCache, inputs.krCache, inputs.indexKCache].forEach((t, k) => expect(sameBytes(t.data, before[k])).toBe(true));
        aborted++;
      }
    }
    expect(aborted).toBeGreaterThan(0);
  });

  it('an already aborted signal rejects at once; a signal that never fires changes nothing', async () => {
    const ctrl = new AbortController();
    ctrl.abort();
    await expect(sparseAttentionAsync(withFreshCaches(big), { topk: 32, signal: ctrl.signal })).rejects.toMatchObject({ code: 'DSA_E_ABORTED' });
    const plain = sparseAttention(withFreshCaches(big), { topk: 32 });
    const withSignal = await sparseAttentionAsync(withFreshCaches(big), { topk: 32, signal: new AbortController().signal });
    expect(sameBytes(withSignal.out.data, plain.out.data)).toBe(true);
    await expect(sparseAttentionAsync(withFreshCaches(big), { topk: 32, signal: 'stop' as never })).rejects.toMatchObject({ code: 'DSA_E_ARGUMENT' });
  });
});

describe('multi-step decode with the cache manager', () => {
  it('prefill then decode steps equal step-by-step reference calls', () => {
    const dims = { h: 64, qLora: 32, n: 4, qkNope: 16, kvLora: 32, rope: 8, idxHeads: 4, idxDim: 16 };
    const base = randomProblem(77, { b: 1, s1: 1, acts: [1], ...dims });
    const cache = new PagedCacheManager({ numBlocks: 12, blockSize: 4, kvLora: 32, rope: 8, indexDim: 16, maxBlocksPerSeq: 6 });
    const layer = new DsaLayer(base, { topk: 6 });
    const pool = bf16Caches('cache manager', cache); // the default cache dtype is bf16
    const seqs = [cache.admit(), cache.admit()];
    let refKv = clone(pool.kvCache), refKr = clone(pool.krCache), refIk = clone(pool.indexKCache);
    for (const [step, s1] of [[0, 5], [1, 1], [2, 1], [3, 1], [4, 2]] as const) {
      const plan = cache.plan(seqs, s1);
      const tokens = randomProblem(900 + step, { b: 2, s1, acts: [s1, s1], ...dims });
      const stepInputs = { x: tokens.x, sin: tokens.sin, cos: tokens.cos, ...plan, kvCache: pool.kvCache, krCache: pool.krCache, indexKCache: pool.indexKCache };
      const r = layer.forward(stepInputs, { returnIndices: true });
      const ref = sparseAttentionReference({ ...base, ...stepInputs, kvCache: refKv, krCache: refKr, indexKCache: refIk }, { topk: 6 });
      expect(topkMismatches(r.indices!, ref.indices, ref.scores, Math.max(...plan.actSeqs.data))).toBe(0);
      const same = sparseAttentionReference({ ...base, ...stepInputs, kvCache: refKv, krCache: refKr, indexKCache: refIk }, { topk: 6 }, r.indices);
      expectClose(r.out, same.out, `step ${step} out`);
      const refCaches = bf16Caches(`step ${step} reference`, ref);
      expectClose(pool.kvCache, refCaches.kvCache, `step ${step} kvCache`);
      refKv = refCaches.kvCache;
      refKr = refCaches.krCache;
      refIk = refCaches.indexKCache;
    }
    expect(cache.length(seqs[0]!)).toBe(10);
    cache.free(seqs[0]!);
    expect(cache.freeBlockCount).toBe(12 - 3);
  });

  it('throws DSA_E_STATE when the pool is full and changes nothing', () => {
    const cache = new PagedCacheManager({ numBlocks: 2, blockSize: 4, kvLora: 8, rope: 4, indexDim: 8 });
    const a = cache.admit();
    cache.plan([a], 8);
    let err: unknown;
    try {
      cache.plan([a], 1);
    } catch (e) {
      err = e;
    }
    expect(isDsaError(err) && (err as { code: string }).code).toBe('DSA_E_STATE');
    expect(cache.length(a)).toBe(8);
  });
});

describe('bad input is rejected before any cache byte changes', () => {
  const good = randomProblem(21, { b: 2, s1: 2, acts: [10, 18] });
  type Mut = [string, string, RegExp, (i: SparseAttentionInputs) => SparseAttentionInputs, SparseAttentionOptions?];
  const set = (i: SparseAttentionInputs, k: keyof SparseAttentionInputs, v: unknown): SparseAttentionInputs => ({ ...i, [k]: v });
  const i32 = (t: I32Tensor, idx: number, v: number): I32Tensor => {
    const c = clone(t);
    c.data[idx] = v;
    return c;
  };
  const blocks = good.kvCache.shape[0]! * good.kvCache.shape[1]!;
  const cases: Mut[] = [
    ['slot past the cache', 'DSA_E_RANGE', /cacheIndex\[1, 1\]/, (i) => set(i, 'cacheIndex', i32(i.cacheIndex, 3, blocks))],
    ['two tokens on one slot', 'DSA_E_VALUE', /cacheIndex/, (i) => set(i, 'cacheIndex', i32(i.cacheIndex, 1, i.cacheIndex.data[0]!))],
    ['a −1 table entry that is read', 'DSA_E_RANGE', /blockTable\[1, 1\]/, (i) => set(i, 'blockTable', i32(i.blockTable, i.blockTable.shape[1]! + 1, -1))],
    ['a table entry past the pool', 'DSA_E_RANGE', /blockTable\[0, 0\]/, (i) => set(i, 'blockTable', i32(i.blockTable, 0, 999))],
    ['act larger than the table covers', 'DSA_E_RANGE', /actSeqs\[1\]/, (i) => set(i, 'actSeqs', i32(i.actSeqs, 1, 10_000))],
    ['x as float32', 'DSA_E_DTYPE', /x: expected dtype bfloat16/, (i) => set(i, 'x', { dtype: 'float32', shape: i.x.shape, data: new Float32Array(i.x.data.length) })],
    ['x with the wrong hidden size', 'DSA_E_SHAPE', /x: expected shape\[2\] \(h\)/, (i) => set(i, 'x', { ...i.x, shape: [2, 1, 128] })],
    ['NZ weight with K % 16 != 0', 'DSA_E_SHAPE', /wIdxProj: NZ weights need/, (i) => set(i, 'wIdxProj', { ...i.wIdxProj, format: 'NZ' })],
    ['wUk head count different from wUqQr', 'DSA_E_SHAPE', /wUqQr/, (i) => set(i, 'wUk', { ...i.wUk, shape: [2, 32, 32] })],
    ['kvCache with a different block count', 'DSA_E_SHAPE', /indexKCache/, (i) => set(i, 'indexKCache', { ...i.indexKCache, shape: [i.indexKCache.shape[0]! * 2, i.indexKCache.shape[1]! / 2, 1, i.indexKCache.shape[3]!] })],
    ['cos of the wrong width', 'DSA_E_SHAPE', /cos/, (i) => set(i, 'cos', { ...i.cos, shape: [2, 4, 4] })],
    ['a missing input', 'DSA_E_ARGUMENT', /sin/, (i) => set(i, 'sin', undefined)],
    ['topk 0', 'DSA_E_ARGUMENT', /topk/, (i) => i, { topk: 0 }],
    ['sparseMode 2', 'DSA_E_ARGUMENT', /sparseMode/, (i) => i, { sparseMode: 2 as 3 }],
    ['a negative softmaxScale', 'DSA_E_ARGUMENT', /softmaxScale/, (i) => i, { softmaxScale: -1 }],
    ['a softmaxScale past float32', 'DSA_E_ARGUMENT', /softmaxScale: expected a positive number within float32 range/, (i) => i, { softmaxScale: 1e39 }],
    ['a softmaxScale that rounds to 0 in float32', 'DSA_E_ARGUMENT', /softmaxScale/, (i) => i, { softmaxScale: 1e-46 }],
  ];
  it.each(cases)('%s → %s', async (_name, code, message, mutate, options) => {
    for (const mode of ['fused', 'chain'] as const) {
      const inputs = mutate(withFreshCaches(good));
      const snap = [inputs.kvCache, inputs.krCache, inputs.indexKCache].map((t) => (t ? t.data.slice() : undefined));
      for (const call of [() => sparseAttention(inputs, { ...options, mode }), () => sparseAttentionAsync(inputs, { ...options, mode })]) {
        let err: unknown;
        try {
          await call();
        } catch (e) {
          err = e;
        }
        expect(isDsaError(err), `${mode}: ${String(err)}`).toBe(true);
        expect((err as { code: string }).code).toBe(code);
        expect((err as Error).message).toMatch(message);
      }
      [inputs.kvCache, inputs.krCache, inputs.indexKCache].forEach((t, k) => t && expect(sameBytes(t.data, snap[k])).toBe(true));
    }
  });
});
