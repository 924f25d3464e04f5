# Shared by scripts/demo.sh, the e2e scripts and the benchmarks: start the local sandbox (the test Kubernetes API
# server with its seeded Istio namespace, and sshd "VMs" with the docker stand-in) and write the
# Bookinfo Fleet manifest that points onboard at it. Source it; it defines functions only.
#
#   sandbox_start DIR BUILD_DIR COUNT   starts both into DIR (must be empty or absent); sets
#                                       SANDBOX_APISERVER_PID, SANDBOX_VMS_PID, SANDBOX_API_URL
#   sandbox_write_fleet DIR             writes DIR/fleet/bookinfo.yaml from DIR/vms/vms.json
#   sandbox_stop                        stops what sandbox_start started (by PID), waits for it
#   sandbox_engines_start DIR IMAGE     (root) one private Docker engine per VM of DIR/vms, IMAGE
#                                       imported into each, and each VM's `docker` pointed at its own
#                                       engine; sets SANDBOX_ENGINE_DIRS (engine of VM i: element i)
#   sandbox_engines_stop                stops those engines (their containers too), waits for them
#
# Network choice: the Fleet gives the workloads no `network`, i.e. the VMs are on the cluster's
# network. That is the truth for the sandbox (everything is on 127.0.0.1), and it means onboard
# plans no check.gateway / check.inbound resources: there is no VM gateway to reach.

SANDBOX_APISERVER_PID=""
SANDBOX_VMS_PID=""
SANDBOX_API_URL=""

