// The local state backend: atomic writes, backups, refusal to overwrite unreadable state, and the
// lock, with real processes (fork) contending, dying while holding it, and killed mid-write.
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "engine/clock.h"
#include "state/local.h"
#include "state/lock.h"
#include "tests/state/child.h"
#include "tests/state/sample.h"

namespace onboard {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::ChildGuard;
using test::Pipe;

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void PutFile(const std::string& path, const std::string& bytes, mode_t mode = 0600) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  ::chmod(path.c_str(), mode);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

ino_t InodeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

class LocalStore : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/onboard-state-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/onboard.state.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<std::string> Strays() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      std::string name = e.path().filename();
      if (name.find(".tmp.") != std::string::npos) out.push_back(name);
    }
    return out;
  }

  // Temp files whose writer is gone: the ones the next Write must remove. (On a busy machine
  // a dead writer's pid can be reused by an unrelated process; such files are rightly kept.)
  std::vector<std::string> DeadStrays() const {
    std::vector<std::string> out;
    for (const std::string& name : Strays()) {
      auto at = name.find(".tmp.");
      int pid = std::atoi(name.c_str() + at + 5);
      if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) out.push_back(name);
    }
    return out;
  }

  static std::string Join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
  }

  std::string dir_;
  std::string path_;
};

// ---------------------------------------------------------------------------------------------
// Read and Write

TEST_F(LocalStore, ReadOfAnAbsentFileIsNoState) {
  LocalStateStore store(path_);
  auto r = store.Read();
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(store.Describe(), path_);
}

TEST_F(LocalStore, WriteThenReadRoundTripsWithMode0600) {
  mode_t old_umask = ::umask(0277);  // would create 0400: the store must still end at 0600
  LocalStateStore store(path_);
  State s = test::SampleState();
  Status w = store.Write(s);
  ::umask(old_umask);
  ASSERT_TRUE(w.ok()) << w.message();
  EXPECT_EQ(ModeOf(path_), 0600u);
  auto r = LocalStateStore(path_).Read();
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(EncodeState(**r), EncodeState(s));
  EXPECT_FALSE(Exists(store.backup_path()));  // nothing to back up on the first write
  EXPECT_TRUE(Strays().empty());
}

TEST_F(LocalStore, BackupHoldsTheExactPreviousBytesWithMode0600) {
  LocalStateStore store(path_);
  State s1 = test::SampleState();
  ASSERT_TRUE(store.Write(s1).ok());
  std::string bytes1 = FileBytes(path_);
  State s2 = s1;
  s2.serial++;
  s2.resources.erase("mesh_expansion.prod");
  ASSERT_TRUE(store.Write(s2).ok());
  EXPECT_EQ(FileBytes(store.backup_path()), bytes1);
  EXPECT_EQ(FileBytes(path_), *LocalStateStore::Serialize(s2));
  EXPECT_EQ(ModeOf(path_), 0600u);
  EXPECT_EQ(ModeOf(store.backup_path()), 0600u);
  std::string bytes2 = FileBytes(path_);
  State s3 = s2;
  s3.serial++;
  s3.resources["token.bookinfo/ratings-vm"].observed["sha256"] = std::string(64, 'f');
  ASSERT_TRUE(store.Write(s3).ok());
  EXPECT_EQ(FileBytes(store.backup_path()), bytes2);
  EXPECT_TRUE(Strays().empty());
}

TEST_F(LocalStore, APreviousFileWithLooseModeEndsUp0600InStateAndBackup) {
  State s1 = test::SampleState();
  PutFile(path_, *LocalStateStore::Serialize(s1), 0644);
  LocalStateStore store(path_);
  State s2 = s1;
  s2.serial++;
  s2.resources.erase("container.bookinfo/ratings-vm");
  ASSERT_TRUE(store.Write(s2).ok());
  EXPECT_EQ(ModeOf(path_), 0600u);
  EXPECT_EQ(ModeOf(store.backup_path()), 0600u);
  EXPECT_EQ(FileBytes(store.backup_path()), *LocalStateStore::Serialize(s1));
}

