// Merging VHDX children survives kill -9 at any point, as for VHD (harness: test/helpers/mergeCrash.ts).
import { createImage } from '../../src/format/registry';
import { describeMergeCrash } from '../helpers/mergeCrash';

describeMergeCrash({
  title: 'VHDX merge survives kill -9 at any point',
  tempPrefix: 'diskimg-vhdx-crash-',
  base: 'base.vhdx', child: 'child.avhdx', grand: 'grand.avhdx', grand2: 'grand2.avhdx',
  isImage: (n) => n.endsWith('.vhdx') || n.endsWith('.avhdx'),
  createBase: (file) => createImage(file, { size: 40 * 1024 * 1024, blockSize: 1024 * 1024 }),
  seed: 4242,
  writes: [[15, 1 << 20], [50, 1 << 20], [10, 200000]],
  kills: 12, tries: 40, killSeed: 7,
});
