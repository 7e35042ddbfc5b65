#!/usr/bin/env bash
# Installs code-server (the VS Code the end-to-end tests drive in Chromium) once, into a cache
# outside the repository, and prints the path of its entry script. Safe to run again: a finished
# install is reused (marker file). Needs Debian ripgrep and libkrb5-dev (scripts/setup.sh).
set -euo pipefail
VERSION=4.100.3
DIR="${DISKIMG_CODE_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/disk-image-inspector/code-server-$VERSION}"
ENTRY="$DIR/node_modules/code-server/out/node/entry.js"
if [ -f "$DIR/.complete" ] && [ -f "$ENTRY" ]; then echo "$ENTRY"; exit 0; fi
# One installer at a time (two test runs on a fresh machine would otherwise clobber each other).
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9
if [ -f "$DIR/.complete" ] && [ -f "$ENTRY" ]; then echo "$ENTRY"; exit 0; fi
command -v rg >/dev/null || { echo "installCodeServer: ripgrep (rg) is missing; run scripts/setup.sh" >&2; exit 1; }
rm -rf "$DIR"; mkdir -p "$DIR"
export npm_config_yes=true npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
{
  cd "$DIR"
  echo '{"name":"code-server-cache","private":true}' > package.json
  npm install --ignore-scripts --no-save "code-server@$VERSION"
  cd node_modules/code-server/lib/vscode
  npm install --omit=dev --ignore-scripts
  mkdir -p node_modules/@vscode/ripgrep/bin
  cp "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
  npm rebuild @parcel/watcher @vscode/spdlog node-pty native-watchdog kerberos @vscode/deviceid
  ln -sfn node_modules node_modules.asar
  (cd extensions && npm install --omit=dev --ignore-scripts)
  cd "$DIR"
  npm rebuild argon2
} >"$DIR.log" 2>&1 || { echo "installCodeServer: failed, see $DIR.log" >&2; tail -20 "$DIR.log" >&2; exit 1; }
touch "$DIR/.complete"
echo "$ENTRY"
