#!/usr/bin/env bash
# Merge: apply exactly the plan saved by ci/plan.sh for one environment.
#   ci/apply.sh ENVIRONMENT [PLANFILE]     (default out/ENVIRONMENT.plan)
# onboard refuses a plan whose state or manifests moved since it was made (another merge got in
# first): the job fails, and a new plan is needed. Exit 0 applied (or nothing to do); 1 otherwise.
source "$(dirname "$0")/common.sh"
plan=${2:-$out/$env_name.plan}
[ -f "$plan" ] || { echo "error: no saved plan $plan: run ci/plan.sh $env_name first" >&2; exit 1; }
"$ONBOARD" apply -f "$manifests" --no-color --lock-timeout "$lock_timeout" "$plan"
