#include "state/local.h"

#include "engine/hash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "state/lock.h"
#include "state/overwrite.h"

namespace onboard {
namespace {

using nlohmann::json;

constexpr auto kLockPoll = std::chrono::milliseconds(200);

std::string Errno(int err) { return std::strerror(err); }

std::string DirOf(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool PidAlive(int pid) {
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

std::string RandomHex() {
  unsigned char b[6];
  if (RAND_bytes(b, sizeof b) != 1) {
    auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    std::memcpy(b, &t, sizeof b);
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

// "<path>.tmp.<pid>.<random>": the pid lets a later Write recognise leftovers of dead writers.
std::string TempName(const std::string& prefix) {
  return prefix + std::to_string(::getpid()) + "." + RandomHex();
}

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::Error("cannot open directory " + dir + " to sync it: " + Errno(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL)  // some file systems cannot sync directories
    return Status::Error("cannot sync directory " + dir + ": " + Errno(err));
  return Status::Ok();
}

Status WriteAll(int fd, const std::string& bytes, const std::string& name) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error("cannot write " + name + ": " + Errno(errno));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::string> ReadFd(int fd, const std::string& name) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Result<std::string>::Error("cannot read " + name + ": " + Errno(errno));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// nullopt when the file does not exist.
Result<std::optional<std::string>> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return Result<std::optional<std::string>>::Error("cannot open " + path + ": " + Errno(errno));
  }
  Result<std::string> r = ReadFd(fd, path);
  ::close(fd);
  if (!r) return r.status();
  return std::optional<std::string>(std::move(*r));
}

// Removes "<base><marker><pid>.<random>" leftovers in dir whose writer process is gone.
void CleanStrays(const std::string& dir, const std::string& base,
                 std::initializer_list<const char*> markers) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  const int self = static_cast<int>(::getpid());
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    for (const char* marker : markers) {
      std::string prefix = base + marker;
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      std::string rest = name.substr(prefix.size());
      auto dot = rest.find('.');
      if (dot == std::string::npos || dot == 0) continue;
      bool digits = true;
      for (size_t i = 0; i < dot; ++i) digits = digits && rest[i] >= '0' && rest[i] <= '9';
      if (!digits || dot > 9) continue;
      int pid = std::stoi(rest.substr(0, dot));
      if (pid == self || PidAlive(pid)) continue;
      ::unlinkat(::dirfd(d), name.c_str(), 0);
    }
  }
  ::closedir(d);
}

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// What a contender found in the lock file.
struct Probe {
  enum Kind { kFree, kHeld, kStale, kChanged } kind = kFree;
  bool info_ok = false;
  LockInfo info;
  std::string info_error;  // why the lock info could not be read
};

Result<LockInfo> ParseLockInfo(const std::string& bytes, const std::string& name) {
  json j = json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Result<LockInfo>::Error("lock file " + name + " does not hold lock info JSON");
  LockInfo info = LockInfo::FromJson(j);
  if (info.id.empty()) return Result<LockInfo>::Error("lock file " + name + " has no \"ID\"");
  return info;
}

Result<Probe> ProbeLock(const std::string& lock_path) {
  Probe p;
  int fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return p;  // released meanwhile
    return Result<Probe>::Error("cannot open lock file " + lock_path + ": " + Errno(errno));
  }
  Result<std::string> bytes = ReadFd(fd, "lock file " + lock_path);
  if (bytes) {
    Result<LockInfo> info = ParseLockInfo(*bytes, lock_path);
    p.info_ok = info.ok();
    if (info) p.info = *info; else p.info_error = info.error();
  } else {
    p.info_error = bytes.error();
  }
  // Does anybody hold it? Our probe flock is released when fd is closed below.
  bool flock_free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  int flock_err = errno;
  struct stat by_fd {}, by_path {};
  bool same = ::fstat(fd, &by_fd) == 0 && ::stat(lock_path.c_str(), &by_path) == 0 &&
              SameFile(by_fd, by_path);
  ::close(fd);
  if (!flock_free && flock_err != EWOULDBLOCK)
    return Result<Probe>::Error("cannot check lock file " + lock_path + " with flock: " + Errno(flock_err));
  if (!same) {  // released (and maybe re-taken) while we looked: look again
    p.kind = Probe::kChanged;
    return p;
  }
  if (flock_free) {
    p.kind = Probe::kStale;
  } else if (p.info_ok && p.info.host == CurrentHost() && p.info.pid > 0 && !PidAlive(p.info.pid)) {
    // flock still held (e.g. by a child that inherited the descriptor) but the holder is gone.
    p.kind = Probe::kStale;
  } else {
    p.kind = Probe::kHeld;
  }
  return p;
}

Status HeldError(const Probe& p, const std::string& lock_path) {
  if (!p.info_ok)
    return Status::Error("state is locked: lock file " + lock_path +
                         " is held by a running process, but its lock info is unreadable (" +
                         p.info_error + "); wait with --lock-timeout, or remove " + lock_path +
                         " once that process has ended");
  return Status::Error(p.info.Describe() + "; wait with --lock-timeout or run onboard force-unlock " +
                       p.info.id);
}

Status StaleError(const Probe& p, const std::string& lock_path) {
  if (!p.info_ok)
    return Status::Error("state lock is stale: lock file " + lock_path +
                         " is held by no running process and its lock info is unreadable (" +
                         p.info_error + "); if no onboard is running, remove " + lock_path +
                         " by hand");
  const LockInfo& i = p.info;
  return Status::Error("state lock is stale: its holder " + i.who + " pid " + std::to_string(i.pid) +
                       " (" + i.operation + ", since " + FormatTime(i.created) + ", lock ID " + i.id +
                       ") is no longer running; run onboard force-unlock " + i.id + " to clear it");
}

}  // namespace

