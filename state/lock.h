// Building a LockInfo for this process (used by every backend and by the CLI).
#pragma once

#include <cstdint>
#include <string>

#include "engine/state.h"

namespace onboard {

// The login name of the effective user ($USER, then the uid, if the passwd entry is missing).
std::string CurrentUser();
// This machine's host name.
std::string CurrentHost();
// A fresh lock: new UUID id, who = user@host, host, this process's pid, onboard's version,
// created = now (epoch seconds), path = the state location.
LockInfo NewLockInfo(const std::string& operation, const std::string& path, int64_t now);

}  // namespace onboard
