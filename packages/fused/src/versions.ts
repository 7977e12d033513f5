import { createRequire } from 'node:module';
import { nativeAddon } from './native.js';

const require = createRequire(import.meta.url);
const STAGES = ['@dsa/mla-prolog', '@dsa/indexer-prolog', '@dsa/lightning-indexer', '@dsa/sparse-flash-attn'] as const;

export interface Versions {
  /** This package and the fused addon (the loader checks they agree). */
  fused: string;
  /** The stage kernels compiled into the fused addon (fused mode), as the addon reports them. */
  fusedKernels: Record<string, string>;
  /** The installed stage packages (chain mode). package.json pins them to fusedKernels' versions. */
  stages: Record<string, string>;
  tensorCore: string;
}

function packageVersion(name: string): string {
  return (require(`${name}/package.json`) as { version: string }).version;
}

/** The versions of the kernels inside: `dsa --version` prints them. Loads the fused addon. */
export function versions(): Versions {
  const addon = nativeAddon();
  const fusedKernels: Record<string, string> = {};
  for (const entry of addon.stageVersions.split(',').filter(Boolean)) {
    const [stage, version] = entry.split('=') as [string, string];
    fusedKernels[`@dsa/${stage}`] = version;
  }
  const stages = Object.fromEntries(STAGES.map((name) => [name, packageVersion(name)]));
  return { fused: addon.version, fusedKernels, stages, tensorCore: packageVersion('@dsa/tensor-core') };
}
