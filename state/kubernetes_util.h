// Helpers of the kubernetes state backend: gzip framing of the state and Kubernetes MicroTime.
#pragma once

#include <cstdint>
#include <string>

#include "engine/status.h"

namespace onboard::kstate {

// RFC 1952 gzip (zlib, default level; no file name, mtime 0: equal input gives equal bytes).
Result<std::string> Gzip(const std::string& bytes);
// The inverse. Refuses a stream that is not gzip, is truncated, fails its CRC, or has bytes after
// its end; the error says which (no prefix: the caller names the object).
Result<std::string> Gunzip(const std::string& gz);

// The system clock in microseconds since the epoch.
int64_t NowMicros();
// Kubernetes MicroTime: "2026-11-26T03:22:27.123456Z".
std::string FormatMicroTime(int64_t epoch_micros);
// RFC 3339 with or without fractional seconds (any number of digits) and with Z or an offset.
bool ParseMicroTime(const std::string& text, int64_t* epoch_micros);

// A DNS-1123 subdomain of at most 63 characters (so that it is also a valid label value).
bool IsStateName(const std::string& name);
// A DNS-1123 label (namespace names).
bool IsDns1123Label(const std::string& name);

}  // namespace onboard::kstate
