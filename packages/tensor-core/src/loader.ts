import { existsSync, readdirSync, readFileSync } from 'node:fs';
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

/** node-gyp-build's prebuild matching (platform-arch folder, then napi/libc/armv tags), as it resolves. */
interface PrebuildTags { file: string }
interface PrebuildTuple { name: string }
interface NodeGypBuild {
  parseTuple(name: string): PrebuildTuple | undefined;
  matchTuple(platform: string, arch: string): (t: PrebuildTuple | undefined) => t is PrebuildTuple;
  compareTuples(a: PrebuildTuple, b: PrebuildTuple): number;
  parseTags(file: string): PrebuildTags | undefined;
  matchTags(runtime: string, abi: string): (t: PrebuildTags | undefined) => t is PrebuildTags;
  compareTags(runtime: string): (a: PrebuildTags, b: PrebuildTags) => number;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * The prebuilt binary for this platform shipped in the package (`prebuilds/linux-x64/<name>.napi.glibc.node`,
 * the prebuildify layout), chosen by node-gyp-build's own matching; undefined when none fits.
 */
export function prebuildPath(packageRoot: string): string | undefined {
  const ngb = require('node-gyp-build') as NodeGypBuild;
  const dir = join(packageRoot, 'prebuilds');
  const tuple = listDir(dir).map(ngb.parseTuple).filter(ngb.matchTuple(process.platform, process.arch)).sort(ngb.compareTuples)[0];
  if (!tuple) return undefined;
  const winner = listDir(join(dir, tuple.name))
    .map(ngb.parseTags)
    .filter(ngb.matchTags('node', process.versions.modules))
    .sort(ngb.compareTags('node'))[0];
  return winner && join(dir, tuple.name, winner.file);
}

/**
 * Load a native addon the way sharp and node-llama-cpp do: an explicit path from the environment,
 * then the package's own build (build/Release: a source build), then the prebuilt binary for this
 * platform; if nothing loads, one error that lists every attempt, the platform and the commands that
 * fix it in a user's project. The addon's version must match its package.json.
 */
export function loadAddon<T extends ConfigurableAddon>(spec: AddonSpec): T {
  const root = typeof spec.packageRoot === 'string' ? spec.packageRoot : fileURLToPath(spec.packageRoot);
  const pkgVersion = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const envVar = addonEnvVar(spec.addonName);
  const override = process.env[envVar];
  // An explicit override that fails is an error, not a reason to quietly load something else.
  const tried: string[] = [];
  const load = (path: string): T | undefined => {
    if (!existsSync(path)) {
      tried.push(`${path}: not found`);
      return undefined;
    }
    let addon: T;
    try {
      addon = require(path) as T;
    } catch (e) {
      tried.push(`${path}: ${(e as Error).message.split('\n')[0]}`);
      return undefined;
    }
    if (addon.version !== pkgVersion) {
      tried.push(`${path}: version ${addon.version} does not match ${spec.packageName} ${pkgVersion} (stale build)`);
      return undefined;
    }
    registerAddon(addon);
    return addon;
  };
  if (override) {
    const addon = load(override);
    if (addon) return addon;
  } else {
    for (const build of ['Release', 'Debug']) {
      const addon = load(join(root, 'build', build, `${spec.addonName}.node`));
      if (addon) return addon;
    }
    // The prebuild is looked up only when no source build loads (node-gyp-build is not needed before).
    const prebuild = prebuildPath(root);
    if (prebuild) {
      const addon = load(prebuild);
      if (addon) return addon;
    } else {
      tried.push(`${join(root, 'prebuilds', `${process.platform}-${process.arch}`)}/*.node: not found`);
    }
  }
  const platform = `${process.platform}-${process.arch}, node ${process.versions.node}, Node-API ${process.versions.napi}`;
  throw new DsaError(
    ErrorCode.BINDING,
    `binding: could not load the native addon of ${spec.packageName} on ${platform}.\nTried:\n  - ${tried.join('\n  - ')}\n` +
      `Prebuilt binaries ship for linux-x64 and linux-arm64 (glibc >= 2.28). Elsewhere, or to rebuild, compile it ` +
      `(needs CMake >= 3.18 and a C++17 compiler) with:\n` +
      `  npm rebuild ${spec.packageName} --build-from-source   (or: DSA_BUILD_FROM_SOURCE=1 npm rebuild ${spec.packageName})\n` +
      `or set ${envVar} to the path of a built ${spec.addonName}.node.`,
    'binding',
  );
}
