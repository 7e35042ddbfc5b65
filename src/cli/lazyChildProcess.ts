// commander requires child_process when it loads, for subcommands that are separate programs
// (diskimg has none). That module brings net, dgram and the streams with it: ~4-5 ms of every
// start. The CLI bundle maps commander's `node:child_process` here (scripts/build.mjs), and the
// real module loads only if something calls it.
type ChildProcessModule = typeof import('child_process');
let real: ChildProcessModule | null = null;
const load = (): ChildProcessModule => (real ??= require('child_process') as ChildProcessModule);

export const spawn: ChildProcessModule['spawn'] = ((...args: unknown[]) => (load().spawn as (...a: unknown[]) => unknown)(...args)) as ChildProcessModule['spawn'];
