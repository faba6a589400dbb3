# Sourced by run-demo.sh and run-tests.sh: make .venv match requirements/lock.txt.
#
# uv resolves and installs the Invenio stack in seconds where pip's resolver
# can backtrack for many minutes; the lock pins every version we test with.
# Re-installs only when the lock or pyproject.toml changed.

UV_VERSION="0.13.9"

ensure_venv() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local py="${PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "error: oarepo-s3 needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
        return 1
    fi
    if [ ! -x "$root/.venv/bin/python" ]; then
        echo "==> creating $root/.venv" >&2
        "$py" -m venv "$root/.venv"
    fi
    if [ ! -x "$root/.venv/bin/uv" ]; then
        echo "==> installing uv $UV_VERSION into .venv" >&2
        "$root/.venv/bin/python" -m pip --version >/dev/null 2>&1 || "$root/.venv/bin/python" -m ensurepip --upgrade >/dev/null
        "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    fi
    local stamp="$root/.venv/.oarepo-s3-installed"
    local want
    want="$(cat "$root/requirements/lock.txt" "$root/pyproject.toml" "$root/client/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing the locked dependencies (requirements/lock.txt)" >&2
        "$root/.venv/bin/uv" pip install --quiet -p "$root/.venv/bin/python" -r "$root/requirements/lock.txt"
        "$root/.venv/bin/uv" pip install --quiet -p "$root/.venv/bin/python" --no-deps -e "$root"
        "$root/.venv/bin/uv" pip install --quiet -p "$root/.venv/bin/python" --no-deps -e "$root/client"
        echo "$want" > "$stamp"
    fi
    # The demo's web page: stock Uppy from npm, bundled (idempotent; seconds when up to date).
    "$root/scripts/web-assets.sh"
}
