// Base64 (RFC 4648), shared by the kubeconfig loader, known_hosts, the SSH agent and the
// kubernetes state backend: one implementation.
#pragma once

#include <string>

#include "engine/status.h"

namespace onboard {

// Standard alphabet, with padding.
std::string Base64Encode(const std::string& bytes);
// Standard or URL-safe alphabet; padding optional; whitespace ignored. An error names the first
// bad character's position.
Result<std::string> Base64Decode(const std::string& text);

}  // namespace onboard
