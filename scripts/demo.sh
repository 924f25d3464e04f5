#!/usr/bin/env bash
# The README's first command: installs what is missing, builds onboard and the sandbox, starts the
# sandbox in .sandbox/ (the test Kubernetes API server with a seeded Istio namespace, three sshd
# VMs with the docker stand-in), writes a Bookinfo Fleet for it and runs
#   onboard plan -> onboard apply --auto-approve -> onboard plan --detailed-exitcode (no changes)
#   -> onboard destroy --auto-approve
# Exits non-zero when any step misbehaves; stops every process it started (by PID) on any exit.
#   --keep   leave the sandbox running afterwards (without the final destroy) and print how to
#            use it by hand; stop it with `kill PID` as printed.
# Build tree: build/main (override with BUILD_DIR=... as for scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
keep=0
for a in "$@"; do
  case $a in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $a (only --keep)" >&2; exit 2 ;;
  esac
done

header() { printf '\n\033[1m==== %s\033[0m\n' "$*"; }

header "setup (scripts/setup.sh)"
bash scripts/setup.sh
if ! command -v jq >/dev/null 2>&1; then   # the sandbox's vms.json is read with jq
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq jq >/dev/null
fi

build=${BUILD_DIR:-$root/build}/main
header "build ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" \
  --target onboard onboard-test-apiserver onboard-sandbox-vms
onboard=$build/onboard

# shellcheck source=../tests/e2e/lib.sh
source "$root/tests/e2e/lib.sh"
sandbox=$root/.sandbox
cleanup() {
  local rc=$?
  if [ "$keep" = 1 ] && [ "$rc" = 0 ]; then return; fi
  sandbox_stop
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

header "sandbox ($sandbox)"
# A fresh sandbox every time; stop one a previous --keep left running first.
# (only when that PID still runs one of our sandbox binaries: a PID may have been reused).
for f in "$sandbox/api/pid" "$sandbox/vms/ready"; do
  if [ -s "$f" ]; then
    old=$(cat "$f")
    if tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q 'onboard-\(test-apiserver\|sandbox-vms\)'; then
      kill -TERM "$old" 2>/dev/null || true
    fi
  fi
done
sleep 0.3
rm -rf "$sandbox"
sandbox_start "$sandbox" "$build" 3
sandbox_write_fleet "$sandbox"
echo "API server $SANDBOX_API_URL (pid $SANDBOX_APISERVER_PID), kubeconfig $sandbox/api/kubeconfig"
jq -r '.vms[] | "VM \(.name): ssh \(.user)@\(.host) -p \(.port) (root \(.root_dir))"' "$sandbox/vms/vms.json"
echo "Fleet: $sandbox/fleet/bookinfo.yaml"

cd "$sandbox/fleet"
run() {   # run "what" EXPECTED_EXIT command...
  local what=$1 expect=$2; shift 2
  header "$what"
  echo "\$ ${*/#$onboard/onboard}"
  set +e
  "$@"
  local rc=$?
  set -e
  if [ "$rc" != "$expect" ]; then
    echo "demo.sh: '$what' exited $rc, expected $expect" >&2
    exit 1
  fi
}
run "plan" 0 "$onboard" plan -f .
run "apply" 0 "$onboard" apply -f . --auto-approve
run "plan again: nothing to do" 0 "$onboard" plan -f . --detailed-exitcode
if ! "$onboard" plan -f . --no-color | grep -q "No changes"; then
  echo "demo.sh: the plan after apply does not say \"No changes\"" >&2
  exit 1
fi

if [ "$keep" = 1 ]; then
  header "sandbox kept running"
  cat <<MSG
The fleet is onboarded. Point onboard at the sandbox by hand:

  cd $sandbox/fleet
  $onboard plan -f .
  $onboard apply -f . --auto-approve
  $onboard destroy -f . --auto-approve
  kubectl --kubeconfig $sandbox/api/kubeconfig get workloadentries,sidecars -n bookinfo
  ssh -i $sandbox/vms/client_key -o UserKnownHostsFile=$sandbox/vms/known_hosts \\
      -p $(jq -r '.vms[0].port' "$sandbox/vms/vms.json") $(jq -r '.vms[0].user' "$sandbox/vms/vms.json")@127.0.0.1 ls -l $(jq -r '.vms[0].config_dir' "$sandbox/vms/vms.json")

Stop the sandbox with:

  kill $SANDBOX_APISERVER_PID $SANDBOX_VMS_PID
MSG
  exit 0
fi

run "destroy" 0 "$onboard" destroy -f . --auto-approve
header "check: nothing is onboarded any more"
set +e
"$onboard" plan -f . --detailed-exitcode --no-color >"$sandbox/plan-after-destroy.txt" 2>&1
rc=$?
set -e
if [ "$rc" != 2 ] || ! grep -q "^Plan: 19 to add, 0 to change, 0 to destroy" "$sandbox/plan-after-destroy.txt"; then
  echo "demo.sh: after destroy, plan should add everything again (exit 2); it exited $rc:" >&2
  tail -5 "$sandbox/plan-after-destroy.txt" >&2
  exit 1
fi
grep "^Plan:" "$sandbox/plan-after-destroy.txt"
header "demo complete: plan, apply, no-change plan and destroy all behaved"
