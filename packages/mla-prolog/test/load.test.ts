import { describe, expect, it } from 'vitest';
import { nativeAddon } from '../src/index.js';

describe('@dsa/mla-prolog addon', () => {
  it('loads through the shared loader and reports its version', () => {
    expect(nativeAddon().version).toBe('0.1.0');
  });
});
