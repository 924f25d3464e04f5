#!/usr/bin/env bash
# End-to-end tests: the built `onboard` against the sandbox (test Kubernetes API server + three
# sshd VMs with the docker stand-in), one scenario per invocation, each in a fresh sandbox:
#   e2e.sh SCENARIO      SCENARIO = apply | drift | rollback | destroy | token | crash | concurrent
#                                   | docker (the VMs' docker is the real engine; needs root)
# Binaries come from the environment (tests/e2e/CMakeLists.txt sets them):
#   ONBOARD, SANDBOX_APISERVER_BIN, SANDBOX_VMS_BIN; E2E_KEEP=1 keeps the sandbox dir of a pass too.
# Every check that fails prints what it expected and what it found, and the test exits 1.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
: "${ONBOARD:?set ONBOARD to the onboard binary}"
scenario=${1:?usage: e2e.sh apply|drift|rollback|destroy|token|crash|concurrent|docker}

T=$(mktemp -d "${TMPDIR:-/tmp}/onboard-e2e-$scenario.XXXXXX")
ONBOARD_PID=""
e2e_cleanup() {
  [ -n "$ONBOARD_PID" ] && kill -KILL "$ONBOARD_PID" 2>/dev/null
  sandbox_engines_stop   # the docker scenario's engines (none otherwise)
  sandbox_stop
}
e2e_harness "$scenario"

# ob EXPECTED_RC ARGS...: runs onboard in the fleet dir (plan, apply and destroy without colour).
ob() {
  local expect=$1 color=(--no-color)
  shift
  case $1 in plan|apply|destroy) ;; *) color=() ;; esac
  e2e_run "$T/fleet" "$expect" "$ONBOARD" "$@" "${color[@]}"
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

