import { readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DsaError, ErrorCode } from './errors.js';
import { ARRAY_OF, numel, type Dtype, type Format, type Tensor } from './tensor.js';

function readBytes(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new DsaError(ErrorCode.IO, `path: cannot read ${path}: ${(e as Error).message}`, 'path');
  }
}

/** Read a raw little-endian file of `dtype` values. Without `shape`, the result is 1-D. */
export function readBin<D extends Dtype>(path: string, dtype: D, shape?: readonly number[], format: Format = 'ND'): Tensor<D> {
  const buf = readBytes(path);
  const size = ARRAY_OF[dtype]?.BYTES_PER_ELEMENT;
  if (size === undefined) throw new DsaError(ErrorCode.DTYPE, `dtype: expected one of ${Object.keys(ARRAY_OF).join(', ')}, got ${String(dtype)}`, 'dtype');
  if (buf.byteLength % size !== 0) {
    throw new DsaError(ErrorCode.IO, `path: ${path} has ${buf.byteLength} bytes, not a multiple of ${size} (${dtype})`, 'path');
  }
  const count = buf.byteLength / size;
  const dims = shape ?? [count];
  if (numel(dims) !== count) {
    throw new DsaError(ErrorCode.SHAPE, `shape: ${path} holds ${count} ${dtype} values, shape [${dims.join(', ')}] needs ${numel(dims)}`, 'shape');
  }
  // Copy into a fresh, aligned ArrayBuffer (the file buffer may sit at an odd offset in a pool).
  const ab = new ArrayBuffer(buf.byteLength);
  new Uint8Array(ab).set(buf);
  const data = new ARRAY_OF[dtype](ab);
  return { dtype, shape: [...dims], data: data as Tensor<D>['data'], format };
}

/** Write a tensor's storage as raw little-endian bytes. */
export function writeBin(path: string, t: Tensor): void {
  const d = t.data;
  try {
    writeFileSync(path, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  } catch (e) {
    throw new DsaError(ErrorCode.IO, `path: cannot write ${path}: ${(e as Error).message}`, 'path');
  }
}

export interface ManifestEntry {
  dtype: Dtype;
  shape: number[];
  format?: Format;
  file: string;
}

export interface GoldenManifest {
  note?: string;
  seed?: number;
  options: Record<string, unknown>;
  dims: Record<string, number>;
  inputs: Record<string, ManifestEntry>;
  outputs: Record<string, ManifestEntry>;
}

export interface GoldenCase {
  name: string;
  dir: string;
  manifest: GoldenManifest;
  options: Record<string, unknown>;
  dims: Record<string, number>;
  inputs: Record<string, Tensor>;
  outputs: Record<string, Tensor>;
}

/** Read one case folder in the `shared/golden/` format (manifest.json + raw .bin files). */
export function readGoldenCase(dir: string): GoldenCase {
  let manifest: GoldenManifest;
  try {
    manifest = JSON.parse(readBytes(join(dir, 'manifest.json')).toString('utf8')) as GoldenManifest;
  } catch (e) {
    if (e instanceof DsaError) throw e;
    throw new DsaError(ErrorCode.IO, `dir: ${dir}/manifest.json is not valid JSON: ${(e as Error).message}`, 'dir');
  }
  const load = (entries: Record<string, ManifestEntry>): Record<string, Tensor> => {
    const out: Record<string, Tensor> = {};
    for (const [name, e] of Object.entries(entries ?? {})) {
      out[name] = readBin(join(dir, e.file), e.dtype, e.shape, e.format ?? 'ND');
    }
    return out;
  };
  return {
    name: basename(dir),
    dir,
    manifest,
    options: manifest.options ?? {},
    dims: manifest.dims ?? {},
    inputs: load(manifest.inputs),
    outputs: load(manifest.outputs),
  };
}