TEST_F(LocalStore, IdenticalStateGivesIdenticalBytesAndNoRewrite) {
  State s = test::SampleState();
  ASSERT_EQ(*LocalStateStore::Serialize(s), *LocalStateStore::Serialize(s));
  LocalStateStore store(path_);
  ASSERT_TRUE(store.Write(s).ok());
  std::string bytes = FileBytes(path_);
  ino_t inode = InodeOf(path_);
  // Pretty, stable: two-space indent, sorted keys, trailing newline.
  EXPECT_EQ(bytes.rfind("{\n  \"format_version\": 1,\n  \"lineage\": ", 0), 0u) << bytes.substr(0, 80);
  EXPECT_EQ(bytes.back(), '\n');
  // Read back and written again (another store, as the next run would): same bytes, no write.
  LocalStateStore again(path_);
  auto r = again.Read();
  ASSERT_TRUE(r.ok() && r->has_value());
  ASSERT_TRUE(again.Write(**r).ok());
  EXPECT_EQ(FileBytes(path_), bytes);
  EXPECT_EQ(InodeOf(path_), inode);
  EXPECT_FALSE(Exists(store.backup_path()));
  // A no-op write still repairs the mode.
  ::chmod(path_.c_str(), 0644);
  ASSERT_TRUE(again.Write(**r).ok());
  EXPECT_EQ(ModeOf(path_), 0600u);
}

TEST_F(LocalStore, CorruptFileIsRefusedAndNeverOverwritten) {
  const std::string corrupt = "{\"format_version\": 1, \"lineage\": \"abc\", \"serial\": 3, \"resou";
  PutFile(path_, corrupt);
  LocalStateStore store(path_);
  auto r = store.Read();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("state file " + path_ + " is not valid JSON"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find(path_ + ".backup"), std::string::npos) << r.error();
  State s = test::SampleState();
  Status w = store.Write(s);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("refusing to write state file " + path_), std::string::npos) << w.message();
  EXPECT_NE(w.message().find("could not be read"), std::string::npos) << w.message();
  EXPECT_EQ(FileBytes(path_), corrupt);
  // A store that never read it checks the file on disk before replacing it.
  Status w2 = LocalStateStore(path_).Write(s);
  ASSERT_FALSE(w2.ok());
  EXPECT_NE(w2.message().find("is not valid JSON"), std::string::npos) << w2.message();
  EXPECT_EQ(FileBytes(path_), corrupt);
  EXPECT_FALSE(Exists(store.backup_path()));
  EXPECT_TRUE(Strays().empty());
}

TEST_F(LocalStore, StructurallyBrokenFileIsRefusedWithItsJsonPath) {
  nlohmann::json j = EncodeState(test::SampleState());
  j["resources"][2]["origin"] = "borrowed";
  const std::string bytes = j.dump(2);
  PutFile(path_, bytes);
  LocalStateStore store(path_);
  auto r = store.Read();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("state file " + path_ + ": $.resources[2].origin: must be \"created\" or "
                           "\"adopted\", got \"borrowed\""),
            std::string::npos)
      << r.error();
  EXPECT_FALSE(store.Write(test::SampleState()).ok());
  EXPECT_EQ(FileBytes(path_), bytes);
}

TEST_F(LocalStore, NewerFormatVersionIsRefusedAndKept) {
  nlohmann::json j = EncodeState(test::SampleState());
  j["format_version"] = 7;
  const std::string bytes = j.dump(2);
  PutFile(path_, bytes);
  LocalStateStore store(path_);
  auto r = store.Read();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "state file " + path_ +
                           " was written by a newer onboard (format_version 7); this onboard reads "
                           "format_version 1: upgrade onboard");
  Status w = store.Write(test::SampleState());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("upgrade onboard"), std::string::npos) << w.message();
  EXPECT_EQ(FileBytes(path_), bytes);
}

