import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DsaError, ErrorCode } from './errors.js';
import { registerAddon, type ConfigurableAddon } from './runtime.js';

export interface AddonSpec {
  /** npm name, e.g. '@dsa/mla-prolog' (for messages and the build command). */
  packageName: string;
  /** The .node file's base name, e.g. 'dsa_mla_prolog'. */
  addonName: string;
  /** The package root (a directory path or a file: URL). */
  packageRoot: string | URL;
}

const require = createRequire(import.meta.url);

/** Name of the environment variable that overrides the addon path: DSA_ADDON_MLA_PROLOG etc. */
export function addonEnvVar(addonName: string): string {
  return `DSA_ADDON_${addonName.replace(/^dsa_/, '').toUpperCase()}`;
}

/**
 * Load a native addon the way sharp and node-llama-cpp do: an explicit path from the environment,
 * then the package's own build; if nothing loads, one error that lists every attempt, the platform
 * and the command that builds it. The addon's version must match its package.json.
 */
export function loadAddon<T extends ConfigurableAddon>(spec: AddonSpec): T {
  const root = typeof spec.packageRoot === 'string' ? spec.packageRoot : fileURLToPath(spec.packageRoot);
  const pkgVersion = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const envVar = addonEnvVar(spec.addonName);
  const candidates: string[] = [];
  const override = process.env[envVar];
  if (override) candidates.push(override);
  candidates.push(join(root, 'build', 'Release', `${spec.addonName}.node`));
  candidates.push(join(root, 'build', 'Debug', `${spec.addonName}.node`));

  const tried: string[] = [];
  for (const [i, path] of candidates.entries()) {
    // An explicit override that fails is an error, not a reason to quietly load something else.
    if (i === 1 && override) break;
    if (!existsSync(path)) {
      tried.push(`${path}: not found`);
      continue;
    }
    let addon: T;
    try {
      addon = require(path) as T;
    } catch (e) {
      tried.push(`${path}: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    if (addon.version !== pkgVersion) {
      tried.push(`${path}: version ${addon.version} does not match ${spec.packageName} ${pkgVersion} (stale build)`);
      continue;
    }
    registerAddon(addon);
    return addon;
  }
  const platform = `${process.platform}-${process.arch}, node ${process.versions.node}, Node-API ${process.versions.napi}`;
  throw new DsaError(
    ErrorCode.BINDING,
    `binding: could not load the native addon of ${spec.packageName} on ${platform}.\nTried:\n  - ${tried.join('\n  - ')}\n` +
      `Build it with: pnpm --filter ${spec.packageName} run build:native  (or set ${envVar} to a built ${spec.addonName}.node)`,
    'binding',
  );
}
