#!/usr/bin/env bash
# ceph-rgw.sh: a throwaway single-node Ceph RADOS Gateway (S3) on 127.0.0.1, for tests.
# Copied from the project's shared S3 tooling (shared/s3/ceph-rgw.sh), plus CEPH_RGW_MIN_PART_SIZE
# and CEPH_RGW_DNS_NAME.
#
#   eval "$(ceph-rgw.sh start [DIR])"   # install if needed, start, print `export` lines
#   ceph-rgw.sh stop [DIR]              # stop what start started, then delete DIR
#
# It runs one mon, one OSD on memstore (objects are kept in RAM) and radosgw. Config, state,
# logs and pid files all live in DIR (default ${TMPDIR:-/tmp}/ceph-rgw-$UID). Nothing goes
# in /etc/ceph or /var/lib/ceph, and systemd is not used. Auth between daemons is off, so
# this is for tests only.
# Env: CEPH_RGW_PORT (7480), CEPH_RGW_MON_PORT (S3 port + 1), CEPH_RGW_ACCESS_KEY,
#      CEPH_RGW_SECRET_KEY, CEPH_RGW_TIMEOUT (60 s), CEPH_RGW_MEMSTORE_BYTES (4 GiB),
#      CEPH_RGW_MIN_PART_SIZE (bytes; S3's 5 MiB when unset: the smallest multipart part
#      but the last. RGW also takes it at runtime:
#      ceph --admin-daemon DIR/run/client.rgw.asok config set rgw_multipart_min_part_size N),
#      CEPH_RGW_DNS_NAME (rgw_dns_name, e.g. s3.ceph.test: then Host: BUCKET.s3.ceph.test is
#      virtual-host addressing; path-style requests keep working. RGW reads it at start only).
# Progress goes to stderr; stdout carries only the `export` line.
set -euo pipefail

CMD=${1:-}
DIR=$(realpath -m -- "${2:-${TMPDIR:-/tmp}/ceph-rgw-$UID}") # absolute: daemons chdir to /
PORT=${CEPH_RGW_PORT:-7480}
MON_PORT=${CEPH_RGW_MON_PORT:-$((PORT + 1))}
ACCESS_KEY=${CEPH_RGW_ACCESS_KEY:-ceph-rgw-test-access-key}
SECRET_KEY=${CEPH_RGW_SECRET_KEY:-ceph-rgw-test-secret-key}
TIMEOUT=${CEPH_RGW_TIMEOUT:-60}
MEMSTORE_BYTES=${CEPH_RGW_MEMSTORE_BYTES:-$((4 << 30))}
MIN_PART_SIZE=${CEPH_RGW_MIN_PART_SIZE:-$((5 << 20))}
DNS_NAME=${CEPH_RGW_DNS_NAME:-}
CONF=$DIR/ceph.conf
DAEMONS=(client.rgw osd.0 mon.a) # in stop order

log() { echo "ceph-rgw: $*" >&2; }
die() { # print the error and the log tails, kill what we started, keep DIR for a look
  log "ERROR: $*"
  tail -n 12 "$DIR"/log/{setup,mon.a,osd.0,client.rgw}.log >&2 2>/dev/null || true
  kill_daemons
  log "logs kept in $DIR/log; '$0 stop $DIR' deletes them"
  exit 1
}
# Run a setup command with a time limit, its output kept in the setup log.
run() { timeout "$TIMEOUT" "$@" </dev/null >>"$DIR/log/setup.log" 2>&1 || die "failed: $*"; }

# A daemon counts as ours only while its command line names our ceph.conf.
alive() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$CONF"; }
pid_of() { local p; p=$(cat "$DIR/run/$1.pid" 2>/dev/null) && alive "$p" && echo "$p"; }
s3_up() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$PORT/"; }  # any HTTP answer
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ours() { [[ -f $CONF ]] || [[ -z $(ls -A "$DIR" 2>/dev/null) ]]; }  # never rm -rf a stranger

kill_daemons() { # one at a time, mon last: SIGTERM, up to 10 s of grace, then SIGKILL
  local d p i
  for d in "${DAEMONS[@]}"; do
    p=$(pid_of "$d") || continue
    log "stopping $d (pid $p)"
    kill "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$p" || break
      sleep 0.1
    done
    ! alive "$p" || kill -9 "$p" 2>/dev/null || true
  done
}

