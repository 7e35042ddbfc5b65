// The main job on the built-in demo chain: generate it, then show what diskimg sees.
import { execFileSync } from 'node:child_process';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeDemoChain } from './makeDemoChain.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const chain = makeDemoChain(join(root, '.demo'));
const show = (...args) => {
  console.log(`\n$ diskimg ${args.join(' ')}`);
  console.log(execFileSync(process.execPath, [join(root, 'dist', 'cli.js'), ...args]).toString().trimEnd());
};
show('info', chain.child2);
show('map', chain.child2);