TEST_F(LocalStore, AFixedFileCanBeReadAndWrittenAgain) {
  PutFile(path_, "not json at all");
  LocalStateStore store(path_);
  ASSERT_FALSE(store.Read().ok());
  State s = test::SampleState();
  ASSERT_FALSE(store.Write(s).ok());
  PutFile(path_, *LocalStateStore::Serialize(s));  // the operator restored it
  auto r = store.Read();
  ASSERT_TRUE(r.ok()) << r.error();
  State next = **r;
  next.serial++;
  EXPECT_TRUE(store.Write(next).ok());
}

TEST_F(LocalStore, WriteRefusesAnotherLineageAndAnOlderSerial) {
  LocalStateStore store(path_);
  State s = test::SampleState();
  ASSERT_TRUE(store.Write(s).ok());
  const std::string bytes = FileBytes(path_);
  State other = s;
  other.lineage = NewLineage();
  Status w = store.Write(other);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("different state (lineage " + s.lineage), std::string::npos) << w.message();
  State older = s;
  older.serial = 6;
  older.resources.clear();
  w = store.Write(older);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("it is at serial 7, newer than this state's serial 6"), std::string::npos)
      << w.message();
  EXPECT_EQ(FileBytes(path_), bytes);
}

TEST_F(LocalStore, WriteRefusesAStateItCouldNotReadBack) {
  LocalStateStore store(path_);
  State s = test::SampleState();
  s.lineage = "";
  Status w = store.Write(s);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("$.lineage: must not be empty"), std::string::npos) << w.message();
  State c = test::SampleState();
  test::Put(c, test::Record(ResourceType::kCheckGateway, "bookinfo/ratings-vm", "bookinfo/ratings-vm"));
  w = store.Write(c);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("is a read-only check"), std::string::npos) << w.message();
  State u = test::SampleState();
  u.resources["mesh_expansion.prod"].attributes["name"] = std::string("bad \xff utf-8");
  w = store.Write(u);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("cannot encode the state"), std::string::npos) << w.message();
  EXPECT_FALSE(Exists(path_));
  EXPECT_TRUE(Strays().empty());
}

TEST_F(LocalStore, WriteCleansTempFilesOfDeadWritersOnly) {
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string dead_tmp = path_ + ".tmp." + std::to_string(dead) + ".0123456789ab";
  const std::string dead_backup_tmp = path_ + ".backup.tmp." + std::to_string(dead) + ".0123456789ab";
  const std::string live_tmp = path_ + ".tmp." + std::to_string(::getppid()) + ".0123456789ab";
  PutFile(dead_tmp, "{\"half\": ");
  PutFile(dead_backup_tmp, "{}");
  PutFile(live_tmp, "{\"another writer\": ");
  LocalStateStore store(path_);
  auto r = store.Read();  // temp files are not state
  ASSERT_TRUE(r.ok() && !r->has_value());
  ASSERT_TRUE(store.Write(test::SampleState()).ok());
  EXPECT_FALSE(Exists(dead_tmp));
  EXPECT_FALSE(Exists(dead_backup_tmp));
  EXPECT_TRUE(Exists(live_tmp));  // its writer may still be running
}

// ---------------------------------------------------------------------------------------------
// Lock

TEST_F(LocalStore, LockWritesHolderInfoAndUnlockRemovesIt) {
  LocalStateStore store(path_);
  auto none = store.Holder();
  ASSERT_TRUE(none.ok() && !none->has_value());
  LockInfo info = NewLockInfo("apply", path_, Now());
  ASSERT_TRUE(store.Lock(info, 0).ok());
  EXPECT_TRUE(store.locked());
  EXPECT_EQ(ModeOf(store.lock_path()), 0600u);
  auto h = store.Holder();
  ASSERT_TRUE(h.ok() && h->has_value()) << h.error();
  EXPECT_EQ((*h)->id, info.id);
  EXPECT_EQ((*h)->pid, static_cast<int>(::getpid()));
  EXPECT_EQ((*h)->operation, "apply");
  EXPECT_EQ((*h)->who, CurrentUser() + "@" + CurrentHost());
  EXPECT_EQ((*h)->created, info.created);
  auto raw = nlohmann::json::parse(FileBytes(store.lock_path()));
  EXPECT_EQ(raw["ID"], info.id);
  EXPECT_EQ(raw["Pid"], ::getpid());
  // Locking twice, unlocking with the wrong ID: refused, lock kept.
  Status again = store.Lock(NewLockInfo("apply", path_, Now()), 0);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.message().find("already holds the lock"), std::string::npos) << again.message();
  Status wrong = store.Unlock("not-the-id");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("the lock held is " + info.id), std::string::npos) << wrong.message();
  EXPECT_TRUE(Exists(store.lock_path()));
  ASSERT_TRUE(store.Unlock(info.id).ok());
  EXPECT_FALSE(Exists(store.lock_path()));
  EXPECT_FALSE(store.Unlock(info.id).ok());
  EXPECT_TRUE(Strays().empty());
}

