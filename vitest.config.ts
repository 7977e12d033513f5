import { defineConfig } from 'vitest/config';

// One run over every package. Native addons load in forked workers (not worker threads) so a
// crash in one file cannot take the runner down; each package's tests import its sources, which
// load the built addons. The JSON report is what .ci/run counts.
export default defineConfig({
  test: {
    projects: ['packages/*'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // DSA_TEST_REPORT lets the sanitizer run write its own report beside the main one.
    reporters: ['default', ['json', { outputFile: process.env.DSA_TEST_REPORT ?? '.ci/results/vitest.json' }]],
  },
});
