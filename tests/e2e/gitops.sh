#!/usr/bin/env bash
# The GitOps example (examples/gitops) end to end, against the sandbox: the shipped environments
# validate; the workflow calls the ci/ scripts; then, in a copy of the example repository with a
# "sandbox" environment whose state is in the kubernetes backend (Secret + Lease in the test API
# server), the pull-request plan, the merge apply of the saved plan, a stale saved plan refused,
# the scheduled drift check passing and then failing on drift, two onboard processes on one
# Lease (the holder named, SIGKILL, the lease expiring), plan --json / show --json against
# schemas/plan.schema.json, and the state moved with state pull/push to the http backend (the
# Terraform-protocol test server, with basic auth), which then destroys the fleet.
# Binaries from the environment (tests/e2e/CMakeLists.txt): ONBOARD, SANDBOX_APISERVER_BIN,
# SANDBOX_VMS_BIN, HTTPSTATE_BIN, SCHEMA_CHECK. E2E_KEEP=1 keeps the sandbox dir of a pass too.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
: "${ONBOARD:?set ONBOARD to the onboard binary}"
: "${HTTPSTATE_BIN:?set HTTPSTATE_BIN to onboard-test-httpstate}"
: "${SCHEMA_CHECK:?set SCHEMA_CHECK to onboard-schema-check}"
export ONBOARD

T=$(mktemp -d "${TMPDIR:-/tmp}/onboard-e2e-gitops.XXXXXX")
BG_PID="" HTTP_PID=""
e2e_cleanup() {
  [ -n "$BG_PID" ] && kill -KILL "$BG_PID" 2>/dev/null
  [ -n "$HTTP_PID" ] && kill -TERM "$HTTP_PID" 2>/dev/null && wait "$HTTP_PID" 2>/dev/null
  sandbox_stop
}
e2e_harness gitops

run() { e2e_run "$T/repo" "$@"; }   # run EXPECTED_RC COMMAND...: in the repository copy
kc() { kubectl --kubeconfig "$T/api/kubeconfig" "$@"; }
ob() { "$ONBOARD" "$@" -f clusters/sandbox; }
lease_holder() { kc -n onboard-system get lease onboard-lock-bookinfo-sandbox -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null; }

