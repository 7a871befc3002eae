#!/usr/bin/env bash
# Start Ceph RADOS Gateway (radosgw) on its production RADOS store, as a throwaway one-node cluster on
# 127.0.0.1: 1 monitor + 1 OSD on memstore (RAM) + radosgw. Waits until it answers and prints the endpoint
# and keys as shell exports (everything else goes to stderr). Used by tests/servers.py (start_rgw).
#
#   start_rgw.sh PORT DATA_DIR            the cluster is rebuilt empty in DATA_DIR on every start
#   stop_rgw.sh DATA_DIR                  kills the pids recorded in DATA_DIR (and only those)
#
# Where Ceph comes from (RGW_CEPH):
#   system (default)  ceph-mon, ceph-osd, radosgw, ... on PATH: Debian 12's packages
#                     (apt-get install ceph-mon ceph-osd radosgw: Ceph 16.2 Pacific); .ci/run installs them.
#   trixie            Debian 13's packages (Ceph 18.2 Reef), fetched with apt-get into a private folder
#                     RGW_ROOTFS (default /tmp/rgw-rootfs, ~140 MB, first run only) and run through their own
#                     glibc loader; nothing is installed system-wide. Any Debian suite name works.
#
# Adapted from ../shared/rgw/start_rgw.sh (its dbstore mode is left out: experimental, wrong bytes).
# Environment: RGW_CEPH, RGW_ROOTFS, RGW_MIRROR, RGW_KEYRING, RGW_DEBUG (debug_rgw, default 1),
# RGW_WAIT (seconds, default 90), RGW_MON_PORT (default PORT+10000), RGW_MEMSTORE_BYTES (default 4 GiB),
# RGW_ACCESS_KEY / RGW_SECRET_KEY.
set -euo pipefail

PORT="${1:?usage: start_rgw.sh PORT DATA_DIR}"
DATA_DIR="${2:?usage: start_rgw.sh PORT DATA_DIR}"
CEPH="${RGW_CEPH:-system}"
ROOTFS="${RGW_ROOTFS:-/tmp/rgw-rootfs}"
WAIT="${RGW_WAIT:-90}"
MON_PORT="${RGW_MON_PORT:-$((PORT + 10000))}"
KEYRING="${RGW_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
# The keys of Ceph's vstart.sh / s3-tests (public test values).
ACCESS_KEY="${RGW_ACCESS_KEY:-0555b35654ad1656d804}"
SECRET_KEY="${RGW_SECRET_KEY:-h7GhxuBLTrlhVUyxSPUKUV8r/2EI4ngqJxD7iBdBYLhwluN30JaT3Q==}"

log() { echo "start_rgw: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

system_mirror() {  # the first Debian URI of the system's apt sources
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'
  } | grep -E '/debian/?$' | head -n 1 || true
}

