#include "tests/sandbox/serve.h"

#include <pthread.h>
#include <sys/stat.h>

#include <httplib.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

namespace onboard::sandbox {

bool FlagValue::Text(std::string* out) {
  if (*i_ + 1 >= argc_) return Fail(flag_ + " needs a value");
  *out = argv_[++*i_];
  return true;
}

bool FlagValue::Integer(long long min, long long max, long long* out) {
  std::string value;
  if (!Text(&value)) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < min || v > max)
    return Fail(flag_ + " " + value + ": expected an integer in [" + std::to_string(min) + ", " +
                std::to_string(max) + "]");
  *out = v;
  return true;
}

bool FlagValue::Fail(const std::string& message) const {
  std::fprintf(stderr, "%s: %s\n", program_, message.c_str());
  return false;
}

int ReadFlags(const char* program, void (*usage)(FILE*), int argc, char** argv,
              const std::vector<Flag>& flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const Flag* flag = nullptr;
    for (const Flag& f : flags)
      if (a == f.name) flag = &f;
    if (flag) {
      FlagValue value(program, a, argc, argv, &i);
      if (!flag->read(value)) return 2;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "%s: unknown argument %s\n", program, a.c_str());
      usage(stderr);
      return 2;
    }
  }
  return -1;
}

bool PrepareDir(const char* program, void (*usage)(FILE*), std::string* dir) {
  if (dir->empty()) {
    std::fprintf(stderr, "%s: --dir DIR is required\n", program);
    usage(stderr);
    return false;
  }
  ::mkdir(dir->c_str(), 0700);
  struct stat st {};
  if (::stat(dir->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "%s: --dir %s is not a directory and cannot be created\n", program, dir->c_str());
    return false;
  }
  *dir = AbsolutePath(*dir);
  ::unlink((*dir + "/ready").c_str());
  return true;
}

std::string AbsolutePath(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

void RouteEveryPath(httplib::Server& server,
                    const std::function<void(const httplib::Request&, httplib::Response&)>& handle,
                    bool with_options) {
  server.Get(".*", handle);
  server.Post(".*", handle);
  server.Put(".*", handle);
  server.Patch(".*", handle);
  server.Delete(".*", handle);
  if (with_options) server.Options(".*", handle);
}

void ReplyToExceptions(httplib::Server& server,
                       const std::function<void(httplib::Response& res, const std::string& what)>& reply) {
  server.set_exception_handler(
      [reply](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        reply(res, what);
      });
}

int BindServer(httplib::Server& server, const std::string& bind, int port, const std::string& in_use_hint,
               std::string* error) {
  if (port == 0) {
    int bound = server.bind_to_any_port(bind);
    if (bound <= 0) {
      *error = "cannot bind to " + bind + " on any port";
      return 0;
    }
    return bound;
  }
  if (!server.bind_to_port(bind, port)) {
    *error = "cannot bind to " + bind + ":" + std::to_string(port) + " (" + in_use_hint + ")";
    return 0;
  }
  return port;
}

void ListenAndWriteReady(httplib::Server& server, const char* program,
                         const std::function<bool(std::string* error)>& write_ready) {
  // listen_after_bind() blocks: "ready" is written from a helper thread once the server runs.
  std::thread ready([&] {
    for (int i = 0; i < 5000 && !server.is_running(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::string error;
    if (!write_ready(&error)) std::fprintf(stderr, "%s: %s\n", program, error.c_str());
  });
  server.listen_after_bind();
  ready.join();
}

sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  return signals;
}

void ServeUntilSignalled(const sigset_t& signals, const std::function<void()>& serve,
                         const std::function<void()>& stop) {
  std::atomic<bool> served{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    // The signal may come before the listener runs: keep stopping until serve() has returned.
    while (!served.load()) {
      stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  serve();
  served.store(true);
  ::kill(::getpid(), SIGTERM);  // wakes the waiter if the listener ended on its own (a no-op otherwise)
  waiter.join();
}

}  // namespace onboard::sandbox