# Waits up to $2 seconds for file $1 to exist; fails naming the log $3 when the process $4 died.
sandbox_wait_file() {
  local file=$1 secs=$2 log=$3 pid=$4 i
  for ((i = 0; i < secs * 10; i++)); do
    [ -s "$file" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "sandbox: the process writing $file (pid $pid) exited; its output ($log):" >&2
      sed 's/^/  | /' "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "sandbox: $file did not appear within ${secs}s; see $log" >&2
  return 1
}

sandbox_start() {
  local dir=$1 build=$2 count=${3:-3}
  local src
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  mkdir -p "$dir/api" "$dir/vms"
  "${SANDBOX_APISERVER_BIN:-$build/tests/sandbox/apiserver/onboard-test-apiserver}" --dir "$dir/api" --port 0 \
    >"$dir/api/server.log" 2>&1 &
  SANDBOX_APISERVER_PID=$!
  "${SANDBOX_VMS_BIN:-$build/onboard-sandbox-vms}" --dir "$dir/vms" --count "$count" \
    --docker "$src/tests/sandbox/docker/docker-standin" >"$dir/vms/harness.log" 2>&1 &
  SANDBOX_VMS_PID=$!
  sandbox_wait_file "$dir/api/ready" 30 "$dir/api/server.log" "$SANDBOX_APISERVER_PID" || return 1
  sandbox_wait_file "$dir/vms/ready" 60 "$dir/vms/harness.log" "$SANDBOX_VMS_PID" || return 1
  SANDBOX_API_URL="https://127.0.0.1:$(cat "$dir/api/port")"
}

sandbox_stop() {
  local p
  for p in $SANDBOX_VMS_PID $SANDBOX_APISERVER_PID; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in $SANDBOX_VMS_PID $SANDBOX_APISERVER_PID; do
    wait "$p" 2>/dev/null || true
  done
  SANDBOX_VMS_PID=""
  SANDBOX_APISERVER_PID=""
}

# One workload of the Fleet: $1 name, $2 index into vms.json, $3 app, $4 version, $5 hosts entries.
sandbox_workload_yaml() {
  local vms=$1 name=$2 i=$3 app=$4 version=$5 hosts=$6
  local host port user config hostsfile
  host=$(jq -r ".vms[$i].host" "$vms")
  port=$(jq -r ".vms[$i].port" "$vms")
  user=$(jq -r ".vms[$i].user" "$vms")
  config=$(jq -r ".vms[$i].config_dir" "$vms")
  hostsfile=$(jq -r ".vms[$i].hosts_file" "$vms")
  cat <<YAML
    - name: $name
      namespace: bookinfo
      address: 127.0.0.1
      serviceAccount: bookinfo-$app
      labels: {class: vm, app: $app, version: $version}
      ports: {http: 9080}
      ssh: {host: "$host", port: $port, user: "$user"}
      proxy: {configDir: "$config"}
      vm: {hostsFile: "$hostsfile"}
      sidecar:
        ingress:
          - port: {number: 9080, protocol: HTTP, name: http}
            defaultEndpoint: 127.0.0.1:9080
        egress:
          - bind: 127.0.0.2
            hosts: ["./*"]
      hosts:
        "127.0.0.2": [$hosts]
YAML
}

# $1 sandbox dir; $2 token duration (default 24h); $3 renewBefore (default 8h); $4 workloads: 3 (the
# Bookinfo trio, default) or more (vm-1..vm-N, one per sandbox VM, for benchmarks).
sandbox_write_fleet() {
  local dir=$1 duration=${2:-24h} renew=${3:-8h} count=${4:-3} i
  local apps=(ratings details reviews)
  local vms=$dir/vms/vms.json
  mkdir -p "$dir/fleet"
  {
    cat <<YAML
# Bookinfo's ratings, details and reviews on the sandbox's three sshd VMs (written by
# tests/e2e/lib.sh). The VMs share the cluster's network: no \`network\`, so no gateway checks.
apiVersion: onboard.dev/v1alpha1
kind: Fleet
metadata:
  name: bookinfo-sandbox
spec:
  cluster:
    kubeconfig: "$dir/api/kubeconfig"
    istioNamespace: istio-system
    meshExpansion: {controlPlane: controlplane}
  backend:
    type: local
  defaults:
    ssh:
      identityFile: "$(jq -r .client_key "$vms")"
      knownHosts: "$(jq -r .known_hosts "$vms")"
    proxy:
      imageHub: docker.io/tetrate
      tag: 1.8.6
      containerName: istio-proxy
    token:
      duration: $duration
      renewBefore: $renew
  workloads:
YAML
    if [ "$count" = 3 ]; then
      sandbox_workload_yaml "$vms" ratings-vm 0 ratings v3 "reviews.bookinfo.svc, www.example.org"
      sandbox_workload_yaml "$vms" details-vm 1 details v1 "www.example.org"
      sandbox_workload_yaml "$vms" reviews-vm 2 reviews v2 "ratings.bookinfo.svc"
    else
      for ((i = 0; i < count; i++)); do
        sandbox_workload_yaml "$vms" "vm-$((i + 1))" "$i" "${apps[i % 3]}" v1 "reviews.bookinfo.svc"
      done
    fi
  } >"$dir/fleet/bookinfo.yaml"
}

# -- real Docker engines for the VMs (DESIGN §8) ------------------------------------------------
# One dockerd per VM, each with its own data root, exec root and socket (DIR/dockerd/vmN/), as on
# real VMs: each VM's proxy keeps the default container name and nothing of one VM can be seen
# through another VM's `docker`. Each VM's tools/docker becomes the real client bound to its own
# engine (-H unix://...), recording every call in tools/docker-state/calls.log as the stand-in
# does. The engines are started with setsid (they outlive a killed test), so sandbox_engines_start
# also leaves a watchdog, in its own session, that stops them once this shell is gone: a test
# killed by a timeout (SIGKILL, no trap) leaves no dockerd behind.
SANDBOX_ENGINE_DIRS=()

sandbox_engines_start() {
  local dir=$1 image=$2 src vms n i e tools pids=() rc=0
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  vms=$dir/vms/vms.json
  n=$(jq '.vms | length' "$vms")
  SANDBOX_ENGINE_DIRS=()
  for ((i = 0; i < n; i++)); do SANDBOX_ENGINE_DIRS+=("$dir/dockerd/vm$((i + 1))"); done
  mkdir -p "${SANDBOX_ENGINE_DIRS[@]}"
  ( setsid sh -c 'p=$1 stop=$2; shift 2
      while kill -0 "$p" 2>/dev/null; do sleep 1; done
      for d in "$@"; do [ -e "$d" ] && "$stop" "$d"; done' \
      engine-watchdog "$$" "$src/tests/sandbox/docker/stop-dockerd.sh" "${SANDBOX_ENGINE_DIRS[@]}" \
      </dev/null >/dev/null 2>&1 & )
  for e in "${SANDBOX_ENGINE_DIRS[@]}"; do
    "$src/tests/sandbox/docker/start-dockerd.sh" "$e" >"$e/start.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "sandbox: the Docker engine for vm$((i + 1)) did not start:" >&2
      sed 's/^/  | /' "${SANDBOX_ENGINE_DIRS[$i]}/start.log" >&2
      rc=1
    fi
  done
  [ $rc = 0 ] || return 1
  pids=()
  for e in "${SANDBOX_ENGINE_DIRS[@]}"; do
    "$src/tests/sandbox/docker/make-proxy-image.sh" "$e/docker.sock" "$image" >"$e/image.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "sandbox: importing $image into the engine of vm$((i + 1)) failed:" >&2
      sed 's/^/  | /' "${SANDBOX_ENGINE_DIRS[$i]}/image.log" >&2
      rc=1
    fi
  done
  [ $rc = 0 ] || return 1
  for ((i = 0; i < n; i++)); do
    tools=$(jq -r ".vms[$i].tools_dir" "$vms")
    mkdir -p "$tools/docker-state"
    cat >"$tools/docker.new" <<WRAPPER
#!/bin/sh
# vm$((i + 1))'s docker (written by tests/e2e/lib.sh): the real client bound to this VM's own
# engine; every call is recorded in docker-state/calls.log, like the stand-in records them.
{ printf 'docker'; for a in "\$@"; do printf ' %s' "\$a"; done; printf '\\n'; } >>'$tools/docker-state/calls.log'
exec /usr/bin/docker -H 'unix://${SANDBOX_ENGINE_DIRS[$i]}/docker.sock' "\$@"
WRAPPER
    chmod 0755 "$tools/docker.new"
    mv "$tools/docker.new" "$tools/docker"
  done
}

sandbox_engines_stop() {
  local src e pids=()
  [ ${#SANDBOX_ENGINE_DIRS[@]} -gt 0 ] || return 0
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  for e in "${SANDBOX_ENGINE_DIRS[@]}"; do
    "$src/tests/sandbox/docker/stop-dockerd.sh" "$e" >/dev/null 2>&1 &
    pids+=($!)
  done
  for e in "${pids[@]}"; do wait "$e"; done
  SANDBOX_ENGINE_DIRS=()
}

# ---- The harness of the e2e scripts (tests/e2e/e2e.sh, tests/e2e/gitops.sh). A script sets T
# (its scratch dir) and may define e2e_cleanup (what to stop), then calls e2e_harness NAME.
#   fail MSG / die MSG / ok MSG       count a failure (die also exits) / report a pass
#   e2e_run DIR EXPECTED_RC CMD...    runs CMD in DIR, output in $T/out (and $T/out.N); dies when
#                                     its exit code differs, printing the output's tail
#   out_has REGEX WHAT                the last output has a line matching REGEX
# On exit $T is removed after a pass (kept with E2E_KEEP=1) and kept after a failure.
e2e_harness() {
  E2E_NAME=$1
  failures=0
  step=0
  trap e2e_finish EXIT
  trap 'exit 130' INT TERM
}
e2e_finish() {
  local rc=$?
  if declare -F e2e_cleanup >/dev/null; then e2e_cleanup; fi
  if [ "$failures" = 0 ] && [ "$rc" = 0 ]; then
    if [ -z "${E2E_KEEP:-}" ]; then rm -rf "$T"; else echo "e2e $E2E_NAME: passed; sandbox kept in $T"; fi
  else
    echo "e2e $E2E_NAME: FAILED (sandbox, logs and outputs kept in $T)" >&2
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
die() { echo "FAIL: $*" >&2; failures=$((failures + 1)); exit 1; }
ok() { echo "ok: $*"; }
e2e_run() {
  local dir=$1 expect=$2 rc
  shift 2
  step=$((step + 1))
  echo "---- [$step] $* (expect exit $expect)"
  (cd "$dir" && "$@") >"$T/out.$step" 2>&1
  rc=$?
  cp "$T/out.$step" "$T/out"
  if [ "$rc" != "$expect" ]; then
    sed 's/^/  | /' "$T/out" | tail -60 >&2
    die "$* exited $rc, expected $expect"
  fi
  grep -E '^(Plan:|No changes|Apply complete|Destroy complete|Apply failed|Pushed|Error|error|plan for|no drift)' \
    "$T/out" | sed 's/^/  /'
  return 0
}
out_has() {
  grep -Eq -- "$1" "$T/out" || fail "$2: the output has no line matching /$1/ (see $T/out.$step)"
}
