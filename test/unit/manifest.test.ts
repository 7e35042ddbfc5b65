import { strict as assert } from 'assert';
import { readFileSync } from 'fs';
import * as path from 'path';
import { ROOT } from '../helpers/util';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const commandsSource = ['commands.ts', 'sessions.ts', 'extension.ts'].map((f) => readFileSync(path.join(ROOT, 'src', 'extension', f), 'utf8')).join('\n');
const WRITES = ['createImage', 'createChild', 'snapshot', 'mergeIntoParent', 'mergeDownTo', 'discardChild', 'repairImage', 'relinkParent', 'export',
  'startSession', 'sessionSnapshot', 'sessionRevert', 'endSession', 'launchQemu'];

describe('extension manifest (package.json contributes)', () => {
  it('registers the read-only custom editor for .vhd, .avhd, .vhdx, .avhdx and .qcow2 at default priority', () => {
    const [editor] = pkg.contributes.customEditors;
    assert.equal(editor.viewType, 'diskImageInspector.imageEditor');
    assert.equal(editor.priority, 'default');
    assert.deepEqual(editor.selector.map((s: { filenamePattern: string }) => s.filenamePattern).sort(), ['*.avhd', '*.avhdx', '*.qcow2', '*.vhd', '*.vhdx']);
    assert.ok(pkg.activationEvents.includes('onCustomEditor:diskImageInspector.imageEditor'));
    assert.equal(pkg.main, './dist/extension.js');
  });

  it('offers the same editor for raw dumps (.img, .raw, .iso, .dd) through Open With only', () => {
    const raw = pkg.contributes.customEditors.find((e: { viewType: string }) => e.viewType === 'diskImageInspector.rawImageEditor');
    assert.ok(raw, 'raw editor contributed');
    assert.equal(raw.priority, 'option');
    assert.deepEqual(raw.selector.map((s: { filenamePattern: string }) => s.filenamePattern).sort(), ['*.dd', '*.img', '*.iso', '*.raw']);
    assert.ok(pkg.activationEvents.includes('onCustomEditor:diskImageInspector.rawImageEditor'));
  });

  it('works in untrusted workspaces with the commands that write disabled there', () => {
    assert.equal(pkg.capabilities.untrustedWorkspaces.supported, 'limited');
    for (const c of pkg.contributes.commands) {
      const id = c.command.replace('diskImageInspector.', '');
      assert.equal(c.category, 'Disk Image', c.command);
      if (WRITES.includes(id)) assert.equal(c.enablement, 'isWorkspaceTrusted', `${c.command} needs trust`);
      else assert.equal(c.enablement, undefined, `${c.command} only reads`);
    }
  });

  it('contributes every chain command of the issue, each registered by the extension', () => {
    const titles = pkg.contributes.commands.map((c: { title: string }) => c.title);
    for (const t of ['Create Disk Image…', 'Create Differencing Child…', 'Merge Into Parent…', 'Merge Down To…', 'Discard Child…', 'Diff With…',
      'Check Image', 'Repair Image…', 'Re-link Parent…', 'Export…']) assert.ok(titles.includes(t), t);
    assert.ok(titles.some((t: string) => t.startsWith('Snapshot')));
    for (const c of pkg.contributes.commands) assert.ok(commandsSource.includes(`reg('${c.command}'`) || commandsSource.includes(`registerCommand('${c.command}'`), `${c.command} is registered`);
    const explorer = pkg.contributes.menus['explorer/context'].filter((m: { when: string }) => /vhd/.test(m.when)).map((m: { command: string }) => m.command);
    const title = pkg.contributes.menus['editor/title'].map((m: { command: string }) => m.command);
    assert.ok(explorer.includes('diskImageInspector.mergeIntoParent') && title.includes('diskImageInspector.mergeIntoParent'));
    assert.ok(explorer.includes('diskImageInspector.startSession') && title.includes('diskImageInspector.startSession'));
    assert.ok(title.every((c: string) => pkg.contributes.menus['editor/title'].find((m: { command: string; when: string }) => m.command === c).when.includes('activeCustomEditorId == diskImageInspector.imageEditor')));
  });

  it('contributes the Sessions view in the explorer with its item actions and the session settings', () => {
    assert.deepEqual(pkg.contributes.views.explorer.map((v: { id: string }) => v.id), ['diskImageInspector.sessions']);
    const item = pkg.contributes.menus['view/item/context'];
    const on = (ctx: string) => item.filter((m: { when: string }) => m.when.includes(`viewItem == ${ctx}`)).map((m: { command: string }) => m.command);
    for (const c of ['sessionSnapshot', 'endSession', 'copyQemuCommand', 'launchQemu']) assert.ok(on('diskImageSession').includes(`diskImageInspector.${c}`), c);
    assert.ok(on('diskImageSessionSnapshot').includes('diskImageInspector.sessionRevert'));
    const props = pkg.contributes.configuration.properties;
    assert.equal(props['diskImageInspector.qemu.path'].default, 'qemu-system-x86_64');
    assert.ok(props['diskImageInspector.qemu.args']);
    assert.ok(new RegExp(props['diskImageInspector.session.reconcileEvery'].pattern).test('60m'));
    assert.ok(!new RegExp(props['diskImageInspector.session.reconcileEvery'].pattern).test('often'));
  });

  it('ships only the bundles, styles and docs in the .vsix', () => {
    const ignore = readFileSync(path.join(ROOT, '.vscodeignore'), 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
    assert.equal(ignore[0], '**');
    assert.ok(ignore.includes('!dist/extension.js') && ignore.includes('!dist/webview.js') && ignore.includes('!dist/webview.css'));
    assert.ok(ignore.includes('!dist/webview-rest.js'), 'the webview loads its second bundle (toolkit and views) after the first frame');
    assert.ok(ignore.includes('!dist/cli.js') && ignore.includes('!dist/cliMain.js'), 'emulator sessions run the bundled diskimg serve (its entry and the main bundle it loads)');
    assert.ok(!ignore.some((l) => l.includes('node_modules') || l.includes('src') || l.includes('.map')));
  });
});
