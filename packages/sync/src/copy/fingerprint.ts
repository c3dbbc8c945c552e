import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';

/**
 * Bucket fingerprints of a source table: for each bucket, the row count and a 64-bit xor of a
 * mix of (key hash, xmin). Computed in one streaming pass over binary COPY of two small columns,
 * so memory is fixed by the bucket count, not by the table size.
 */
export class Fingerprints {
  readonly buckets: number;
  /** Per bucket: count, lo, hi (three uint32). */
  readonly data: Uint32Array;

  constructor(buckets: number, data?: Uint32Array) {
    this.buckets = buckets;
    this.data = data ?? new Uint32Array(buckets * 3);
  }

  static fromBytes(buckets: number, bytes: Buffer | null): Fingerprints | null {
    if (!bytes || bytes.length !== buckets * 12) return null;
    // Buffer.alloc'd buffers larger than the pool own their ArrayBuffer at offset 0: no copy.
    if (bytes.byteOffset % 4 === 0) return new Fingerprints(buckets, new Uint32Array(bytes.buffer, bytes.byteOffset, buckets * 3));
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    return new Fingerprints(buckets, new Uint32Array(copy.buffer));
  }

  toBytes(): Buffer {
    return Buffer.from(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }

  /** Row count and xor of all row versions: what totalSelect() computes in SQL. */
  total(): { rows: number; hi: number; lo: number } {
    let rows = 0;
    let hi = 0;
    let lo = 0;
    for (let i = 0; i < this.data.length; i += 3) {
      rows += this.data[i]!;
      lo ^= this.data[i + 1]!;
      hi ^= this.data[i + 2]!;
    }
    return { rows, hi: hi >>> 0, lo: lo >>> 0 };
  }

  rows(): number {
    let n = 0;
    for (let b = 0; b < this.buckets; b++) n += this.data[b * 3]!;
    return n;
  }

  /** Adds a signed row-count delta and xors a version delta into one bucket (folding the target log). */
  xorBucket(bucket: number, rows: number, hi: number, lo: number): void {
    const i = bucket * 3;
    this.data[i] = this.data[i]! + rows;
    this.data[i + 1] = this.data[i + 1]! ^ lo;
    this.data[i + 2] = this.data[i + 2]! ^ hi;
  }

  setBucket(bucket: number, rows: number, hi: number, lo: number): void {
    const i = bucket * 3;
    this.data[i] = rows;
    this.data[i + 1] = lo;
    this.data[i + 2] = hi;
  }

  clone(): Fingerprints {
    return new Fingerprints(this.buckets, new Uint32Array(this.data));
  }

  /** Makes a bucket compare unequal next time (used for buckets whose rows were not applied). */
  poison(bucket: number): void {
    this.data[bucket * 3] = 0xffffffff;
  }

  /** Buckets that differ from another fingerprint set of the same size, as a bitmap, and their count. */
  diff(other: Fingerprints): { bitmap: Uint8Array; dirty: number; rows: number } {
    const bitmap = new Uint8Array(Math.ceil(this.buckets / 8));
    let dirty = 0;
    let rows = 0;
    for (let b = 0; b < this.buckets; b++) {
      const i = b * 3;
      if (this.data[i] !== other.data[i] || this.data[i + 1] !== other.data[i + 1] || this.data[i + 2] !== other.data[i + 2]) {
        bitmap[b >> 3]! |= 1 << (b & 7);
        dirty++;
        rows += this.data[i]!;
      }
    }
    return { bitmap, dirty, rows };
  }
}

/** A bitmap of every bucket. */
export function allBuckets(buckets: number): Uint8Array {
  const bitmap = new Uint8Array(Math.ceil(buckets / 8)).fill(0xff);
  if (buckets % 8) bitmap[bitmap.length - 1] = (1 << (buckets % 8)) - 1;
  return bitmap;
}

/** Sets the bits of `b` in `a`; returns the number of bits set in the result. */
export function unionInto(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    a[i] = a[i]! | b[i]!;
    let x = a[i]!;
    while (x) {
      n += x & 1;
      x >>= 1;
    }
  }
  return n;
}

