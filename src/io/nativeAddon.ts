// Loading the small native addons built at install (scripts/build-native.mjs, native/*.c).
import * as nodePath from 'path';

/**
 * The addon `name` (native/build/Release/<name>.node), or null when it was not built or
 * `disableEnv` is set: every caller has a plain-JavaScript way to do without it.
 */
export function loadAddon<T>(name: string, disableEnv: string): T | null {
  if (process.env[disableEnv]) return null;
  // From dist/ (the bundles) and from src/io/ (tests run the sources).
  for (const up of [['..'], ['..', '..']]) {
    const file = nodePath.join(__dirname, ...up, 'native', 'build', 'Release', `${name}.node`);
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      return (module.require ?? require)(file) as T;
    } catch {
      // not there: try the next place
    }
  }
  return null;
}
