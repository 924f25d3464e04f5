// Pure generators of what a VM gets (DESIGN §1.5, §1.6) and of the Kubernetes objects onboard
// applies. No I/O; golden-tested.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/facts.h"
#include "engine/model.h"

namespace onboard {

// The label onboard puts on every object it manages.
constexpr const char* kManagedByLabel = "app.kubernetes.io/managed-by";
constexpr const char* kManagedByValue = "onboard";

// sidecar.env entries in tctl's order (DESIGN §1.5).
std::vector<std::pair<std::string, std::string>> SidecarEnv(const Workload& w, const Cluster& c,
                                                            const MeshFacts& facts);
// The file body: one KEY=value line per entry, as docker --env-file reads it.
std::string RenderSidecarEnv(const std::vector<std::pair<std::string, std::string>>& env);
// Problems that would corrupt the file (invalid or duplicate key, a value with a line break or
// NUL), one message each; empty when the env is fine. RenderSidecarEnv escapes such values
// rather than emit a broken file, so callers validate with this first and refuse.
std::vector<std::string> CheckSidecarEnv(const std::vector<std::pair<std::string, std::string>>& env);

// <hub>/proxyv2:<tag>, or the workload's full image override.
std::string ProxyImage(const Workload& w, const MeshFacts& facts);
// The argument vector after "docker" for `docker run ...` (DESIGN §1.6).
std::vector<std::string> DockerRunArgs(const Workload& w, const Cluster& c, const MeshFacts& facts);

// networking.istio.io/v1beta1 objects, as onboard applies them (server-side apply bodies).
nlohmann::json WorkloadEntryObject(const Workload& w);
nlohmann::json SidecarObject(const Workload& w);  // null when the workload has no sidecar spec

}  // namespace onboard
