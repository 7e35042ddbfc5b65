// Merging a VHD child survives kill -9 at any point (harness: test/helpers/mergeCrash.ts).
import { createImage } from '../../src/format/vhd/create';
import { describeMergeCrash } from '../helpers/mergeCrash';

describeMergeCrash({
  title: 'merge survives kill -9 at any point',
  tempPrefix: 'diskimg-crash-',
  base: 'base.vhd', child: 'child.vhd', grand: 'grand.vhd', grand2: 'grand2.vhd',
  isImage: (n) => n.endsWith('.vhd'),
  createBase: (file) => createImage(file, { size: 48 * 1024 * 1024, blockSize: 64 * 1024 }),
  seed: 2024,
  writes: [[20, 1 << 20], [60, 1 << 20], [10, 200000]],
  kills: 24, tries: 60, killSeed: 99,
});
