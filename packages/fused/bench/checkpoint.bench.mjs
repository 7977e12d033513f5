// Load time of one DeepSeek-V3.2-sized layer from an FP8 checkpoint: writes a synthetic checkpoint of
// the real shapes (random e4m3 bytes, random block scales; 2 shards + index) to the temp folder, then
// times, in alternating rounds, (a) reading the same files with positional reads (the page-cache
// read ceiling of this run), (b) first touches of as much fresh memory as the bf16 result (what any
// load into new arrays pays), (c) ckpt.layerWeights(L) in bf16 and in the FP8 form, into new arrays
// and with `reuse` (an earlier result's arrays overwritten: a layer-by-layer load). Medians with
// min/max, and the process CPU time (all threads) beside the wall time: on a shared machine the
// CPU time is the steadier figure. The files were just written, so they sit in the page cache: this
// measures the loader against memory-speed reads, not the disk.
//   node bench/checkpoint.bench.mjs [--rounds 7] [--json <workspace>/bench-results/checkpoint.json] [--keep]
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { allocateLarge, getNumThreads, writeSafetensors } from '@dsa/tensor-core';
import { BenchRun } from '@dsa/tensor-core/bench';
import { openCheckpoint } from '../dist/index.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, json: { type: 'string' }, keep: { type: 'boolean' } } });
const rounds = Number(values.rounds ?? 7);
const run = new BenchRun('checkpoint', { threads: getNumThreads(), quick: false, rounds, keep: values.keep === true, json: values.json ?? null });
run.probe('before');

// DeepSeek-V3.2's attention dims (what config.json says for the published model).
const CONFIG = {
  hidden_size: 7168, num_attention_heads: 128, q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128, qk_rope_head_dim: 64,
  v_head_dim: 128, index_n_heads: 64, index_head_dim: 128, index_topk: 2048, num_hidden_layers: 1, rms_norm_eps: 1e-6, rope_theta: 10000,
  rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 },
  quantization_config: { quant_method: 'fp8', fmt: 'e4m3', weight_block_size: [128, 128] },
};

function fp8(rows, cols) {
  const data = new Uint8Array(rows * cols);
  randomFillSync(data);
  for (let i = 0; i < data.length; i++) if ((data[i] & 0x7f) === 0x7f) data[i] ^= 1; // no NaN codes
  const scale = Float32Array.from({ length: Math.ceil(rows / 128) * Math.ceil(cols / 128) }, () => 1e-4 * (1 + Math.random()));
  return [{ dtype: 'F8_E4M3', shape: [rows, cols], data }, { dtype: 'F32', shape: [Math.ceil(rows / 128), Math.ceil(cols / 128)], data: scale }];
}
const bf16 = (shape) => ({ dtype: 'BF16', shape, data: Uint16Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => 0x3c00 | (Math.random() * 256)) });

const c = CONFIG;
const p = 'model.layers.0.self_attn.';
const linears = {
  q_a_proj: [c.q_lora_rank, c.hidden_size],
  q_b_proj: [c.num_attention_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim), c.q_lora_rank],
  kv_a_proj_with_mqa: [c.kv_lora_rank + c.qk_rope_head_dim, c.hidden_size],
  kv_b_proj: [c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank],
  'indexer.wq_b': [c.index_n_heads * c.index_head_dim, c.q_lora_rank],
  'indexer.wk': [c.index_head_dim, c.hidden_size],
};
const shards = [{}, {}];
let i = 0;
for (const [name, [rows, cols]] of Object.entries(linears)) {
  const [w, s] = fp8(rows, cols);
  shards[i++ % 2][`${p}${name}.weight`] = w;
  shards[i % 2][`${p}${name}.weight_scale_inv`] = s; // scales in the other shard, as the real index often has it
}
shards[0][`${p}indexer.weights_proj.weight`] = bf16([c.index_n_heads, c.hidden_size]);
shards[1][`${p}q_a_layernorm.weight`] = bf16([c.q_lora_rank]);
shards[1][`${p}kv_a_layernorm.weight`] = bf16([c.kv_lora_rank]);
shards[0][`${p}indexer.k_norm.weight`] = { dtype: 'F32', shape: [c.index_head_dim], data: new Float32Array(c.index_head_dim).fill(1) };
shards[0][`${p}indexer.k_norm.bias`] = { dtype: 'F32', shape: [c.index_head_dim], data: new Float32Array(c.index_head_dim) };
// Bytes that belong to other modules (an MLP's worth) around the layer, as in a real shard.
shards[0]['model.layers.0.mlp.gate_proj.weight'] = fp8(2048, 7168)[0];

