/**
 * The zip container of PyTorch's `.pth` files: a reader that validates every entry against the
 * file before touching it (truncation, overlapping entries, sizes, CRC-32, compression ratio) and
 * a writer of stored (uncompressed) entries whose data start on 64-byte boundaries, as
 * `torch.save` lays them out. Deflated entries are inflated with `fflate`; zip64 records are read.
 * @module
 */
import { inflateSync } from "fflate";

/** One entry of a zip archive, its bytes extracted. */
export interface ZipEntry {
  /** Path inside the archive. */
  readonly name: string;
  /** The (uncompressed) bytes. */
  readonly data: Uint8Array;
}

/** Limits applied while reading an archive. */
export interface ZipReadOptions {
  /** Most bytes all entries may inflate to together (default 64 GiB). */
  maxTotalBytes?: number;
  /** Highest uncompressed/compressed size ratio of a deflated entry (default 200). */
  maxRatio?: number;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32 (the zip/PNG polynomial) of `data`.
 *
 * @param data bytes
 * @returns the checksum as an unsigned 32-bit number
 */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function u64(v: DataView, at: number): number {
  const n = v.getBigUint64(at, true);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`zip64 value ${n} is too large`);
  return Number(n);
}

/** Reads the zip64 extra field (0x0001) of a central-directory record. */
function zip64Extra(
  v: DataView,
  at: number,
  len: number,
  want: { size: boolean; csize: boolean; offset: boolean },
): { size?: number; csize?: number; offset?: number } {
  const end = at + len;
  while (at + 4 <= end) {
    const id = v.getUint16(at, true), n = v.getUint16(at + 2, true);
    if (id === 1) {
      let p = at + 4;
      const out: { size?: number; csize?: number; offset?: number } = {};
      for (const k of ["size", "csize", "offset"] as const) {
        if (!want[k]) continue;
        if (p + 8 > at + 4 + n) break;
        out[k] = u64(v, p);
        p += 8;
      }
      return out;
    }
    at += 4 + n;
  }
  return {};
}

/**
 * Reads every entry of a zip archive held in memory. Refuses, naming the entry and numbers: a
 * missing end-of-central-directory record (truncated or not a zip), entries whose headers or data
 * lie past the end of the file, entries that overlap each other (overlap-based zip bombs),
 * compression other than stored/deflate, deflated entries whose declared size is more than
 * `maxRatio` × their compressed size or that inflate to another size than declared, a total above
 * `maxTotalBytes`, and CRC-32 mismatches.
 *
 * @param bytes the archive
 * @param source name used in error messages (a file path)
 * @param options size limits
 * @returns the entries in central-directory order
 */
