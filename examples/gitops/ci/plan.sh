#!/usr/bin/env bash
# Pull request: plan one environment and save the plan for the merge.
#   ci/plan.sh ENVIRONMENT
# Writes out/ENVIRONMENT.plan (the saved plan, mode 0600, no secrets), out/ENVIRONMENT.plan.txt
# (the text plan), out/ENVIRONMENT.plan.json (onboard show --json) and out/ENVIRONMENT.comment.md
# (what the pipeline posts on the pull request). Exit 0 whether or not there are changes; 1 on error.
source "$(dirname "$0")/common.sh"
plan=$out/$env_name.plan
"$ONBOARD" plan -f "$manifests" --out "$plan" --detailed-exitcode --no-color \
  --lock-timeout "$lock_timeout" >"$out/$env_name.plan.txt"
rc=$?
cat "$out/$env_name.plan.txt"
case $rc in
  0) verdict="no changes" ;;
  2) verdict="changes to apply on merge" ;;
  *) echo "error: onboard plan failed for $env_name (exit $rc)" >&2; exit 1 ;;
esac
"$ONBOARD" show --json "$plan" >"$out/$env_name.plan.json" || exit 1
{
  echo "### onboard plan: \`$env_name\` — $verdict"
  echo
  echo '```'
  cat "$out/$env_name.plan.txt"
  echo '```'
} >"$out/$env_name.comment.md"
echo "plan for $env_name: $verdict (saved to $plan)"
