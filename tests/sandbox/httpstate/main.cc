// onboard-test-httpstate: see server.h for the options, the protocol and the admin endpoints.
// Exits 0 on SIGTERM/SIGINT.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "tests/sandbox/httpstate/server.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(
      out,
      "usage: onboard-test-httpstate --dir DIR [--port N (0 = a free one)] [--bind 127.0.0.1] [--tls]\n"
      "                              [--username USER --password PASSWORD]\n"
      "                              [--lock-conflict-status 423|409] [--persist DIR]\n");
}

bool ParseInt(const std::string& flag, const std::string& value, long min, long max, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    std::fprintf(stderr, "onboard-test-httpstate: %s %s: expected an integer in [%ld, %ld]\n", flag.c_str(),
                 value.c_str(), min, max);
    return false;
  }
  *out = v;
  return true;
}

std::string Absolute(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

}  // namespace

int main(int argc, char** argv) {
  onboard::sandbox::HttpStateOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "onboard-test-httpstate: %s needs a value\n", a.c_str());
        return false;
      }
      *out = argv[++i];
      return true;
    };
    std::string v;
    long n = 0;
    if (a == "--dir") {
      if (!value(&options.dir)) return 2;
    } else if (a == "--port") {
      if (!value(&v) || !ParseInt(a, v, 0, 65535, &n)) return 2;
      options.port = static_cast<int>(n);
    } else if (a == "--bind") {
      if (!value(&options.bind)) return 2;
    } else if (a == "--tls") {
      options.tls = true;
    } else if (a == "--username") {
      if (!value(&options.username)) return 2;
    } else if (a == "--password") {
      if (!value(&options.password)) return 2;
    } else if (a == "--lock-conflict-status") {
      if (!value(&v) || !ParseInt(a, v, 409, 423, &n)) return 2;
      if (n != 409 && n != 423) {
        std::fprintf(stderr, "onboard-test-httpstate: --lock-conflict-status must be 423 or 409\n");
        return 2;
      }
      options.conflict_status = static_cast<int>(n);
    } else if (a == "--persist") {
      if (!value(&options.persist_dir)) return 2;
    } else if (a == "--help" || a == "-h") {
      Usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "onboard-test-httpstate: unknown argument %s\n", a.c_str());
      Usage(stderr);
      return 2;
    }
  }
  if (options.dir.empty()) {
    std::fprintf(stderr, "onboard-test-httpstate: --dir DIR is required\n");
    Usage(stderr);
    return 2;
  }
  ::mkdir(options.dir.c_str(), 0700);
  struct stat st {};
  if (::stat(options.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "onboard-test-httpstate: --dir %s is not a directory and cannot be created\n",
                 options.dir.c_str());
    return 2;
  }
  options.dir = Absolute(options.dir);
  ::unlink((options.dir + "/ready").c_str());

  // The stop signals are blocked in every thread; one thread waits for them and stops the server.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  onboard::sandbox::HttpStateServer server(options);
  std::string error;
  if (!server.Start(&error)) {
    std::fprintf(stderr, "onboard-test-httpstate: %s\n", error.c_str());
    return 1;
  }
  std::atomic<bool> served{false};
  std::thread waiter([&server, &served, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    // The signal may come before the listener runs: keep stopping until Serve() has returned.
    while (!served.load()) {
      server.Stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  server.Serve();
  served.store(true);
  ::kill(::getpid(), SIGTERM);  // wakes the waiter if the listener ended on its own
  waiter.join();
  ::unlink((options.dir + "/ready").c_str());
  return 0;
}
