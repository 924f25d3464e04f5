// One plan, as plan/apply/destroy make it: read the cluster's facts and the world through the
// providers (unless refresh is off), build the desired resources, diff them against state.
// Still pure: every side effect goes through the Provider interface.
#pragma once

#include <vector>

#include "engine/clock.h"
#include "engine/desired.h"
#include "engine/model.h"
#include "engine/plan.h"
#include "engine/provider.h"
#include "engine/state.h"

namespace onboard {

struct PlanInputs {
  const Model* model = nullptr;
  const State* state = nullptr;  // null: no state yet
  std::vector<Provider*> providers;
  const Clock* clock = nullptr;
  bool refresh = true;
  bool destroy = false;
  std::vector<Address> targets;
};

struct PlanOutputs {
  Plan plan;
  std::vector<Resource> desired;  // with payloads, for apply
  std::map<std::string, Result<Observation>> observations;
};

// Errors of refresh are all reported at once (one line per host or object).
Result<PlanOutputs> MakePlan(const PlanInputs& in);

// A saved plan may be applied only if nothing moved since it was made: same state lineage and
// serial, same manifests, and the same actions when planned again now. The error says which.
Status CheckSavedPlan(const Plan& saved, const Plan& now, const std::string& state_lineage,
                      int64_t state_serial, const std::string& manifest_digest);

}  // namespace onboard
