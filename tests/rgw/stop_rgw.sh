#!/usr/bin/env bash
# Stop what start_rgw.sh started in DATA_DIR: radosgw (rgw.pid), the OSD (osd.pid) and the monitor
# (mon.pid), in that order. Kills only those recorded pids (TERM, then KILL after 10 s).
#   stop_rgw.sh DATA_DIR
set -euo pipefail
DATA_DIR="${1:?usage: stop_rgw.sh DATA_DIR}"
found=0
for name in rgw osd mon; do
  PIDFILE="$DATA_DIR/$name.pid"
  [[ -s "$PIDFILE" ]] || continue
  found=1
  PID="$(cat "$PIDFILE")"
  if kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for ((i = 0; i < 40; i++)); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID"; echo "stop_rgw: $name pid $PID killed (-9)" >&2; fi
  fi
  rm -f "$PIDFILE"
done
[[ $found == 1 ]] || { echo "stop_rgw: no pid files in $DATA_DIR" >&2; exit 1; }
