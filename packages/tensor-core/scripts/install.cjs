#!/usr/bin/env node
// The `install` script of every native DSA package (run by npm/pnpm/yarn in the package's folder):
// keep the prebuilt binary when one for this platform loads, otherwise compile the addon with
// cmake-js (a dependency of tensor-core, like node-addon-api). A source build is forced by
// `npm rebuild <pkg> --build-from-source` (npm_config_build_from_source, the prebuild-install and
// node-gyp-build convention) or DSA_BUILD_FROM_SOURCE=1 (npm 11 stops passing unknown flags).
//
// In a source checkout (the package's src/ and tsconfig.json are present; neither is published)
// this does nothing: there `pnpm build` compiles every addon through turbo, and `pnpm install` must
// neither compile nor fail before the TypeScript is built.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const root = process.cwd();
const pkg = require(join(root, 'package.json'));
const addonName = `dsa_${pkg.name.replace(/^@dsa\//, '').replace(/-/g, '_')}`;
const log = (msg) => process.stderr.write(`${pkg.name}: ${msg}\n`);

function forced() {
  const env = process.env.DSA_BUILD_FROM_SOURCE;
  if (env && env !== '0' && env !== 'false') return true;
  const npm = process.env.npm_config_build_from_source;
  return npm === 'true' || npm === pkg.name;
}

/** Why the binary the loader would pick cannot be used, or null when one loads with the right version. */
async function unusable() {
  const { prebuildPath } = await import('../dist/loader.js');
  const local = join(root, 'build', 'Release', `${addonName}.node`);
  const path = existsSync(local) ? local : prebuildPath(root);
  if (!path) return `no prebuilt binary for ${process.platform}-${process.arch}`;
  try {
    const addon = require(path);
    if (addon.version !== pkg.version) return `${path} reports version ${addon.version}, not ${pkg.version}`;
    return null;
  } catch (e) {
    return `${path} does not load here (${String(e.message).split('\n')[0]})`;
  }
}

async function main() {
  if (existsSync(join(root, 'src')) && existsSync(join(root, 'tsconfig.json'))) return 0;
  if (!forced()) {
    const reason = await unusable();
    if (reason === null) return 0;
    log(`${reason}: building from source`);
  } else {
    log('building from source (requested)');
  }
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const started = Date.now();
  const r = spawnSync(process.execPath, [cmakeJs, 'rebuild', '--log-level', 'warn'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    log(
      `the source build failed (${r.error ? r.error.message : `exit ${r.status}`}). It needs CMake >= 3.18 and a C++17 ` +
        'compiler (g++ or clang) on PATH. Prebuilt binaries ship for linux-x64 and linux-arm64 with glibc >= 2.28; ' +
        'on macOS, musl (Alpine) and Windows the addon is built here. After installing the tools: ' +
        `npm rebuild ${pkg.name} --build-from-source`,
    );
    return 1;
  }
  log(`built build/Release/${addonName}.node from source in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return 0;
}

main().then((code) => process.exit(code), (e) => {
  log(e instanceof Error ? e.stack : String(e));
  process.exit(1);
});
