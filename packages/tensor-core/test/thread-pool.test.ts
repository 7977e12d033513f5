// The kernel thread pool under thread-count changes. Runs in a child process with a time limit: a
// deadlocked native call cannot be interrupted from inside its own process.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const CORE = new URL('../dist/index.js', import.meta.url).href;

function runChild(body: string, timeoutMs: number) {
  const script = `const t = await import('${CORE}');\n${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: timeoutMs });
}

describe('thread pool', () => {
  it('a parallel call right after setNumThreads grows the pool never hangs, and the result does not change', () => {
    // New workers once took the last finished job for a new one and left their count twice: the
    // caller then waited forever (it hung the CI run in the sparse attention accuracy test).
    const child = runChild(
      `const rng = new t.Rng(3);
       const x = rng.normalTensor([64, 256]), w = rng.normalTensor([256, 1024]);
       t.setNumThreads(1);
       const want = Buffer.from(t.matmul(x, w).data.buffer);
       for (let i = 0; i < 3000; i++) {
         t.setNumThreads(1 + (i % 3));
         t.setNumThreads(2 + (i % 5));
         if (!Buffer.from(t.matmul(x, w).data.buffer).equals(want)) throw new Error('result changed at ' + i);
       }
       console.log('ok');`,
      60_000,
    );
    expect(child.error?.message ?? '', 'the child hung (killed at 60 s)').toBe('');
    expect(child.stderr).toBe('');
    expect(child.stdout.trim()).toBe('ok');
    expect(child.status).toBe(0);
  });
});
