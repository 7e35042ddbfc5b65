/**
 * Integration tests in a real desktop VS Code (npm run test:vscode): the extension is loaded from
 * the repository, a demo chain is opened in the custom editor, and commands run against it.
 */
import { strict as assert } from 'assert';
import { existsSync, mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import * as vscode from 'vscode';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { formatUuid } from '../../src/format/vhd/uuid';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import type { ExtensionApi } from '../../src/extension/extension';

const VIEW_TYPE = 'diskImageInspector.imageEditor';
const MiB = 1024 * 1024;

async function until<T>(what: string, fn: () => T | null | undefined | false, timeoutMs = 20000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function write(p: string, offset: number, data: Buffer): Promise<void> {
  const c = await openChain(p, { writable: true });
  try { await c.write(offset, data); await c.flush(); } finally { await c.close(); }
}

describe('Disk Image Inspector in VS Code', () => {
  let dir: string;
  let base: string;
  let child: string;
  let api: ExtensionApi;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'diskimg-int-'));
    base = path.join(dir, 'base.vhd');
    child = path.join(dir, 'child.vhd');
    await createImage(base, { size: 64 * MiB, exactSize: true });
    await write(base, 0, Buffer.alloc(MiB, 1));
    await createChild(base, child);
    await write(child, 10 * MiB, Buffer.alloc(4096, 2));
    const ext = vscode.extensions.all.find((e) => e.packageJSON?.contributes?.customEditors?.[0]?.viewType === VIEW_TYPE);
    assert.ok(ext, 'the extension is loaded');
    api = (await ext!.activate()) as ExtensionApi;
  });

  after(async () => {
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    rmSync(dir, { recursive: true, force: true });
  });

  it('opens a differencing image in the custom editor with its chain and block map', async () => {
    await vscode.commands.executeCommand('vscode.openWith', vscode.Uri.file(child), VIEW_TYPE);
    const doc = await until('the document', () => api.provider.activeDocument());
    assert.equal(doc.path, child);
    const { model, blocks } = doc.current();
    assert.equal(model.overview.diskType, 'differencing');
    assert.deepEqual(model.overview.chain, ['child.vhd', 'base.vhd']);
    assert.equal(blocks.blockCount, 32);
    assert.ok(blocks.owner instanceof Uint16Array);
    assert.equal(blocks.owner[0], 1);
    assert.equal(blocks.owner[5], 0);
    assert.equal(blocks.allocated[5], 1);
  });

  it('Create Differencing Child makes a child whose parent UUID is the image\'s, and opens it', async () => {
    const target = path.join(dir, 'child-2.vhd');
    await vscode.commands.executeCommand('diskImageInspector.createChild', vscode.Uri.file(child), vscode.Uri.file(target));
    assert.ok(existsSync(target));
    const parent = await VhdImage.open(child);
    const made = await VhdImage.open(target);
    try {
      assert.equal(formatUuid(made.header!.parentUniqueId), parent.uuid);
    } finally { await parent.close(); await made.close(); }
    const doc = await until('the new child in the editor', () => api.provider.documentsFor(target)[0]);
    assert.equal(doc.current().model.chain.length, 3);
  });

  it('reloads an open image when another program writes to it', async () => {
    const doc = api.provider.documentsFor(child)[0] ?? await (async () => {
      await vscode.commands.executeCommand('vscode.openWith', vscode.Uri.file(child), VIEW_TYPE);
      return until('the document', () => api.provider.documentsFor(child)[0]);
    })();
    const changed = new Promise<Uint32Array>((resolve) => { const d = doc.onDidChangeState((e) => { d.dispose(); resolve(e.changed); }); });
    const started = Date.now();
    await write(child, 20 * MiB, Buffer.alloc(512, 3));
    const blocks = await changed;
    // A hang guard only; speed is measured by npm run bench.
    assert.ok(Date.now() - started < 15_000);
    assert.deepEqual([...blocks], [10]);
  });

  it('Diff With… gives the editor a changed-blocks map', async () => {
    await vscode.commands.executeCommand('diskImageInspector.diffWith', vscode.Uri.file(child), vscode.Uri.file(base));
    const doc = await until('the document', () => api.provider.documentsFor(child)[0]);
    const diff = await until('the diff', () => doc.lastDiff);
    assert.equal(diff.identical, false);
    assert.equal(diff.changed[5], 1);
    assert.equal(diff.changed[10], 1);
    assert.equal(diff.changed[0], 0);
  });
});
