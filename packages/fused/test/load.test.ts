import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { nativeAddon, versions } from '../src/index.js';

const pkg = (dir: string): { version: string; dependencies?: Record<string, string> } =>
  JSON.parse(readFileSync(new URL(`../../${dir}/package.json`, import.meta.url), 'utf8'));

describe('@dsa/fused addon', () => {
  it('loads through the shared loader and reports its version', () => {
    expect(nativeAddon().version).toBe(pkg('fused').version);
  });

  it('versions(): the stage kernels compiled in are the stage packages installed, pinned exactly', () => {
    const v = versions();
    const deps = pkg('fused').dependencies!;
    expect(v.fused).toBe(pkg('fused').version);
    for (const stage of ['mla-prolog', 'indexer-prolog', 'lightning-indexer', 'sparse-flash-attn']) {
      const name = `@dsa/${stage}`;
      expect(v.fusedKernels[name]).toBe(pkg(stage).version);
      expect(v.stages[name]).toBe(pkg(stage).version);
      expect(deps[name]).toBe(`workspace:${pkg(stage).version}`);
    }
  });
});
