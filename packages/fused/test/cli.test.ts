import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../dist/cli.js');
const GOLDEN = join(import.meta.dirname, '../../../../shared/golden');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

describe('the dsa command', () => {
  it('check prints the accuracy measures of a golden case and passes', () => {
    for (const mode of ['fused', 'chain']) {
      const r = run('check', join(GOLDEN, 'mtp-empty-row'), '--mode', mode);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/out\s+relative L2 .* pass/);
      expect(r.stdout).toMatch(/indices\s+\d+\/\d+ rows with the same set/);
      expect(r.stdout.trim().endsWith('PASS')).toBe(true);
    }
  });

  it('explains bad usage', () => {
    expect(run('help').stdout).toMatch(/dsa demo/);
    const bad = run('demo', '--batch', 'zero');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--batch: expected an integer/);
    const missing = run('check', '/nonexistent/case');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/DSA_E_IO/);
    expect(run('frobnicate').status).toBe(2);
  });
});
