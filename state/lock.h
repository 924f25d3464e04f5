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
// The lock info a backend's Lock() records for `info`: pid and host always this process's (stale-lock
// detection relies on them), an empty who, path (= where, the state's location) or created filled in.
// An error when info has no ID.
Result<LockInfo> LockInfoOfThisProcess(const LockInfo& info, const std::string& where);

}  // namespace onboard
