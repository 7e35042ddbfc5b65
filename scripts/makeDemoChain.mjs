// Generates the demo chain with the built CLI: a base disk with an MBR and two partitions, two
// cascaded children with distinct write patterns, and a sibling of the first child.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist', 'cli.js');

function run(args, input) {
  return execFileSync(process.execPath, [cli, ...args], { input, stdio: [input ? 'pipe' : 'ignore', 'pipe', 'inherit'] });
}

function mbr(sizeBytes) {
  const b = Buffer.alloc(512);
  const sectors = Math.floor(sizeBytes / 512);
  const entry = (i, type, lba, count) => {
    const o = 446 + i * 16;
    b[o] = i === 0 ? 0x80 : 0;
    b[o + 4] = type;
    b.writeUInt32LE(lba, o + 8);
    b.writeUInt32LE(count, o + 12);
  };
  const half = Math.floor((sectors - 2048) / 2);
  entry(0, 0x0c, 2048, half);               // FAT32 LBA
  entry(1, 0x83, 2048 + half, sectors - 2048 - half); // Linux
  b[510] = 0x55; b[511] = 0xaa;
  return b;
}

function pattern(byte, length) {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (byte + (i >> 9)) & 0xff;
  return b;
}

export function makeDemoChain(dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const base = join(dir, 'base.vhd');
  run(['create', base, '--size', '256M']);
  const size = JSON.parse(run(['info', base, '--json']).toString()).virtualSize;
  run(['write', base, '--offset', '0'], mbr(size));
  for (let mb = 1; mb < 96; mb += 7) run(['write', base, '--offset', String(mb * 1048576)], pattern(0x10, 1048576));
  const child1 = join(dir, 'child1.vhd');
  run(['child', base, child1]);
  for (let mb = 8; mb < 160; mb += 12) run(['write', child1, '--offset', String(mb * 1048576 + 4096)], pattern(0x40, 700 * 512));
  const sibling = join(dir, 'sibling.vhd');
  run(['child', base, sibling]);
  run(['write', sibling, '--offset', String(200 * 1048576)], pattern(0x90, 3 * 1048576));
  const child2 = join(dir, 'child2.vhd');
  run(['child', child1, child2]);
  for (let mb = 20; mb < 250; mb += 23) run(['write', child2, '--offset', String(mb * 1048576 + 777)], pattern(0xc0, 5000));
  return { dir, base, child1, child2, sibling };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2] ?? join(root, '.demo');
  console.log(JSON.stringify(makeDemoChain(dir), null, 2));
}
