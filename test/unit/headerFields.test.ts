import { strict as assert } from 'assert';
import { openSync, writeSync, closeSync } from 'fs';
import * as path from 'path';
import { createChild } from '../../src/chain/createChild';
import { describeHeader, hexOf, showCode } from '../../src/chain/headerFields';
import { createImage } from '../../src/format/vhd/create';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { tempDir } from '../helpers/util';

describe('headerFields (core): every field with offset, raw hex and meaning', () => {
  const t = tempDir('hdr-');
  after(() => t.cleanup());

  it('lists footer, dynamic header and locator fields at their absolute offsets', async () => {
    const base = path.join(t.dir, 'base.vhd');
    const child = path.join(t.dir, 'child.vhd');
    await createImage(base, { size: 16 * 1024 * 1024, exactSize: true });
    await createChild(base, child);
    const img = await VhdImage.open(child);
    try {
      const d = describeHeader(img);
      const get = (s: string, n: string) => d.fields.find((f) => f.structure === s && f.name === n)!;
      const fo = img.layout.footerOffset;
      assert.equal(get('footer', 'cookie').offset, fo);
      assert.equal(get('footer', 'cookie').hex, Buffer.from('conectix').toString('hex').replace(/(..)(?!$)/g, '$1 '));
      assert.equal(get('footer', 'diskType').decoded, 'differencing');
      assert.equal(get('footer', 'uniqueId').decoded, img.uuid);
      assert.equal(get('footer', 'uniqueId').offset, fo + 68);
      assert.equal(get('dynamic header', 'blockSize').offset, 512 + 32);
      assert.match(get('dynamic header', 'blockSize').decoded, /2097152 bytes \(2 MiB\)/);
      assert.equal(get('dynamic header', 'parentUnicodeName').decoded, 'base.vhd');
      assert.equal(get('parent locator 0', 'platformCode').decoded, 'W2ru');
      assert.equal(get('parent locator 0', 'platformCode').offset, 512 + 576);
      assert.equal(get('parent locator 1', 'path').decoded, path.resolve(base));
      assert.ok(d.checksums.every((c) => c.ok));
      assert.ok(d.fields.every((f) => !f.problem));
    } finally { await img.close(); }
  });

  it('flags a wrong dynamic header checksum with stored and computed values', async () => {
    const p = path.join(t.dir, 'bad.vhd');
    await createImage(p, { size: 8 * 1024 * 1024, exactSize: true });
    const fd = openSync(p, 'r+');
    writeSync(fd, Buffer.from([0x12, 0x34, 0x56, 0x78]), 0, 4, 512 + 36);
    closeSync(fd);
    const img = await VhdImage.open(p);
    try {
      const d = describeHeader(img);
      const c = d.checksums.find((x) => x.structure === 'dynamic header')!;
      assert.equal(c.ok, false);
      assert.equal(c.stored, '0x12345678');
      assert.notEqual(c.computed, c.stored);
      assert.equal(d.fields.find((f) => f.structure === 'dynamic header' && f.name === 'checksum')!.problem, 'checksum is wrong');
    } finally { await img.close(); }
  });

  it('shows non-printable code bytes escaped and shortens long hex', () => {
    assert.equal(showCode('tap\0'), 'tap\\x00');
    assert.equal(showCode('a"<b'), 'a\\"<b');
    assert.match(hexOf(new Uint8Array(100)), /… \(100 bytes\)$/);
  });
});
