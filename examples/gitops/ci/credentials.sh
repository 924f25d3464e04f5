#!/usr/bin/env bash
# CI only: turns the pipeline's secrets into the files onboard reads, readable by this user alone.
#   KUBECONFIG_DATA -> $RUNNER_TEMP/kubeconfig (and KUBECONFIG for the later steps)
#   ONBOARD_SSH_KEY -> ~/.ssh/onboard_ed25519 (the identityFile of clusters/*/fleet.yaml)
# Nothing is printed: the values never reach the job log.
set -euo pipefail
umask 077
: "${KUBECONFIG_DATA:?set the KUBECONFIG_DATA secret of this environment}"
: "${ONBOARD_SSH_KEY:?set the ONBOARD_SSH_KEY secret of this environment}"
dir=${RUNNER_TEMP:-$(mktemp -d)}
printf '%s\n' "$KUBECONFIG_DATA" >"$dir/kubeconfig"
mkdir -p ~/.ssh
printf '%s\n' "$ONBOARD_SSH_KEY" >~/.ssh/onboard_ed25519
if [ -n "${GITHUB_ENV:-}" ]; then
  echo "KUBECONFIG=$dir/kubeconfig" >>"$GITHUB_ENV"
else
  echo "export KUBECONFIG=$dir/kubeconfig"
fi
