import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

describe('worker_threads', () => {
  it('a worker thread loads every package and runs the operator, giving the main thread\'s bytes', async () => {
    const dist = new URL('../dist/', import.meta.url).href;
    const script = `
      const { parentPort } = require('node:worker_threads');
      (async () => {
        const { soak } = await import('${dist}soak.js');
        const r = await soak(200, 5);
        parentPort.postMessage(r.hash);
      })().catch((e) => parentPort.postMessage('error: ' + e.message));`;
    const hash = await new Promise<string>((resolve, reject) => {
      const w = new Worker(script, { eval: true });
      w.once('message', resolve);
      w.once('error', reject);
    });
    const { soak } = await import('../src/soak.js');
    expect(hash).toBe((await soak(200, 5)).hash);
  });
});
