import { openCheckpoint } from '../dist/index.js';
const ckpt = await openCheckpoint('/tmp/dsa-ckpt-bench-5ih7JQ');
for (let k = 0; k < 6; k++) {
  for (const dtype of ['float8_e4m3fn']) {
    const c0 = process.cpuUsage(); const t0 = performance.now();
    await ckpt.layerWeights(0, { dtype });
    const c = process.cpuUsage(c0);
    console.log(dtype, (performance.now() - t0).toFixed(0), 'ms wall', (c.user / 1000).toFixed(0), 'user', (c.system / 1000).toFixed(0), 'sys');
  }
}
await ckpt.close();
