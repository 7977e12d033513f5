// The defined result of NaN/±Inf inputs (README "Non-finite inputs"), exactly, on every ISA path.
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ArrayToF32, cpuFeatures, ISAS, setIsa, type Bf16Tensor } from '@dsa/tensor-core';
import { mlaProlog } from '../src/index.js';
import { cloneTensor, makeInputs, sameBytes, type Bf16CacheInputs, type Dims } from './helpers.js';

const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(cpuFeatures().best));
const BAD = [['NaN', 0x7fc0], ['-NaN', 0xffc0], ['+Inf', 0x7f80], ['-Inf', 0xff80]] as const;
const d: Dims = { b: 2, s1: 3, h: 48, qLora: 32, n: 3, qkNope: 16, rope: 8, kvLora: 24, blockNum: 3, blockSize: 8 };
afterAll(() => setIsa('auto'));

function call(i: Bf16CacheInputs) {
  const run = { ...i, kvCache: cloneTensor(i.kvCache), krCache: cloneTensor(i.krCache) };
  return { ...mlaProlog(run), kvCache: run.kvCache, krCache: run.krCache };
}
const rowOf = (t: Bf16Tensor, r: number, w: number): Uint16Array => t.data.subarray(r * w, (r + 1) * w);
const allNan = (bits: Uint16Array): boolean => bf16ArrayToF32(bits).every(Number.isNaN);
const noneFinite = (bits: Uint16Array): boolean => bf16ArrayToF32(bits).every((v) => !Number.isFinite(v));

describe.each(isas)('non-finite inputs (%s)', (isa) => {
  const inputs = makeInputs(d, 41, { skip: 1 });
  const T = d.b * d.s1;
  const widths = { qNorm: d.qLora, qNope: d.n * d.kvLora, qRope: d.n * d.rope } as const;

  it.each(BAD)('%s in x row t: token t gets all-NaN q outputs and kv row (kr row non-finite); nothing else changes', (name, bits) => {
    setIsa(isa);
    const clean = call(inputs);
    const t = Array.from(inputs.cacheIndex.data).findIndex((s) => s >= 0 && s % 2 === 1);
    const slot = inputs.cacheIndex.data[t]!;
    const x = cloneTensor(inputs.x);
    x.data[t * d.h + 5] = bits;
    const got = call({ ...inputs, x });
    for (const k of ['qNorm', 'qNope', 'qRope'] as const) {
      for (let u = 0; u < T; u++) {
        if (u === t) expect(allNan(rowOf(got[k], u, widths[k])), `${k}[${u}]`).toBe(true);
        else expect(sameBytes(rowOf(got[k], u, widths[k]), rowOf(clean[k], u, widths[k])), `${k}[${u}]`).toBe(true);
      }
    }
    expect(allNan(rowOf(got.kvCache, slot, d.kvLora)), 'kv row').toBe(true);
    // RoPE mixes two non-finite values with cos and sin: ±Inf or NaN (NaN when the input was a NaN).
    const kr = rowOf(got.krCache, slot, d.rope);
    expect(name.includes('NaN') ? allNan(kr) : noneFinite(kr), 'kr row').toBe(true);
    for (const [k, w] of [['kvCache', d.kvLora], ['krCache', d.rope]] as const) {
      for (let r = 0; r < d.blockNum * d.blockSize; r++) {
        if (r !== slot) expect(sameBytes(rowOf(got[k], r, w), rowOf(clean[k], r, w)), `${k} row ${r}`).toBe(true);
      }
    }
  });

  it.each(BAD)('%s in wDq: every token gets all-NaN qNope and qRope; the caches are written as without it', (name, bits) => {
    setIsa(isa);
    const clean = call(inputs);
    const wDq = cloneTensor(inputs.wDq);
    wDq.data[3 * d.qLora + 7] = bits; // ND [h, qLora]: column 7 of every token's latent query
    const got = call({ ...inputs, wDq });
    for (const k of ['qNope', 'qRope'] as const) expect(allNan(got[k].data), k).toBe(true);
    // RMSNorm of a row with an infinite column: the scale is 0, so that column is NaN and the rest 0.
    const norm = bf16ArrayToF32(got.qNorm.data);
    for (let u = 0; u < T; u++) {
      for (let c = 0; c < d.qLora; c++) {
        const v = norm[u * d.qLora + c]!;
        expect(name.includes('NaN') || c === 7 ? Number.isNaN(v) : v === 0, `qNorm[${u}, ${c}] = ${v}`).toBe(true);
      }
    }
    expect(sameBytes(got.kvCache.data, clean.kvCache.data) && sameBytes(got.krCache.data, clean.krCache.data)).toBe(true);
  });
});
