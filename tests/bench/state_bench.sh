#!/usr/bin/env bash
# Benchmark: the state of an N-workload fleet (default 10,000 workloads, ~60,000 resources, the
# state tests/bench/plan_bench generates) in each backend: state push, state pull and a no-change
# `plan --refresh=false` (lock, read, unlock) against the local file, the kubernetes backend (test
# API server: gzipped Secrets + Lease) and the http backend (the Terraform-protocol test server).
# Prints wall time and onboard's peak RSS per command, and how many Secrets the state took.
# It prints figures; it is not a timed test.  Usage: tests/bench/state_bench.sh [N] [BUILD_DIR]
set -euo pipefail
n=${1:-10000}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${2:-$root/build/main}
onboard=$build/onboard
T=$(mktemp -d "${TMPDIR:-/tmp}/onboard-bench-state.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T" "${gen:-/nonexistent}"
}
trap cleanup EXIT

gen=$(ONBOARD_BENCH_KEEP=1 "$build/tests/bench/plan_bench" "$n" | tee "$T/plan_bench.out" | sed -n 's/^kept //p')
[ -d "$gen" ] || { echo "plan_bench kept no fleet: $(cat "$T/plan_bench.out")" >&2; exit 1; }
head -1 "$T/plan_bench.out"
fleet=$gen/fleet.yaml state=$gen/onboard.state.json

source "$root/tests/e2e/lib.sh"
start() {   # start NAME BINARY ARGS...: a sandbox server in $T/NAME, waits for its ready file
  local name=$1 bin=$2; shift 2
  mkdir -p "$T/$name"
  "$bin" --dir "$T/$name" --port 0 "$@" >"$T/$name/server.log" 2>&1 &
  pids+=($!)
  sandbox_wait_file "$T/$name/ready" 30 "$T/$name/server.log" "${pids[-1]}"
}
start api "$build/tests/sandbox/apiserver/onboard-test-apiserver"
start http "$(find "$build/tests/sandbox/httpstate" -name onboard-test-httpstate -type f | head -1)"

timed() {   # timed WHAT ARGS...: one onboard command, its wall time and peak RSS
  local what=$1; shift
  /usr/bin/time -f "%e %M" -o "$T/time" "$onboard" "$@" -f "$fleet" >"$T/out" 2>&1 || {
    local rc=$?
    [ "$rc" = 2 ] || { echo "$what failed (exit $rc): $(tail -3 "$T/out")" >&2; exit 1; }
  }
  read -r secs kib <"$T/time"
  printf '  %-28s %6.2f s wall, %6.1f MiB peak RSS\n' "$what" "$secs" "$(awk -v k="$kib" 'BEGIN { print k / 1024 }')"
}
url="http://127.0.0.1:$(cat "$T/http/port")/state/bench"
declare -A flags=(
  [local]="--backend local --state $T/local.state.json"
  [kubernetes]="--backend kubernetes --backend-config kubeconfig=$T/api/kubeconfig --backend-config namespace=default --backend-config name=bench"
  [http]="--backend http --backend-config address=$url --backend-config lockAddress=$url"
)
for b in local kubernetes http; do
  echo "$b:"
  # shellcheck disable=SC2086
  timed "state push" state push ${flags[$b]} "$state"
  # shellcheck disable=SC2086
  timed "state pull" state pull ${flags[$b]}
  cmp -s <(jq -S . "$T/out") <(jq -S . "$state") || echo "  (state pull differs from what was pushed!)"
  # shellcheck disable=SC2086
  timed "plan --refresh=false" plan --refresh=false --no-color ${flags[$b]}
done
secrets=$(kubectl --kubeconfig "$T/api/kubeconfig" get secrets -n default -l onboard.tetrate.io/state=bench -o name | wc -l)
echo "kubernetes: the state took $secrets Secrets (state file $(du -h "$state" | cut -f1), gzip parts of at most 512 KiB)"
