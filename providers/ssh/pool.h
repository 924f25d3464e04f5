// One SSH connection per user@host:port for the whole run, shared by every step on that VM.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "engine/status.h"
#include "providers/ssh/session.h"

namespace onboard::ssh {

class ConnectionPool {
 public:
  using ConnectFn = std::function<Result<std::unique_ptr<Session>>(const Endpoint&)>;

  // `connect` defaults to ssh::Connect; tests inject fakes.
  explicit ConnectionPool(ConnectFn connect = nullptr);

  // The session for ep (keyed by ep.ToString()), connecting on first use. Thread-safe: concurrent
  // calls for the same endpoint connect once and share the result; different endpoints connect in
  // parallel. A failed connect is remembered too (every step on that VM gets the same error
  // without another timeout) until Forget().
  Result<std::shared_ptr<Session>> Get(const Endpoint& ep);

  // Drops the cached session or error of ep; the next Get connects again.
  void Forget(const Endpoint& ep);

  // Connection attempts made so far (successful or not).
  int connect_attempts() const;

 private:
  struct Entry {
    std::mutex mu;
    bool done = false;
    std::shared_ptr<Session> session;
    Status error;
  };
  ConnectFn connect_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;
  int attempts_ = 0;
};

}  // namespace onboard::ssh
