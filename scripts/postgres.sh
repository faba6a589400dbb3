#!/usr/bin/env bash
# A throw-away PostgreSQL server for the test suite, on 127.0.0.1.
#   eval "$(scripts/postgres.sh start DIR)"   -> exports OAREPO_S3_TEST_PG_URI
#   scripts/postgres.sh stop DIR
# Installs Debian's postgresql when missing (needs root). Runs the server as
# the 'postgres' user when started by root (PostgreSQL refuses to run as root).
set -euo pipefail

cmd="${1:?usage: postgres.sh start|stop DIR}"
dir="${2:?usage: postgres.sh start|stop DIR}"
port="${OAREPO_S3_PG_PORT:-54329}"

pg_bin() {
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
    [ -n "$bin" ] && echo "$bin"
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    if [ -z "$(pg_bin)" ]; then
        echo "==> installing Debian's postgresql" >&2
        export DEBIAN_FRONTEND=noninteractive
        (apt-get install -y -q postgresql >/dev/null 2>&1) || {
            apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null
        }
    fi
    bin="$(pg_bin)" || { echo "error: PostgreSQL could not be installed" >&2; exit 1; }
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir -F -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null || { echo "error: PostgreSQL did not start; see $dir/server.log" >&2; tail -n 20 "$dir/server.log" >&2; exit 1; }
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qtAc "SELECT 1" >/dev/null
    echo "export OAREPO_S3_TEST_PG_URI=postgresql+psycopg2://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    bin="$(pg_bin)" || exit 0
    if [ -f "$dir/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
