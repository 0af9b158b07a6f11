#!/usr/bin/env bash
# Stop what up.sh started: serve first (it pauses its deployments through the API), then the servers.
# TERM, then KILL after a grace period, always to the whole process group: no orphans.
set -uo pipefail
source "$(dirname "$0")/env.sh"

stop() {  # name
  local f="$RUN/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "down: stopped $1"
  fi
  rm -f "$f"
}
stop serve
stop mlflow
stop prefect