TEST_F(LocalStore, TwoStoresInOneProcessContend) {
  LocalStateStore a(path_), b(path_);
  LockInfo ia = NewLockInfo("apply", path_, Now());
  ASSERT_TRUE(a.Lock(ia, 0).ok());
  Status st = b.Lock(NewLockInfo("plan", path_, Now()), 0);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), ia.Describe() + "; wait with --lock-timeout or run onboard force-unlock " + ia.id);
}

TEST_F(LocalStore, DestroyingTheStoreReleasesItsLock) {
  {
    LocalStateStore a(path_);
    ASSERT_TRUE(a.Lock(NewLockInfo("apply", path_, Now()), 0).ok());
  }
  EXPECT_FALSE(Exists(path_ + ".lock"));
  LocalStateStore b(path_);
  EXPECT_TRUE(b.Lock(NewLockInfo("apply", path_, Now()), 0).ok());
}

TEST_F(LocalStore, TwoProcessesContendForTheLock) {
  Pipe ready, release;
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    LocalStateStore store(path_);
    LockInfo info = NewLockInfo("apply", path_, Now());
    if (!store.Lock(info, 0).ok()) ::_exit(2);
    ready.SendInt(1);
    if (release.ReceiveInt(30000) != 1) ::_exit(3);
    std::this_thread::sleep_for(700ms);  // the parent is waiting by now
    ::_exit(store.Unlock(info.id).ok() ? 0 : 4);
  }
  ChildGuard guard(child);
  ASSERT_EQ(ready.ReceiveInt(10000), 1);

  LocalStateStore store(path_);
  auto holder = store.Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.error();
  EXPECT_EQ((*holder)->pid, child);
  LockInfo mine = NewLockInfo("plan", path_, Now());
  auto t0 = Clock::now();
  Status st = store.Lock(mine, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_EQ(st.message(), (*holder)->Describe() +
                              "; wait with --lock-timeout or run onboard force-unlock " + (*holder)->id);
  EXPECT_NE(st.message().find(" pid " + std::to_string(child) + " since "), std::string::npos);
  EXPECT_NE(st.message().find(" for apply "), std::string::npos);
  EXPECT_FALSE(store.locked());

  // With a timeout, the parent gets the lock once the child releases it.
  release.SendInt(1);
  t0 = Clock::now();
  st = store.Lock(mine, 20);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_GE(Clock::now() - t0, 500ms);
  EXPECT_EQ(guard.Wait(), 0);
  auto now_holder = store.Holder();
  ASSERT_TRUE(now_holder.ok() && now_holder->has_value());
  EXPECT_EQ((*now_holder)->id, mine.id);
  EXPECT_EQ((*now_holder)->pid, static_cast<int>(::getpid()));
  EXPECT_TRUE(store.Unlock(mine.id).ok());
}