LocalStateStore::LocalStateStore(std::string path) : path_(std::move(path)), dir_(DirOf(path_)) {}

LocalStateStore::~LocalStateStore() {
  if (lock_fd_ >= 0) (void)Unlock(lock_id_);
}

std::string LocalStateStore::Describe() const { return path_; }

namespace {

// Pretty at the top level and one line per resource: readable and diffable, and about half the
// bytes of a fully indented file (a 10,000-workload fleet's state is parsed on every plan).
Result<std::string> Dump(const json& encoded) {
  try {
    std::string out = "{\n";
    bool first = true;
    for (auto it = encoded.begin(); it != encoded.end(); ++it) {
      out += first ? "" : ",\n";
      first = false;
      out += "  " + json(it.key()).dump() + ": ";
      if (it.key() == "resources" && it->is_array() && !it->empty()) {
        out += "[\n";
        for (size_t i = 0; i < it->size(); ++i) out += (i ? ",\n    " : "    ") + (*it)[i].dump();
        out += "\n  ]";
      } else {
        out += it->dump();
      }
    }
    return out + "\n}\n";
  } catch (const std::exception& e) {  // invalid UTF-8 in a string
    return Result<std::string>::Error("cannot encode the state: " + std::string(e.what()));
  }
}

}  // namespace

Result<std::string> LocalStateStore::Serialize(const State& s) { return Dump(EncodeState(s)); }

// ---------------------------------------------------------------------------------------------
// Lock

