// The defined result of NaN/±Inf inputs (README "Non-finite inputs"), exactly, on every ISA path.
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ArrayToF32, cpuFeatures, ISAS, setIsa, type Bf16Tensor } from '@dsa/tensor-core';
import { indexerProlog } from '../src/index.js';
import { type Bf16CacheInputs, type Dims, makeCase } from './helpers.js';

const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(cpuFeatures().best));
const BAD = [['NaN', 0x7fc0], ['-NaN', 0xffc0], ['+Inf', 0x7f80], ['-Inf', 0xff80]] as const;
const d: Dims = { b: 2, s1: 3, h: 48, qLora: 32, heads: 3, di: 24, rope: 8, blocks: 3, blockSize: 8 };
afterAll(() => setIsa('auto'));

function call(i: Bf16CacheInputs) {
  const run = { ...i, indexKCache: { ...i.indexKCache, data: i.indexKCache.data.slice() } };
  return { ...indexerProlog(run), indexKCache: run.indexKCache };
}
const rowOf = (t: Bf16Tensor, r: number, w: number): Uint16Array => t.data.subarray(r * w, (r + 1) * w);
const same = (a: Uint16Array, b: Uint16Array): boolean => a.length === b.length && a.every((v, i) => v === b[i]);
const allNan = (bits: Uint16Array): boolean => bf16ArrayToF32(bits).every(Number.isNaN);
const noneFinite = (bits: Uint16Array): boolean => bf16ArrayToF32(bits).every((v) => !Number.isFinite(v));
const withBad = (t: Bf16Tensor, at: number, bits: number): Bf16Tensor => {
  const data = t.data.slice();
  data[at] = bits;
  return { ...t, data };
};

describe.each(isas)('non-finite inputs (%s)', (isa) => {
  const inputs = makeCase(d, 17);
  const T = d.b * d.s1;
  const t = Array.from(inputs.cacheIndex.data).findIndex((s) => s >= 0);
  const slot = inputs.cacheIndex.data[t]!;
  const q = d.heads * d.di;

  it.each(BAD)('%s in x row t: token t gets an all-NaN key row and non-finite weights; its query and everything else as without it', (name, bits) => {
    setIsa(isa);
    const clean = call(inputs);
    const got = call({ ...inputs, x: withBad(inputs.x, t * d.h + 5, bits) });
    expect(allNan(rowOf(got.indexKCache, slot, d.di)), 'key row').toBe(true);
    const w = rowOf(got.weights, t, d.heads);
    expect(name.includes('NaN') ? allNan(w) : noneFinite(w), 'weights[t]').toBe(true);
    for (let u = 0; u < T; u++) {
      expect(same(rowOf(got.query, u, q), rowOf(clean.query, u, q)), `query[${u}]`).toBe(true);
      if (u !== t) expect(same(rowOf(got.weights, u, d.heads), rowOf(clean.weights, u, d.heads)), `weights[${u}]`).toBe(true);
    }
    for (let r = 0; r < d.blocks * d.blockSize; r++) {
      if (r !== slot) expect(same(rowOf(got.indexKCache, r, d.di), rowOf(clean.indexKCache, r, d.di)), `key row ${r}`).toBe(true);
    }
  });

  it.each(BAD)('%s in qNorm row t: token t gets a non-finite query (NaN for a NaN); weights and the cache as without it', (name, bits) => {
    setIsa(isa);
    const clean = call(inputs);
    const got = call({ ...inputs, qNorm: withBad(inputs.qNorm, t * d.qLora + 3, bits) });
    const row = rowOf(got.query, t, q);
    expect(name.includes('NaN') ? allNan(row) : noneFinite(row), 'query[t]').toBe(true);
    for (let u = 0; u < T; u++) if (u !== t) expect(same(rowOf(got.query, u, q), rowOf(clean.query, u, q)), `query[${u}]`).toBe(true);
    expect(same(got.weights.data, clean.weights.data) && same(got.indexKCache.data, clean.indexKCache.data)).toBe(true);
  });
});
