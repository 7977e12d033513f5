// safetensors files: header parsing with every length, offset and shape checked against the file
// size (the header is untrusted input), and positional reads of just the byte ranges asked for.
// Format: 8-byte little-endian header length n, n bytes of UTF-8 JSON, then the data section.
import { open, type FileHandle } from 'node:fs/promises';
import { DsaError, ErrorCode } from './errors.js';

/** Bytes per element of the dtypes the format defines. */
export const SAFETENSORS_ITEMSIZE: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
});

/** Where one tensor lies in its file. */
export interface SafetensorsTensorInfo {
  name: string;
  dtype: string;
  shape: readonly number[];
  /** Absolute file offset of the first byte. */
  offset: number;
  byteLength: number;
}

export interface SafetensorsOpenOptions {
  /** Largest header accepted, in bytes (default 100 MiB, the format's own limit). */
  maxHeaderBytes?: number;
}

const DEFAULT_MAX_HEADER = 100 * 1024 * 1024;

function corrupt(path: string, what: string, tensor?: string): DsaError {
  return new DsaError(ErrorCode.CHECKPOINT, `${path}: ${tensor !== undefined ? `tensor ${JSON.stringify(tensor)}: ` : ''}${what}`, tensor ?? 'path');
}

function ioError(path: string, e: unknown): DsaError {
  return new DsaError(ErrorCode.IO, `${path}: ${(e as Error).message}`, 'path');
}

/** Fill dst from `position`, looping over short reads; a file that ends early is an error. */
async function readExact(fh: FileHandle, path: string, dst: Uint8Array, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < dst.length) {
    let n: number;
    try {
      ({ bytesRead: n } = await fh.read(dst, done, dst.length - done, position + done));
    } catch (e) {
      throw ioError(path, e);
    }
    if (n === 0) throw corrupt(path, `file ended at byte ${position + done} while reading ${what} (${dst.length} bytes from ${position}): truncated?`);
    done += n;
  }
}

function parseShape(path: string, name: string, v: unknown): number[] {
  if (!Array.isArray(v) || !v.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw corrupt(path, `shape: expected an array of non-negative integers, got ${JSON.stringify(v)}`, name);
  }
  return v as number[];
}

/**
 * Check one header entry against the data section's size; returns it with an absolute offset.
 * Unknown dtypes are kept (their byte range is still checked) and fail only when read as a type.
 */
function parseEntry(path: string, name: string, v: unknown, dataStart: number, dataSize: number): SafetensorsTensorInfo {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw corrupt(path, `expected an object with dtype, shape, data_offsets, got ${JSON.stringify(v)}`, name);
  const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof e.dtype !== 'string') throw corrupt(path, `dtype: expected a string, got ${JSON.stringify(e.dtype)}`, name);
  const shape = parseShape(path, name, e.shape);
  const off = e.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) {
    throw corrupt(path, `data_offsets: expected [begin, end] of non-negative integers, got ${JSON.stringify(off)}`, name);
  }
  const [begin, end] = off as [number, number];
  if (begin > end) throw corrupt(path, `data_offsets [${begin}, ${end}]: begin after end`, name);
  if (end > dataSize) {
    throw corrupt(path, `data_offsets [${begin}, ${end}] run past the end of the data section (${dataSize} bytes after the header; file truncated?)`, name);
  }
  const itemsize = SAFETENSORS_ITEMSIZE[e.dtype];
  if (itemsize !== undefined) {
    // Multiply step by step so a hostile shape cannot overflow past the check.
    let bytes = shape.includes(0) ? 0 : itemsize;
    for (const d of shape) {
      bytes *= d;
      if (bytes > Number.MAX_SAFE_INTEGER) break;
    }
    if (bytes !== end - begin) {
      throw corrupt(path, `shape [${shape.join(', ')}] of ${e.dtype} needs ${bytes > Number.MAX_SAFE_INTEGER ? 'more than 2^53' : bytes} bytes, data_offsets [${begin}, ${end}] hold ${end - begin}`, name);
    }
  }
  return { name, dtype: e.dtype, shape, offset: dataStart + begin, byteLength: end - begin };
}

/** An open safetensors file: the checked header, and positional reads of tensors or parts of them. */
export class SafetensorsFile {
  private closed = false;

  private constructor(
    readonly path: string,
    /** File size in bytes when it was opened. */
    readonly fileSize: number,
    /** The header's optional `__metadata__` string map. */
    readonly metadata: Readonly<Record<string, string>>,
    private readonly entries: ReadonlyMap<string, SafetensorsTensorInfo>,
    private readonly fh: FileHandle,
  ) {}

