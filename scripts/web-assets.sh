#!/usr/bin/env bash
# Install the demo page's npm packages (Uppy, hash-wasm) and bundle them; idempotent.
#   scripts/web-assets.sh           npm ci when package-lock.json changed, build when a source changed
# Output: demo/static/build/upload.{js,css} and md5-worker.js (not committed). Needs Node.js >= 18 with npm; on
# Debian/Ubuntu, run as root, it installs Debian's nodejs and npm when they are missing.
set -euo pipefail
demo="$(cd "$(dirname "$0")/../demo" && pwd)"

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing Debian's nodejs and npm (for the demo's web page)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2 \
            || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2; }
    else
        echo "error: the demo's web page needs Node.js >= 18 with npm (https://nodejs.org)" >&2
        exit 1
    fi
fi

cd "$demo"
lock_stamp="node_modules/.oarepo-s3-lock"
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$lock_stamp" ] || [ "$(cat "$lock_stamp")" != "$want" ]; then
    echo "==> installing the web page's npm packages (demo/package-lock.json)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
    echo "$want" > "$lock_stamp"
fi

build_stamp="static/build/.sources"
sources="$(cat package-lock.json static/src/* | sha256sum | cut -d' ' -f1)"
if [ ! -f "$build_stamp" ] || [ "$(cat "$build_stamp")" != "$sources" ] \
    || [ ! -f static/build/upload.js ] || [ ! -f static/build/upload.css ] || [ ! -f static/build/md5-worker.js ]; then
    echo "==> bundling the web page (esbuild)" >&2
    npm run --silent build >&2
    echo "$sources" > "$build_stamp"
fi