declare -A VMF=()   # "INDEX.FIELD" -> value, from vms.json (vms_load): no jq per lookup
vms_load() {
  local k v
  while IFS=$'\t' read -r k v; do VMF[$k]=$v; done < <(jq -r '.vms | to_entries[] | .key as $i |
    .value | to_entries[] | "\($i).\(.key)\t\(.value)"' "$T/vms/vms.json")
}
vm() { printf '%s\n' "${VMF[$1.$2]?vm $1 has no field $2 in vms.json}"; }   # vm INDEX FIELD
VMNAMES=(ratings-vm details-vm reviews-vm)
# What `docker` is on the VMs: the recording stand-in, or (scenario docker) the real engine, one
# per VM (tests/e2e/lib.sh sandbox_engines_start). docker-state/calls.log records the calls in both.
ENGINE=standin
PROXY_IMAGE=docker.io/tetrate/proxyv2:1.8.6   # imageHub/proxyv2:tag of sandbox_write_fleet
docker_state() { echo "$(vm "$1" tools_dir)/docker-state"; }
dk() {   # dk VM ARGS...: the real client on VM's engine, not recorded in calls.log
  local i=$1; shift
  /usr/bin/docker -H "unix://${SANDBOX_ENGINE_DIRS[$i]}/docker.sock" "$@"
}
container_running() {
  if [ "$ENGINE" = real ]; then
    dk "$1" inspect -f '{{.State.Running}}' istio-proxy 2>/dev/null
  else
    cat "$(docker_state "$1")/containers/istio-proxy/running" 2>/dev/null
  fi
}
containers_left() {   # the names of every container on VM $1, running or not
  if [ "$ENGINE" = real ]; then
    dk "$1" ps -a --format '{{.Names}}' | sort | tr '\n' ' '
  else
    ls "$(docker_state "$1")/containers" 2>/dev/null | tr '\n' ' '
  fi
}
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
  local wes sidecars wej scj
  # two kubectl reads for all VMs (kubectl costs ~0.3 s a call; the crash scenario checks often)
  wej=$(kc get workloadentries -n bookinfo -o json); scj=$(kc get sidecars -n bookinfo -o json)
  wes=$(jq -r '.items[].metadata.name' <<<"$wej" | sort | tr '\n' ' ')
  sidecars=$(jq -r '.items[].metadata.name' <<<"$scj" | sort | tr '\n' ' ')
  for i in "$@"; do
    name=${VMNAMES[$i]}; app=${name%-vm}
    [[ " $wes" == *" $name "* ]] || fail "WorkloadEntry bookinfo/$name is not in the API server (found: $wes)"
    [[ " $sidecars" == *" $name "* ]] || fail "Sidecar bookinfo/$name is not in the API server (found: $sidecars)"
    got=$(jq -r --arg n "$name" '.items[] | select(.metadata.name == $n) |
      "\(.spec.serviceAccount) \(.spec.labels.app) \(.spec.ports.http)"' <<<"$wej")
    [ "$got" = "bookinfo-$app $app 9080" ] ||
      fail "WorkloadEntry $name: want serviceAccount/app/port 'bookinfo-$app $app 9080', got '$got'"
    got=$(jq -r --arg n "$name" '.items[] | select(.metadata.name == $n) |
      "\(.spec.ingress[0].port.number) \(.spec.egress[0].bind) \(.spec.workloadSelector.labels.app)"' <<<"$scj")
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
    [ "$(container_running "$i")" = true ] || fail "VM $name: the istio-proxy container is not running ($ENGINE docker)"
  done
  ok "onboarded: ${*/#/vm}"
}

check_gone() {   # nothing of VM indexes "$@" is left
  local i name d got
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
    got=$(containers_left "$i")
    [ -z "$got" ] || fail "VM $name: containers are left ($ENGINE docker): $got"
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

now() { date +%s.%N; }
spread() {   # spread SECONDS N: N delays evenly inside (0, SECONDS)
  awk -v t="$1" -v n="$2" 'BEGIN { for (k = 1; k <= n; k++) printf "%.2f ", t * k / (n + 1) }'
}

# Crash recovery. `onboard apply` and `onboard destroy` are SIGKILLed at two kinds of positions:
#  - after delays spread evenly over a full run (E2E_CRASH_POINTS per command, default 10, or
#    E2E_CRASH_DELAYS seconds), wherever that lands;
#  - inside one chosen request or VM step, made slow so the kill lands there for certain:
#      api METHOD PATH-REGEX   the test API server holds that request (a fault with delay_ms and
#                              no error) and onboard is killed while it waits for the answer; the
#                              server then completes the write, as a real one does after its
#                              client went away: the world has changed, the state never heard
#      vm  VM SUBCOMMAND[@N]   the VM's docker stand-in lets N (default 0) such calls pass,
#                              then does the next one's work and hangs before answering
#                              (docker-standin's slow file), and onboard is killed meanwhile
#    The kill follows the moment the request reaches the server (its one-shot fault is used up)
#    or the docker call has done its work (slow.pid appears), and the test waits for the held
#    request or call to finish before it looks at the world.
# After each kill: the run's lock is reported as stale and cleared with `onboard force-unlock ID`
# (a kill inside a step must leave one); the next plan shows what is left (every address is
# either recorded in state or planned; inside a step: that step is planned again); the next run
# converges (plan: no changes, everything onboarded / nothing left, no intent left in state,
# the ControlPlane's meshExpansion off again after destroy); where the killed step had acted,
# the recovery run sees that and does not act again.
KILL_HOLD_MS=2000   # how long a chosen request or docker call is held

run_bg() {   # run_bg SUBCOMMAND LOG: onboard SUBCOMMAND in the background (ONBOARD_PID)
  (cd "$T/fleet" && exec "$ONBOARD" "$1" --auto-approve --no-color) >"$2" 2>&1 &
  ONBOARD_PID=$!
}
kill_bg() {
  kill -KILL "$ONBOARD_PID" 2>/dev/null
  wait "$ONBOARD_PID" 2>/dev/null
  ONBOARD_PID=""
}
after_kill() {   # after_kill LOG MUST_HAVE_LOCK: the stale lock is reported and cleared
  local log=$1 must=$2 rc lock
  grep -E '^\[[0-9]+/[0-9]+\]' "$log" | tail -1 | sed 's/^/  last progress line: /'
  if [ -e "$T/fleet/onboard.state.json.lock" ]; then
    step=$((step + 1))
    (cd "$T/fleet" && "$ONBOARD" plan --no-color --lock-timeout 0) >"$T/out" 2>&1
    rc=$?
    cp "$T/out" "$T/out.$step"
    echo "---- [$step] plan with the dead run's lock:"; grep -i 'lock' "$T/out" | head -3 | sed 's/^/  /'
    [ "$rc" = 1 ] || fail "plan with a dead run's lock exited $rc, expected 1"
    grep -qi 'stale' "$T/out" || fail "the dead run's lock is not reported as stale: $(head -3 "$T/out")"
    lock=$(grep -oiE 'force-unlock [A-Za-z0-9_-]+' "$T/out" | head -1 | awk '{print $2}')
    [ -n "$lock" ] || die "cannot find the lock ID in: $(cat "$T/out")"
    ob 0 force-unlock "$lock"
  elif [ "$must" = 1 ]; then
    fail "the run killed inside a step left no lock ($T/fleet/onboard.state.json.lock)"
  fi
  ob 0 state list   # the state the killed run left is readable
}
killed_run() {   # killed_run DELAY SUBCOMMAND: start onboard SUBCOMMAND, SIGKILL it after DELAY
  local d=$1 cmd=$2
  echo "==== kill $cmd after ${d}s"
  run_bg "$cmd" "$T/killed.$cmd.$d"
  sleep "$d"
  kill_bg
  after_kill "$T/killed.$cmd.$d" 0
}
killed_inside() {   # killed_inside SUBCOMMAND api METHOD PATH-REGEX ADDRESS | SUBCOMMAND vm VM DOCKER-SUBCOMMAND[@N] ADDRESS
  # ADDRESS: the step the kill must land in (started, not finished), or "-": the refresh, before any step
  local cmd=$1 kind=$2 a=$3 b=$4 want=$5 log t0 slow pid reached=0 got
  log=$T/killed.$cmd.$kind.$a.${b//[^A-Za-z0-9]/_}
  echo "==== kill $cmd inside: $kind $a $b"
  if [ "$kind" = api ]; then
    api -X POST -d "{\"method\": \"$a\", \"path_regex\": \"$b\", \"delay_ms\": $KILL_HOLD_MS, \"count\": 1}" \
      "$SANDBOX_API_URL/__admin/faults" | jq -e '.faults == 1' >/dev/null || die "cannot set the API server fault"
  else
    slow=$(docker_state "$a")
    rm -f "$slow/slow.pid"
    echo "${b%@*} $(awk -v ms="$KILL_HOLD_MS" 'BEGIN { print ms / 1000 }') $( [[ $b == *@* ]] && echo "${b#*@}")" >"$slow/slow"
  fi
  run_bg "$cmd" "$log"
  t0=$SECONDS
  while kill -0 "$ONBOARD_PID" 2>/dev/null && [ $((SECONDS - t0)) -lt 60 ]; do
    if [ "$kind" = api ]; then
      [ "$(api "$SANDBOX_API_URL/__admin/faults" | jq length)" = 0 ] && { reached=1; break; }
    else
      [ -s "$slow/slow.pid" ] && { reached=1; break; }
    fi
    sleep 0.05
  done
  kill_bg
  if [ "$kind" = api ]; then
    api -X DELETE "$SANDBOX_API_URL/__admin/faults" >/dev/null
    # the held request completes on the server (the write happens) before the test goes on
    [ $reached = 1 ] && sleep "$(awk -v ms="$KILL_HOLD_MS" 'BEGIN { print ms / 1000 + 0.3 }')"
  else
    pid=$(cat "$slow/slow.pid" 2>/dev/null)
    for ((t0 = 0; t0 < 100; t0++)); do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    rm -f "$slow/slow" "$slow/slow.pid"
  fi
  if [ $reached = 0 ]; then
    fail "onboard $cmd ended (or ran 60s) without reaching $kind $a $b; its output: $(tail -5 "$log" | tr '\n' ';')"
    after_kill "$log" 0
    return 1
  fi
  if [ "$want" = - ]; then
    got=$(grep -E '^\[[0-9]+/[0-9]+\] ' "$log" | head -3)
    [ -z "$got" ] || fail "the kill inside $kind $a $b should land in the refresh, before any step, but steps had run: $got"
  else
    grep -Eq "^\[[0-9]+/[0-9]+\] $want: (creating|destroying)\.\.\.\$" "$log" ||
      fail "the kill inside $kind $a $b landed outside the step $want: it had not started ($log)"
    got=$(grep -E "^\[[0-9]+/[0-9]+\] $want: " "$log" | grep -Ev ': (creating|destroying)\.\.\.$')
    [ -z "$got" ] || fail "the kill inside $kind $a $b landed after the step $want had finished: $got"
  fi
  after_kill "$log" 1
}

ALL_ADDRESSES=""   # every address a full apply records (set by scenario_crash)
state_addresses() {   # state_addresses [all|intent|done]: sorted addresses in the local state
  local f=$T/fleet/onboard.state.json sel=true
  [ -f "$f" ] || return 0
  case ${1:-all} in intent) sel='.intent != null' ;; done) sel='.intent == null' ;; esac
  jq -r ".resources[] | select($sel) | .address" "$f" | sort
}
plan_left() {   # plan_left apply|destroy [ADDRESS]: after a killed run, the plan shows what is left
  local mode=$1 want=${2:-} rc json planned missing got flags=()
  [ "$mode" = destroy ] && flags=(--destroy)
  step=$((step + 1))
  json=$T/plan.$step.json
  echo "---- [$step] onboard plan ${flags[*]} --json --detailed-exitcode (what the killed $mode left)"
  (cd "$T/fleet" && "$ONBOARD" plan "${flags[@]}" --json --detailed-exitcode) >"$json" 2>"$T/out.$step"
  rc=$?
  if { [ "$rc" != 0 ] && [ "$rc" != 2 ]; } || ! jq -e .changes "$json" >/dev/null 2>&1; then
    die "plan after the killed $mode exited $rc: $(tail -5 "$T/out.$step" | tr '\n' ';')"
  fi
  planned=$(jq -r '.changes[] | select(.action != "no-op" and .action != "read") | "\(.action) \(.address)"' "$json" | sort)
  echo "$planned" | awk 'NF { n++; s = s ", " $0 } END { printf "  left: %d change(s)%s\n", n, n ? ": " substr(s, 3) : "" }'
  if [ -z "$planned" ]; then [ "$rc" = 0 ]; else [ "$rc" = 2 ]; fi ||
    fail "plan after the killed $mode: exit code $rc disagrees with its changes: $planned"
  if [ "$mode" = apply ]; then
    got=$(echo "$planned" | awk '$1 == "delete"')
    [ -z "$got" ] || fail "plan after the killed apply destroys something: $got"
    missing=$(comm -23 <(echo "$ALL_ADDRESSES") <({ echo "$planned" | awk 'NF { print $2 }'; state_addresses "done"; } | sort -u))
    [ -z "$missing" ] || fail "after the killed apply, neither recorded in state nor planned: $(echo $missing)"
    if [ -n "$want" ]; then
      jq -r --arg a "$want" '.changes[] | select(.address == $a) | .reasons[] | tostring' "$json" |
        grep -q 'stopped during this step' ||
        fail "plan after the kill inside $want: it is not planned again as a step the killed run left: $(grep -A3 "\"$want\"" "$json" | head -5 | tr '\n' ' ')"
    fi
  else
    got=$(echo "$planned" | awk '$1 != "delete"')
    [ -z "$got" ] || fail "plan --destroy after the killed destroy does more than delete: $got"
    [ "$(echo "$planned" | awk 'NF { print $2 }')" = "$(state_addresses)" ] ||
      fail "plan --destroy after the killed destroy: planned deletes [$(echo "$planned" | awk '{print $2}' | tr '\n' ' ')] differ from the state's records [$(state_addresses | tr '\n' ' ')]"
    if [ -n "$want" ]; then
      echo "$planned" | grep -qx "delete $want" || fail "plan --destroy after the kill inside $want does not delete it"
    fi
  fi
}
check_recovered() {   # check_recovered apply|destroy: the run after a killed one converged
  local left
  if [ "$1" = apply ]; then
    ob 0 plan --detailed-exitcode
    out_has '^No changes' "plan after recovering from the killed apply"
    check_onboarded 0 1 2
    left=$(state_addresses intent)
    [ -z "$left" ] || fail "intents left in state after the recovering apply: $(echo $left)"
    [ "$(state_addresses)" = "$ALL_ADDRESSES" ] ||
      fail "the state after the recovering apply records [$(state_addresses | tr '\n' ' ')]"
  else
    check_gone 0 1 2
    left=$(state_addresses)
    [ -z "$left" ] || fail "the state still records after the recovering destroy: $(echo $left)"
    [ "$(kc get controlplanes.install.tetrate.io -n istio-system controlplane -o json | jq -c '.spec.meshExpansion')" = null ] ||
      fail "the ControlPlane's meshExpansion, turned on by onboard, is still on after the recovering destroy"
  fi
}

scenario_crash() {
  # Time one full apply and destroy, then kill each at E2E_CRASH_POINTS (default 10: 20 kill
  # positions in all) points spread over its duration (or at E2E_CRASH_DELAYS seconds, for both),
  # then inside chosen requests and VM steps (E2E_CRASH_INSIDE=0 skips those).
  local t0 ta td da dd i d pos kind a b want norepeat w
  t0=$(now); ob 0 apply --auto-approve; ta=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')
  ALL_ADDRESSES=$(state_addresses)
  [ "$(echo "$ALL_ADDRESSES" | wc -l)" = 19 ] || die "a full apply should record 19 addresses, got: $ALL_ADDRESSES"
  t0=$(now); ob 0 destroy --auto-approve; td=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')
  check_recovered destroy
  da=${E2E_CRASH_DELAYS:-$(spread "$ta" "${E2E_CRASH_POINTS:-10}")}
  dd=${E2E_CRASH_DELAYS:-$(spread "$td" "${E2E_CRASH_POINTS:-10}")}
  echo "apply takes ${ta}s, destroy ${td}s: killing apply at $da and destroy at $dd"
  da=($da); dd=($dd)
  for i in "${!da[@]}"; do
    d=${da[$i]}
    killed_run "$d" apply
    plan_left apply
    ob 0 apply --auto-approve
    check_recovered apply
    d=${dd[$i]:-${dd[0]}}
    killed_run "$d" destroy
    plan_left destroy
    ob 0 destroy --auto-approve
    check_recovered destroy
  done
  ok "crash recovery: apply killed at ${da[*]}, destroy killed at ${dd[*]}"
  [ "${E2E_CRASH_INSIDE:-1}" = 0 ] && return 0

  # Inside chosen steps: KIND A B, the address the step belongs to ("-": the kill lands in the
  # refresh, before any step), and "norepeat" when the killed step had done its work, so the
  # recovering run must find it done and not do it again. On a VM, the refresh runs the first
  # `docker inspect`, the container step's check before acting the second (inspect@1), and the
  # container step's `docker run` / destroy's `docker rm` act.
  local inside_apply=(
    "api PATCH /controlplanes/controlplane$ mesh_expansion.default norepeat"
    "api PATCH /sidecars/ratings-vm$ sidecar.bookinfo/ratings-vm norepeat"
    "api POST /serviceaccounts/bookinfo-details/token$ token.bookinfo/details-vm -"
    "api PATCH /workloadentries/reviews-vm$ workload_entry.bookinfo/reviews-vm norepeat"
    "vm 0 run container.bookinfo/ratings-vm norepeat"
    "vm 2 inspect@1 container.bookinfo/reviews-vm -"
  )
  local inside_destroy=(
    "api DELETE /sidecars/reviews-vm$ sidecar.bookinfo/reviews-vm"
    "api DELETE /workloadentries/ratings-vm$ workload_entry.bookinfo/ratings-vm"
    "api PATCH /controlplanes/controlplane$ mesh_expansion.default"
    "vm 1 rm container.bookinfo/details-vm"
    "vm 2 inspect -"
  )
  for i in "${!inside_apply[@]}"; do
    read -r kind a b want norepeat <<<"${inside_apply[$i]}"
    if killed_inside apply "$kind" "$a" "$b" "$want"; then
      plan_left apply "${want#-}"
    fi
    api_reset_log; reset_docker_calls
    ob 0 apply --auto-approve
    if [ "$norepeat" = norepeat ]; then
      if [ "$kind" = api ]; then
        w=$(api_writes | grep -E "^$a .*$b")
      else
        w=$(docker_writes "$a" | grep "^docker ${b%@*} ")
      fi
      [ -z "$w" ] || fail "the apply after the kill inside $kind $a $b did that step's write again, though the killed run had done it: $w"
    fi
    check_recovered apply
    pos=${inside_destroy[$i]:-}
    if [ -n "$pos" ]; then
      read -r kind a b want <<<"$pos"
      if killed_inside destroy "$kind" "$a" "$b" "$want"; then
        plan_left destroy "${want#-}"
      fi
    fi
    ob 0 destroy --auto-approve
    check_recovered destroy
  done
  ok "crash recovery inside steps: apply killed in ${#inside_apply[@]} chosen steps, destroy in ${#inside_destroy[@]}"
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

# -- the real Docker engine -------------------------------------------------------------------
# Layout: one private dockerd per VM (tests/e2e/lib.sh sandbox_engines_start), not one shared by
# the three. A real fleet has an engine per VM, and onboard gives every proxy the default name
# istio-proxy (and keeps a replaced one as istio-proxy-onboard-prev): on one shared engine the
# three VMs would fight over those names, and per-VM containerName overrides would only test a
# setup no fleet has. Starting three engines costs ~2 s here. All three VMs run the real engine,
# so every container step (run, the idempotence check, renewal, destroy) is checked three times.
state_attr() {   # state_attr ADDRESS JQ-PATH: a value of ADDRESS's record in the local state
  jq -r --arg a "$1" ".resources[] | select(.address == \$a) | $2" "$T/fleet/onboard.state.json"
}
check_real_container() {   # check_real_container VM: what VM's engine says about its proxy
  local i=$1 name=${VMNAMES[$1]} app d j got want
  app=${name%-vm}; d=$(vm "$i" config_dir)
  j=$(dk "$i" inspect istio-proxy 2>&1) || { fail "VM $name: docker inspect istio-proxy failed: $j"; return; }
  got=$(jq -r '.[0] | "\(.State.Running) \(.State.Restarting) \(.RestartCount) \(.HostConfig.RestartPolicy.Name) \(.HostConfig.NetworkMode) \(.Config.Image)"' <<<"$j")
  want="true false 0 unless-stopped host $PROXY_IMAGE"
  [ "$got" = "$want" ] || fail "VM $name: container running/restarting/restarts/restart policy/network/image: want '$want', got '$got'"
  got=$(jq -r '.[0].Config.Labels["onboard.dev/config-hash"] // "none"' <<<"$j")
  want=$(state_attr "container.bookinfo/$name" .attributes.config_hash)
  [ -n "$want" ] && [ "$got" = "$want" ] ||
    fail "VM $name: the container's onboard.dev/config-hash label is '$got', the state records '$want'"
  got=$(jq -r '.[0].Id' <<<"$j")
  want=$(state_attr "container.bookinfo/$name" .observed.id)
  [ "$got" = "$want" ] || fail "VM $name: the container's id is $got, the state records '$want'"
  got=$(jq -r '.[0].Mounts[] | select(.Type == "bind") | "\(.Source):\(.Destination)"' <<<"$j" | sort | tr '\n' ' ')
  want="$d/istio-ca.pem:/var/run/secrets/istio/root-cert.pem $d/istio-token:/var/run/secrets/tokens/istio-token $d/k8s-ca.pem:/var/run/secrets/kubernetes.io/serviceaccount/ca.crt "
  [ "$got" = "$want" ] || fail "VM $name: the container's bind mounts: want '$want', got '$got'"
  for want in "POD_NAME=$name" "POD_NAMESPACE=bookinfo" "SERVICE_ACCOUNT=bookinfo-$app"; do
    jq -e --arg e "$want" '.[0].Config.Env | index($e)' <<<"$j" >/dev/null ||
      fail "VM $name: the container's environment (from --env-file sidecar.env) lacks $want"
  done
  # The image's entrypoint (make-proxy-image.sh) refuses to run without the env file and the
  # mounted token and root cert, and records the arguments it was given.
  got=$(dk "$i" exec istio-proxy cat /tmp/args 2>&1)
  [[ "$got" == "proxy sidecar --serviceCluster $app.bookinfo "* ]] ||
    fail "VM $name: the proxy's arguments: want 'proxy sidecar --serviceCluster $app.bookinfo ...', got '$got'"
  dk "$i" logs istio-proxy 2>&1 | grep -q "proxy stand-in for bookinfo/$name started" ||
    fail "VM $name: the proxy's log does not show it started: $(dk "$i" logs --tail 5 istio-proxy 2>&1 | tr '\n' ';')"
}
container_instance() {   # id and start time of VM $1's proxy: changes when it is replaced or restarted
  dk "$1" inspect -f '{{.Id}} {{.State.StartedAt}}' istio-proxy 2>&1
}
sha() { sha256sum | cut -c1-12; }   # a short digest, to show tokens in messages without leaking them

scenario_docker() {
  local i n d tok got w inst=()
  ob 2 plan --detailed-exitcode
  out_has '^Plan: 19 to add, 0 to change, 0 to destroy' "first plan"
  out_has "image = \"$PROXY_IMAGE\"" "first plan: the proxy image imported into the engines"
  ob 0 apply --auto-approve
  out_has '^Apply complete! 19 created' "first apply"
  check_onboarded 0 1 2
  for i in 0 1 2; do
    check_real_container "$i"
    inst[i]=$(container_instance "$i")
    [[ "${inst[i]}" =~ ^[0-9a-f]{64}\ [0-9]{4}- ]] || fail "VM ${VMNAMES[$i]}: cannot read the container's id and start time: ${inst[i]}"
  done
  ok "the proxies run on the real engines: image, label, mounts, env file, arguments"

  mark
  ob 0 apply --auto-approve
  out_has '^No changes' "second apply"
  check_no_writes "second apply (idempotence, real engine)"
  for i in 0 1 2; do
    [ "$(container_instance "$i")" = "${inst[i]}" ] ||
      fail "second apply: ${VMNAMES[$i]}'s container was replaced or restarted: ${inst[i]} -> $(container_instance "$i")"
  done
  ok "second apply: no API write, no file written, no docker call that changes a container"

  # Token renewal: renewBefore just under the 24h lifetime makes every token, now seconds old,
  # due; the renewal must reach the running proxies through their bind mounts.
  for i in 0 1 2; do
    d=$(vm "$i" config_dir)
    cp "$d/istio-token" "$T/token.before.$i"
    stat -c %i "$d/istio-token" >"$T/token.inode.$i"
  done
  sandbox_write_fleet "$T" 24h 23h59m59s
  ob 2 plan --detailed-exitcode
  for i in 0 1 2; do
    out_has "token\.bookinfo/${VMNAMES[$i]} must be replaced" "renewal plan: ${VMNAMES[$i]}'s token"
  done
  grep -q 'container\.bookinfo' "$T/out" && fail "renewal plan: a container would change: $(grep 'container\.bookinfo' "$T/out" | tr '\n' ';')"
  mark
  ob 0 apply --auto-approve
  w=$(api_writes | grep -v '^POST /api/v1/namespaces/bookinfo/serviceaccounts/bookinfo-[a-z]*/token$')
  [ -z "$w" ] || fail "token renewal wrote more than TokenRequests to the API server: $(echo "$w" | tr '\n' ';')"
  for i in 0 1 2; do
    d=$(vm "$i" config_dir); tok=$d/istio-token
    cmp -s "$tok" "$T/token.before.$i" && fail "renewal: ${VMNAMES[$i]}'s istio-token was not rewritten"
    [ "$(stat -c %i "$tok")" = "$(cat "$T/token.inode.$i")" ] ||
      fail "renewal: ${VMNAMES[$i]}'s istio-token was replaced by another inode (the bind mount pins the old one)"
    got=$(dk "$i" exec istio-proxy cat /var/run/secrets/tokens/istio-token 2>&1 | sha)
    [ "$got" = "$(sha <"$tok")" ] ||
      fail "renewal: the proxy on ${VMNAMES[$i]} reads token $got through its mount, the file is $(sha <"$tok")"
    for ((n = 0; n < 50; n++)); do   # the entrypoint copies the token it sees every second
      got=$(dk "$i" exec istio-proxy cat /tmp/seen-token 2>&1 | sha)
      [ "$got" = "$(sha <"$tok")" ] && break
      sleep 0.1
    done
    [ "$got" = "$(sha <"$tok")" ] ||
      fail "renewal: the running proxy process on ${VMNAMES[$i]} still reads token $got, the file is $(sha <"$tok")"
    [ "$(container_instance "$i")" = "${inst[i]}" ] ||
      fail "renewal: ${VMNAMES[$i]}'s container was replaced or restarted: ${inst[i]} -> $(container_instance "$i")"
    w=$(docker_writes "$i")
    [ -z "$w" ] || fail "renewal: docker on ${VMNAMES[$i]} was changed: $(echo "$w" | tr '\n' ';')"
  done
  ok "token renewal reached the running proxies (same container, same inode, new token seen inside)"
  sandbox_write_fleet "$T"   # back to renewBefore 8h: the renewed tokens are recorded, nothing is due
  ob 0 plan --detailed-exitcode
  out_has '^No changes' "plan after the renewal"
  check_no_token_leak

  ob 0 destroy --auto-approve
  out_has '^Destroy complete! 0 created, 0 updated, 19 destroyed' "destroy"
  check_gone 0 1 2
  ok "real Docker engine"
}

# One compound command up to the end of the file: bash parses it whole before running it, so
# editing this file while a test runs cannot derail the running test.
{
for tool in curl jq kubectl; do
  command -v "$tool" >/dev/null || die "$tool is needed by the e2e tests: apt-get install $tool (kubectl: kubernetes-client)"
done
if [ "$scenario" = docker ]; then
  [ "$(id -u)" = 0 ] ||
    die "e2e.docker runs private Docker engines (dockerd), which needs root; uid is $(id -u): run it as root (CI does)"
  [ -x /usr/bin/docker ] && command -v dockerd >/dev/null ||
    die "e2e.docker needs Debian's docker.io (/usr/bin/docker and dockerd): bash scripts/setup.sh"
fi
sandbox_start "$T" unused 3 || die "the sandbox did not start"
vms_load
sandbox_write_fleet "$T"
if [ "$scenario" = docker ]; then
  ENGINE=real
  sandbox_engines_start "$T" "$PROXY_IMAGE" || die "the VMs' Docker engines did not start"
  ok "three Docker engines, one per VM, each with $PROXY_IMAGE"
fi
case $scenario in
  apply|drift|rollback|destroy|token|crash|concurrent|docker) "scenario_$scenario" ;;
  *) die "unknown scenario $scenario" ;;
esac
[ "$failures" = 0 ] || exit 1
echo "PASS: e2e $scenario"
exit 0
}
