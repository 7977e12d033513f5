// The defined result of a NaN/±Inf in x (README "Non-finite inputs"), exactly, in both modes and on
// every ISA path: the stages' rules composed.
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ArrayToF32, clone, cpuFeatures, ISAS, setIsa, type Bf16Tensor } from '@dsa/tensor-core';
import { sparseAttention } from '../src/index.js';
import { randomProblem, sameBytes, withFreshCaches } from './helpers.js';

const isas = ISAS.filter((i) => ISAS.indexOf(i) <= ISAS.indexOf(cpuFeatures().best));
const BAD = [['NaN', 0x7fc0], ['+Inf', 0x7f80], ['-Inf', 0xff80]] as const;
afterAll(() => setIsa('auto'));

describe.each(isas)('a non-finite value in x (%s)', (isa) => {
  const cfg = { b: 2, s1: 3, acts: [14, 20], blockSize: 4 };
  const inputs = randomProblem(62, cfg);
  const { s1 } = cfg;
  const topk = 6;
  const bt = 1; // the poisoned token: sequence 0, token 1 (position act − s1 + 1)
  const pt = cfg.acts[0]! - s1 + bt;
  const st = inputs.cacheIndex.data[bt]!;

  it.each(BAD.flatMap(([n, b]) => (['fused', 'chain'] as const).map((m) => [n, b, m] as const)))('%s (bits %i, %s mode): its token\'s rows and the rows that select its key are NaN, the rest as without it', (name, bits, mode) => {
    setIsa(isa);
    const cleanRun = withFreshCaches(inputs);
    const clean = sparseAttention(cleanRun, { topk, mode, returnIndices: true });
    const x = clone(inputs.x);
    x.data[bt * x.shape[2]! + 3] = bits;
    const run = withFreshCaches({ ...inputs, x });
    const r = sparseAttention(run, { topk, mode, returnIndices: true });
    // Caches: the token's rows are NaN (its kr row ±Inf or NaN), every other row as in the clean call.
    for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) {
      const d = run[k].shape[3]!;
      for (let row = 0; row < run[k].data.length / d; row++) {
        const got = run[k].data.subarray(row * d, (row + 1) * d);
        if (row !== st) expect(sameBytes(got, cleanRun[k].data.subarray(row * d, (row + 1) * d)), `${k} row ${row}`).toBe(true);
        else if (k === 'krCache' && name !== 'NaN') expect(bf16ArrayToF32(got).every((v) => !Number.isFinite(v)), `${k} row ${row}`).toBe(true);
        else expect(bf16ArrayToF32(got).every(Number.isNaN), `${k} row ${row}`).toBe(true);
      }
    }
    const rowSize = r.out.shape[2]! * r.out.shape[3]!;
    const out = (o: Bf16Tensor, row: number) => o.data.subarray(row * rowSize, (row + 1) * rowSize);
    let selecting = 0;
    for (let row = 0; row < cfg.b * s1; row++) {
      const picked = Array.from(r.indices!.data.subarray(row * topk, (row + 1) * topk));
      const got = bf16ArrayToF32(out(r.out, row));
      if (row >= s1) {
        // The other sequence never reads the token: bytes as without it.
        expect(sameBytes(out(r.out, row), out(clean.out, row)) && picked.every((p, j) => p === clean.indices!.data[row * topk + j])).toBe(true);
      } else if (row === bt) {
        // Its query is NaN: every indexer head's ReLU gives 0, all scores tie at 0, the first positions win.
        const eff = cfg.acts[0]! - (s1 - 1 - row);
        expect(picked).toEqual(Array.from({ length: topk }, (_, j) => (j < eff ? j : -1)));
        expect(got.every(Number.isNaN), `out row ${row}`).toBe(true);
      } else if (picked.includes(pt)) {
        selecting++;
        expect(got.every(Number.isNaN), `out row ${row} selects the token's key`).toBe(true);
      } else {
        expect(got.every(Number.isFinite), `out row ${row}`).toBe(true);
      }
    }
    expect(selecting, 'rows that select the token\'s key (one with this seed)').toBe(1);
  });
});
