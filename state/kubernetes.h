// The kubernetes state backend: the state in Secrets (gzipped, split into parts below the 1 MiB
// object limit), the lock in a coordination.k8s.io/v1 Lease that the holder renews while it runs
// and that expires when the holder dies; every state write is conditional on resourceVersion.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/state.h"

namespace onboard {

// Where the backend finds its cluster when its own config names none: --kubeconfig/--context,
// then the Fleet's spec.cluster.
struct KubernetesBackendDefaults {
  std::string kubeconfig;
  std::string context;
  std::string name;  // the Fleet's metadata.name: the default state name
};

// config: spec.backend of the Fleet (minus "type") merged with --backend-config KEY=VALUE.
// origin names where config came from, for error messages ("spec.backend in fleet.yaml").
Result<std::unique_ptr<StateStore>> OpenKubernetesStateStore(const nlohmann::json& config,
                                                             const KubernetesBackendDefaults& defaults,
                                                             const std::string& origin);

}  // namespace onboard