const dir = mkdtempSync(join(tmpdir(), 'dsa-ckpt-bench-'));
const files = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
const weightMap = {};
for (let s = 0; s < 2; s++) {
  await writeSafetensors(join(dir, files[s]), shards[s]);
  for (const name of Object.keys(shards[s])) weightMap[name] = files[s];
}
writeFileSync(join(dir, 'config.json'), JSON.stringify(CONFIG));
writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));

// Bytes a layer load reads: every attention tensor, but only the W_UK half of kv_b_proj.
const attnBytes = Object.entries(shards).flatMap(([, t]) => Object.entries(t))
  .filter(([n]) => n.startsWith(p))
  .reduce((a, [n, t]) => a + t.data.byteLength * (n === `${p}kv_b_proj.weight` ? 0.5 : 1), 0);
const fileBytes = shards.reduce((a, t) => a + Object.values(t).reduce((b, x) => b + x.data.byteLength, 0), 0);

/** Read both shards whole with 4 MiB positional reads into two warm buffers, like the loader. */
const readBufs = [new Uint8Array(4 << 20).fill(1), new Uint8Array(4 << 20).fill(1)];
async function readFiles() {
  let n = 0;
  const bufs = readBufs;
  for (const f of files) {
    const fh = await open(join(dir, f), 'r');
    let pos = 0;
    let k = 0;
    for (;;) {
      const { bytesRead } = await fh.read(bufs[k++ & 1], 0, 4 << 20, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
    }
    n += pos;
    await fh.close();
  }
  return n;
}

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const ckpt = await openCheckpoint(dir);
const KEYS = ['read', 'touch', 'bf16', 'fp8', 'bf16Reuse', 'fp8Reuse'];
const times = Object.fromEntries(KEYS.map((k) => [k, []]));
const cpu = Object.fromEntries(KEYS.map((k) => [k, []]));
/** Wall and process CPU time (all threads) of one awaited call. */
async function timed(key, fn) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await fn();
  times[key].push(performance.now() - t0);
  const c = process.cpuUsage(c0);
  cpu[key].push((c.user + c.system) / 1e3);
  return r;
}
let outBytes = { bf16: 0, fp8: 0 };
await readFiles(); // warm the page cache and the file system
let keepB = await ckpt.layerWeights(0);
let keepF = await ckpt.layerWeights(0, { dtype: 'float8_e4m3fn' });
const touchBytes = Object.values(keepB).reduce((a, t) => a + t.data.byteLength, 0);
let sink = 0;
for (let r = 0; r < rounds; r++) {
  await timed('read', readFiles);
  await timed('touch', async () => {
    const a = new Uint8Array(allocateLarge(touchBytes)); // allocated as the loader allocates its results
    for (let i = 0; i < a.length; i += 4096) a[i] = 1; // one write per page
    sink += a[a.length - 1];
  });
  const wb = await timed('bf16', () => ckpt.layerWeights(0));
  const wf = await timed('fp8', () => ckpt.layerWeights(0, { dtype: 'float8_e4m3fn' }));
  keepB = await timed('bf16Reuse', () => ckpt.layerWeights(0, { reuse: keepB }));
  keepF = await timed('fp8Reuse', () => ckpt.layerWeights(0, { dtype: 'float8_e4m3fn', reuse: keepF }));
  outBytes = {
    bf16: Object.values(wb).reduce((a, t) => a + t.data.byteLength, 0),
    fp8: Object.values(wf).reduce((a, t) => a + t.data.byteLength + (t.blockScale?.data.byteLength ?? 0), 0),
  };
}
await ckpt.close();
if (!values.keep) rmSync(dir, { recursive: true, force: true });

