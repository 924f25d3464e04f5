// The http state backend: Terraform's http backend protocol (GET/POST/DELETE of the state,
// LOCK/UNLOCK with lock-info JSON, 409/423 with the holder when held, ?ID= on writes while
// locked, basic auth, retries), so servers that already speak it work.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/state.h"

namespace onboard {

// config: spec.backend of the Fleet (minus "type") merged with --backend-config KEY=VALUE.
// origin names where config came from, for error messages.
Result<std::unique_ptr<StateStore>> OpenHttpStateStore(const nlohmann::json& config, const std::string& origin);

}  // namespace onboard
