/**
 * The first-paint bench's extension host, in its own process as VS Code runs extensions in theirs
 * (in the bench's own process its steps shared an event loop with the browser driver's protocol
 * traffic during the navigation). On `open`: the chain opened, the model and the block map built
 * (the same calls ImageDocument makes), the first message packed into a file in the page cache;
 * the timings go back to the bench, which hands the message to the page. Started once and warmed by the cold run, as an
 * extension host is running before a user opens an image.
 */
import { writeFileSync } from 'fs';
import { openChain } from '../src/chain/chain';
import { buildBlockData, buildImageModel, firstBlocks } from '../src/extension/model';
import { HostMessage } from '../src/protocol';

/**
 * Packs the host's first message (`init`: the model and the owner map, as ImageDocument posts it) as
 * a JSON head and the typed arrays' bytes: the page rebuilds each typed array in its own
 * ArrayBuffer and posts the message with them transferred, as VS Code's webview messaging does
 * (extHostWebviewMessaging: each ArrayBuffer travels as binary and is handed to the frame as a transfer).
 */
function packMessage(m: HostMessage): Buffer {
  const blobs: Buffer[] = [];
  let at = 0;
  const walk = (v: unknown): unknown => {
    if (ArrayBuffer.isView(v)) {
      const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      const pad = (8 - (at % 8)) % 8;
      if (pad) { blobs.push(Buffer.alloc(pad)); at += pad; }
      blobs.push(b);
      const ref = { __typed: v.constructor.name, at, bytes: b.length };
      at += b.length;
      return ref;
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  const head = Buffer.from(JSON.stringify(walk(m)));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(head.length);
  const headPad = Buffer.alloc((8 - ((4 + head.length) % 8)) % 8);
  return Buffer.concat([len, head, headPad, ...blobs]);
}

export interface OpenRequest { type: 'open'; file: string; serial: boolean; dataFile: string }
export interface OpenReply { type: 'opened'; openMs: number; modelMs: number; blocksMs: number; hostCpuMs: number; cells: number; startedAt: number; postedAt: number }

const now = () => performance.timeOrigin + performance.now();

process.on('message', async (m: OpenRequest) => {
  if (m.type !== 'open') return;
  const startedAt = now();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const chain = await openChain(m.file, { tolerant: true, cache: true });
  const t1 = performance.now();
  const model = await buildImageModel(chain, false);
  const t2 = performance.now();
  const blocks = await buildBlockData(chain);
  // As the editor posts it on the page's ready: the owner map first (the code before sent it as the array itself).
  const first = m.serial ? { ...blocks, allocated: new Uint8Array(0), fill: new Uint8Array(0), ownerSector: new Uint32Array(0) } : firstBlocks(blocks);
  const t3 = performance.now();
  const hostCpu = process.cpuUsage(cpu0);
  // Handed to the stand-in for VS Code's messaging (Node's IPC moves megabytes in 64 KiB steps, each
  // waiting for the scheduler on a loaded machine: the bytes go through the page cache).
  writeFileSync(m.dataFile, packMessage({ type: 'init', model, blocks: first, complete: false, diff: null }));
  const postedAt = now();
  await chain.close();
  const reply: OpenReply = { type: 'opened', openMs: t1 - t0, modelMs: t2 - t1, blocksMs: t3 - t2, hostCpuMs: (hostCpu.user + hostCpu.system) / 1000, cells: blocks.blockCount, startedAt, postedAt };
  process.send!(reply);
});
process.on('disconnect', () => process.exit(0));