const stats = (key, bytes) => {
  const ms = times[key];
  return { medianMs: median(ms), minMs: Math.min(...ms), maxMs: Math.max(...ms), mbPerS: bytes / 1e6 / (median(ms) / 1e3), cpuMedianMs: median(cpu[key]) };
};
const result = {
  rounds,
  note: 'files freshly written, so in the page cache: reads run at memory speed, not disk speed; alternating rounds on a shared machine',
  layerFileBytes: attnBytes, shardBytes: fileBytes,
  threads: getNumThreads(),
  pageCacheRead: stats('read', fileBytes),
  freshMemoryTouch: stats('touch', touchBytes),
  bf16: { ...stats('bf16', attnBytes), outputBytes: outBytes.bf16 },
  fp8: { ...stats('fp8', attnBytes), outputBytes: outBytes.fp8 },
  bf16Reuse: { ...stats('bf16Reuse', attnBytes), outputBytes: outBytes.bf16 },
  fp8Reuse: { ...stats('fp8Reuse', attnBytes), outputBytes: outBytes.fp8 },
};
const f = (v, d = 1) => v.toFixed(d);
console.log(`checkpoint load, one DeepSeek-V3.2 layer's attention weights (${f(attnBytes / 1e6)} MB of FP8 + scales read; ${rounds} alternating rounds)`);
console.log('  what                          median ms    min ms    max ms   CPU ms     MB/s read   output MB');
const row = (name, s, out) => console.log(`  ${name.padEnd(28)} ${f(s.medianMs).padStart(9)} ${f(s.minMs).padStart(9)} ${f(s.maxMs).padStart(9)} ${f(s.cpuMedianMs, 0).padStart(8)} ${f(s.mbPerS, 0).padStart(13)} ${out === undefined ? '' : f(out / 1e6).padStart(11)}`);
row('page-cache read (ceiling)', result.pageCacheRead);
console.log(`  first touch of ${f(touchBytes / 1e6)} MB fresh memory ${f(result.freshMemoryTouch.medianMs).padStart(9)} ms (${f(result.freshMemoryTouch.cpuMedianMs, 0)} ms CPU): the floor of any load into new arrays`);
row('layerWeights bf16 [in,out]', result.bf16, outBytes.bf16);
row("layerWeights 'float8_e4m3fn'", result.fp8, outBytes.fp8);
row('bf16, reuse', result.bf16Reuse, outBytes.bf16);
row("'float8_e4m3fn', reuse", result.fp8Reuse, outBytes.fp8);
const pctOf = (s) => `${f((100 * s.mbPerS) / result.pageCacheRead.mbPerS, 0)}%`;
console.log(`  of the read rate: bf16 ${pctOf(result.bf16)} (reuse ${pctOf(result.bf16Reuse)}), FP8 ${pctOf(result.fp8)} (reuse ${pctOf(result.fp8Reuse)})`);
console.log(`  (${result.note})`);
if (sink < 0) console.log(sink);
run.probe('after');
run.row({ ...result, times, cpuTimes: cpu });
run.summarize("checkpoint load, one layer's attention weights from page-cached FP8 shards",
  `bf16 ${pctOf(result.bf16)} (reusing arrays ${pctOf(result.bf16Reuse)}), FP8 ${pctOf(result.fp8)} (reusing ${pctOf(result.fp8Reuse)}) of the page-cache read rate ` +
  `(${f(result.bf16.medianMs)} / ${f(result.fp8.medianMs)} ms vs ${f(result.pageCacheRead.medianMs)} ms)`);
run.write(values.json);
