#!/usr/bin/env bash
# Benchmark: a full apply and a no-change apply of N VMs end to end (default 50): the test API
# server + N sshd VMs + the docker stand-in, all on 127.0.0.1. Prints wall time, onboard's peak
# RSS, requests to the API server, and SSH connections, execs and SFTP sessions per VM (counted
# from each sshd's VERBOSE log, one "Starting session" line per exec or SFTP session).
# It prints figures; it is not a timed test.  Usage: tests/bench/fleet_bench.sh [N] [BUILD_DIR]
set -euo pipefail
n=${1:-50}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${2:-$root/build/main}
onboard=$build/onboard
source "$root/tests/e2e/lib.sh"
T=$(mktemp -d "${TMPDIR:-/tmp}/onboard-bench-fleet.XXXXXX")
trap 'sandbox_stop; rm -rf "$T"' EXIT
sandbox_start "$T" "$build" "$n"
sandbox_write_fleet "$T" 24h 8h "$n"

counts() {   # prints: API requests, SSH connections, execs, sftp sessions (since the last reset)
  local req conns execs sftp
  req=$(wc -l <"$T/api/requests.log")
  conns=$(cat "$T"/vms/vm*/sshd.log | grep -c 'Accepted publickey' || true)
  execs=$(cat "$T"/vms/vm*/sshd.log | grep -c "Starting session: command" || true)
  sftp=$(cat "$T"/vms/vm*/sshd.log | grep -c "Starting session: subsystem 'sftp'" || true)
  echo "$req $conns $execs $sftp"
}
reset() {
  curl -sk -d '{}' "$SANDBOX_API_URL/__admin/reset-log" >/dev/null
  : >"$T/api/requests.log" 2>/dev/null || true
  for f in "$T"/vms/vm*/sshd.log; do : >"$f"; done
}
run() {   # run LABEL ARGS...
  local label=$1; shift
  reset
  local t0 t1 rss
  t0=$(date +%s.%N)
  (cd "$T/fleet" && /usr/bin/time -f "%M" -o "$T/rss" "$onboard" "$@" --no-color >"$T/out" 2>&1) ||
    { tail -20 "$T/out"; echo "bench: onboard $* failed" >&2; exit 1; }
  t1=$(date +%s.%N)
  rss=$(cat "$T/rss")
  read -r req conns execs sftp < <(counts)
  awk -v l="$label" -v t0="$t0" -v t1="$t1" -v rss="$rss" -v req="$req" -v c="$conns" -v e="$execs" \
      -v s="$sftp" -v n="$n" 'BEGIN { printf "%-16s %6.2f s wall %6.1f MiB RSS  %4d API requests (%.1f/VM)  per VM: %.2f SSH connections, %.2f execs, %.2f sftp  | ", l, t1 - t0, rss / 1024, req, req / n, c / n, e / n, s / n }'
  echo \
    "$(grep -E '^(Apply complete|No changes|Destroy complete|Plan:)' "$T/out" | head -1)"
}
echo "fleet bench: $n VMs (sshd on 127.0.0.1), test API server, docker stand-in; parallelism 10"
run "full apply" apply --auto-approve
run "no-change apply" apply --auto-approve
run "no-change plan" plan
run "destroy" destroy --auto-approve
