// Choosing the state backend: --backend, else the Fleet's spec.backend, else local.
#pragma once

#include <memory>
#include <string>

#include "engine/model.h"
#include "engine/state.h"

namespace onboard {

// default_path: the local state file (onboard.state.json beside the manifests) unless --state.
Result<std::unique_ptr<StateStore>> OpenStateStore(const Backend& manifest_backend,
                                                   const std::string& backend_flag,
                                                   const std::string& default_path);

}  // namespace onboard