Status LocalStateStore::Lock(const LockInfo& info, int timeout_seconds) {
  const std::string lock = lock_path();
  if (lock_fd_ >= 0)
    return Status::Error("this process already holds the lock on " + path_ + " (lock ID " + lock_id_ +
                         "); unlock it before locking again");
  Result<LockInfo> recorded = LockInfoOfThisProcess(info, path_);
  if (!recorded) return recorded.status();
  const LockInfo& mine = *recorded;
  const std::string body = mine.ToJson().dump(2) + "\n";
  const std::string base = BaseOf(lock);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(std::max(0, timeout_seconds));

  for (int changed = 0;;) {
    CleanStrays(dir_, base, {".tmp."});
    // A private file holding the complete lock info, flocked before anyone can see it.
    const std::string tmp = TempName(lock + ".tmp.");
    int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
      return Status::Error("cannot create lock file in " + dir_ + " (" + tmp + "): " + Errno(errno) +
                           "; check that the directory exists and is writable");
    Status st;
    if (::fchmod(fd, 0600) != 0) {
      st = Status::Error("cannot set mode 0600 on " + tmp + ": " + Errno(errno));
    } else if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      st = Status::Error("cannot flock " + tmp + ": " + Errno(errno));
    } else if (st = WriteAll(fd, body, tmp); st.ok() && ::fsync(fd) != 0) {
      st = Status::Error("cannot sync " + tmp + ": " + Errno(errno));
    }
    if (!st.ok()) {
      ::unlink(tmp.c_str());
      ::close(fd);
      return st;
    }
    // The exclusive step: link() fails with EEXIST while another lock file is there.
    int rc = ::link(tmp.c_str(), lock.c_str());
    int err = errno;
    ::unlink(tmp.c_str());
    if (rc == 0) {
      lock_fd_ = fd;
      lock_id_ = mine.id;
      (void)FsyncDir(dir_);
      return Status::Ok();
    }
    ::close(fd);
    if (err != EEXIST)
      return Status::Error("cannot create lock file " + lock + ": " + Errno(err) +
                           (err == EPERM || err == EOPNOTSUPP
                                ? "; the state directory must be on a file system with hard links"
                                : ""));

    Result<Probe> probe = ProbeLock(lock);
    if (!probe) return probe.status();
    switch (probe->kind) {
      case Probe::kFree:
      case Probe::kChanged:
        // Released between our attempt and the probe: try again at once, but do not spin
        // forever against a pathological churn of lock files.
        if (++changed > 1000) return HeldError(*probe, lock);
        continue;
      case Probe::kStale:
        return StaleError(*probe, lock);
      case Probe::kHeld:
        break;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return HeldError(*probe, lock);
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(kLockPoll, deadline - now));
  }
}

Status LocalStateStore::Unlock(const std::string& id) {
  const std::string lock = lock_path();
  if (lock_fd_ < 0)
    return Status::Error("cannot unlock " + path_ + " with lock ID " + id +
                         ": this process holds no lock on it");
  if (id != lock_id_)
    return Status::Error("cannot unlock " + path_ + " with lock ID " + id + ": the lock held is " +
                         lock_id_);
  struct stat mine {}, now {};
  bool ours = ::fstat(lock_fd_, &mine) == 0 && ::stat(lock.c_str(), &now) == 0 && SameFile(mine, now);
  // Unlink while the flock is still held, then release: a contender never sees our file unlocked.
  if (ours && ::unlink(lock.c_str()) != 0) {
    int err = errno;
    return Status::Error("cannot remove lock file " + lock + ": " + Errno(err) +
                         "; the lock is still held (lock ID " + id + ")");
  }
  ::close(lock_fd_);
  lock_fd_ = -1;
  std::string held = lock_id_;
  lock_id_.clear();
  if (!ours)
    return Status::Error("the lock on " + path_ + " (lock ID " + held +
                         ") was force-unlocked while this run held it; another run may have "
                         "changed the state since: check it with onboard plan");
  (void)FsyncDir(dir_);
  return Status::Ok();
}

Result<std::optional<LockInfo>> LocalStateStore::Holder() {
  const std::string lock = lock_path();
  Result<std::optional<std::string>> bytes = ReadFile(lock);
  if (!bytes) return bytes.status();
  if (!bytes->has_value()) return std::optional<LockInfo>();
  Result<LockInfo> info = ParseLockInfo(**bytes, lock);
  if (!info)
    return Result<std::optional<LockInfo>>::Error(info.error() +
                                                  "; if no onboard is running, remove it by hand");
  return std::optional<LockInfo>(*info);
}

Status LocalStateStore::ForceUnlock(const std::string& id) {
  const std::string lock = lock_path();
  if (lock_fd_ >= 0 && id == lock_id_) return Unlock(id);
  for (int attempt = 0; attempt < 10; ++attempt) {
    int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT)
        return Status::Error("state " + path_ + " is not locked (no lock file " + lock +
                             "): nothing to force-unlock");
      return Status::Error("cannot open lock file " + lock + ": " + Errno(errno));
    }
    Result<std::string> bytes = ReadFd(fd, "lock file " + lock);
    struct stat by_fd {};
    bool stat_ok = ::fstat(fd, &by_fd) == 0;
    ::close(fd);
    if (!bytes) return bytes.status();
    Result<LockInfo> info = ParseLockInfo(*bytes, lock);
    if (!info) return Status::Error(info.error() + "; if no onboard is running, remove it by hand");
    if (info->id != id)
      return Status::Error("lock ID " + id + " does not match the lock on " + path_ + ": " +
                           info->Describe() + "; to remove that lock, run onboard force-unlock " +
                           info->id);
    struct stat by_path {};
    if (!stat_ok || ::stat(lock.c_str(), &by_path) != 0 || !SameFile(by_fd, by_path))
      continue;  // the lock changed hands while we read it: read it again
    if (::unlink(lock.c_str()) != 0)
      return Status::Error("cannot remove lock file " + lock + ": " + Errno(errno));
    (void)FsyncDir(dir_);
    return Status::Ok();
  }
  return Status::Error("lock file " + lock + " keeps changing; try onboard force-unlock again");
}