TEST_F(LocalStore, LockTimeoutExpiresWhileALiveProcessHoldsIt) {
  Pipe ready, release;
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    LocalStateStore store(path_);
    LockInfo info = NewLockInfo("destroy", path_, Now());
    if (!store.Lock(info, 0).ok()) ::_exit(2);
    ready.SendInt(1);
    (void)release.ReceiveInt(30000);
    ::_exit(store.Unlock(info.id).ok() ? 0 : 4);
  }
  ChildGuard guard(child);
  ASSERT_EQ(ready.ReceiveInt(10000), 1);
  LocalStateStore store(path_);
  auto t0 = Clock::now();
  Status st = store.Lock(NewLockInfo("apply", path_, Now()), 1);
  auto waited = Clock::now() - t0;
  ASSERT_FALSE(st.ok());
  EXPECT_GE(waited, 1s);
  EXPECT_LT(waited, 5s);
  EXPECT_NE(st.message().find("state is locked by "), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(" pid " + std::to_string(child) + " "), std::string::npos);
  EXPECT_NE(st.message().find(" for destroy "), std::string::npos);
  release.SendInt(1);
  EXPECT_EQ(guard.Wait(), 0);
  EXPECT_FALSE(Exists(store.lock_path()));
}

std::string StaleMessage(const LockInfo& h) {
  return "state lock is stale: its holder " + h.who + " pid " + std::to_string(h.pid) + " (" +
         h.operation + ", since " + FormatTime(h.created) + ", lock ID " + h.id +
         ") is no longer running; run onboard force-unlock " + h.id + " to clear it";
}

TEST_F(LocalStore, AStaleLockIsReportedNeverStolenAndForceUnlockClearsIt) {
  Pipe ready;
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    LocalStateStore store(path_);
    if (!store.Lock(NewLockInfo("apply", path_, Now()), 0).ok()) ::_exit(2);
    ready.SendInt(1);
    ::_exit(0);  // dies holding the lock: no Unlock, no destructor
  }
  ChildGuard guard(child);
  ASSERT_EQ(ready.ReceiveInt(10000), 1);
  ASSERT_EQ(guard.Wait(), 0);

  LocalStateStore store(path_);
  auto holder = store.Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.error();
  const LockInfo h = **holder;
  EXPECT_EQ(h.pid, child);
  const std::string lock_bytes = FileBytes(store.lock_path());

  auto t0 = Clock::now();
  Status st = store.Lock(NewLockInfo("apply", path_, Now()), 10);
  ASSERT_FALSE(st.ok());
  EXPECT_LT(Clock::now() - t0, 2s);  // waiting cannot help: reported at once
  EXPECT_EQ(st.message(), StaleMessage(h));
  EXPECT_EQ(FileBytes(store.lock_path()), lock_bytes);  // not taken over
  EXPECT_FALSE(store.locked());

  Status wrong = store.ForceUnlock("11111111-2222-4333-8444-555555555555");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("lock ID 11111111-2222-4333-8444-555555555555 does not match"),
            std::string::npos)
      << wrong.message();
  EXPECT_NE(wrong.message().find(h.Describe()), std::string::npos) << wrong.message();
  EXPECT_NE(wrong.message().find("onboard force-unlock " + h.id), std::string::npos);
  EXPECT_EQ(FileBytes(store.lock_path()), lock_bytes);

  ASSERT_TRUE(store.ForceUnlock(h.id).ok());
  EXPECT_FALSE(Exists(store.lock_path()));
  LockInfo mine = NewLockInfo("apply", path_, Now());
  ASSERT_TRUE(store.Lock(mine, 0).ok());
  EXPECT_TRUE(store.Unlock(mine.id).ok());
  EXPECT_TRUE(Strays().empty());
}

TEST_F(LocalStore, ALockWhoseHolderDiedIsStaleEvenIfADescendantKeepsTheFlock) {
  // The holder forked (without exec) and died; its child inherited the locked descriptor.
  Pipe ready;
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    LocalStateStore store(path_);
    if (!store.Lock(NewLockInfo("apply", path_, Now()), 0).ok()) ::_exit(2);
    pid_t grandchild = ::fork();
    if (grandchild == 0) {
      for (;;) ::pause();
    }
    ready.SendInt(grandchild);
    ::_exit(0);
  }
  ChildGuard guard(child);
  int grandchild = ready.ReceiveInt(10000);
  ASSERT_GT(grandchild, 0);
  ChildGuard grandchild_guard(grandchild, /*reapable=*/false);
  ASSERT_EQ(guard.Wait(), 0);

  LocalStateStore store(path_);
  auto holder = store.Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value());
  Status st = store.Lock(NewLockInfo("apply", path_, Now()), 0);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), StaleMessage(**holder));
  EXPECT_NE(st.message().find(" pid " + std::to_string(child) + " "), std::string::npos);
}

