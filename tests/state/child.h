// Forked processes in the state tests: a pipe to signal between parent and child, and a guard that kills
// and reaps a child left behind by a failed assertion.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace onboard::test {

// One-way channel between a parent and a forked child.
class Pipe {
 public:
  Pipe() { EXPECT_EQ(::pipe(fd_), 0); }
  ~Pipe() {
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  void SendInt(int v) { (void)!::write(fd_[1], &v, sizeof v); }
  // -1 on timeout or end of file.
  int ReceiveInt(int timeout_ms) {
    struct pollfd p = {fd_[0], POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return -1;
    int v = 0;
    return ::read(fd_[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v) ? v : -1;
  }

 private:
  int fd_[2] = {-1, -1};
};

// Kills (and, when reapable, reaps) a child left behind by a failed assertion.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid, bool reapable = true) : pid_(pid), reapable_(reapable) {}
  ~ChildGuard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    if (reapable_) ::waitpid(pid_, nullptr, 0);
  }
  void Release() { pid_ = -1; }
  // Waits for a normal exit; returns the exit code, or -1 (killed).
  int Wait() {
    int status = 0;
    pid_t p = ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return p > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // SIGKILL now, and reap.
  void Kill() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_;
  bool reapable_;
};

}  // namespace onboard::test
