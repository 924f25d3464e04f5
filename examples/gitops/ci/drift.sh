#!/usr/bin/env bash
# Schedule: does the real world still match the manifests and the state?
#   ci/drift.sh ENVIRONMENT
# Exit 0: no drift. 1: drift (the plan is printed; a renewal of a token that is due counts too,
# since only apply makes it) or an error. Writes out/ENVIRONMENT.drift.txt.
source "$(dirname "$0")/common.sh"
"$ONBOARD" plan -f "$manifests" --detailed-exitcode --no-color --lock-timeout "$lock_timeout" \
  >"$out/$env_name.drift.txt"
rc=$?
cat "$out/$env_name.drift.txt"
case $rc in
  0) echo "no drift in $env_name"; exit 0 ;;
  2) echo "error: drift in $env_name: the plan above is what onboard apply would change" >&2; exit 1 ;;
  *) echo "error: onboard plan failed for $env_name (exit $rc)" >&2; exit 1 ;;
esac
