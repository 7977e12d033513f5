import { AsyncLocalStorage } from 'node:async_hooks';
import { DsaError, ErrorCode } from './errors.js';
import type { Tensor } from './tensor.js';

/**
 * Calls that touch the same cache buffers must not overlap: an async call writes caches on a worker
 * thread while JS keeps running. Async calls on a busy cache wait their turn (they are serialized
 * in call order); a sync call on a cache that an async call still holds throws DSA_E_STATE, since
 * waiting would block the event loop that has to finish the other call. Calls on different caches
 * run concurrently. A call made while its caller already holds the caches (the fused operator's
 * chain mode calling a stage, say) goes straight through: the holder is tracked per async context.
 * The state lives on globalThis so all packages (and copies of this one) agree.
 */
interface LockState {
  tails: WeakMap<ArrayBufferLike, Promise<void>>;
  held: WeakMap<ArrayBufferLike, number>;
  context: AsyncLocalStorage<ReadonlySet<ArrayBufferLike>>;
}

const KEY = Symbol.for('@dsa/tensor-core/cache-lock');
function state(): LockState {
  const g = globalThis as unknown as Record<symbol, LockState | undefined>;
  g[KEY] ??= { tails: new WeakMap(), held: new WeakMap(), context: new AsyncLocalStorage() };
  return g[KEY]!;
}

type Named = [name: string, tensor: Tensor | undefined];

function buffers(caches: readonly Named[]): ArrayBufferLike[] {
  const out = new Set<ArrayBufferLike>();
  for (const [, t] of caches) if (t?.data?.buffer) out.add(t.data.buffer);
  return [...out];
}

/** Throw DSA_E_STATE if an async call (other than the caller's own) holds any of these caches. */
export function assertCachesIdle(caches: readonly Named[]): void {
  const s = state();
  const mine = s.context.getStore();
  for (const [name, t] of caches) {
    const b = t?.data?.buffer;
    if (b && !mine?.has(b) && (s.held.get(b) ?? 0) > 0) {
      throw new DsaError(ErrorCode.STATE, `${name}: an async call on this cache has not settled yet; await it before a sync call`, name);
    }
  }
}

/** Run `fn` once no earlier async call holds any of these caches, holding them until it settles. */
export function withCaches<T>(caches: readonly Named[], fn: () => Promise<T>): Promise<T> {
  const s = state();
  const mine = s.context.getStore();
  const bufs = buffers(caches).filter((b) => !mine?.has(b));
  if (bufs.length === 0) return fn();
  const before = bufs.map((b) => s.tails.get(b)).filter((p): p is Promise<void> => p !== undefined);
  for (const b of bufs) s.held.set(b, (s.held.get(b) ?? 0) + 1);
  // Released before `run` settles, so code after `await` may make a sync call at once.
  const release = (): void => {
    for (const b of bufs) {
      const n = (s.held.get(b) ?? 1) - 1;
      if (n > 0) s.held.set(b, n);
      else s.held.delete(b);
      if (s.tails.get(b) === tail) s.tails.delete(b);
    }
  };
  const holding = new Set([...(mine ?? []), ...bufs]);
  const run = Promise.all(before).then(() =>
    s.context.run(holding, async () => {
      try {
        return await fn();
      } finally {
        release();
      }
    }),
  );
  const tail: Promise<void> = run.then(
    () => undefined,
    () => undefined,
  );
  for (const b of bufs) s.tails.set(b, tail);
  return run;
}
