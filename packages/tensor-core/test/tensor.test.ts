import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  checkIntRange, checkTensor, DimBinder, DsaError, fromFloat32, fromNZ, isDsaError, readBin, readGoldenCase, Rng,
  tensor, toFloat32, toNZ, writeBin, zeros,
} from '../src/index.js';

const GOLDEN = join(import.meta.dirname, '../../../../shared/golden');

function expectDsa(fn: () => unknown, code: string, text: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(isDsaError(e)).toBe(true);
    expect((e as DsaError).code).toBe(code);
    expect((e as Error).message).toMatch(text);
    return;
  }
  throw new Error('expected a DsaError');
}

describe('tensor constructors', () => {
  it('builds, converts and checks sizes', () => {
    const t = fromFloat32([1, 2.5, -3], [3]);
    expect(t.dtype).toBe('bfloat16');
    expect(Array.from(toFloat32(t))).toEqual([1, 2.5, -3]);
    expect(zeros('int32', [2, 3]).data).toBeInstanceOf(Int32Array);
    expectDsa(() => tensor('float32', [2, 2], new Float32Array(3)), 'DSA_E_SHAPE', /expected 4 elements.*got 3/);
    expectDsa(() => tensor('bfloat16', [2], new Float32Array(2) as never), 'DSA_E_DTYPE', /Uint16Array/);
  });
});

describe('NZ layout', () => {
  it('places (k, n) at (n>>4)*K*16 + k*16 + (n&15) and round-trips', () => {
    const rng = new Rng(3);
    const w = rng.uniformTensor([32, 48]);
    const nz = toNZ(w);
    for (const [k, n] of [[0, 0], [5, 17], [31, 47], [16, 32]] as const) {
      expect(nz.data[(n >> 4) * 32 * 16 + k * 16 + (n & 15)]).toBe(w.data[k * 48 + n]);
    }
    expect(fromNZ(nz).data).toEqual(w.data);
    expectDsa(() => toNZ(rng.uniformTensor([24, 16]), 'wDq'), 'DSA_E_SHAPE', /wDq: NZ needs K % 16 == 0/);
  });
});

describe('Rng', () => {
  it('is reproducible and roughly uniform / normal', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    for (let i = 0; i < 10; i++) expect(a.nextU32()).toBe(b.nextU32());
    const r = new Rng(7);
    let s = 0;
    let s2 = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const v = r.normal();
      s += v;
      s2 += v * v;
    }
    expect(Math.abs(s / n)).toBeLessThan(0.05);
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.05);
    const u = Array.from({ length: 1000 }, () => r.uniform(-2, 3));
    expect(Math.min(...u)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...u)).toBeLessThan(3);
  });
});

describe('file I/O', () => {
  it('writes and reads raw little-endian files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsa-io-'));
    const t = fromFloat32([1, -2, 3.5, 4], [2, 2], 'float32');
    writeBin(join(dir, 'a.bin'), t);
    expect(readBin(join(dir, 'a.bin'), 'float32', [2, 2]).data).toEqual(t.data);
    expectDsa(() => readBin(join(dir, 'a.bin'), 'float32', [3]), 'DSA_E_SHAPE', /holds 4 float32 values/);
    expectDsa(() => readBin(join(dir, 'missing.bin'), 'int32'), 'DSA_E_IO', /cannot read/);
  });

  it('reads the golden manifest format', () => {
    const c = readGoldenCase(join(GOLDEN, 'tiny'));
    expect(c.inputs.wDq!.format).toBe('NZ');
    expect(c.inputs.x!.shape).toEqual([2, 1, 256]);
    expect(c.outputs.indices!.dtype).toBe('int32');
    expect(c.options.topk).toBe(16);
  });
});

describe('validation', () => {
  it('checks tensors structurally and names the argument', () => {
    expectDsa(() => checkTensor('kvCache', { dtype: 'float32', shape: [1], data: new Float32Array(1) }, { dtype: 'bfloat16' }), 'DSA_E_DTYPE', /kvCache: expected dtype bfloat16, got float32/);
    expectDsa(() => checkTensor('x', 5, { dtype: 'bfloat16' }), 'DSA_E_ARGUMENT', /x: expected a tensor/);
    expectDsa(() => checkTensor('w', { dtype: 'bfloat16', shape: [16, 16], data: new Uint16Array(256), format: 'NZ' }, { dtype: 'bfloat16' }), 'DSA_E_FORMAT', /w: expected format ND, got NZ/);
    expectDsa(() => checkTensor('w', { dtype: 'bfloat16', shape: [2, 3], data: new Uint16Array(5) }, { dtype: 'bfloat16' }), 'DSA_E_SHAPE', /needs 6 elements, data has 5/);
    const ok = checkTensor('w', { dtype: 'bfloat16', shape: [16, 32], data: new Uint16Array(512), format: 'NZ' }, { dtype: 'bfloat16', formats: ['ND', 'NZ'] });
    expect(ok.shape).toEqual([16, 32]);
  });

  it('binds dimensions across arguments', () => {
    const d = new DimBinder();
    d.match('x', zeros('bfloat16', [2, 1, 64]), ['b', 's1', 'h']);
    expectDsa(() => d.match('wDq', zeros('bfloat16', [63, 8]), ['h', 'q']), 'DSA_E_SHAPE', /wDq: expected shape\[0\] \(h\) = 64 as given by x.shape\[2\], got 63/);
    expectDsa(() => d.match('cos', zeros('bfloat16', [2, 1]), ['b', 's1', 'r']), 'DSA_E_SHAPE', /cos: expected rank 3/);
    expect(d.get('h')).toBe(64);
  });

  it('checks index ranges and names the offending element', () => {
    const t = tensor('int32', [2, 2], Int32Array.from([0, 3, 9, 1]));
    expectDsa(() => checkIntRange('blockTable', t, 0, 8), 'DSA_E_RANGE', /blockTable\[1, 0\]: expected a value in \[0, 8\], got 9/);
  });
});

describe('addon loader', () => {
  it('an override that does not load is an error listing what was tried and how to build', async () => {
    const { spawnSync } = await import('node:child_process');
    const script = `import('${new URL('../dist/index.js', import.meta.url).href}').then(t => t.cpuFeatures()).catch(e => { console.log(e.code); console.log(e.message); })`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, DSA_ADDON_TENSOR_CORE: '/nonexistent/dsa.node' }, encoding: 'utf8' });
    expect(r.stdout).toMatch(/DSA_E_BINDING/);
    expect(r.stdout).toMatch(/\/nonexistent\/dsa.node: not found/);
    expect(r.stdout).toMatch(/npm rebuild @dsa\/tensor-core --build-from-source/);
    expect(r.stdout).toMatch(/DSA_BUILD_FROM_SOURCE=1 npm rebuild @dsa\/tensor-core/);
    expect(r.stdout).toMatch(/linux|darwin|win32/);
  });
});
