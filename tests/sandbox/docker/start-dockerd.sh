#!/bin/sh
# Starts a private Docker engine for the real-engine tests (DESIGN §8):
#   start-dockerd.sh DIR
# The daemon keeps everything under DIR (data, exec root, socket, pid, log) and touches no
# host networking (no iptables, no bridge). Requires root. Prints the socket path on success.
# Exit status: 0 started; 2 cannot run here (not root, no dockerd) - the reason on stderr; 1 failed.
set -u
dir=${1:?usage: start-dockerd.sh DIR}
case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
if [ "$(id -u)" -ne 0 ]; then
  echo "start-dockerd: needs root (uid is $(id -u)); the real Docker engine test is skipped" >&2
  exit 2
fi
dockerd_bin=$(command -v dockerd 2>/dev/null || true)
if [ -z "$dockerd_bin" ]; then
  echo "start-dockerd: dockerd not found (install Debian's docker.io)" >&2
  exit 2
fi
mkdir -p "$dir/data" "$dir/exec"
sock="$dir/docker.sock"
if [ -S "$sock" ] && [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  echo "$sock"
  exit 0
fi
rm -f "$sock"
# setsid: the daemon outlives this script in its own process group.
setsid "$dockerd_bin" --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
  --default-ulimit nofile=1024:1024 --default-ulimit nproc=1000:1000 \
  --data-root "$dir/data" --exec-root "$dir/exec" -H "unix://$sock" --pidfile "$dir/pid" \
  >"$dir/dockerd.log" 2>&1 </dev/null &
echo $! >"$dir/launcher.pid"
i=0
while [ $i -lt 300 ]; do
  if [ -S "$sock" ] && /usr/bin/docker -H "unix://$sock" version >/dev/null 2>&1; then
    echo "$sock"
    exit 0
  fi
  if ! kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null; then
    echo "start-dockerd: dockerd exited during start-up; last lines of $dir/dockerd.log:" >&2
    tail -n 15 "$dir/dockerd.log" >&2
    exit 2
  fi
  sleep 0.1
  i=$((i + 1))
done
echo "start-dockerd: dockerd did not answer on $sock within 30 s; see $dir/dockerd.log" >&2
tail -n 15 "$dir/dockerd.log" >&2
exit 1
