// The local state backend (DESIGN §4): one JSON file, by default onboard.state.json beside the
// manifests (the CLI chooses the path), mode 0600, replaced atomically, previous copy kept as
// <path>.backup, and an exclusive lock in <path>.lock.
//
// Design choice: the lock file lives beside the state file, not in a run directory or $TMPDIR.
// Whoever can reach the state (another checkout on the same host, a second terminal, a
// shared NFS home) then sees the same lock, the lock is removed together with the state's
// directory, and `force-unlock` needs no other location than the state path.
//
// Locking: the lock file appears atomically with its LockInfo already inside it (written to a
// private temporary file created with O_CREAT|O_EXCL, flock(LOCK_EX)ed, then link()ed to
// <path>.lock, which fails with EEXIST when the lock is taken — exclusive creation without the
// window in which a lock file exists but is still empty). The holder keeps the flock for as long
// as it holds the lock, so the kernel drops it when the holder dies. A contender that finds the
// file probes it: flock free (or holder pid gone on this host) means STALE. A stale lock is never
// taken over silently: Lock() fails and tells the operator to run `onboard force-unlock ID`.
//
// Not thread-safe: one store per thread of control. Write() does not take the lock itself;
// the caller locks around a run.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "engine/state.h"

namespace onboard {

class LocalStateStore : public StateStore {
 public:
  explicit LocalStateStore(std::string path);
  ~LocalStateStore() override;  // releases a lock this store still holds
  LocalStateStore(const LocalStateStore&) = delete;
  LocalStateStore& operator=(const LocalStateStore&) = delete;

  std::string Describe() const override;  // the state file path
  // info.pid and info.host are always recorded as this process's (stale detection relies on
  // them); an empty who/path/created is filled in. info.id must be set (see NewLockInfo).
  Status Lock(const LockInfo& info, int timeout_seconds) override;
  Status Unlock(const std::string& id) override;
  Result<std::optional<LockInfo>> Holder() override;
  Status ForceUnlock(const std::string& id) override;
  Result<std::optional<State>> Read() override;
  // Refuses when the file on disk could not be read (by Read() or now), when the new state does
  // not round-trip through the codec, when the file on disk has another lineage or a higher
  // serial, and when this store's lock was force-unlocked behind its back. Writing bytes
  // identical to the file's makes no write (only restores mode 0600). Leftover temp files of
  // dead writers (<path>.tmp.<pid>.*) are removed by the next Write; Read ignores them.
  Status Write(const State& s) override;

  const std::string& path() const { return path_; }
  std::string lock_path() const { return path_ + ".lock"; }
  std::string backup_path() const { return path_ + ".backup"; }
  // True while this store holds the lock.
  bool locked() const { return lock_fd_ >= 0; }

  // The exact bytes Write() puts in the file: pretty JSON (2-space indent, keys sorted),
  // trailing newline. Fails only on invalid UTF-8 in a string.
  static Result<std::string> Serialize(const State& s);

 private:
  std::string path_;
  std::string dir_;
  int lock_fd_ = -1;
  std::string lock_id_;
  // Why the last Read() failed; Write() refuses while it is set (never overwrite what we
  // could not read). Cleared by a successful Read().
  // The file as this store last read or wrote it: while the file on disk is still that one (same
  // inode, size and mtime), Write() need not read and parse it again to check lineage and serial.
  struct Known {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    std::string lineage;
    int64_t serial = 0;
    std::string sha256;  // of the bytes (not the bytes: a large state would be held twice)
  };
  std::optional<Known> known_;
  void Remember(const std::string& bytes, const std::string& lineage, int64_t serial);
  std::optional<std::string> unreadable_;
};

}  // namespace onboard
