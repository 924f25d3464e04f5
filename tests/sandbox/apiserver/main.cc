// onboard-test-apiserver: the in-memory HTTPS Kubernetes API server of the tests (DESIGN.md §8).
//
//   onboard-test-apiserver --dir DIR [--port N (0 = free port)] [--bind 127.0.0.1] [--no-seed]
//                          [--token TOKEN] [--schemas DIR] [--token-lifetime-cap SECONDS]
//
// Writes DIR/ca.pem, DIR/token (0600), DIR/kubeconfig (0600), DIR/pid, DIR/port and, last,
// DIR/ready; logs each request as a JSON line to DIR/requests.log; exits 0 on SIGTERM/SIGINT.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "tests/sandbox/apiserver/server.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: onboard-test-apiserver --dir DIR [--port N (0 = pick a free one)] [--bind 127.0.0.1]\n"
               "                              [--no-seed] [--token TOKEN] [--schemas DIR]\n"
               "                              [--token-lifetime-cap SECONDS]\n");
}

bool ParseLong(const std::string& flag, const std::string& value, long long min, long long max,
               long long* out) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    std::fprintf(stderr, "onboard-test-apiserver: %s %s: expected an integer in [%lld, %lld]\n",
                 flag.c_str(), value.c_str(), min, max);
    return false;
  }
  *out = v;
  return true;
}

std::string Absolute(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) != nullptr) return buf;
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  onboard::sandbox::ServerOptions options;
  options.schemas_dir = std::string(ONBOARD_SOURCE_DIR) + "/../shared/reference/istio-crds";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "onboard-test-apiserver: %s needs a value\n", a.c_str());
        return false;
      }
      *out = argv[++i];
      return true;
    };
    std::string v;
    long long n = 0;
    if (a == "--dir") {
      if (!value(&options.dir)) return 2;
    } else if (a == "--port") {
      if (!value(&v) || !ParseLong(a, v, 0, 65535, &n)) return 2;
      options.port = static_cast<int>(n);
    } else if (a == "--bind") {
      if (!value(&options.bind)) return 2;
    } else if (a == "--no-seed") {
      options.seed = false;
    } else if (a == "--token") {
      if (!value(&options.token)) return 2;
      if (options.token.empty() || options.token.find_first_of(" \t\r\n") != std::string::npos) {
        std::fprintf(stderr, "onboard-test-apiserver: --token must be non-empty and without whitespace\n");
        return 2;
      }
    } else if (a == "--schemas") {
      if (!value(&options.schemas_dir)) return 2;
    } else if (a == "--token-lifetime-cap") {
      if (!value(&v) || !ParseLong(a, v, 1, 1LL << 32, &n)) return 2;
      options.token_lifetime_cap = n;
    } else if (a == "--help" || a == "-h") {
      Usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "onboard-test-apiserver: unknown argument %s\n", a.c_str());
      Usage(stderr);
      return 2;
    }
  }
  if (options.dir.empty()) {
    std::fprintf(stderr, "onboard-test-apiserver: --dir DIR is required\n");
    Usage(stderr);
    return 2;
  }
  ::mkdir(options.dir.c_str(), 0700);
  struct stat st{};
  if (::stat(options.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "onboard-test-apiserver: --dir %s is not a directory and cannot be created\n",
                 options.dir.c_str());
    return 2;
  }
  options.dir = Absolute(options.dir);
  options.schemas_dir = Absolute(options.schemas_dir);
  ::unlink((options.dir + "/ready").c_str());

  // Block the stop signals in every thread; one thread waits for them and stops the server.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  onboard::sandbox::ApiServer server(options);
  std::string error;
  if (!server.Start(&error)) {
    std::fprintf(stderr, "onboard-test-apiserver: %s\n", error.c_str());
    return 1;
  }
  std::atomic<bool> served{false};
  std::thread waiter([&server, &served, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    // The signal may arrive before the listener runs; keep asking until Serve() has returned.
    while (!served.load()) {
      server.Stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  server.Serve();
  served.store(true);
  // If the listener failed on its own, wake the waiter (a no-op if a signal already did).
  ::kill(::getpid(), SIGTERM);
  waiter.join();
  ::unlink((options.dir + "/ready").c_str());
  return 0;
}
