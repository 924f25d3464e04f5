// A change is a value (Terraform plans.Change): action, before, after, reasons.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/resource.h"

namespace onboard {

enum class Action { kNoOp, kCreate, kUpdate, kReplace, kDelete, kRead };

const char* ActionName(Action a);  // "no-op", "create", "update", "replace", "delete", "read"
std::optional<Action> ActionFromName(const std::string& name);

struct Reason {
  std::string field;    // "spec.address", "files.sidecar.env.sha256", "" for the whole resource
  std::string message;  // "10.0.0.1 -> 10.0.0.2", "changed on the VM (drift)", "expires in 5h12m"
  bool drift = false;   // the real world differs from state (not the manifests)
};

struct Change {
  Address address;
  std::string workload;  // "<ns>/<name>", "" for cluster-wide
  Action action = Action::kNoOp;
  nlohmann::json before;  // null when absent
  nlohmann::json after;   // null when deleted
  std::vector<Reason> reasons;
};

}  // namespace onboard
