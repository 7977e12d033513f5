import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensors, Rng, writeSafetensors } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'dsa-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;

/** A file from a header object (or raw header text) and a data section of `dataBytes` bytes. */
function rawFile(header: unknown, dataBytes: number, lengthField?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const head = Buffer.from(text, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(lengthField ?? BigInt(head.length));
  const path = join(dir, `f${fileNo++}.safetensors`);
  writeFileSync(path, Buffer.concat([prefix, head, Buffer.alloc(dataBytes, 0xab)]));
  return path;
}

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code: string; message: string };
  }
  throw new Error('expected a rejection');
}

describe('safetensors reader', () => {
  it('round-trips tensors of every width and reads sub-ranges at their positions', async () => {
    const rng = new Rng(3);
    const f8 = Uint8Array.from({ length: 7 * 13 }, () => rng.int(0, 256));
    const bf = Uint16Array.from({ length: 5 * 3 }, () => rng.int(0, 65536));
    const f32 = Float32Array.from({ length: 11 }, () => rng.normal());
    const path = join(dir, 'ok.safetensors');
    await writeSafetensors(path, {
      'a.weight': { dtype: 'F8_E4M3', shape: [7, 13], data: f8 },
      'b': { dtype: 'BF16', shape: [5, 3], data: bf },
      'c': { dtype: 'F32', shape: [11], data: f32 },
      'empty': { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
    }, { format: 'pt' });
    const f = await openSafetensors(path);
    try {
      expect(f.names()).toEqual(['a.weight', 'b', 'c', 'empty']);
      expect(f.metadata).toEqual({ format: 'pt' });
      expect(f.info('b')).toMatchObject({ dtype: 'BF16', shape: [5, 3], byteLength: 30 });
      expect(Array.from(await f.read('a.weight'))).toEqual(Array.from(f8));
      const b = await f.read('b');
      expect(Array.from(new Uint16Array(b.buffer, b.byteOffset, 15))).toEqual(Array.from(bf));
      const c = await f.read('c');
      expect(Array.from(new Float32Array(c.buffer, c.byteOffset, 11))).toEqual(Array.from(f32));
      // Row 3 of a [7, 13] byte matrix, into a caller's buffer.
      const dst = new Uint8Array(20).fill(0);
      await f.read('a.weight', 3 * 13, 13, dst);
      expect(Array.from(dst.subarray(0, 13))).toEqual(Array.from(f8.subarray(39, 52)));
      expect(dst[13]).toBe(0);
      expect((await f.read('empty')).length).toBe(0);
      expect((await rejection(f.read('a.weight', 90, 2))).code).toBe('DSA_E_RANGE');
      const missing = await rejection(f.read('nope'));
      expect(missing.code).toBe('DSA_E_CHECKPOINT');
      expect(missing.message).toContain('ok.safetensors');
      expect(missing.message).toContain('"nope"');
    } finally {
      await f.close();
    }
    expect((await rejection(f.read('b'))).code).toBe('DSA_E_STATE');
  });

  const entry = { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] };
  const damaged: [string, () => string, RegExp][] = [
    ['a file shorter than the length field', () => { const p = join(dir, 'short'); writeFileSync(p, Buffer.alloc(5)); return p; }, /too short/],
    ['a header length past the end of the file', () => rawFile({ t: entry }, 24, 1000n), /header length 1000 runs past the end/],
    ['a header length of 2^63 (no giant allocation)', () => rawFile({ t: entry }, 24, 1n << 63n), /runs past the end/],
    ['a header that is not JSON', () => rawFile('{"t": [1, 2', 24), /not valid UTF-8 JSON/],
    ['a header that is not UTF-8', () => { const p = rawFile('{"t":"xx"}', 0); const fd = openSync(p, 'r+'); writeSync(fd, Buffer.from([0xff, 0xfe]), 0, 2, 14); closeSync(fd); return p; }, /not valid UTF-8 JSON/],
    ['a header that is a JSON array', () => rawFile('[1, 2]', 0), /not a JSON object/],
    ['an entry that is not an object', () => rawFile({ t: 5 }, 0), /"t": expected an object/],
    ['a missing dtype', () => rawFile({ t: { shape: [1], data_offsets: [0, 4] } }, 4), /"t": dtype/],
    ['a negative dimension', () => rawFile({ t: { ...entry, shape: [-2, 3] } }, 24), /"t": shape/],
    ['a fractional offset', () => rawFile({ t: { ...entry, data_offsets: [0, 2.5] } }, 24), /"t": data_offsets/],
    ['offsets past the end of the data (truncated file)', () => rawFile({ t: { ...entry, shape: [4, 3], data_offsets: [0, 48] } }, 24), /"t": data_offsets \[0, 48\] run past the end.*truncated/],
    ['begin after end', () => rawFile({ t: { ...entry, data_offsets: [24, 0] } }, 24), /begin after end/],
    ['a shape that disagrees with the byte range', () => rawFile({ t: { ...entry, shape: [2, 4] } }, 24), /"t": shape \[2, 4\] of F32 needs 32 bytes/],
    ['a hostile shape (numel overflow)', () => rawFile({ t: { ...entry, shape: [2 ** 40, 2 ** 40, 2 ** 40] } }, 24), /"t": shape .* needs more than 2\^53 bytes/],
    ['overlapping tensors', () => rawFile({ a: entry, b: { ...entry, data_offsets: [16, 40] } }, 48), /overlap/],
    ['metadata that is not a string map', () => rawFile({ __metadata__: { a: 1 }, t: entry }, 24), /__metadata__/],
  ];
  for (const [what, make, message] of damaged) {
    it(`rejects ${what} with DSA_E_CHECKPOINT naming the file`, async () => {
      const path = make();
      const e = await rejection(openSafetensors(path));
      expect(e.code).toBe('DSA_E_CHECKPOINT');
      expect(e.message).toContain(path);
      expect(e.message).toMatch(message);
    });
  }

  it('a header over the limit, a missing file and a file truncated after opening', async () => {
    expect((await rejection(openSafetensors(rawFile({ t: entry }, 24), { maxHeaderBytes: 16 }))).message).toMatch(/exceeds the limit/);
    expect((await rejection(openSafetensors(join(dir, 'absent.safetensors')))).code).toBe('DSA_E_IO');
    const path = join(dir, 'shrinks.safetensors');
    await writeSafetensors(path, { t: { dtype: 'U8', shape: [4096], data: new Uint8Array(4096) } });
    const f = await openSafetensors(path);
    truncateSync(path, f.info('t').offset + 100);
    const e = await rejection(f.read('t'));
    expect(e.code).toBe('DSA_E_CHECKPOINT');
    expect(e.message).toMatch(/shrinks.safetensors: file ended at byte \d+ while reading tensor "t"/);
    await f.close();
  });

  it('keeps unknown dtypes (byte range still checked) and rejects bad writes', async () => {
    const f = await openSafetensors(rawFile({ t: { dtype: 'F4_WEIRD', shape: [3], data_offsets: [0, 2] } }, 2));
    expect(f.info('t').byteLength).toBe(2);
    await f.close();
    expect((await rejection(writeSafetensors(join(dir, 'x'), { t: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }))).code).toBe('DSA_E_SHAPE');
    expect((await rejection(writeSafetensors(join(dir, 'x'), { t: { dtype: 'Q4', shape: [1], data: new Uint8Array(1) } }))).code).toBe('DSA_E_DTYPE');
  });
});
