import { Command } from 'commander';
import { register as chainInspect } from './chainInspect';
import { register as chainOps, registerExport } from './chainOps';
import { register as serve } from './serve';
import { register as cache } from './cache';

/**
 * Commands beyond the basic ones register here, one file per command group, so that several
 * people can add commands without editing the same lines.
 */
export const commandModules: Array<(program: Command) => void> = [
  chainInspect,
  chainOps,
  registerExport,
  serve,
  cache,
];