// ---------------------------------------------------------------------------------------------
// Read / Write

namespace {

// Parses and decodes state bytes; errors name the file and say what to do.
Result<State> ParseState(const std::string& bytes, const std::string& path, const std::string& backup) {
  json j;
  try {
    j = json::parse(bytes);
  } catch (const json::parse_error& e) {
    return Result<State>::Error("state file " + path + " is not valid JSON (" + e.what() +
                                "); fix it, or restore the previous copy " + backup);
  } catch (const std::exception& e) {
    return Result<State>::Error("state file " + path + " cannot be parsed (" + e.what() +
                                "); fix it, or restore the previous copy " + backup);
  }
  Result<State> st = DecodeState(std::move(j), path);
  if (!st && st.error().find("upgrade onboard") == std::string::npos)
    return Result<State>::Error(st.error() + "; fix the file, or restore the previous copy " + backup);
  return st;
}

}  // namespace

Result<std::optional<State>> LocalStateStore::Read() {
  Result<std::optional<std::string>> bytes = ReadFile(path_);
  if (!bytes) {
    unreadable_ = "cannot read state file: " + bytes.error();
    return Result<std::optional<State>>::Error(*unreadable_);
  }
  if (!bytes->has_value()) {
    unreadable_.reset();
    return std::optional<State>();
  }
  Result<State> st = ParseState(**bytes, path_, backup_path());
  if (!st) {
    unreadable_ = st.error();
    return st.status();
  }
  unreadable_.reset();
  Remember(**bytes, st->lineage, st->serial);
  return std::optional<State>(std::move(*st));
}

void LocalStateStore::Remember(const std::string& bytes, const std::string& lineage, int64_t serial) {
  struct stat sb {};
  if (::stat(path_.c_str(), &sb) != 0 || static_cast<size_t>(sb.st_size) != bytes.size()) {
    known_.reset();
    return;
  }
  known_ = Known{sb.st_dev, sb.st_ino, sb.st_size,
                 static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec,
                 lineage, serial, Sha256Hex(bytes)};
}

