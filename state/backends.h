// Choosing the state backend: --backend, else the Fleet's spec.backend, else local.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/state.h"

namespace onboard {

struct BackendFlags {
  std::string type;                       // --backend ("" = the Fleet's, else local)
  std::vector<std::string> config;        // --backend-config KEY=VALUE (repeatable)
  std::string default_path;               // the local state file (--state, else beside the manifests)
  bool state_path_given = false;          // --state given: it wins over spec.backend.path
  std::string kubeconfig, context;        // --kubeconfig/--context (kubernetes backend default cluster)
};

// manifest_backend: the Fleet's spec.backend (type "local" when absent). cluster: the Fleet's
// cluster and name: the kubernetes backend's defaults when neither its config nor the flags
// name a cluster or a state name.
Result<std::unique_ptr<StateStore>> OpenStateStore(const Backend& manifest_backend, const Cluster& cluster,
                                                   const std::string& fleet_name, const BackendFlags& flags);

}  // namespace onboard
