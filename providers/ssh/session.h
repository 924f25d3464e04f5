// SSH to a VM (libssh2 1.10): one connection per VM shared by all its steps in a run.
// Host keys are verified against known_hosts; every value that reaches a remote shell goes
// through ShellQuote.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/status.h"

namespace onboard::ssh {

struct HostKeyPolicy {
  bool accept_new = false;              // --accept-new-host-keys: append unknown keys, never changed ones
  bool insecure_ignore = false;         // --insecure-ignore-host-keys: skip verification entirely
};

struct Endpoint {
  std::string host;
  int port = 22;
  std::string user;
  std::string identity_file;   // empty: agent, then ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa
  std::string known_hosts;     // path; empty: ~/.ssh/known_hosts
  int connect_timeout_seconds = 10;
  // While a command runs, a keepalive is sent every alive_interval_seconds; with no byte from the
  // server for alive_interval_seconds * alive_count_max the connection is given up as dead
  // (like OpenSSH ServerAliveInterval / ServerAliveCountMax; libssh2's minimum interval is 2).
  // Long silent commands are fine as long as the server answers the keepalives.
  int alive_interval_seconds = 10;
  int alive_count_max = 4;
  HostKeyPolicy host_keys;
  std::string ToString() const;  // "user@host:port"
};

struct ExecResult {
  int exit_status = 0;
  std::string exit_signal;  // non-empty when the command was killed by a signal
  std::string out;
  std::string err;
  bool ok() const { return exit_status == 0 && exit_signal.empty(); }
};

// Counters, for tests and benchmarks (round trips, writes).
struct SessionStats {
  int connects = 0;
  int execs = 0;
  int sftp_writes = 0;
};

class Session {
 public:
  virtual ~Session() = default;
  virtual const Endpoint& endpoint() const = 0;
  // Run a command line (already quoted with ShellQuote) and wait for it; stdin optional.
  virtual Result<ExecResult> Exec(const std::string& command, const std::string& stdin_data = "") = 0;
  // Write a whole file over SFTP (created or truncated in place; the inode is kept when it exists).
  virtual Status WriteFile(const std::string& path, const std::string& data, int mode) = 0;
  // Read a whole file over SFTP; error if absent.
  virtual Result<std::string> ReadFile(const std::string& path) = 0;
  virtual SessionStats stats() const = 0;
};

// Connects, verifies the host key and authenticates. Errors say which host, which step, and
// what to do (the fingerprint and the ssh-keyscan line for an unknown/changed key; the RSA/SHA-1
// limitation of libssh2 1.10 for RSA keys).
Result<std::unique_ptr<Session>> Connect(const Endpoint& ep);

// POSIX-shell single-quoting: the value arrives literally, whatever it contains.
std::string ShellQuote(const std::string& value);
// Joins argv, quoting each element.
std::string ShellJoin(const std::vector<std::string>& argv);

}  // namespace onboard::ssh
