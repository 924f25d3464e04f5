#pragma once
#include <string>
namespace onboard {
// Lower-case hex SHA-256 of the bytes.
std::string Sha256Hex(const std::string& data);
}  // namespace onboard