ensure_rootfs() {  # Debian $CEPH's radosgw, ceph-mon, ceph-osd unpacked into $ROOTFS
  [[ -x "$ROOTFS/usr/bin/radosgw" && -x "$ROOTFS/usr/bin/ceph-osd" && -x "$ROOTFS/usr/bin/ceph-mon" ]] && return 0
  local mirror="${RGW_MIRROR:-$(system_mirror)}" apt="$ROOTFS.apt" pkg
  log "fetching Ceph from Debian $CEPH into $ROOTFS (first run only)"
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg-deb"
  [[ -r "$KEYRING" ]] || die "no Debian archive keyring at $KEYRING (set RGW_KEYRING)"
  [[ -n "$mirror" ]] || die "no Debian mirror in the apt sources (set RGW_MIRROR)"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/cache"
  echo "deb [signed-by=$KEYRING] $mirror $CEPH main" > "$apt/sources.list"
  : > "$apt/status"   # an empty dpkg status: apt resolves the whole dependency closure
  local o=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/none"
           -o "Dir::State::Lists=$apt/lists" -o "Dir::State::status=$apt/status"
           -o "Dir::Cache=$apt/cache" -o "Dir::Cache::archives=$apt/archives"
           -o "APT::Architecture=amd64" -o "APT::Architectures=amd64" -o "Debug::NoLocking=1"
           -o "APT::Sandbox::User=root")
  apt-get "${o[@]}" -q update >"$apt/update.log" 2>&1 || { tail -5 "$apt/update.log" >&2; die "apt-get update failed"; }
  apt-get "${o[@]}" -q -y --no-install-recommends install --download-only radosgw ceph-mon ceph-osd \
    >"$apt/download.log" 2>&1 || { tail -5 "$apt/download.log" >&2; die "downloading Ceph from $CEPH failed"; }
  rm -rf "$ROOTFS.tmp" && mkdir -p "$ROOTFS.tmp"
  for pkg in "$apt"/archives/*.deb; do dpkg-deb -x "$pkg" "$ROOTFS.tmp"; done
  rm -rf "$ROOTFS" && mv "$ROOTFS.tmp" "$ROOTFS"
}

LOADER=()
if [[ "$CEPH" == system ]]; then
  for b in radosgw radosgw-admin ceph-mon ceph-osd monmaptool ceph-authtool ceph; do
    command -v "$b" >/dev/null || die "$b is not on PATH: apt-get install ceph-mon ceph-osd radosgw (or set RGW_CEPH=trixie)"
  done
  BIN="$(dirname "$(command -v radosgw)")"
  LIBDIR="$(dirname "$(dirname "$BIN")")/lib/x86_64-linux-gnu"
  [[ -d "$LIBDIR/rados-classes" ]] || LIBDIR="/usr/lib/x86_64-linux-gnu"
  PLUGIN_DIR=""
  ceph_cli() { timeout 60 ceph -c "$DATA_DIR/ceph.conf" "$@"; }
else
  ensure_rootfs
  BIN="$ROOTFS/usr/bin"
  LIBDIR="$ROOTFS/usr/lib/x86_64-linux-gnu"
  LOADER=("$LIBDIR/ld-linux-x86-64.so.2" --library-path "$LIBDIR/ceph:$LIBDIR")
  PLUGIN_DIR="$LIBDIR/ceph"
  ceph_cli() {  # Debian's Python ceph CLI, with the rootfs's own Python
    PYTHONHOME="$ROOTFS/usr" PYTHONPATH="$ROOTFS/usr/lib/python3/dist-packages" \
      timeout 60 "${LOADER[@]}" "$BIN/python3" -s "$BIN/ceph" -c "$DATA_DIR/ceph.conf" "$@"
  }
fi
run() { "${LOADER[@]}" "$@"; }
VERSION="$(run "$BIN/radosgw" --version 2>/dev/null | head -1)"

mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
for f in rgw osd mon; do
  if [[ -s "$DATA_DIR/$f.pid" ]] && kill -0 "$(cat "$DATA_DIR/$f.pid")" 2>/dev/null; then
    die "$f of an earlier start still runs (pid $(cat "$DATA_DIR/$f.pid")); run stop_rgw.sh $DATA_DIR"
  fi
done
if curl -s -o /dev/null -m 2 "http://127.0.0.1:$PORT/"; then
  die "something already answers on 127.0.0.1:$PORT"
fi
rm -rf "$DATA_DIR/mon.a" "$DATA_DIR/osd.0" "$DATA_DIR/keyring" "$DATA_DIR/monmap"
mkdir -p "$DATA_DIR/log" "$DATA_DIR/run" "$DATA_DIR/mon.a" "$DATA_DIR/osd.0" "$DATA_DIR/rgw"

FSID="$(cat /proc/sys/kernel/random/uuid)"
{
  echo "[global]"
  echo "  fsid = $FSID"
  echo "  mon host = v2:127.0.0.1:$MON_PORT"
  echo "  public addr = 127.0.0.1"
  echo "  keyring = $DATA_DIR/keyring"
  echo "  pid file = $DATA_DIR/run/\$name.pid"
  echo "  log file = $DATA_DIR/log/\$name.log"
  echo "  run dir = $DATA_DIR/run"
  echo "  admin socket = $DATA_DIR/run/\$name.asok"
  if [[ -n "$PLUGIN_DIR" ]]; then
    echo "  plugin dir = $PLUGIN_DIR"
    echo "  erasure code dir = $PLUGIN_DIR/erasure-code"
  fi
  echo "  osd class dir = $LIBDIR/rados-classes"
  echo "  mon data = $DATA_DIR/\$name"
  echo "  osd data = $DATA_DIR/\$name"
  echo "  osd objectstore = memstore"
  echo "  memstore device bytes = ${RGW_MEMSTORE_BYTES:-4294967296}"
  echo "  osd pool default size = 1"
  echo "  osd pool default min size = 1"
  echo "  osd pool default pg num = 8"
  echo "  osd pool default pgp num = 8"
  echo "  osd pool default pg autoscale mode = off"
  echo "  osd crush chooseleaf type = 0"
  echo "  mon allow pool size one = true"
  echo "  mon warn on pool no redundancy = false"
  echo "  mon data avail warn = 1"
  echo "  mon max pg per osd = 1000"
  echo "[client.rgw]"
  echo "  rgw frontends = beast endpoint=127.0.0.1:$PORT"
  echo "  rgw data = $DATA_DIR/rgw"
  echo "  debug rgw = ${RGW_DEBUG:-1}"
  if [[ -n "$PLUGIN_DIR" && -f "$ROOTFS/etc/mime.types" ]]; then echo "  rgw mime types file = $ROOTFS/etc/mime.types"; fi
} > "$DATA_DIR/ceph.conf"

cd "$DATA_DIR"
C=(-c "$DATA_DIR/ceph.conf")
run "$BIN/ceph-authtool" --create-keyring "$DATA_DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
run "$BIN/ceph-authtool" "$DATA_DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
  --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
run "$BIN/ceph-authtool" "$DATA_DIR/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' \
  --cap mgr 'allow profile osd' >/dev/null
run "$BIN/ceph-authtool" "$DATA_DIR/keyring" --gen-key -n client.rgw --cap mon 'allow rw' --cap osd 'allow rwx' \
  --cap mgr 'allow rw' >/dev/null
run "$BIN/monmaptool" --create --addv a "[v2:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$DATA_DIR/monmap" >/dev/null
run "$BIN/ceph-mon" "${C[@]}" --mkfs -i a --monmap "$DATA_DIR/monmap" --keyring "$DATA_DIR/keyring" \
  >"$DATA_DIR/log/mkfs.log" 2>&1 || { tail -5 "$DATA_DIR/log/mkfs.log" >&2; die "ceph-mon --mkfs failed"; }
run "$BIN/ceph-mon" "${C[@]}" -i a >>"$DATA_DIR/log/mkfs.log" 2>&1 || die "ceph-mon did not start"
for ((i = 0; i < 40; i++)); do [[ -s "$DATA_DIR/run/mon.a.pid" ]] && break; sleep 0.25; done
cp "$DATA_DIR/run/mon.a.pid" "$DATA_DIR/mon.pid"
OSD_UUID="$(cat /proc/sys/kernel/random/uuid)"
ceph_cli osd new "$OSD_UUID" >/dev/null 2>>"$DATA_DIR/log/mkfs.log" || die "ceph osd new failed (see $DATA_DIR/log)"
run "$BIN/ceph-osd" "${C[@]}" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$DATA_DIR/log/mkfs.log" 2>&1 || die "ceph-osd --mkfs failed"
run "$BIN/ceph-osd" "${C[@]}" -i 0 >>"$DATA_DIR/log/mkfs.log" 2>&1 || die "ceph-osd did not start"
for ((i = 0; i < 40; i++)); do [[ -s "$DATA_DIR/run/osd.0.pid" ]] && break; sleep 0.25; done
cp "$DATA_DIR/run/osd.0.pid" "$DATA_DIR/osd.pid"
for ((i = 0; i < 120; i++)); do ceph_cli osd stat 2>/dev/null | grep -q ' 1 up' && break; sleep 0.5; done

log "$VERSION, RADOS store (memstore), data $DATA_DIR"
ADMIN=("${LOADER[@]}" "$BIN/radosgw-admin" -c "$DATA_DIR/ceph.conf" -n client.rgw
       --log-file "$DATA_DIR/log/radosgw-admin.log")
"${ADMIN[@]}" user create --uid testid --display-name "M. Tester" \
  --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >"$DATA_DIR/log/user-create.log" 2>&1 \
  || { tail -5 "$DATA_DIR/log/user-create.log" >&2; die "radosgw-admin user create failed"; }

nohup setsid "${LOADER[@]}" "$BIN/radosgw" -f -c "$DATA_DIR/ceph.conf" -n client.rgw \
  </dev/null >"$DATA_DIR/log/stdout.log" 2>&1 &
PID=$!
echo "$PID" > "$DATA_DIR/rgw.pid"

code=""
for ((i = 0; i < WAIT * 4; i++)); do
  kill -0 "$PID" 2>/dev/null || { tail -20 "$DATA_DIR/log/stdout.log" "$DATA_DIR/log/client.rgw.log" >&2 || true; die "radosgw exited"; }
  code="$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$PORT/" || true)"
  [[ "$code" == "200" ]] && break
  sleep 0.25
done
[[ "$code" == "200" ]] || die "no answer on 127.0.0.1:$PORT after ${WAIT}s (radosgw pid $PID left running; stop_rgw.sh $DATA_DIR)"

log "up: radosgw pid $PID, http://127.0.0.1:$PORT (log $DATA_DIR/log/client.rgw.log)"
cat <<OUT
export AWS_S3_ENDPOINT_URL=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY='$SECRET_KEY'
export AWS_DEFAULT_REGION=us-east-1
export RGW_VERSION='$VERSION'
export RGW_PID=$PID
export RGW_DATA_DIR=$DATA_DIR
OUT
