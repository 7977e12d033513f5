import { clone, compareBf16, DsaError, ErrorCode, readGoldenCase, toFloat32, type Bf16Tensor, type I32Tensor } from '@dsa/tensor-core';
import { pct, type CliValues } from './cli-options.js';
import { sparseAttention } from './index.js';
import type { SparseAttentionInputs } from './inputs.js';
import type { SparseAttentionOptions } from './presets.js';

/** `dsa check <folder>`: the spec's accuracy measures of one golden-format case. */
export async function runCheck(folder: string | undefined, values: CliValues): Promise<number> {
  if (!folder) throw new DsaError(ErrorCode.ARGUMENT, 'folder: expected a case folder, e.g. dsa check ../shared/golden/tiny', 'folder');
  const mode = (values.mode as string | undefined) ?? 'fused';
  if (mode !== 'fused' && mode !== 'chain') throw new DsaError(ErrorCode.ARGUMENT, `--mode: expected fused or chain, got ${JSON.stringify(mode)}`, 'mode');
  const c = readGoldenCase(folder);
  // Golden cases hold bf16 caches.
  const inputs = { ...c.inputs } as unknown as SparseAttentionInputs & Record<'kvCache' | 'krCache' | 'indexKCache', Bf16Tensor>;
  for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) inputs[k] = clone(inputs[k]);
  const r = sparseAttention(inputs, { ...(c.options as SparseAttentionOptions), mode, returnIndices: true });
  console.log(`case ${c.name} (${c.manifest.note ?? ''}), mode ${mode}`);
  let ok = true;
  const row = (name: string, actual: Bf16Tensor, expected: Bf16Tensor | undefined): void => {
    if (!expected) return;
    const m = compareBf16(toFloat32(actual), toFloat32(expected));
    ok &&= m.pass;
    console.log(`  ${name.padEnd(12)} relative L2 ${m.relL2.toExponential(2).padStart(9)}   isclose(rtol 0.03, atol 1e-4) ${pct(m.close).padStart(5)}   ${m.pass ? 'pass' : 'FAIL'}`);
  };
  row('out', r.out, c.outputs.out as Bf16Tensor);
  for (const k of ['kvCache', 'krCache', 'indexKCache'] as const) row(k, inputs[k], c.outputs[k] as Bf16Tensor);
  const golden = c.outputs.indices as I32Tensor | undefined;
  if (golden) {
    const topk = golden.shape[2]!;
    const rows = golden.data.length / topk;
    let exact = 0;
    let setEqual = 0;
    let differing = 0;
    for (let i = 0; i < rows; i++) {
      const a = r.indices!.data.subarray(i * topk, (i + 1) * topk);
      const e = golden.data.subarray(i * topk, (i + 1) * topk);
      if (a.every((v, j) => v === e[j])) exact++;
      const s = new Set(a);
      const miss = Array.from(e).filter((v) => !s.has(v)).length;
      if (miss === 0) setEqual++;
      differing += miss;
    }
    ok &&= differing <= rows; // the LI test's rule: at most one differing index per row on average
    console.log(`  indices      ${setEqual}/${rows} rows with the same set, ${exact}/${rows} in the same order, ${differing} differing indices`);
  }
  console.log(ok ? 'PASS' : 'FAIL');
  return ok ? 0 : 1;
}