TEST_F(LocalStore, ForceUnlockRefusesWhenNothingIsLockedAndHandlesItsOwnLock) {
  LocalStateStore store(path_);
  Status st = store.ForceUnlock("5d8a1f9e-0c1b-4b7e-9f2a-3c4d5e6f7a8b");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("is not locked"), std::string::npos) << st.message();
  LockInfo info = NewLockInfo("apply", path_, Now());
  ASSERT_TRUE(store.Lock(info, 0).ok());
  ASSERT_TRUE(store.ForceUnlock(info.id).ok());
  EXPECT_FALSE(store.locked());
  EXPECT_FALSE(Exists(store.lock_path()));
}

TEST_F(LocalStore, UnlockAfterBeingForceUnlockedSaysSoAndLeavesTheNewLockAlone) {
  LocalStateStore a(path_), human(path_), b(path_);
  LockInfo ia = NewLockInfo("apply", path_, Now());
  ASSERT_TRUE(a.Lock(ia, 0).ok());
  ASSERT_TRUE(human.ForceUnlock(ia.id).ok());
  LockInfo ib = NewLockInfo("apply", path_, Now());
  ASSERT_TRUE(b.Lock(ib, 0).ok());
  Status st = a.Unlock(ia.id);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("was force-unlocked while this run held it"), std::string::npos)
      << st.message();
  auto h = b.Holder();
  ASSERT_TRUE(h.ok() && h->has_value());
  EXPECT_EQ((*h)->id, ib.id);  // b's lock survives a's unlock
  EXPECT_TRUE(b.Write(test::SampleState()).ok());
  EXPECT_TRUE(b.Unlock(ib.id).ok());
}

TEST_F(LocalStore, ARunWhoseLockWasForceUnlockedMayNotWrite) {
  LocalStateStore a(path_), human(path_);
  LockInfo ia = NewLockInfo("apply", path_, Now());
  ASSERT_TRUE(a.Lock(ia, 0).ok());
  ASSERT_TRUE(a.Write(test::SampleState()).ok());
  const std::string bytes = FileBytes(path_);
  ASSERT_TRUE(human.ForceUnlock(ia.id).ok());
  State next = test::SampleState();
  next.serial++;
  next.resources.clear();
  Status w = a.Write(next);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("was force-unlocked"), std::string::npos) << w.message();
  EXPECT_EQ(FileBytes(path_), bytes);
}

TEST_F(LocalStore, AnUnreadableLockFileIsReportedNotRemoved) {
  PutFile(path_ + ".lock", "garbage");
  LocalStateStore store(path_);
  auto h = store.Holder();
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.error().find("lock file " + path_ + ".lock does not hold lock info"), std::string::npos)
      << h.error();
  Status st = store.Lock(NewLockInfo("apply", path_, Now()), 0);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("state lock is stale: lock file " + path_ + ".lock"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("remove " + path_ + ".lock by hand"), std::string::npos);
  EXPECT_EQ(FileBytes(path_ + ".lock"), "garbage");
}

// ---------------------------------------------------------------------------------------------
// Crash safety