/** Bucket count for a table of n rows: about 4 rows per bucket, a power of two, 256 … 2^20. */
export function chooseBuckets(rows: number): number {
  let b = 256;
  while (b < rows / 4 && b < 1 << 20) b *= 2;
  return b;
}

/** Keeps the stored bucket count unless the table grew or shrank by more than 4x (a rebucket means one full compare). */
export function keepOrChooseBuckets(stored: number | null, rows: number): number {
  const ideal = chooseBuckets(rows);
  if (stored && stored >= ideal / 4 && stored <= ideal * 4) return stored;
  return ideal;
}

/** Splits a signed 64-bit integer printed by PostgreSQL into unsigned 32-bit halves. */
export function splitInt64(text: string): { hi: number; lo: number } {
  const v = BigInt.asUintN(64, BigInt(text));
  return { hi: Number(v >> 32n), lo: Number(v & 0xffffffffn) };
}

/**
 * Streams `query` (which must select an int8 key hash and an int8 row version) with binary COPY
 * and folds each row into its bucket. Binary COPY tuple layout: int16 field count, then per field int32 length
 * and the bytes; the stream starts with an 11-byte signature, int32 flags and an extension area.
 */
export async function computeFingerprints(client: pg.ClientBase, query: string, buckets: number): Promise<Fingerprints> {
  const fp = new Fingerprints(buckets);
  const data = fp.data;
  const mask = buckets - 1;
  const stream = client.query(copyTo(`COPY (${query}) TO STDOUT (FORMAT binary)`));
  // A tuple split across two chunks is completed in this small buffer: no per-chunk concat.
  const TUPLE = 26;
  const edge = Buffer.alloc(TUPLE);
  let edgeLen = 0;
  let header: Buffer | null = Buffer.alloc(0);
  let done = false;
  const fold = (buf: Buffer, off: number) => {
    const b = ((buf[off + 10]! << 24 | buf[off + 11]! << 16 | buf[off + 12]! << 8 | buf[off + 13]!) & mask) * 3;
    data[b] = data[b]! + 1;
    // The version (second field) starts at byte 18: 2 (field count) + 4 (length) + 8 (key hash) + 4 (length).
    data[b + 2] = data[b + 2]! ^ (buf[off + 18]! << 24 | buf[off + 19]! << 16 | buf[off + 20]! << 8 | buf[off + 21]!);
    data[b + 1] = data[b + 1]! ^ (buf[off + 22]! << 24 | buf[off + 23]! << 16 | buf[off + 24]! << 8 | buf[off + 25]!);
  };
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let buf = chunk;
    let off = 0;
    if (header) {
      // Binary COPY header: 11-byte signature, int32 flags, int32 extension length, extension.
      header = Buffer.concat([header, buf]);
      if (header.length < 19 || header.length < 19 + header.readUInt32BE(15)) continue;
      buf = header;
      off = 19 + header.readUInt32BE(15);
      header = null;
    }
    if (done) continue;
    if (edgeLen > 0) {
      if (edgeLen < 2 || (edge[0] !== 0xff || edge[1] !== 0xff)) {
        const take = Math.min(TUPLE - edgeLen, buf.length - off);
        buf.copy(edge, edgeLen, off, off + take);
        edgeLen += take;
        off += take;
        if (edgeLen >= 2 && edge[0] === 0xff && edge[1] === 0xff) {
          done = true;
          continue;
        }
        if (edgeLen < TUPLE) continue;
        fold(edge, 0);
        edgeLen = 0;
      }
    }
    // Each tuple: 2 (field count) + 4 + 8 (int8 key hash) + 4 + 8 (int8 version) = 26 bytes;
    // the trailer is int16 -1.
    while (off + 2 <= buf.length) {
      if (buf[off] === 0xff && buf[off + 1] === 0xff) {
        done = true;
        break;
      }
      if (off + TUPLE > buf.length) break;
      fold(buf, off);
      off += TUPLE;
    }
    if (!done && off < buf.length) {
      buf.copy(edge, 0, off);
      edgeLen = buf.length - off;
    }
  }
  return fp;
}
