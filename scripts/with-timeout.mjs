#!/usr/bin/env node
// Run a command with a wall-clock limit: node scripts/with-timeout.mjs SECONDS COMMAND [ARGS...]
// A test that deadlocks inside a native call cannot be interrupted by the test runner's own timeouts
// (its worker is blocked in C++), so a hang would otherwise last until CI's limit and show nothing.
// Past the limit the whole process group is killed and the exit status is 124, as timeout(1) gives.
import { spawn } from 'node:child_process';

const [seconds, command, ...args] = process.argv.slice(2);
const limit = Number(seconds);
if (!command || !(limit > 0)) {
  console.error('usage: node scripts/with-timeout.mjs SECONDS COMMAND [ARGS...]');
  process.exit(2);
}
const child = spawn(command, args, { stdio: 'inherit', detached: true, shell: process.platform === 'win32' });
let timedOut = false;
const timer = setTimeout(() => {
  timedOut = true;
  console.error(`\nwith-timeout: "${[command, ...args].join(' ')}" still running after ${limit} s: killed (a hang; see the last test files above)`);
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}, limit * 1000);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    try {
      process.kill(-child.pid, sig);
    } catch {
      child.kill(sig);
    }
  });
}
child.on('error', (e) => {
  clearTimeout(timer);
  console.error(`with-timeout: cannot run ${command}: ${e.message}`);
  process.exit(127);
});
child.on('exit', (code, signal) => {
  clearTimeout(timer);
  process.exit(timedOut ? 124 : code ?? (signal ? 128 : 1));
});
