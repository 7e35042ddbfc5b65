/** Typed access to scripts/codeServer.mjs (one implementation for the demo and the tests). */
import type { ChildProcess } from 'child_process';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { ROOT } from './util';

export interface CodeServer {
  url: string;
  port: number;
  process: ChildProcess;
  log: string[];
  stop(): Promise<void>;
}

export interface CodeServerOptions {
  entry: string;
  home: string;
  folder: string;
  vsix?: string;
  settings?: Record<string, unknown>;
  port?: number;
  /** Added to code-server's environment (the e2e gives it its own TMPDIR: its own sessions folder). */
  env?: Record<string, string>;
}

interface Module {
  freePort(): Promise<number>;
  ensureCodeServer(): string;
  packageVsix(outDir: string): string;
  startCodeServer(o: CodeServerOptions): Promise<CodeServer>;
}

export async function codeServerModule(): Promise<Module> {
  return (await import(pathToFileURL(path.join(ROOT, 'scripts', 'codeServer.mjs')).href)) as Module;
}
