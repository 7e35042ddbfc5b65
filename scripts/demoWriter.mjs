// A scripted guest for the demo: writes into an emulator session over NBD, so the live heatmap and
// the Timeline show something without QEMU. Usage (the URL from the Sessions view's "Copy NBD URL"):
//   node scripts/demoWriter.mjs 'nbd+unix:///?socket=/tmp/diskimg-sessions/x.nbd' [--seconds 60] [--rate 20]
// A minimal NBD client (fixed newstyle, NBD_OPT_EXPORT_NAME of the default export, simple replies).
import { connect } from 'node:net';

const argv = process.argv.slice(2);
const url = argv.find((a) => a.startsWith('nbd'));
const opt = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : dflt; };
const seconds = opt('--seconds', 60);
const rate = opt('--rate', 20);
if (!url) {
  console.error('usage: node scripts/demoWriter.mjs <nbd+unix:///?socket=PATH> [--seconds N] [--rate WRITES_PER_S]');
  process.exit(2);
}
const socketPath = new URLSearchParams(url.slice(url.indexOf('?') + 1)).get('socket');
if (!socketPath) throw new Error(`${url}: only nbd+unix URLs with ?socket= are supported`);

const sock = connect(socketPath);
let buf = Buffer.alloc(0);
const waiters = [];
sock.on('data', (d) => { buf = Buffer.concat([buf, d]); pump(); });
sock.on('error', (e) => { console.error(`demoWriter: ${e.message}`); process.exit(1); });
function pump() {
  while (waiters.length && buf.length >= waiters[0].n) {
    const { n, resolve } = waiters.shift();
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    resolve(out);
  }
}
const read = (n) => new Promise((resolve) => { waiters.push({ n, resolve }); pump(); });

const hello = await read(18);
if (hello.toString('latin1', 0, 8) !== 'NBDMAGIC' || hello.readBigUInt64BE(8) !== 0x49484156454F5054n) throw new Error('not an NBD newstyle server');
const serverFlags = hello.readUInt16BE(16);
const noZeroes = (serverFlags & 2) !== 0;
const clientFlags = Buffer.alloc(4);
clientFlags.writeUInt32BE(1 | (noZeroes ? 2 : 0));
const optHeader = Buffer.alloc(16);
optHeader.writeBigUInt64BE(0x49484156454F5054n, 0);
optHeader.writeUInt32BE(1, 8); // NBD_OPT_EXPORT_NAME
optHeader.writeUInt32BE(0, 12); // the default export
sock.write(Buffer.concat([clientFlags, optHeader]));
const exportInfo = await read(noZeroes ? 10 : 134);
const size = Number(exportInfo.readBigUInt64BE(0));
console.log(`demoWriter: connected to ${url} (${size} bytes); ${rate} writes/s for ${seconds} s`);

let cookie = 0n;
async function write(offset, data) {
  const req = Buffer.alloc(28);
  req.writeUInt32BE(0x25609513, 0);
  req.writeUInt16BE(0, 4);
  req.writeUInt16BE(1, 6); // NBD_CMD_WRITE
  req.writeBigUInt64BE(++cookie, 8);
  req.writeBigUInt64BE(BigInt(offset), 16);
  req.writeUInt32BE(data.length, 24);
  sock.write(Buffer.concat([req, data]));
  const reply = await read(16);
  if (reply.readUInt32BE(0) !== 0x67446698 || reply.readUInt32BE(4) !== 0) throw new Error(`write at ${offset} failed (error ${reply.readUInt32BE(4)})`);
}

// A "guest": a sweep across the disk, a hot spot (a log) written again and again, and random writes.
const end = Date.now() + seconds * 1000;
let i = 0;
while (Date.now() < end) {
  const sectors = size / 512;
  const kind = i % 3;
  const sector = kind === 0 ? Math.floor((i / 3) * 997) % sectors : kind === 1 ? 2048 + (i % 64) * 8 : Math.floor(Math.random() * (sectors - 8));
  await write(sector * 512, Buffer.alloc(4096, 0x30 + (i % 64)));
  i++;
  await new Promise((r) => setTimeout(r, 1000 / rate));
}
const disc = Buffer.alloc(28);
disc.writeUInt32BE(0x25609513, 0);
disc.writeUInt16BE(2, 6); // NBD_CMD_DISC
sock.end(disc);
console.log(`demoWriter: ${i} writes done`);