export function readZip(
  bytes: Uint8Array,
  source = "zip data",
  options: ZipReadOptions = {},
): ZipEntry[] {
  const maxTotal = options.maxTotalBytes ?? 64 * 2 ** 30, maxRatio = options.maxRatio ?? 200;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (msg: string): never => {
    throw new Error(`Cannot read ${source}: ${msg}`);
  };
  // end of central directory: 22 bytes + comment (≤ 65535), searched backwards
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (v.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    fail(
      `no end-of-central-directory record in its ${bytes.length} bytes (truncated, or not a zip file)`,
    );
  }
  let count = v.getUint16(eocd + 10, true);
  let cdSize = v.getUint32(eocd + 12, true), cdOffset = v.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || v.getUint32(loc, true) !== 0x07064b50) {
      fail("zip64 end-of-central-directory locator missing");
    }
    const z = u64(v, loc + 8);
    if (z + 56 > bytes.length || v.getUint32(z, true) !== 0x06064b50) {
      fail(`zip64 end-of-central-directory record at ${z} is missing (truncated file?)`);
    }
    count = u64(v, z + 32);
    cdSize = u64(v, z + 40);
    cdOffset = u64(v, z + 48);
  }
  if (cdOffset + cdSize > bytes.length) {
    fail(
      `central directory [${cdOffset}, ${
        cdOffset + cdSize
      }) lies past the end of the ${bytes.length}-byte file (truncated?)`,
    );
  }
  const spans: { name: string; start: number; end: number }[] = [];
  const out: ZipEntry[] = [];
  let total = 0, p = cdOffset;
  const dec = new TextDecoder("utf-8", { fatal: false });
  for (let e = 0; e < count; e++) {
    if (p + 46 > cdOffset + cdSize || v.getUint32(p, true) !== 0x02014b50) {
      fail(`central-directory record ${e} at offset ${p} is malformed`);
    }
    const method = v.getUint16(p + 10, true), crc = v.getUint32(p + 16, true);
    let csize = v.getUint32(p + 20, true), size = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true), extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let local = v.getUint32(p + 42, true);
    const name = dec.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    if (size === 0xffffffff || csize === 0xffffffff || local === 0xffffffff) {
      const z = zip64Extra(v, p + 46 + nameLen, extraLen, {
        size: size === 0xffffffff,
        csize: csize === 0xffffffff,
        offset: local === 0xffffffff,
      });
      size = z.size ?? size;
      csize = z.csize ?? csize;
      local = z.offset ?? local;
    }
    p += 46 + nameLen + extraLen + commentLen;
    if (local + 30 > bytes.length || v.getUint32(local, true) !== 0x04034b50) {
      fail(`entry "${name}": local header at offset ${local} is missing (truncated file?)`);
    }
    const start = local + 30 + v.getUint16(local + 26, true) + v.getUint16(local + 28, true);
    const end = start + csize;
    if (end > bytes.length) {
      fail(
        `entry "${name}": its ${csize} bytes at offset ${start} run past the end of the ${bytes.length}-byte file (truncated)`,
      );
    }
    spans.push({ name, start: local, end });
    total += size;
    if (total > maxTotal) {
      fail(
        `entries declare ${total} bytes in all, more than the limit of ${maxTotal} (zip bomb?)`,
      );
    }
    let data: Uint8Array;
    if (method === 0) {
      if (csize !== size) {
        fail(`stored entry "${name}" has compressed size ${csize} ≠ size ${size}`);
      }
      data = bytes.subarray(start, end);
    } else if (method === 8) {
      if (size > maxRatio * csize + 1024) {
        fail(
          `deflated entry "${name}" declares ${size} bytes from ${csize} compressed (ratio ${
            (size / Math.max(csize, 1)).toFixed(0)
          } > ${maxRatio}: zip bomb?)`,
        );
      }
      let inflated: Uint8Array;
      try {
        inflated = inflateSync(bytes.subarray(start, end), { out: new Uint8Array(size + 1) });
      } catch (err) {
        return fail(`entry "${name}" does not inflate: ${(err as Error).message}`);
      }
      if (inflated.length !== size) {
        fail(
          `deflated entry "${name}" inflates to ${
            inflated.length > size ? "more than" : inflated.length
          } bytes, not the declared ${size}`,
        );
      }
      data = inflated;
    } else {
      return fail(`entry "${name}" uses compression method ${method} (only stored and deflate)`);
    }
    const got = crc32(data);
    if (got !== crc) {
      fail(
        `entry "${name}": CRC-32 ${got.toString(16)} ≠ recorded ${crc.toString(16)} (corrupt)`,
      );
    }
    out.push({ name, data });
  }
  spans.sort((a, b) => a.start - b.start);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i].start < spans[i - 1].end) {
      fail(
        `entries "${spans[i - 1].name}" and "${spans[i].name}" overlap (bytes ${spans[i].start}–${
          spans[i - 1].end
        }; an overlapping-entry zip bomb?)`,
      );
    }
  }
  return out;
}

/**
 * Writes a zip archive of stored (uncompressed) entries. Each entry's data starts on a multiple
 * of `align` bytes (padding goes into a local extra field, as PyTorch's writer does); zip64
 * records are added when offsets or sizes pass 4 GiB.
 *
 * @param entries names and bytes, in archive order
 * @param align data alignment in bytes (default 64)
 * @returns the archive bytes
 */
