#!/bin/sh
# Stops the Docker engine started by start-dockerd.sh DIR: removes its containers, sends
# SIGTERM, waits up to 20 s (then SIGKILL), and unmounts anything left under DIR.
set -u
dir=${1:?usage: stop-dockerd.sh DIR}
case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
sock="$dir/docker.sock"
if [ -S "$sock" ]; then
  ids=$(/usr/bin/docker -H "unix://$sock" ps -aq 2>/dev/null || true)
  [ -n "$ids" ] && /usr/bin/docker -H "unix://$sock" rm --force $ids >/dev/null 2>&1
fi
pid=""
[ -f "$dir/pid" ] && pid=$(cat "$dir/pid")
[ -z "$pid" ] && [ -f "$dir/launcher.pid" ] && pid=$(cat "$dir/launcher.pid")
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
fi
# Mounts dockerd may leave behind (overlay, shm, netns).
if [ -r /proc/mounts ]; then
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
fi
rm -f "$sock" "$dir/pid" "$dir/launcher.pid"
exit 0
