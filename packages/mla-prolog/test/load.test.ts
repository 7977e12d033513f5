import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { nativeAddon } from '../src/index.js';

describe('@dsa/mla-prolog addon', () => {
  it('loads through the shared loader and reports its version', () => {
    expect(nativeAddon().version).toBe(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
  });
});
