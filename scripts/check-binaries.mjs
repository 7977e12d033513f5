#!/usr/bin/env node
// Checks the native binaries a package ships (prebuilds/<platform>-<arch>/*.node), without loading
// them, so foreign-architecture prebuilds are checked too (readelf reads any ELF):
//   - the ELF machine matches the folder's arch;
//   - glibc symbol versions needed are <= 2.28, and nothing from libstdc++ (GLIBCXX/CXXABI);
//   - the version in the .dsa_version section is the package.json version (and, for @dsa/fused, the
//     stage versions compiled in equal the exact versions package.json pins);
//   - binaries of this machine's platform that pass these checks also load and report that version.
// Usage: node scripts/check-binaries.mjs [--require linux-x64,linux-arm64] <package dir>...
// Runs as every native package's prepack script and in scripts/dist-check.sh. Exit 1 on any failure.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const MAX_GLIBC = [2, 28];
const MACHINE = { x64: 'X86-64', arm64: 'AArch64' };
const require = createRequire(import.meta.url);

const args = process.argv.slice(2);
let required = (process.env.DSA_REQUIRE_PREBUILDS ?? 'linux-x64').split(',').filter(Boolean);
const ri = args.indexOf('--require');
if (ri >= 0) required = args.splice(ri, 2)[1].split(',').filter(Boolean);
const dirs = args.length ? args : [];

const readelf = (flags, file) => execFileSync('readelf', [...flags, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** The string in an ELF section as readelf -p prints it (`[     0]  0.1.0`), or null. */
function sectionString(file, section) {
  let out;
  try {
    out = readelf(['-W', '-p', section], file);
  } catch {
    return null;
  }
  const m = /\[\s*0\]\s+(.*)/.exec(out);
  return m ? m[1].trim() : null;
}

function newerThan(v, max) {
  const p = v.split('.').map(Number);
  for (let i = 0; i < Math.max(p.length, max.length); i++) {
    if ((p[i] ?? 0) !== (max[i] ?? 0)) return (p[i] ?? 0) > (max[i] ?? 0);
  }
  return false;
}

const failures = [];
const report = [];
for (const dir of dirs) {
  const root = resolve(dir);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const fail = (msg) => failures.push(`${pkg.name}: ${msg}`);
  const prebuilds = join(root, 'prebuilds');
  const platforms = existsSync(prebuilds) ? readdirSync(prebuilds) : [];
  for (const r of required) if (!platforms.includes(r)) fail(`no prebuilds/${r}/ (build it with scripts/prebuild.sh)`);
  for (const platform of platforms) {
    const arch = platform.split('-')[1];
    const files = readdirSync(join(prebuilds, platform)).filter((f) => f.endsWith('.node'));
    if (files.length !== 1) fail(`prebuilds/${platform}: expected one .node, found ${files.length}`);
    for (const f of files) {
      const file = join(prebuilds, platform, f);
      const where = `prebuilds/${platform}/${f}`;
      const machine = /Machine:\s+(.*)/.exec(readelf(['-h'], file))?.[1] ?? '?';
      if (!machine.includes(MACHINE[arch] ?? '?')) fail(`${where} is built for ${machine}, not ${arch}`);
      // "Version needs" lists every symbol version the binary requires, per library.
      const needs = [...readelf(['-W', '-V'], file).matchAll(/Name: ((?:GLIBC|GLIBCXX|CXXABI)_[A-Z0-9_.]+)/g)].map((m) => m[1]);
      const glibc = needs.filter((n) => /^GLIBC_\d/.test(n)).map((n) => n.slice(6));
      const newest = glibc.reduce((m, v) => (m === 'none' || newerThan(v, m.split('.').map(Number)) ? v : m), 'none');
      const bad = needs.filter((n) => !/^GLIBC_\d/.test(n) || newerThan(n.slice(6), MAX_GLIBC));
      if (bad.length) fail(`${where} needs ${bad.join(', ')} (allowed: GLIBC_2.28 and older, no GLIBCXX/CXXABI)`);
      const version = sectionString(file, '.dsa_version');
      if (version !== pkg.version) fail(`${where} reports version ${version}, package.json says ${pkg.version}`);
      if (pkg.name === '@dsa/fused') {
        const stages = sectionString(file, '.dsa_stage_versions') ?? '';
        for (const entry of stages.split(',').filter(Boolean)) {
          const [stage, v] = entry.split('=');
          const pin = String(pkg.dependencies?.[`@dsa/${stage}`] ?? '').replace(/^workspace:/, '');
          if (pin !== v) fail(`${where} was compiled from @dsa/${stage} ${v}, package.json pins "${pin}" (must be that exact version)`);
        }
        if (!stages) fail(`${where} has no .dsa_stage_versions section`);
      }
      // Only a binary that passed the ELF checks is loaded: one that failed may not even load safely
      // (an ASan build aborts the process unless its runtime is preloaded).
      if (platform === `${process.platform}-${process.arch}` && !bad.length) {
        try {
          const loaded = require(file).version;
          if (loaded !== pkg.version) fail(`${where} loads and reports ${loaded}, not ${pkg.version}`);
        } catch (e) {
          fail(`${where} does not load here: ${e.message.split('\n')[0]}`);
        }
      }
      report.push(`${pkg.name} ${where}: ${machine}, newest GLIBC_${newest}, version ${version}`);
    }
  }
}
for (const line of report) console.log(line);
for (const f of failures) console.error(`FAIL ${f}`);
process.exit(failures.length ? 1 : 0);
