import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

const GOLDEN = join(import.meta.dirname, '../../../../shared/golden/tiny');
describe('worker_threads', () => {
  it('a worker thread loads every package and runs the operator, giving the main thread\'s bytes', async () => {
    const script = `
      const { parentPort } = require('node:worker_threads');
      (async () => {
        const { soak } = await import('${new URL('../dist/soak.js', import.meta.url).href}');
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

  it('each stage package works in a worker thread (and in two at once) with the main thread\'s bytes', async () => {
    const runner = new URL('./stages-run.mjs', import.meta.url).href;
    const inWorker = () =>
      new Promise<string>((resolve, reject) => {
        const w = new Worker(`
          const { parentPort, workerData } = require('node:worker_threads');
          import('${runner}').then((m) => m.runAllStages(workerData)).then((h) => parentPort.postMessage(h), (e) => parentPort.postMessage('error: ' + e.message));`, { eval: true, workerData: GOLDEN });
        w.once('message', resolve);
        w.once('error', reject);
      });
    const [w1, w2] = await Promise.all([inWorker(), inWorker()]);
    const { runAllStages } = (await import(runner)) as { runAllStages: (g: string) => Promise<string> };
    const main = await runAllStages(GOLDEN);
    expect(main).toMatch(/^[0-9a-f]{64}$/);
    expect(w1).toBe(main);
    expect(w2).toBe(main);
  });
});