  /** Open and check a file; reads only its header. Throws DSA_E_IO (cannot open) or DSA_E_CHECKPOINT (damaged). */
  static async open(path: string, options: SafetensorsOpenOptions = {}): Promise<SafetensorsFile> {
    const maxHeader = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER;
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw ioError(path, e);
    }
    try {
      let size: number;
      try {
        size = (await fh.stat()).size;
      } catch (e) {
        throw ioError(path, e);
      }
      if (size < 8) throw corrupt(path, `${size} bytes: too short for a safetensors file (8-byte header length first)`);
      const lenBytes = new Uint8Array(8);
      await readExact(fh, path, lenBytes, 0, 'the header length');
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(size - 8)) throw corrupt(path, `header length ${n} runs past the end of the file (${size} bytes): truncated or not a safetensors file`);
      if (n > BigInt(maxHeader)) throw corrupt(path, `header length ${n} exceeds the limit of ${maxHeader} bytes`);
      if (n < 2n) throw corrupt(path, `header length ${n}: too short for a JSON object`);
      const headerLen = Number(n);
      const raw = new Uint8Array(headerLen);
      await readExact(fh, path, raw, 8, 'the header');
      let header: unknown;
      try {
        header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
      } catch (e) {
        throw corrupt(path, `the header is not valid UTF-8 JSON: ${(e as Error).message}`);
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) throw corrupt(path, 'the header is not a JSON object');
      const dataStart = 8 + headerLen;
      const dataSize = size - dataStart;
      const entries = new Map<string, SafetensorsTensorInfo>();
      let metadata: Record<string, string> = {};
      for (const [name, v] of Object.entries(header)) {
        if (name === '__metadata__') {
          if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.values(v).every((s) => typeof s === 'string')) {
            throw corrupt(path, `__metadata__: expected a map of strings, got ${JSON.stringify(v)}`);
          }
          metadata = { ...(v as Record<string, string>) };
          continue;
        }
        entries.set(name, parseEntry(path, name, v, dataStart, dataSize));
      }
      // Tensors may not share bytes (the format forbids it; a crafted file could alias them).
      const sorted = [...entries.values()].filter((e) => e.byteLength > 0).sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < sorted.length; i++) {
        const a = sorted[i - 1]!;
        const b = sorted[i]!;
        if (b.offset < a.offset + a.byteLength) throw corrupt(path, `data of ${JSON.stringify(a.name)} and ${JSON.stringify(b.name)} overlap`, b.name);
      }
      return new SafetensorsFile(path, size, Object.freeze(metadata), entries, fh);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** A tensor's dtype, shape and byte range; DSA_E_CHECKPOINT naming the file if it is absent. */
  info(name: string): SafetensorsTensorInfo {
    const e = this.entries.get(name);
    if (e === undefined) throw corrupt(this.path, 'not in this file', name);
    return e;
  }

  /**
   * Read `byteLength` bytes starting `byteStart` bytes into tensor `name` (the whole tensor by
   * default) into `dst` or a new buffer; the range must lie inside the tensor.
   */
  async read(name: string, byteStart = 0, byteLength?: number, dst?: Uint8Array): Promise<Uint8Array> {
    if (this.closed) throw new DsaError(ErrorCode.STATE, `${this.path}: the file is closed`, 'path');
    const e = this.info(name);
    const len = byteLength ?? e.byteLength - byteStart;
    if (!Number.isSafeInteger(byteStart) || !Number.isSafeInteger(len) || byteStart < 0 || len < 0 || byteStart + len > e.byteLength) {
      throw new DsaError(ErrorCode.RANGE, `${this.path}: tensor ${JSON.stringify(name)}: bytes [${byteStart}, ${byteStart + len}) lie outside its ${e.byteLength} bytes`, 'byteStart');
    }
    const out = dst ?? new Uint8Array(len);
    if (out.length < len) throw new DsaError(ErrorCode.SHAPE, `dst: expected at least ${len} bytes, got ${out.length}`, 'dst');
    await readExact(this.fh, this.path, out.subarray(0, len), e.offset + byteStart, `tensor ${JSON.stringify(name)}`);
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/** `SafetensorsFile.open`. */
export function openSafetensors(path: string, options?: SafetensorsOpenOptions): Promise<SafetensorsFile> {
  return SafetensorsFile.open(path, options);
}

/** One tensor to write: a safetensors dtype name, a shape and its bytes in row-major order. */
export interface SafetensorsWriteEntry {
  dtype: string;
  shape: readonly number[];
  data: ArrayBufferView;
}

/**
 * Write a safetensors file (tensors in the given order, header padded to 8 bytes). Little-endian
 * hosts only, like the rest of the project.
 */
export async function writeSafetensors(path: string, tensors: Readonly<Record<string, SafetensorsWriteEntry>>, metadata?: Readonly<Record<string, string>>): Promise<void> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const itemsize = SAFETENSORS_ITEMSIZE[t.dtype];
    if (itemsize === undefined) throw new DsaError(ErrorCode.DTYPE, `${name}: unknown safetensors dtype ${JSON.stringify(t.dtype)}`, name);
    const bytes = t.shape.reduce((a, d) => a * d, itemsize);
    if (bytes !== t.data.byteLength) {
      throw new DsaError(ErrorCode.SHAPE, `${name}: shape [${t.shape.join(', ')}] of ${t.dtype} needs ${bytes} bytes, data has ${t.data.byteLength}`, name);
    }
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const head = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  head.set(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(head.length), true);
  let fh: FileHandle;
  try {
    fh = await open(path, 'w');
  } catch (e) {
    throw ioError(path, e);
  }
  try {
    const parts = [prefix, head, ...Object.values(tensors).map((t) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))];
    for (const part of parts) {
      for (let done = 0; done < part.length;) done += (await fh.write(part, done, part.length - done)).bytesWritten;
    }
  } catch (e) {
    throw ioError(path, e);
  } finally {
    await fh.close();
  }
}