install_pkgs() { # only when something is missing
  local pkgs=()
  command -v radosgw >/dev/null && command -v ceph-osd >/dev/null && command -v ceph-mon >/dev/null ||
    pkgs+=(ceph-mon ceph-osd radosgw)
  command -v curl >/dev/null || pkgs+=(curl)
  ((${#pkgs[@]})) || return 0
  [[ $EUID == 0 ]] || { log "ERROR: ${pkgs[*]} missing; run as root to install them"; exit 1; }
  log "installing ${pkgs[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
}

write_conf() {
  cat >"$CONF" <<EOF
[global]
fsid = $1
mon host = [v2:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
# no cephx and no wire encryption: tests only
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
# every path inside DIR
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon cluster log file = $DIR/log/cluster.log
crash dir = $DIR/crash
keyring = $DIR/keyring
mon data = $DIR/\$name
osd data = $DIR/\$name
rgw data = $DIR/\$name
# one in-memory OSD, no replicas, few PGs, fast paxos, no mgr
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail crit = 1
paxos propose interval = 0.1

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw multipart min part size = $MIN_PART_SIZE
${DNS_NAME:+rgw dns name = $DNS_NAME}
EOF
}

start() {
  install_pkgs
  if [[ -f $CONF ]] && pid_of mon.a >/dev/null && pid_of osd.0 >/dev/null &&
    pid_of client.rgw >/dev/null && s3_up; then
    log "already running in $DIR"
  else
    if [[ -e $DIR ]]; then # leftovers of an earlier run: clean them first
      ours || { log "ERROR: $DIR exists and is not a ceph-rgw.sh dir"; exit 1; }
      log "cleaning up old state in $DIR"
      kill_daemons
      rm -rf "$DIR"
    fi
    local p
    for p in "$PORT" "$MON_PORT"; do
      ! port_busy "$p" || { log "ERROR: port $p on 127.0.0.1 already in use"; exit 1; }
    done
    mkdir -p "$DIR"/{run,log,crash,mon.a,osd.0,client.rgw}
    local t0=$SECONDS fsid osd_uuid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    write_conf "$fsid"
    log "starting mon on 127.0.0.1:$MON_PORT"
    run monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap"
    run ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap"
    run ceph-mon -c "$CONF" -i a # forks once it is up
    log "starting osd (memstore)"
    run ceph -c "$CONF" osd new "$osd_uuid" 0
    run ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid"
    run ceph-osd -c "$CONF" -i 0
    log "starting radosgw on 127.0.0.1:$PORT"
    run radosgw -c "$CONF" -n client.rgw # forks at once; the S3 port opens when ready
    local rgw=
    until s3_up; do
      [[ $rgw ]] || rgw=$(cat "$DIR/run/client.rgw.pid" 2>/dev/null) || true
      [[ -z $rgw ]] || alive "$rgw" || die "radosgw exited"
      ((SECONDS - t0 < TIMEOUT)) || die "S3 endpoint not up after ${TIMEOUT}s"
      sleep 0.2
    done
    log "up in $((SECONDS - t0))s"
  fi
  # The S3 user, idempotently: create it, or (re)set its key if it exists already.
  if timeout "$TIMEOUT" radosgw-admin -c "$CONF" user info --uid=test >/dev/null 2>&1; then
    run radosgw-admin -c "$CONF" key create --uid=test --key-type=s3 \
      --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY"
  else
    run radosgw-admin -c "$CONF" user create --uid=test --display-name=test \
      --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY"
  fi
  printf 'export S3_ENDPOINT_URL=%q AWS_ACCESS_KEY_ID=%q AWS_SECRET_ACCESS_KEY=%q AWS_DEFAULT_REGION=us-east-1\n' \
    "http://127.0.0.1:$PORT" "$ACCESS_KEY" "$SECRET_KEY"
}

stop() {
  [[ -e $DIR ]] || { log "nothing in $DIR"; return 0; }
  ours || { log "ERROR: $DIR is not a ceph-rgw.sh dir, not touching it"; exit 1; }
  kill_daemons
  rm -rf "$DIR"
  log "stopped, $DIR removed"
}

case $CMD in
start | stop) "$CMD" ;;
*) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
