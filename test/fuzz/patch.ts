/** Small byte-level editing helpers for building broken images in tests. */
import { readFileSync, writeFileSync } from 'fs';
import { vhdChecksum } from '../../src/format/vhd/checksum';
import { HEADER_CHECKSUM_OFFSET } from '../../src/format/vhd/dynamicHeader';
import { FOOTER_CHECKSUM_OFFSET, hasFooterCookie } from '../../src/format/vhd/footer';

export class ImageBytes {
  constructor(public b: Buffer) {}

  static read(p: string): ImageBytes {
    return new ImageBytes(readFileSync(p));
  }

  write(p: string): string {
    writeFileSync(p, this.b);
    return p;
  }

  get size(): number {
    return this.b.length;
  }

  get endFooter(): number {
    return this.b.length - 512;
  }

  /** Offset of the dynamic header (from the footer copy at 0). */
  get header(): number {
    return Number(this.b.readBigUInt64BE(16));
  }

  get table(): number {
    return Number(this.b.readBigUInt64BE(this.header + 16));
  }

  get entries(): number {
    return this.b.readUInt32BE(this.header + 28);
  }

  batEntry(i: number): number {
    return this.b.readUInt32BE(this.table + i * 4);
  }

  setBat(i: number, v: number): this {
    this.b.writeUInt32BE(v >>> 0, this.table + i * 4);
    return this;
  }

  /** Sets a 32-bit field in every footer (both copies of a sparse image). */
  footer32(field: number, v: number, which: 'both' | 'end' | 'copy' = 'both'): this {
    for (const at of this.footers(which)) this.b.writeUInt32BE(v >>> 0, at + field);
    return this;
  }

  footer64(field: number, v: bigint, which: 'both' | 'end' | 'copy' = 'both'): this {
    for (const at of this.footers(which)) this.b.writeBigUInt64BE(BigInt.asUintN(64, v), at + field);
    return this;
  }

  header32(field: number, v: number): this {
    this.b.writeUInt32BE(v >>> 0, this.header + field);
    return this;
  }

  header64(field: number, v: bigint): this {
    this.b.writeBigUInt64BE(BigInt.asUintN(64, v), this.header + field);
    return this;
  }

  /** Locator entry i: code, space, length, offset (undefined keeps the field). */
  locator(i: number, f: { code?: string; space?: number; length?: number; offset?: number }): this {
    const at = this.header + 576 + i * 24;
    if (f.code !== undefined) this.b.write(f.code.padEnd(4, '\0').slice(0, 4), at, 'latin1');
    if (f.space !== undefined) this.b.writeUInt32BE(f.space >>> 0, at + 4);
    if (f.length !== undefined) this.b.writeUInt32BE(f.length >>> 0, at + 8);
    if (f.offset !== undefined) this.b.writeBigUInt64BE(BigInt(f.offset), at + 16);
    return this;
  }

  locatorEntry(i: number): { code: string; space: number; length: number; offset: number } {
    const at = this.header + 576 + i * 24;
    return { code: this.b.toString('latin1', at, at + 4), space: this.b.readUInt32BE(at + 4), length: this.b.readUInt32BE(at + 8), offset: Number(this.b.readBigUInt64BE(at + 16)) };
  }

  truncate(n: number): this {
    this.b = Buffer.from(this.b.subarray(0, n));
    return this;
  }

  append(extra: Buffer): this {
    this.b = Buffer.concat([this.b, extra]);
    return this;
  }

  /** Recomputes the checksums of the footers and the dynamic header that are present. */
  fixChecksums(): this {
    for (const at of this.footers('both')) {
      this.b.writeUInt32BE(vhdChecksum(this.b.subarray(at, at + 512), FOOTER_CHECKSUM_OFFSET), at + FOOTER_CHECKSUM_OFFSET);
    }
    if (this.b.length >= 512 && hasFooterCookie(this.b) && this.b.readUInt32BE(60) !== 2) {
      const h = this.header;
      if (h + 1024 <= this.b.length) {
        this.b.writeUInt32BE(vhdChecksum(this.b.subarray(h, h + 1024), HEADER_CHECKSUM_OFFSET), h + HEADER_CHECKSUM_OFFSET);
      }
    }
    return this;
  }

  private footers(which: 'both' | 'end' | 'copy'): number[] {
    const out: number[] = [];
    const end = this.b.length - 512;
    if (which !== 'copy' && end >= 0 && hasFooterCookie(this.b.subarray(end))) out.push(end);
    if (which !== 'end' && this.b.length > 512 && hasFooterCookie(this.b) && end !== 0) out.push(0);
    return out;
  }
}
