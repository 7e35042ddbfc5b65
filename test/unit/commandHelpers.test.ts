import { strict as assert } from 'assert';
import { writeFileSync } from 'fs';
import * as path from 'path';
import { freeName, sentence, toDiffData } from '../../src/extension/commandHelpers';
import { tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

describe('command helpers (no vscode): diff grid, new file names, messages', () => {
  it('puts a diff\'s byte ranges on the image\'s own block grid, including blocks a range only touches', () => {
    const d = toDiffData({
      identical: false, differingBytes: 3 * 512, blockSize: 4 * MiB, blocks: [0, 1],
      ranges: [{ start: 2 * MiB - 512, length: 1024 }, { start: 5 * MiB, length: 512 }],
    }, '/x/other.vhd', 2 * MiB, 4);
    assert.deepEqual([...d.changed], [1, 1, 1, 0], 'the first range straddles blocks 0 and 1; the second is in block 2');
    assert.equal(d.otherName, 'other.vhd');
    assert.equal(d.rangesTruncated, false);
  });

  it('keeps the first 2000 ranges and says the list is truncated, while the map still has them all', () => {
    const ranges = Array.from({ length: 2500 }, (_, i) => ({ start: i * 2 * MiB, length: 512 }));
    const d = toDiffData({ identical: false, differingBytes: 2500 * 512, blockSize: 2 * MiB, blocks: [], ranges }, 'o.vhd', 2 * MiB, 2500);
    assert.equal(d.ranges.length, 2000);
    assert.equal(d.rangesTruncated, true);
    assert.equal(d.changed.reduce((a, b) => a + b, 0), 2500);
  });

  it('suggests a free name next to the image, numbered when taken', () => {
    const t = tempDir('names-');
    try {
      const img = path.join(t.dir, 'disk.vhd');
      assert.equal(freeName(img, '-child'), path.join(t.dir, 'disk-child.vhd'));
      writeFileSync(path.join(t.dir, 'disk-child.vhd'), '');
      writeFileSync(path.join(t.dir, 'disk-child-2.vhd'), '');
      assert.equal(freeName(img, '-child'), path.join(t.dir, 'disk-child-3.vhd'));
      assert.equal(freeName(img, '', '.raw'), path.join(t.dir, 'disk.raw'));
    } finally { t.cleanup(); }
  });

  it('ends core messages as sentences', () => {
    assert.equal(sentence('a.vhd: parent not found (parent locators at offset 1088)'), 'a.vhd: parent not found (parent locators at offset 1088).');
    assert.equal(sentence('Done.'), 'Done.');
  });
});
