import { existsSync, mkdirSync } from 'fs';
import * as path from 'path';
import type { Browser } from 'playwright-core';
import { ROOT } from './util';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const RESULTS = path.join(ROOT, 'test-results');

export function hasChromium(): boolean {
  return existsSync(CHROMIUM);
}

/** Debian's Chromium driven by playwright-core, with the flags this machine needs. */
export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  mkdirSync(RESULTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
}
