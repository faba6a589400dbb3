#!/usr/bin/env bash
# A throw-away Redis server (the Celery broker of the worker tests), on 127.0.0.1.
#   eval "$(scripts/redis.sh start DIR)"   -> exports OAREPO_S3_TEST_REDIS_URL
#   scripts/redis.sh stop DIR
# Installs Debian's redis-server when missing (needs root). Listens on
# OAREPO_S3_REDIS_PORT, or on a free port when that is unset; keeps nothing
# on disk (no RDB snapshots, no append-only file).
set -euo pipefail

cmd="${1:?usage: redis.sh start|stop DIR}"
dir="${2:?usage: redis.sh start|stop DIR}"

free_port() {
    python3 - <<'EOF' 2>/dev/null || echo 63790
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

case "$cmd" in
start)
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        echo "==> installing Debian's redis-server" >&2
        export DEBIAN_FRONTEND=noninteractive
        # The package's own service is not wanted: this script starts its own server.
        (apt-get install -y -q --no-install-recommends redis-server redis-tools >/dev/null 2>&1) || {
            apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends redis-server redis-tools >/dev/null
        }
    fi
    command -v redis-server >/dev/null || { echo "error: redis-server could not be installed" >&2; exit 1; }
    port="${OAREPO_S3_REDIS_PORT:-$(free_port)}"
    mkdir -p "$dir"
    echo "$port" > "$dir/port"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --save "" --appendonly no --protected-mode yes >/dev/null \
        || { echo "error: redis-server did not start; see $dir/redis.log" >&2; tail -n 20 "$dir/redis.log" >&2 || true; exit 1; }
    for _ in $(seq 100); do
        if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
            echo "export OAREPO_S3_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
            exit 0
        fi
        sleep 0.1
    done
    echo "error: redis-server on 127.0.0.1:$port does not answer; see $dir/redis.log" >&2
    tail -n 20 "$dir/redis.log" >&2 || true
    exit 1
    ;;
stop)
    if [ -f "$dir/port" ] && command -v redis-cli >/dev/null; then
        redis-cli -h 127.0.0.1 -p "$(cat "$dir/port")" shutdown nosave >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/redis.pid" ]; then
        pid="$(cat "$dir/redis.pid")"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: redis.sh start|stop DIR" >&2
    exit 2
    ;;
esac
