// The first-paint bench's web server, in its own process as VS Code's webview resources are served
// outside the extension host: the page (index.html of a run), the built bundles (no caching, as on a
// first open) and the host's first message, held until the host process hands it over by IPC.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const defaultDist = process.argv[2];
const runs = new Map();
const run = (id) => {
  if (!runs.has(id)) { let give; const data = new Promise((r) => { give = r; }); runs.set(id, { html: '', data, give }); }
  return runs.get(id);
};
process.on('message', (m) => {
  if (m.type === 'page') Object.assign(run(m.id), { html: m.html, dist: m.dist ?? defaultDist });
  // The host's message bytes are handed over as a file in the page cache: Node's IPC channel and
  // pipes move megabytes in 64 KiB steps, each waiting for the scheduler on a loaded machine.
  else if (m.type === 'data') run(m.id).give(readFileSync(m.file));
  else if (m.type === 'done') runs.delete(m.id);
});
const types = { js: 'text/javascript', css: 'text/css', html: 'text/html', bin: 'application/octet-stream' };
const server = createServer(async (req, res) => {
  const [, , id, file] = new URL(req.url, 'http://x').pathname.split('/');
  const r = runs.get(id);
  if (!r || !file) { res.writeHead(404).end(); return; }
  const send = (body) => res.writeHead(200, { 'content-type': types[file.split('.').pop()], 'cache-control': 'no-store' }).end(body);
  // The bench's host process announces its message's file (bench/firstPaintHost.ts).
  if (req.method === 'POST' && file === 'host-data') {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    r.give(readFileSync(Buffer.concat(chunks).toString()));
    res.writeHead(204).end();
  } else if (file === 'index.html') send(r.html);
  else if (file === 'host-data.bin') send(await r.data);
  else if (/^webview[\w-]*\.(js|css)$/.test(file)) send(readFileSync(join(r.dist, file)));
  else res.writeHead(404).end();
});
server.listen(0, '127.0.0.1', () => process.send({ type: 'listening', port: server.address().port }));
process.on('disconnect', () => process.exit(0));
