import { loadAddon } from './loader.js';
import type { ConfigurableAddon } from './runtime.js';
import type { Tensor } from './tensor.js';

export interface CoreAddon extends ConfigurableAddon {
  matmul(x: Tensor, w: Tensor, outDtype: string, out?: Tensor): Tensor;
  matmulBatched(x: Tensor, w: Tensor, outDtype: string, out?: Tensor): Tensor;
  packWeights(w: Tensor): Tensor<'bfloat16'>;
  probeRead(bytes: number, threads: number, reps: number): { bytes: number; passes: number[] };
  probeDot(iters: number, threads: number): { seconds: number; flops: number };
  activeIsa(): string;
  e4m3RowsToBf16(src: Uint8Array, row0: number, rows: number, cols: number, scale: Float32Array, blockRows: number, blockCols: number,
    dst: Uint16Array, offset: number, ld: number, transposed: boolean): void;
  allocateLarge(bytes: number): ArrayBuffer;
  cpuIdentity(): {
    vendor: string; brand: string; family: number; model: number; stepping: number; cacheSource: string;
    caches: { level: number; type: string; bytes: number; sharedBy: number }[];
  };
}

let addon: CoreAddon | undefined;

/** tensor-core's own addon, loaded on first use. */
export function coreAddon(): CoreAddon {
  addon ??= loadAddon<CoreAddon>({
    packageName: '@dsa/tensor-core',
    addonName: 'dsa_tensor_core',
    packageRoot: new URL('..', import.meta.url),
  });
  return addon;
}
