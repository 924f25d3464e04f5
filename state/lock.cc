#include "state/lock.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <vector>

namespace onboard {

std::string CurrentUser() {
  uid_t uid = ::geteuid();
  long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<size_t>(size) : 16384);
  struct passwd pw;
  struct passwd* result = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &result) == 0 && result && result->pw_name &&
      *result->pw_name)
    return result->pw_name;
  if (const char* user = std::getenv("USER"); user && *user) return user;
  return std::to_string(uid);
}

std::string CurrentHost() {
  char name[256] = {0};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

LockInfo NewLockInfo(const std::string& operation, const std::string& path, int64_t now) {
  LockInfo info;
  info.id = NewLineage();
  info.operation = operation;
  info.host = CurrentHost();
  info.who = CurrentUser() + "@" + info.host;
  info.pid = static_cast<int>(::getpid());
#ifdef ONBOARD_VERSION
  info.version = ONBOARD_VERSION;
#endif
  info.created = now;
  info.path = path;
  return info;
}

Result<LockInfo> LockInfoOfThisProcess(const LockInfo& info, const std::string& where) {
  if (info.id.empty())
    return Result<LockInfo>::Error("cannot lock " + where + ": the lock info has no ID (use NewLockInfo)");
  LockInfo mine = info;
  mine.pid = static_cast<int>(::getpid());
  mine.host = CurrentHost();
  if (mine.who.empty()) mine.who = CurrentUser() + "@" + mine.host;
  if (mine.path.empty()) mine.path = where;
  if (mine.created == 0) mine.created = static_cast<int64_t>(std::time(nullptr));
  return mine;
}

}  // namespace onboard
