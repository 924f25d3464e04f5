// Running a sandbox server (onboard-test-apiserver, onboard-test-httpstate) from a test: a child process
// serving on a free port (--dir DIR --port 0) in a temporary directory DIR, ready once it has written
// DIR/ready. The destructor stops it (SIGTERM, then SIGKILL) and removes DIR; the kernel sends it SIGTERM
// if the test process dies first. Its stdout and stderr go to DIR/server.log.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace onboard::sandbox {

// The bytes of a file ("" when it cannot be read).
inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    Stop();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  // Runs `binary` --dir DIR --port 0 `args` and waits up to 20s for DIR/ready. False with *error, which
  // carries the server's output, when it exits first or is not ready in time.
  bool Start(const std::string& binary, const std::vector<std::string>& args, std::string* error) {
    const std::string name = std::filesystem::path(binary).filename();
    std::string tmpl = "/tmp/" + name + ".XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      *error = "mkdtemp failed";
      return false;
    }
    dir_ = tmpl;
    std::vector<std::string> argv_strings = {binary, "--dir", dir_, "--port", "0"};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    const std::string log = dir_ + "/server.log";
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) {
      *error = "fork failed";
      return false;
    }
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a crashed test leaves no server behind
      if (::getppid() != parent) ::_exit(1);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& a : argv_strings) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!std::filesystem::exists(dir_ + "/ready")) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        *error = name + " exited early: " + Slurp(log);
        return false;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        Stop();
        *error = name + " did not become ready in 20s: " + Slurp(log);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    port_ = std::atoi(File("port").c_str());
    return true;
  }

  // Stops the server (its port then refuses connections): SIGTERM, then SIGKILL after 5s. Its exit code,
  // or -1 when a signal ended it.
  int Stop() {
    if (pid_ <= 0) return exit_code_;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return exit_code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return exit_code_ = -1;
  }

  const std::string& dir() const { return dir_; }
  int port() const { return port_; }
  // DIR/name without the newline (or spaces) at its end: the port, the token, ...
  std::string File(const std::string& name) const {
    std::string s = Slurp(dir_ + "/" + name);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  // What the server wrote to stdout and stderr.
  std::string Log() const { return Slurp(dir_ + "/server.log"); }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  int exit_code_ = -1;
};

}  // namespace onboard::sandbox
