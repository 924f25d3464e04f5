# Shared by the pipeline scripts: which onboard, which environment, where its manifests are.
# Source it with the environment name as $1. ONBOARD overrides the onboard binary (default: on PATH).
set -uo pipefail
ONBOARD=${ONBOARD:-onboard}
env_name=${1:?usage: $0 ENVIRONMENT (a folder under clusters/)}
case $env_name in
  */* | .* | "") echo "error: environment \"$env_name\" must be a folder name under clusters/" >&2; exit 1 ;;
esac
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifests=$repo/clusters/$env_name
[ -d "$manifests" ] || { echo "error: no folder clusters/$env_name in $repo" >&2; exit 1; }
out=${ONBOARD_OUT:-$repo/out}   # plan files and reports for the pipeline to keep
mkdir -p "$out"
# Wait for another run's state lock rather than fail at once: CI runs of one environment queue.
lock_timeout=${ONBOARD_LOCK_TIMEOUT:-300}
