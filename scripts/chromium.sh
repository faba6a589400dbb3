#!/usr/bin/env bash
# Print the path of a Chromium for the browser tests; install Debian's `chromium` when missing.
#   scripts/chromium.sh     -> /usr/bin/chromium
# CHROMIUM=/path/to/chrome chooses another one. Playwright's own browser downloads are never used.
set -euo pipefail
if [ -n "${CHROMIUM:-}" ]; then
    [ -x "$CHROMIUM" ] || { echo "error: CHROMIUM=$CHROMIUM is not executable" >&2; exit 1; }
    echo "$CHROMIUM"; exit 0
fi
for candidate in chromium chromium-browser; do
    if path="$(command -v "$candidate")"; then echo "$path"; exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium (for the browser tests)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 \
        || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; }
    command -v chromium && exit 0
fi
echo "error: no Chromium found; install Debian's 'chromium' package or set CHROMIUM=/path/to/chrome" >&2
exit 1
