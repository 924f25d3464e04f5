// Plan: the diff of desired resources against recorded state (and the refreshed world), the
// dependency graph of its steps, and its text/JSON forms.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/change.h"
#include "engine/clock.h"
#include "engine/graph.h"
#include "engine/provider.h"
#include "engine/resource.h"
#include "engine/state.h"

namespace onboard {

constexpr int kPlanFormatVersion = 1;

struct Plan {
  std::vector<Change> changes;  // every address, no-ops included, sorted by address
  bool destroy = false;
  bool refreshed = false;
  std::vector<std::string> targets;
  // What the plan was made against; apply of a saved plan refuses when these moved.
  std::string lineage;  // empty: no state yet
  int64_t serial = 0;
  std::string manifest_digest;
  int64_t created_at = 0;

  bool HasChanges() const;
  int CountAdd() const;      // create + replace
  int CountChange() const;   // update
  int CountDestroy() const;  // delete + replace
  const Change* Find(const std::string& address) const;
};

struct DiffOptions {
  bool destroy = false;
  // observations != nullptr means the world was read (plan with refresh).
  const std::map<std::string, Result<Observation>>* observations = nullptr;
  std::vector<Address> targets;  // empty: everything
};

// Pure. Fails only on a dependency cycle or a bad target.
Result<Plan> Diff(const std::vector<Resource>& desired, const State* state, const Clock& clock,
                  const DiffOptions& opts);

// DESIGN §3's edges over the plan's changes (no-ops included so ordering holds).
// destroy=true reverses them.
Dag BuildGraph(const std::vector<Change>& changes, bool destroy);

// Compares two attribute trees; one reason per differing leaf ("object.spec.address").
// Unknown values in `after` are skipped; the top-level "connection" key is never compared.
std::vector<Reason> FieldChanges(const nlohmann::json& before, const nlohmann::json& after,
                                 bool drift);

struct RenderOptions {
  bool color = false;
};
std::string RenderPlanText(const Plan& plan, const RenderOptions& opts);
std::string RenderSummary(const Plan& plan);  // "Plan: 3 to add, 1 to change, 0 to destroy."

nlohmann::json PlanToJson(const Plan& plan);  // schemas/plan.schema.json
Result<Plan> PlanFromJson(const nlohmann::json& j, const std::string& source);

}  // namespace onboard