export function writeZip(entries: readonly ZipEntry[], align = 64): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let pos = 0;
  const big = (n: number) => n >= 0xffffffff;
  for (const e of entries) {
    const name = enc.encode(e.name);
    const crc = crc32(e.data), size = e.data.length;
    const z64 = big(size) || big(pos);
    const z64Local = big(size) ? 20 : 0; // local zip64 extra: id, len, size, csize
    const base = pos + 30 + name.length + z64Local + 4; // + padding extra header
    const pad = (align - (base % align)) % align;
    const local = new Uint8Array(30 + name.length + z64Local + 4 + pad);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, z64 ? 45 : 20, true);
    lv.setUint16(6, 0x0800, true); // UTF-8 names
    lv.setUint32(14, crc, true);
    lv.setUint32(18, big(size) ? 0xffffffff : size, true);
    lv.setUint32(22, big(size) ? 0xffffffff : size, true);
    lv.setUint16(26, name.length, true);
    lv.setUint16(28, z64Local + 4 + pad, true);
    local.set(name, 30);
    let x = 30 + name.length;
    if (z64Local) {
      lv.setUint16(x, 1, true);
      lv.setUint16(x + 2, 16, true);
      lv.setBigUint64(x + 4, BigInt(size), true);
      lv.setBigUint64(x + 12, BigInt(size), true);
      x += 20;
    }
    lv.setUint16(x, 0x4246, true); // "FB": PyTorch's padding field
    lv.setUint16(x + 2, pad, true);
    parts.push(local, e.data);
    const cz: number[] = [];
    if (big(size)) cz.push(size, size);
    if (big(pos)) cz.push(pos);
    const cext = cz.length ? 4 + 8 * cz.length : 0;
    const c = new Uint8Array(46 + name.length + cext);
    const cv = new DataView(c.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, z64 ? 45 : 20, true);
    cv.setUint16(6, z64 ? 45 : 20, true);
    cv.setUint16(8, 0x0800, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, big(size) ? 0xffffffff : size, true);
    cv.setUint32(24, big(size) ? 0xffffffff : size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint16(30, cext, true);
    cv.setUint32(42, big(pos) ? 0xffffffff : pos, true);
    c.set(name, 46);
    if (cext) {
      cv.setUint16(46 + name.length, 1, true);
      cv.setUint16(48 + name.length, 8 * cz.length, true);
      cz.forEach((n, i) => cv.setBigUint64(50 + name.length + 8 * i, BigInt(n), true));
    }
    central.push(c);
    pos += local.length + size;
  }
  const cdOffset = pos;
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  const z64 = big(cdOffset) || entries.length >= 0xffff;
  const tail = new Uint8Array((z64 ? 56 + 20 : 0) + 22);
  const tv = new DataView(tail.buffer);
  let t = 0;
  if (z64) {
    tv.setUint32(0, 0x06064b50, true);
    tv.setBigUint64(4, 44n, true);
    tv.setUint16(12, 45, true);
    tv.setUint16(14, 45, true);
    tv.setBigUint64(24, BigInt(entries.length), true);
    tv.setBigUint64(32, BigInt(entries.length), true);
    tv.setBigUint64(40, BigInt(cdSize), true);
    tv.setBigUint64(48, BigInt(cdOffset), true);
    tv.setUint32(56, 0x07064b50, true);
    tv.setBigUint64(64, BigInt(cdOffset + cdSize), true);
    tv.setUint32(72, 1, true);
    t = 76;
  }
  tv.setUint32(t, 0x06054b50, true);
  tv.setUint16(t + 8, z64 ? 0xffff : entries.length, true);
  tv.setUint16(t + 10, z64 ? 0xffff : entries.length, true);
  tv.setUint32(t + 12, z64 ? 0xffffffff : cdSize, true);
  tv.setUint32(t + 16, z64 ? 0xffffffff : cdOffset, true);
  const all = [...parts, ...central, tail];
  const out = new Uint8Array(all.reduce((a, b) => a + b.length, 0));
  let o = 0;
  for (const b of all) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}
