#!/usr/bin/env bash
# End-to-end tests: the built `onboard` against the sandbox (test Kubernetes API server + three
# sshd VMs with the docker stand-in), one scenario per invocation, each in a fresh sandbox:
#   e2e.sh SCENARIO      SCENARIO = apply | drift | rollback | destroy | token | crash | concurrent
# Binaries come from the environment (tests/e2e/CMakeLists.txt sets them):
#   ONBOARD, SANDBOX_APISERVER_BIN, SANDBOX_VMS_BIN; E2E_KEEP=1 keeps the sandbox dir of a pass too.
# Every check that fails prints what it expected and what it found, and the test exits 1.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
: "${ONBOARD:?set ONBOARD to the onboard binary}"
scenario=${1:?usage: e2e.sh apply|drift|rollback|destroy|token|crash|concurrent}

T=$(mktemp -d "${TMPDIR:-/tmp}/onboard-e2e-$scenario.XXXXXX")
failures=0
ONBOARD_PID=""
finish() {
  local rc=$?
  [ -n "$ONBOARD_PID" ] && kill -KILL "$ONBOARD_PID" 2>/dev/null
  sandbox_stop
  if [ "$failures" = 0 ] && [ "$rc" = 0 ] && [ -z "${E2E_KEEP:-}" ]; then
    rm -rf "$T"
  else
    echo "e2e $scenario: FAILED (sandbox, logs and outputs kept in $T)" >&2
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
die() { echo "FAIL: $*" >&2; failures=$((failures + 1)); exit 1; }
ok() { echo "ok: $*"; }

# ob EXPECTED_RC ARGS...: runs onboard in the fleet dir, output in $T/out (also shown); dies when
# the exit code differs.
step=0
ob() {
  local expect=$1; shift
  step=$((step + 1))
  echo "---- [$step] onboard $* (expect exit $expect)"
  local color=(--no-color)
  case $1 in plan|apply|destroy) ;; *) color=() ;; esac
  (cd "$T/fleet" && "$ONBOARD" "$@" "${color[@]}") >"$T/out.$step" 2>&1
  local rc=$?
  cp "$T/out.$step" "$T/out"
  if [ "$rc" != "$expect" ]; then
    sed 's/^/  | /' "$T/out" | tail -60 >&2
    die "onboard $* exited $rc, expected $expect"
  fi
  grep -E '^(Plan:|No changes|Apply complete|Destroy complete|Apply failed|Error|error)' "$T/out" | sed 's/^/  /'
  return 0
}
out_has() {   # out_has REGEX WHAT
  grep -Eq -- "$1" "$T/out" || fail "$2: the output has no line matching /$1/ (see $T/out.$step)"
}

api() { curl -sk --max-time 10 "$@"; }
api_reset_log() { api -d '{}' "$SANDBOX_API_URL/__admin/reset-log" >/dev/null; }
api_writes() {   # the write requests logged since the last reset: "METHOD PATH" lines
  api "$SANDBOX_API_URL/__admin/requests" |
    jq -r '.[] | select(.method != "GET" and .method != "HEAD") | select(.path | startswith("/__admin") | not) | "\(.method) \(.path)"' | sort
}
kc() { kubectl --kubeconfig "$T/api/kubeconfig" "$@"; }
names() {   # names KIND: the sorted names of KIND in namespace bookinfo
  kc get "$1" -n bookinfo -o json | jq -r '.items[].metadata.name' | sort | tr '\n' ' '
}

vm() { jq -r ".vms[$1].$2" "$T/vms/vms.json"; }   # vm INDEX FIELD
VMNAMES=(ratings-vm details-vm reviews-vm)
docker_state() { echo "$(vm "$1" tools_dir)/docker-state"; }
container_running() { cat "$(docker_state "$1")/containers/istio-proxy/running" 2>/dev/null; }
reset_docker_calls() { local i; for i in 0 1 2; do : >"$(docker_state $i)/calls.log"; done; }
docker_writes() {   # docker calls that change a container on VM $1 since reset_docker_calls
  grep -E '^docker (run|rm|stop|start|rename|create|kill)' "$(docker_state "$1")/calls.log"
}
snapshot() {   # snapshot VM: inode, mode and ctime (ns) of every file onboard writes there
  local d h
  d=$(vm "$1" config_dir); h=$(vm "$1" hosts_file)
  stat -c '%n %i %a %z' "$d" "$h" 2>/dev/null
  find "$d" -mindepth 1 -maxdepth 1 -exec stat -c '%n %i %a %z' {} + 2>/dev/null | sort
  return 0
}