TEST_F(LocalStore, AWriteKilledHalfwayLeavesTheOldOrTheNewStateNeverACorruptOne) {
  State first = test::BigState(150, 3000);  // about 500 kB of JSON
  ASSERT_TRUE(LocalStateStore(path_).Write(first).ok());

  auto next_of = [](const State& cur, int trial) {
    State next = cur;
    next.serial++;
    for (auto& [key, r] : next.resources) r.attributes["trial"] = trial;
    return next;
  };
  auto spawn_writer = [&](const State& s) {
    pid_t c = ::fork();
    if (c == 0) {
      LocalStateStore w(path_);
      Status st = w.Write(s);
      if (!st.ok()) std::fprintf(stderr, "writer %d: %s\n", static_cast<int>(::getpid()), st.message().c_str());
      ::_exit(st.ok() ? 0 : 3);
    }
    return c;
  };

  // How long a whole write takes from fork to exit, to spread the kills over it.
  std::chrono::microseconds full{0};
  for (int i = 0; i < 2; ++i) {
    auto cur = LocalStateStore(path_).Read();
    ASSERT_TRUE(cur.ok() && cur->has_value()) << cur.error();
    auto t0 = Clock::now();
    pid_t c = spawn_writer(next_of(**cur, -1 - i));
    ASSERT_GT(c, 0);
    ChildGuard g(c);
    ASSERT_EQ(g.Wait(), 0);
    full = std::max(full, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0));
  }

  std::mt19937 rng(20261126);
  int old_kept = 0, new_done = 0, strays_seen = 0;
  for (int trial = 0; trial < 30; ++trial) {
    auto cur = LocalStateStore(path_).Read();
    ASSERT_TRUE(cur.ok() && cur->has_value()) << "trial " << trial << ": " << cur.error();
    State next = next_of(**cur, trial);
    const std::string old_bytes = *LocalStateStore::Serialize(**cur);
    const std::string new_bytes = *LocalStateStore::Serialize(next);
    ASSERT_EQ(FileBytes(path_), old_bytes);

    std::uniform_int_distribution<int64_t> when(0, full.count() * 12 / 10);
    auto delay = std::chrono::microseconds(when(rng));
    pid_t c = spawn_writer(next);
    ASSERT_GT(c, 0);
    ChildGuard g(c);
    std::this_thread::sleep_for(delay);
    ::kill(c, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(c, &status, 0), c);
    g.Release();
    if (WIFEXITED(status)) {
      EXPECT_EQ(WEXITSTATUS(status), 0) << "trial " << trial;
    }

    const std::string now = FileBytes(path_);
    const bool is_old = now == old_bytes, is_new = now == new_bytes;
    ASSERT_TRUE(is_old || is_new) << "trial " << trial << " (kill after " << delay.count()
                                  << " us): the state file is neither the old nor the new state";
    (is_old ? old_kept : new_done)++;
    EXPECT_EQ(ModeOf(path_), 0600u) << "trial " << trial;
    auto r = LocalStateStore(path_).Read();
    ASSERT_TRUE(r.ok() && r->has_value()) << r.error();
    EXPECT_EQ((*r)->serial, is_new ? next.serial : (*cur)->serial) << "trial " << trial;
    // The backup, when present, is a complete state too.
    if (Exists(path_ + ".backup")) {
      auto b = nlohmann::json::parse(FileBytes(path_ + ".backup"), nullptr, false);
      ASSERT_FALSE(b.is_discarded()) << "trial " << trial << ": corrupt backup";
      EXPECT_TRUE(DecodeState(b, "backup").ok()) << "trial " << trial;
      EXPECT_EQ(ModeOf(path_ + ".backup"), 0600u) << "trial " << trial;
    }
    strays_seen += Strays().empty() ? 0 : 1;
  }
  std::cout << "[ killed writes: " << old_kept << " left the old state, " << new_done
            << " the new one; " << strays_seen << " left temp files; full write " << full.count()
            << " us ]\n";
  RecordProperty("old_kept", old_kept);
  RecordProperty("new_done", new_done);

  // The next write completes and removes whatever the killed writers left behind.
  LocalStateStore store(path_);
  auto cur = store.Read();
  ASSERT_TRUE(cur.ok() && cur->has_value());
  State last = **cur;
  last.serial++;
  last.resources.erase(last.resources.begin());
  ASSERT_TRUE(store.Write(last).ok());
  EXPECT_TRUE(DeadStrays().empty()) << Join(DeadStrays());
  EXPECT_EQ(FileBytes(path_), *LocalStateStore::Serialize(last));
}

}  // namespace
}  // namespace onboard