Status LocalStateStore::Write(const State& s) {
  const std::string refuse = "refusing to write state file " + path_ + ": ";
  if (unreadable_)
    return Status::Error(refuse + "it could not be read (" + *unreadable_ +
                         "), and onboard never overwrites a state it could not read; nothing was "
                         "written");
  // A run whose lock was force-unlocked must not write: another run may own the state now.
  if (lock_fd_ >= 0) {
    struct stat mine {}, now {};
    if (::fstat(lock_fd_, &mine) != 0 || ::stat(lock_path().c_str(), &now) != 0 || !SameFile(mine, now))
      return Status::Error(refuse + "this run's lock (lock ID " + lock_id_ +
                           ") was force-unlocked, so another run may be changing the state; "
                           "nothing was written: run the command again");
  }
  // Never write a file that this onboard could not read back.
  json encoded = EncodeState(s);
  if (Result<State> back = DecodeState(encoded, path_); !back)
    return Status::Error(refuse + "the new state is invalid: " + back.error());
  Result<std::string> bytes = Dump(encoded);
  if (!bytes) return Status::Error(refuse + bytes.error());

  // What is there now? It must be a regular file we can read, of the same lineage, not newer.
  struct stat cur {};
  bool exists = false;
  if (::lstat(path_.c_str(), &cur) == 0) {
    if (!S_ISREG(cur.st_mode))
      return Status::Error(refuse + "it exists and is not a regular file; move it aside");
    exists = true;
    int64_t mtime_ns = static_cast<int64_t>(cur.st_mtim.tv_sec) * 1000000000 + cur.st_mtim.tv_nsec;
    std::optional<std::string> old_sha;
    std::string old_lineage;
    int64_t old_serial = 0;
    if (known_ && known_->dev == cur.st_dev && known_->ino == cur.st_ino && known_->size == cur.st_size &&
        known_->mtime_ns == mtime_ns) {
      old_sha = known_->sha256;  // still the file this store read or wrote last
      old_lineage = known_->lineage;
      old_serial = known_->serial;
    } else {
      Result<std::optional<std::string>> old_bytes = ReadFile(path_);
      if (!old_bytes) return Status::Error(refuse + old_bytes.error());
      if (old_bytes->has_value()) {
        Result<State> old = ParseState(**old_bytes, path_, backup_path());
        if (!old)
          return Status::Error(refuse + "the file there could not be read (" + old.error() +
                               "), and onboard never overwrites a state it could not read");
        old_sha = Sha256Hex(**old_bytes);
        old_lineage = old->lineage;
        old_serial = old->serial;
      }
    }
    if (old_sha) {
      if (Status st = CheckOverwrite(old_lineage, old_serial, s, replacing_lineage(),
                                     "use another --state path or move the file aside",
                                     " (another run wrote it since this one read it)");
          !st)
        return Status::Error(refuse + st.message());
      if (*old_sha == Sha256Hex(*bytes)) {  // no change: no write, just make sure of the mode
        if ((cur.st_mode & 07777) != 0600 && ::chmod(path_.c_str(), 0600) != 0)
          return Status::Error("cannot set mode 0600 on state file " + path_ + ": " + Errno(errno));
        return Status::Ok();
      }
    } else {
      exists = false;  // removed meanwhile
    }
  } else if (errno != ENOENT) {
    return Status::Error(refuse + "cannot stat it: " + Errno(errno));
  }

  const std::string base = BaseOf(path_);
  CleanStrays(dir_, base, {".tmp.", ".backup.tmp."});

  const std::string tmp = TempName(path_ + ".tmp.");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return Status::Error("cannot create temporary state file " + tmp + ": " + Errno(errno) +
                         "; check that " + dir_ + " exists and is writable");
  Status st;
  if (::fchmod(fd, 0600) != 0) st = Status::Error("cannot set mode 0600 on " + tmp + ": " + Errno(errno));
  if (st.ok()) st = WriteAll(fd, *bytes, "temporary state file " + tmp);
  if (st.ok() && ::fsync(fd) != 0) st = Status::Error("cannot sync " + tmp + ": " + Errno(errno));
  if (::close(fd) != 0 && st.ok()) st = Status::Error("cannot close " + tmp + ": " + Errno(errno));

  // Keep the previous file as .backup: a hard link to its inode is exactly its previous bytes.
  if (st.ok() && exists) {
    const std::string backup = backup_path();
    const std::string backup_tmp = TempName(path_ + ".backup.tmp.");
    if (::link(path_.c_str(), backup_tmp.c_str()) != 0) {
      st = Status::Error("cannot keep the previous state as " + backup + " (link " + path_ + " " +
                         backup_tmp + "): " + Errno(errno));
    } else if (::chmod(backup_tmp.c_str(), 0600) != 0) {
      st = Status::Error("cannot set mode 0600 on " + backup_tmp + ": " + Errno(errno));
      ::unlink(backup_tmp.c_str());
    } else if (::rename(backup_tmp.c_str(), backup.c_str()) != 0) {
      st = Status::Error("cannot keep the previous state as " + backup + ": " + Errno(errno));
      ::unlink(backup_tmp.c_str());
    }
  }
  if (st.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0)
    st = Status::Error("cannot replace state file " + path_ + " (rename from " + tmp + "): " + Errno(errno));
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return Status::Error(st.message() + "; the previous state file is unchanged");
  }
  if (Status d = FsyncDir(dir_); !d)
    return Status::Error("state file " + path_ + " was replaced but may not be durable: " + d.message());
  Remember(*bytes, s.lineage, s.serial);
  return Status::Ok();
}

}  // namespace onboard
