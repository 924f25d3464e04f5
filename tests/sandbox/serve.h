// What the sandbox servers (onboard-test-apiserver, onboard-test-httpstate) share besides their protocols:
// main()'s command line and --dir, routing every path to one handler, binding, writing DIR/ready once they
// accept, and running until SIGTERM or SIGINT (then exiting 0 and removing DIR/ready). Each compiles
// serve.cc into its binary.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace httplib {
struct Request;
struct Response;
class Server;
}  // namespace httplib

namespace onboard::sandbox {

// The value of the flag being read, for a Flag's reader. Its messages go to stderr as "PROGRAM: ...".
class FlagValue {
 public:
  FlagValue(const char* program, std::string flag, int argc, char** argv, int* i)
      : program_(program), flag_(std::move(flag)), argc_(argc), argv_(argv), i_(i) {}
  // The next argument; false (after saying so) when there is none.
  bool Text(std::string* out);
  // The next argument as an integer in [min, max]; false (after saying why) otherwise.
  bool Integer(long long min, long long max, long long* out);
  bool Integer(long long min, long long max, int* out) {
    long long v = 0;
    if (!Integer(min, max, &v)) return false;
    *out = static_cast<int>(v);
    return true;
  }
  // Says "PROGRAM: message"; false.
  bool Fail(const std::string& message) const;

 private:
  const char* program_;
  std::string flag_;
  int argc_;
  char** argv_;
  int* i_;
};

// One command-line flag: its reader stores what it reads in the server's options, false when the value
// is wrong (after saying why).
struct Flag {
  const char* name;
  std::function<bool(FlagValue&)> read;
};

// A flag with a value, stored in *target.
inline Flag TextFlag(const char* name, std::string* target) {
  return {name, [target](FlagValue& v) { return v.Text(target); }};
}

// A flag without a value: it sets *target to `value`.
inline Flag SwitchFlag(const char* name, bool* target, bool value) {
  return {name, [target, value](FlagValue&) {
            *target = value;
            return true;
          }};
}

// The flags every sandbox server takes, --dir DIR, --port N and --bind ADDRESS, for `options` (with dir,
// port and bind), then the server's own.
template <class Options>
std::vector<Flag> ServerFlags(Options* options, const std::vector<Flag>& own) {
  std::vector<Flag> flags = {
      TextFlag("--dir", &options->dir),
      {"--port", [options](FlagValue& v) { return v.Integer(0, 65535, &options->port); }},
      TextFlag("--bind", &options->bind)};
  flags.insert(flags.end(), own.begin(), own.end());
  return flags;
}

// Reads the command line. -1 to go on; otherwise main()'s exit code: 0 after --help/-h (the usage on
// stdout), 2 after a wrong or unknown argument (said on stderr, an unknown one with the usage).
int ReadFlags(const char* program, void (*usage)(FILE*), int argc, char** argv,
              const std::vector<Flag>& flags);

// Makes `*dir` (--dir) a directory, creating it (0700) if need be, makes it absolute and removes a
// DIR/ready left by an earlier run. False (after saying why, with the usage when --dir is missing) otherwise.
bool PrepareDir(const char* program, void (*usage)(FILE*), std::string* dir);

// `path` made absolute (as it is when that fails).
std::string AbsolutePath(const std::string& path);

// Sends the requests for every path to `handle`: GET, POST, PUT, PATCH and DELETE, and OPTIONS when
// `with_options`.
void RouteEveryPath(httplib::Server& server,
                    const std::function<void(const httplib::Request&, httplib::Response&)>& handle,
                    bool with_options);

// Answers a request whose handler threw with `reply(res, what)`: the exception's what(), or "unknown
// exception" when it is not a std::exception.
void ReplyToExceptions(httplib::Server& server,
                       const std::function<void(httplib::Response& res, const std::string& what)>& reply);

// Binds `server` to bind:port, to a free port when port is 0. The port, or 0 with *error, which ends
// with `in_use_hint` in parentheses when that port is taken.
int BindServer(httplib::Server& server, const std::string& bind, int port, const std::string& in_use_hint,
               std::string* error);

// Accepts on the bound `server` until it is stopped. Once it accepts, `write_ready` writes DIR/ready; when
// that fails, the error is printed as "PROGRAM: error".
void ListenAndWriteReady(httplib::Server& server, const char* program,
                         const std::function<bool(std::string* error)>& write_ready);

// Blocks SIGTERM and SIGINT in this thread and the threads it starts later, and ignores SIGPIPE: call it
// before starting any thread. The blocked signals.
sigset_t BlockStopSignals();

// Runs serve() until it returns, calling stop() once one of `signals` arrives: the signal may come before
// the listener runs, so stop() is called again until serve() has returned.
void ServeUntilSignalled(const sigset_t& signals, const std::function<void()>& serve,
                         const std::function<void()>& stop);

// The end of a sandbox server's main(): a Server(options) (with Start(std::string* error), Serve() and
// Stop()) serving until SIGTERM or SIGINT. main()'s exit code: 0, or 1 when it cannot start (said why).
template <class Server, class Options>
int RunServer(const char* program, const Options& options) {
  const sigset_t signals = BlockStopSignals();
  Server server(options);
  std::string error;
  if (!server.Start(&error)) {
    std::fprintf(stderr, "%s: %s\n", program, error.c_str());
    return 1;
  }
  ServeUntilSignalled(signals, [&server] { server.Serve(); }, [&server] { server.Stop(); });
  ::unlink((options.dir + "/ready").c_str());
  return 0;
}

}  // namespace onboard::sandbox
