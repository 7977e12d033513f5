import { setNumThreads, Rng, setIsa } from '@dsa/tensor-core';
import { nativeAddon } from '../dist/index.js';
setNumThreads(1);
if (process.env.ISA) setIsa(process.env.ISA);
const addon = nativeAddon();
const H = 64, D = 128, K = 2048, B = 128, keys = 32768, blocks = keys / B;
const rng = new Rng(1);
const kb = rng.normalTensor([blocks * B * D]).data;
const k8 = new Uint8Array(blocks * B * 132);
for (let i = 0; i < k8.length; i++) k8[i] = (i * 2654435761 >>> 13) & 0x7e;
const q = rng.normalTensor([1, 1, H, D]), w = rng.normalTensor([1, 1, H]);
const table = { dtype: 'int32', shape: [1, blocks], data: Int32Array.from({ length: blocks }, (_, i) => i) };
const act = { dtype: 'int32', shape: [1], data: Int32Array.of(keys) };
const idx = { dtype: 'int32', shape: [1, 1, K], data: new Int32Array(K) };
const caches = { bf16: { dtype: 'bfloat16', shape: [blocks, B, 1, D], data: kb }, fp8: { dtype: 'uint8', shape: [blocks, B, 1, 132], data: k8 } };
const res = { bf16: [], fp8: [] };
for (let r = 0; r < 5; r++) for (const [n, c] of Object.entries(caches)) {
  const u0 = process.cpuUsage();
  for (let i = 0; i < 5; i++) addon.run(q, w, c, table, act, idx, null, K, 3);
  const u = process.cpuUsage(u0);
  res[n].push(u.user / 1000 / 5);
}
for (const [n, v] of Object.entries(res)) console.log(n, 'cpu ms per call (median)', v.sort((a, b) => a - b)[2].toFixed(2));