{
for tool in curl jq kubectl; do
  command -v "$tool" >/dev/null || die "$tool is needed by the e2e tests: apt-get install $tool (kubectl: kubernetes-client)"
done
gitops=$src/examples/gitops

# ---- The example as shipped.
for env in staging production; do
  "$ONBOARD" validate -f "$gitops/clusters/$env" >"$T/validate.$env" 2>&1 || die "clusters/$env does not validate: $(cat "$T/validate.$env")"
done
wf=$gitops/.github/workflows/onboard.yaml
for want in 'ci/credentials.sh' 'ci/plan.sh \$\{\{ matrix.environment \}\}' 'gh pr comment' 'upload-artifact' \
            'download-artifact' 'ci/apply.sh \$\{\{ matrix.environment \}\} out/' 'cron:' 'ci/drift.sh \$\{\{ matrix.environment \}\}'; do
  grep -Eq -- "$want" "$wf" || fail "the workflow $wf has no /$want/"
done
ok "the shipped environments validate and the workflow runs the ci/ scripts"

# ---- A copy of the repository with a sandbox environment on the kubernetes backend.
sandbox_start "$T" unused 3 || die "the sandbox did not start"
sandbox_write_fleet "$T"
mkdir -p "$T/repo/clusters/sandbox"
cp -r "$gitops/ci" "$gitops/.github" "$T/repo/"
sed -e 's/^    type: local$/    type: kubernetes\n    namespace: onboard-system\n    leaseDurationSeconds: 6/' \
  "$T/fleet/bookinfo.yaml" >"$T/repo/clusters/sandbox/fleet.yaml"
grep -q 'type: kubernetes' "$T/repo/clusters/sandbox/fleet.yaml" || die "could not set the kubernetes backend"
kc create namespace onboard-system >/dev/null || die "cannot create namespace onboard-system"
export ONBOARD_OUT=$T/repo/out

# Pull request: plan, saved for the merge, posted as a comment.
run 0 ci/plan.sh sandbox
out_has '^Plan: 19 to add, 0 to change, 0 to destroy' "ci/plan.sh"
out_has 'plan for sandbox: changes to apply on merge' "ci/plan.sh verdict"
[ "$(stat -c %a "$T/repo/out/sandbox.plan")" = 600 ] || fail "the saved plan is not mode 0600"
grep -q '^### onboard plan: `sandbox` — changes to apply on merge' "$T/repo/out/sandbox.comment.md" ||
  fail "the pull-request comment has no title: $(head -2 "$T/repo/out/sandbox.comment.md")"
grep -q '+ workload_entry.bookinfo/ratings-vm' "$T/repo/out/sandbox.comment.md" || fail "the comment has no plan"
"$SCHEMA_CHECK" "$src/schemas/plan.schema.json" "$T/repo/out/sandbox.plan.json" ||
  fail "onboard show --json of the saved plan does not match schemas/plan.schema.json"
(cd "$T/repo" && ob plan --json) >"$T/plan.json" 2>"$T/plan.json.err" || fail "plan --json failed: $(cat "$T/plan.json.err")"
"$SCHEMA_CHECK" "$src/schemas/plan.schema.json" "$T/plan.json" || fail "plan --json does not match schemas/plan.schema.json"
[ "$(jq '.summary.add' "$T/plan.json")" = 19 ] || fail "plan --json: summary.add is $(jq '.summary.add' "$T/plan.json"), expected 19"
[ -z "$(lease_holder)" ] || fail "the Lease is still held after the plan: $(lease_holder)"
[ -e "$T/repo/clusters/sandbox/onboard.state.json" ] && fail "a local state file was written beside the manifests"
ok "pull request: the plan is saved (0600), posted, and its JSON matches the schema"

# Merge: apply exactly the saved plan.
run 0 ci/apply.sh sandbox
out_has '^Apply complete! 19 created' "ci/apply.sh"
[ "$(kc -n bookinfo get workloadentries -o name | wc -l)" = 3 ] || fail "expected 3 WorkloadEntries after the merge"
kc -n onboard-system get secret onboard-state-bookinfo-sandbox >/dev/null 2>&1 || fail "no state Secret in onboard-system"
[ -e "$T/repo/clusters/sandbox/onboard.state.json" ] && fail "a local state file was written beside the manifests"
run 0 ob state list
[ "$(grep -c '^[a-z_]*\.' "$T/out")" = 19 ] || fail "the kubernetes state lists $(grep -c '^[a-z_]*\.' "$T/out") resources, expected 19"
# The same saved plan again: the state moved, so it is refused.
run 1 ci/apply.sh sandbox
out_has 'refusing to apply' "a stale saved plan"
ok "merge: the saved plan applied; applying it twice is refused"

# Schedule: no drift; then a WorkloadEntry deleted by hand is drift that fails the check.
run 0 ci/drift.sh sandbox
out_has '^no drift in sandbox' "drift check on a converged fleet"
kc -n bookinfo delete workloadentry details-vm >/dev/null || die "kubectl delete failed"
run 1 ci/drift.sh sandbox
out_has 'workload_entry.bookinfo/details-vm' "the drift check names the deleted WorkloadEntry"
out_has 'drift in sandbox' "the drift check says drift"
run 0 ci/plan.sh sandbox
run 0 ci/apply.sh sandbox
out_has '^Apply complete! 1 created' "repairing the drift"
run 0 ci/drift.sh sandbox
ok "drift check: passes when converged, fails naming the drifted resource"

# Two onboard processes on one Lease. A slow API server keeps the first one's plan running.
curl -sk --max-time 10 -d '{"method":"GET","path_regex":"workloadentries","status":0,"count":3,"delay_ms":6000}' \
  "$SANDBOX_API_URL/__admin/faults" >/dev/null || die "cannot inject the slow requests"
(cd "$T/repo" && exec "$ONBOARD" plan -f clusters/sandbox --no-color) >"$T/first" 2>&1 &
BG_PID=$!
for ((i = 0; i < 100; i++)); do [ -n "$(lease_holder)" ] && break; sleep 0.1; done
[ -n "$(lease_holder)" ] || die "the first plan took no Lease within 10s"
run 1 ob plan --no-color --lock-timeout 0
out_has "locked by .*pid $BG_PID .*for plan" "the second run names the holder of the Lease"
kill -KILL "$BG_PID"; wait "$BG_PID" 2>/dev/null; BG_PID=""
curl -sk --max-time 10 -X DELETE "$SANDBOX_API_URL/__admin/faults" >/dev/null
run 1 ob plan --no-color --lock-timeout 0
out_has 'locked by' "right after SIGKILL the Lease is still held"
t0=$(date +%s)
run 0 ob plan --no-color --lock-timeout 30 --detailed-exitcode
waited=$(($(date +%s) - t0))
out_has '^No changes' "the run after the Lease expired"
[ "$waited" -le 25 ] || fail "waiting for the dead holder's Lease took ${waited}s (lease 6s)"
ok "two processes: the holder is named; a SIGKILLed holder's Lease expired and the next run went on after ${waited}s"

# Move the state to the http backend with state pull / push, then destroy through it.
pw="pw-$RANDOM$RANDOM"
mkdir -p "$T/http"
"$HTTPSTATE_BIN" --dir "$T/http" --port 0 --username ci --password "$pw" >"$T/http/server.log" 2>&1 &
HTTP_PID=$!
sandbox_wait_file "$T/http/ready" 30 "$T/http/server.log" "$HTTP_PID" || die "the http state server did not start"
url="http://127.0.0.1:$(cat "$T/http/port")/state/bookinfo-sandbox"
http=(--backend http --backend-config "address=$url" --backend-config "lockAddress=$url")
export ONBOARD_HTTP_USERNAME=ci ONBOARD_HTTP_PASSWORD=$pw
run 0 ob state pull
cp "$T/out" "$T/state.json"
jq -e '.lineage and .serial' "$T/state.json" >/dev/null || die "state pull printed no state: $(head -5 "$T/state.json")"
run 0 ob state push "${http[@]}" "$T/state.json"
out_has "^Pushed .* \(lineage $(jq -r .lineage "$T/state.json"), serial" "state push to the http backend"
run 0 ob plan --no-color --detailed-exitcode "${http[@]}"
out_has '^No changes' "the fleet planned against the pushed state"
jq '.serial -= 1' "$T/state.json" >"$T/older.json"
run 1 ob state push "${http[@]}" "$T/older.json"
out_has 'older' "pushing an older serial is refused"
jq '.lineage = "00000000-0000-4000-8000-000000000000"' "$T/state.json" >"$T/other.json"
run 1 ob state push "${http[@]}" "$T/other.json"
out_has 'lineage 00000000-0000-4000-8000-000000000000 is not the lineage' "pushing another lineage is refused"
run 0 ob state push --force "${http[@]}" "$T/other.json"
out_has '^Pushed .* \(lineage 00000000-0000-4000-8000-000000000000' "state push --force replaces another lineage"
ONBOARD_HTTP_PASSWORD=wrong run 1 ob state pull "${http[@]}"
out_has 'ONBOARD_HTTP_PASSWORD' "wrong credentials say which variable to set"
run 0 ob destroy --auto-approve --no-color "${http[@]}"
out_has '^Destroy complete! .*19 destroyed' "destroy through the http backend"
[ "$(kc -n bookinfo get workloadentries -o name | wc -l)" = 0 ] || fail "WorkloadEntries are left after destroy"
curl -s --max-time 10 "http://127.0.0.1:$(cat "$T/http/port")/__admin/requests" >"$T/http/requests.json"
jq -e '[.[] | select(.method == "POST" and (.path | test("/state/bookinfo-sandbox")) and ((.query // .url // "") | test("ID=")))] | length > 0' \
  "$T/http/requests.json" >/dev/null || fail "no state write carried ?ID= while locked: $(head -c 600 "$T/http/requests.json")"
run 0 ob destroy --auto-approve --no-color "${http[@]}"
out_has '^No changes' "a second destroy changes nothing"
if grep -rl -- "$pw" "$T"/out.* "$T/repo/out" "$T/state.json" 2>/dev/null; then fail "the http password appears in an output"; fi
ok "state moved to the http backend with pull/push; older serial and other lineage refused, --force replaces; destroyed through it"

[ "$failures" = 0 ] || exit 1
echo "PASS: e2e gitops"
exit 0
}
