// Soak: 10,000 decode steps (sync and async mixed, sequences admitted and freed) twice; the two runs
// must hash equal and resident memory must stay flat. Usage: node bench/soak.mjs [steps]
import { soak } from '../dist/soak.js';

const steps = Number(process.argv[2] ?? 10000);
const a = await soak(steps, 1);
const b = await soak(steps, 1);
const fmt = (r) => r.rssMB.map((v) => v.toFixed(0)).join(' ');
console.log(`run 1: ${steps} steps in ${(a.ms / 1e3).toFixed(1)} s, RSS MB every 500 steps: ${fmt(a)}`);
console.log(`run 2: ${steps} steps in ${(b.ms / 1e3).toFixed(1)} s, RSS MB every 500 steps: ${fmt(b)}`);
const growth = Math.max(...b.rssMB) - b.rssMB[0];
console.log(`outputs identical across runs: ${a.hash === b.hash}; RSS growth over run 2: ${growth.toFixed(1)} MB`);
process.exit(a.hash === b.hash ? 0 : 1);