# -- checks shared by the scenarios -------------------------------------------------------------
check_onboarded() {   # everything an apply creates, for VM indexes "$@"
  local i name app d f want got
  local wes sidecars
  wes=$(names workloadentries); sidecars=$(names sidecars)
  for i in "$@"; do
    name=${VMNAMES[$i]}; app=${name%-vm}
    [[ " $wes" == *" $name "* ]] || fail "WorkloadEntry bookinfo/$name is not in the API server (found: $wes)"
    [[ " $sidecars" == *" $name "* ]] || fail "Sidecar bookinfo/$name is not in the API server (found: $sidecars)"
    got=$(kc get workloadentry -n bookinfo "$name" -o json 2>/dev/null |
      jq -r '"\(.spec.serviceAccount) \(.spec.labels.app) \(.spec.ports.http)"')
    [ "$got" = "bookinfo-$app $app 9080" ] ||
      fail "WorkloadEntry $name: want serviceAccount/app/port 'bookinfo-$app $app 9080', got '$got'"
    got=$(kc get sidecar -n bookinfo "$name" -o json 2>/dev/null |
      jq -r '"\(.spec.ingress[0].port.number) \(.spec.egress[0].bind) \(.spec.workloadSelector.labels.app)"')
    [ "$got" = "9080 127.0.0.2 $app" ] ||
      fail "Sidecar $name: want ingress/egress bind/selector '9080 127.0.0.2 $app', got '$got'"
    d=$(vm "$i" config_dir)
    for f in istio-ca.pem:644 k8s-ca.pem:644 sidecar.env:644 istio-token:640; do
      want=${f#*:}; f=${f%%:*}
      got=$(stat -c %a "$d/$f" 2>/dev/null || echo missing)
      [ "$got" = "$want" ] || fail "VM $name: $d/$f mode: want $want, got $got"
    done
    grep -qx "POD_NAME=$name" "$d/sidecar.env" 2>/dev/null || fail "VM $name: sidecar.env lacks POD_NAME=$name"
    grep -qx "SERVICE_ACCOUNT=bookinfo-$app" "$d/sidecar.env" 2>/dev/null ||
      fail "VM $name: sidecar.env lacks SERVICE_ACCOUNT=bookinfo-$app"
    grep -q 'BEGIN CERTIFICATE' "$d/istio-ca.pem" 2>/dev/null || fail "VM $name: istio-ca.pem is not a PEM certificate"
    [ "$(tr -cd . <"$d/istio-token" 2>/dev/null | wc -c)" = 2 ] ||
      fail "VM $name: istio-token is not a JWT"
    grep -q "^# BEGIN onboard bookinfo/$name\$" "$(vm "$i" hosts_file)" ||
      fail "VM $name: the hosts file has no onboard block for bookinfo/$name"
    [ "$(container_running "$i")" = true ] || fail "VM $name: the istio-proxy container is not running (stand-in)"
  done
  ok "onboarded: ${*/#/vm}"
}

check_gone() {   # nothing of VM indexes "$@" is left
  local i name d
  local wes sidecars
  wes=$(names workloadentries); sidecars=$(names sidecars)
  for i in "$@"; do
    name=${VMNAMES[$i]}
    [[ " $wes" == *" $name "* ]] && fail "WorkloadEntry bookinfo/$name is still in the API server"
    [[ " $sidecars" == *" $name "* ]] && fail "Sidecar bookinfo/$name is still in the API server"
    d=$(vm "$i" config_dir)
    for f in istio-ca.pem k8s-ca.pem sidecar.env istio-token; do
      [ -e "$d/$f" ] && fail "VM $name: $d/$f is still there"
    done
    grep -q "onboard bookinfo/$name" "$(vm "$i" hosts_file)" && fail "VM $name: the hosts block is still there"
    [ -z "$(ls -A "$(docker_state "$i")/containers" 2>/dev/null)" ] ||
      fail "VM $name: containers are left: $(ls "$(docker_state "$i")/containers" | tr '\n' ' ')"
  done
  ok "nothing left of: ${*/#/vm}"
}

check_no_writes() {   # $1: what; no API write, no VM file or container change since the reset
  local w i
  w=$(api_writes)
  [ -z "$w" ] || fail "$1: the API server got writes: $(echo "$w" | tr '\n' ';')"
  for i in 0 1 2; do
    snapshot "$i" | diff -q "$T/snap.$i" - >/dev/null ||
      fail "$1: files on ${VMNAMES[$i]} changed: $(snapshot "$i" | diff "$T/snap.$i" - | tr '\n' ';')"
    w=$(docker_writes "$i")
    [ -z "$w" ] || fail "$1: docker on ${VMNAMES[$i]} was changed: $(echo "$w" | tr '\n' ';')"
  done
}
mark() {   # remember the world, to compare after the next command
  local i
  api_reset_log
  reset_docker_calls
  for i in 0 1 2; do snapshot "$i" >"$T/snap.$i"; done
}

# -- scenarios --------------------------------------------------------------------------------
scenario_apply() {
  ob 2 plan --detailed-exitcode
  out_has '^Plan: 19 to add, 0 to change, 0 to destroy' "first plan"
  ob 0 apply --auto-approve
  out_has '^Apply complete! 19 created' "first apply"
  check_onboarded 0 1 2
  [ "$(kc get controlplanes.install.tetrate.io -n istio-system controlplane -o json | jq -c '.spec.meshExpansion != null')" = true ] ||
    fail "the ControlPlane has no spec.meshExpansion after apply"
  mark
  ob 0 apply --auto-approve
  out_has '^No changes' "second apply"
  check_no_writes "second apply (idempotence)"
  ob 0 plan --detailed-exitcode
  out_has '^No changes' "plan after apply"
  check_no_writes "plan after apply"
  ob 0 plan --json --out "$T/saved.plan"
  check_no_token_leak
  ok "apply + idempotence"
}

check_no_token_leak() {   # no VM's token (nor its JWT signature) in any output, log, plan or state file
  local i tok sig f leaked=0
  for i in 0 1 2; do
    tok=$(cat "$(vm "$i" config_dir)/istio-token")
    [ -n "$tok" ] || { fail "VM $i has an empty istio-token"; continue; }
    sig=${tok##*.}
    for f in "$T"/out.* "$T/saved.plan" "$T/api/requests.log" "$T"/fleet/onboard.state.json* \
             "$T"/vms/vm*/sshd.log; do
      [ -f "$f" ] || continue
      if grep -qF -- "$sig" "$f"; then
        fail "VM $i's token appears in $f"
        leaked=1
      fi
    done
  done
  [ $leaked = 0 ] && ok "no token in outputs, plans, logs or state"
}

scenario_drift() {
  ob 0 apply --auto-approve
  local env0 env1
  env0=$(vm 0 config_dir)/sidecar.env
  cp "$env0" "$T/sidecar.env.orig"
  echo "EXTRA_FROM_AN_OPERATOR=1" >>"$env0"                     # a file edited on ratings-vm
  kc delete workloadentry -n bookinfo details-vm >/dev/null ||    # a WorkloadEntry deleted
    die "kubectl delete workloadentry details-vm failed"
  (cd "$(vm 2 tools_dir)" && ./docker stop istio-proxy >/dev/null)  # a container stopped
  [ "$(container_running 2)" = false ] || die "the stand-in did not stop reviews-vm's container"
  ob 2 plan --detailed-exitcode
  out_has '^Plan: 1 to add, 2 to change, 0 to destroy' "drift plan"
  out_has 'files\.bookinfo/ratings-vm will be updated' "drift plan: the edited sidecar.env"
  out_has 'sidecar\.env.*changed outside onboard' "drift plan: the reason for sidecar.env"
  out_has 'workload_entry\.bookinfo/details-vm will be created' "drift plan: the deleted WorkloadEntry"
  out_has 'deleted outside onboard' "drift plan: the reason for the WorkloadEntry"
  out_has 'container\.bookinfo/reviews-vm will be updated' "drift plan: the stopped container"
  out_has 'not running' "drift plan: the reason for the container"
  mark
  ob 0 apply --auto-approve
  cmp -s "$env0" "$T/sidecar.env.orig" || fail "apply did not restore ratings-vm's sidecar.env"
  check_onboarded 0 1 2
  local w
  w=$(api_writes)
  [ "$w" = "POST /apis/networking.istio.io/v1beta1/namespaces/bookinfo/workloadentries" ] ||
    [ "$w" = "PATCH /apis/networking.istio.io/v1beta1/namespaces/bookinfo/workloadentries/details-vm" ] ||
    fail "drift apply: the only API write should be details-vm's WorkloadEntry, got: $(echo "$w" | tr '\n' ';')"
  # details-vm's files and container were not drifted: untouched.
  snapshot 1 | diff -q "$T/snap.1" - >/dev/null || fail "drift apply rewrote files on details-vm"
  [ -z "$(docker_writes 1)" ] || fail "drift apply touched details-vm's container: $(docker_writes 1)"
  # reviews-vm: only the container (started again), no file written.
  snapshot 2 | diff -q "$T/snap.2" - >/dev/null || fail "drift apply rewrote files on reviews-vm"
  ob 0 plan --detailed-exitcode
  out_has '^No changes' "plan after the drift repair"
  ok "drift"
}

scenario_rollback() {
  # reviews-vm's Sidecar cannot be applied: every write to it gets 422 from the API server.
  api -X POST -d '{"path_regex": "/sidecars/reviews-vm", "method": "PATCH", "status": 422, "count": 100000}' \
    "$SANDBOX_API_URL/__admin/faults" >/dev/null || die "cannot set the API server fault"
  ob 1 apply --auto-approve
  out_has 'rolled back' "failed apply: the summary says what was rolled back"
  out_has 'sidecar\.bookinfo/reviews-vm' "failed apply: names the failed Sidecar"
  out_has '[1-9][0-9]* rolled back, 1 failed' "failed apply: counts"
  check_onboarded 0 1
  check_gone 2
  (cd "$T/fleet" && "$ONBOARD" state list --no-color 2>&1) >"$T/state.list"
  grep -q 'workload_entry.bookinfo/reviews-vm' "$T/state.list" &&
    fail "the state still records reviews-vm's WorkloadEntry after the rollback"
  api -X DELETE "$SANDBOX_API_URL/__admin/faults" >/dev/null
  ob 2 plan --detailed-exitcode
  out_has 'sidecar\.bookinfo/reviews-vm will be created' "plan after the rollback"
  ob 0 apply --auto-approve
  check_onboarded 0 1 2
  ob 0 plan --detailed-exitcode
  out_has '^No changes' "plan after completing the rolled-back VM"
  ok "rollback"
}

scenario_destroy() {
  ob 0 apply --auto-approve
  check_onboarded 0 1 2
  ob 0 destroy --auto-approve
  out_has '^Destroy complete! 0 created, 0 updated, 19 destroyed' "destroy"
  check_gone 0 1 2
  [ "$(kc get controlplanes.install.tetrate.io -n istio-system controlplane -o json | jq -c '.spec.meshExpansion')" = null ] ||
    fail "destroy did not revert the ControlPlane's meshExpansion that onboard turned on"
  mark
  ob 0 destroy --auto-approve
  check_no_writes "second destroy"
  ok "destroy"
}

scenario_token() {
  # Tokens of 10 minutes renewed 9m59s before expiry: within a second of apply they are due.
  sandbox_write_fleet "$T" 10m 9m59s
  ob 0 apply --auto-approve
  check_onboarded 0 1 2
  sleep 2
  local tok=$(vm 0 config_dir)/istio-token before after
  before=$(stat -c %i "$tok"); cp "$tok" "$T/token.before"
  ob 2 plan --detailed-exitcode
  out_has 'token\.bookinfo/ratings-vm' "token plan: names the token"
  out_has 'token\.bookinfo/ratings-vm must be replaced' "token plan: the token is replaced"
  out_has 'expires in [0-9]+[hms].*within renewBefore' "token plan: shows the time left and why"
  out_has 'istio-token: a new token is written in place' "token plan: the file is rewritten in place"
  mark
  ob 0 apply --auto-approve
  after=$(stat -c %i "$tok")
  [ "$before" = "$after" ] || fail "the renewed istio-token was not rewritten in place (inode $before -> $after)"
  cmp -s "$tok" "$T/token.before" && fail "apply did not write a new istio-token"
  local w
  w=$(api_writes | grep -v '/serviceaccounts/bookinfo-[a-z]*/token$')
  [ -z "$w" ] || fail "token renewal wrote more than TokenRequests to the API server: $(echo "$w" | tr '\n' ';')"
  local i f
  for i in 0 1 2; do
    [ -z "$(docker_writes "$i")" ] || fail "token renewal touched the container on ${VMNAMES[$i]}: $(docker_writes "$i")"
    # only istio-token's ctime may change
    diff <(grep -v istio-token "$T/snap.$i" | grep -v ' [0-9]* 755 ') \
         <(snapshot "$i" | grep -v istio-token | grep -v ' [0-9]* 755 ') >/dev/null ||
      fail "token renewal rewrote other files on ${VMNAMES[$i]}"
  done
  [ "$(container_running 0)" = true ] || fail "the proxy container stopped during the renewal"
  ok "token renewal"
}

# SIGKILLs `onboard apply` after each delay and checks that the next apply converges and a plan
# shows no changes; then SIGKILLs `onboard destroy` after the same delay and checks that the next
# destroy removes everything. Each killed run's lock must be reported as stale and is cleared with
# `onboard force-unlock ID`. E2E_CRASH_DELAYS overrides the delays (seconds).
killed_run() {   # killed_run DELAY SUBCOMMAND: start onboard SUBCOMMAND, SIGKILL it after DELAY
  local d=$1 cmd=$2
  echo "==== kill $cmd after ${d}s"
  (cd "$T/fleet" && exec "$ONBOARD" "$cmd" --auto-approve --no-color) >"$T/killed.$cmd.$d" 2>&1 &
  ONBOARD_PID=$!
  sleep "$d"
  kill -KILL "$ONBOARD_PID" 2>/dev/null
  wait "$ONBOARD_PID" 2>/dev/null
  ONBOARD_PID=""
  grep -E '^\[[0-9]+/[0-9]+\]' "$T/killed.$cmd.$d" | tail -1 | sed 's/^/  last progress line: /'
  if [ -e "$T/fleet/onboard.state.json.lock" ]; then
    step=$((step + 1))
    (cd "$T/fleet" && "$ONBOARD" plan --no-color --lock-timeout 0) >"$T/out" 2>&1
    local rc=$? lock
    cp "$T/out" "$T/out.$step"
    echo "---- [$step] plan with the dead run's lock:"; grep -i 'lock' "$T/out" | head -3 | sed 's/^/  /'
    [ "$rc" = 1 ] || fail "plan with a dead run's lock exited $rc, expected 1"
    grep -qi 'stale' "$T/out" || fail "the dead run's lock is not reported as stale: $(head -3 "$T/out")"
    lock=$(grep -oiE 'force-unlock [A-Za-z0-9_-]+' "$T/out" | head -1 | awk '{print $2}')
    [ -n "$lock" ] || die "cannot find the lock ID in: $(cat "$T/out")"
    ob 0 force-unlock "$lock"
  fi
  ob 0 state list   # the state the killed run left is readable
}
now() { date +%s.%N; }
spread() {   # spread SECONDS N: N delays evenly inside (0, SECONDS)
  awk -v t="$1" -v n="$2" 'BEGIN { for (k = 1; k <= n; k++) printf "%.2f ", t * k / (n + 1) }'
}
scenario_crash() {
  # Time one full apply and destroy, then kill each at E2E_CRASH_POINTS (default 10: 20 kill positions in all) points spread
  # over its duration (or at E2E_CRASH_DELAYS seconds, for both).
  local t0 ta td da dd i d
  t0=$(now); ob 0 apply --auto-approve; ta=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')
  t0=$(now); ob 0 destroy --auto-approve; td=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')
  da=${E2E_CRASH_DELAYS:-$(spread "$ta" "${E2E_CRASH_POINTS:-10}")}
  dd=${E2E_CRASH_DELAYS:-$(spread "$td" "${E2E_CRASH_POINTS:-10}")}
  echo "apply takes ${ta}s, destroy ${td}s: killing apply at $da and destroy at $dd"
  da=($da); dd=($dd)
  for i in "${!da[@]}"; do
    d=${da[$i]}
    killed_run "$d" apply
    ob 0 apply --auto-approve
    ob 0 plan --detailed-exitcode
    out_has '^No changes' "plan after recovering from an apply killed at ${d}s"
    check_onboarded 0 1 2
    d=${dd[$i]:-${dd[0]}}
    killed_run "$d" destroy
    ob 0 destroy --auto-approve
    check_gone 0 1 2
  done
  ok "crash recovery: apply killed at ${da[*]}, destroy killed at ${dd[*]}"
}

# Two runs at once: while an apply holds the lock, another apply with --lock-timeout 0 exits 1
# naming the live holder (not stale); one with a --lock-timeout waits for it and then finds nothing
# to do; the state is whole afterwards.
scenario_concurrent() {
  local i first rc
  (cd "$T/fleet" && exec "$ONBOARD" apply --auto-approve --no-color) >"$T/first" 2>&1 &
  ONBOARD_PID=$!; first=$ONBOARD_PID
  for ((i = 0; i < 100; i++)); do
    [ -e "$T/fleet/onboard.state.json.lock" ] && break
    sleep 0.1
  done
  [ -e "$T/fleet/onboard.state.json.lock" ] || die "the first apply took no lock within 10s"
  ob 1 apply --auto-approve --lock-timeout 0
  out_has "locked by .*pid $first .*for apply" "second apply: names the holder of the lock"
  grep -qi stale "$T/out" && fail "second apply: a live holder's lock is called stale"
  ob 0 apply --auto-approve --lock-timeout 120
  out_has '^No changes' "third apply: waited for the first and found nothing left to do"
  wait "$first"; rc=$?; ONBOARD_PID=""
  [ "$rc" = 0 ] || fail "the first apply exited $rc: $(tail -3 "$T/first")"
  grep -q '^Apply complete! 19 created' "$T/first" || fail "the first apply did not complete: $(tail -3 "$T/first")"
  ob 0 state list
  [ "$(grep -c '^[a-z_]*\.' "$T/out")" = 19 ] || fail "the state should list 19 resources, it lists: $(cat "$T/out")"
  ob 0 plan --detailed-exitcode
  check_onboarded 0 1 2
  ok "concurrency"
}

# One compound command up to the end of the file: bash parses it whole before running it, so
# editing this file while a test runs cannot derail the running test.
{
for tool in curl jq kubectl; do
  command -v "$tool" >/dev/null || die "$tool is needed by the e2e tests: apt-get install $tool (kubectl: kubernetes-client)"
done
sandbox_start "$T" unused 3 || die "the sandbox did not start"
sandbox_write_fleet "$T"
case $scenario in
  apply|drift|rollback|destroy|token|crash|concurrent) "scenario_$scenario" ;;
  *) die "unknown scenario $scenario" ;;
esac
[ "$failures" = 0 ] || exit 1
echo "PASS: e2e $scenario"
exit 0
}
