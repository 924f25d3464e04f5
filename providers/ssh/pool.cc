#include "providers/ssh/pool.h"

#include <utility>

namespace onboard::ssh {

ConnectionPool::ConnectionPool(ConnectFn connect) : connect_(std::move(connect)) {
  if (!connect_) connect_ = [](const Endpoint& ep) { return Connect(ep); };
}

Result<std::shared_ptr<Session>> ConnectionPool::Get(const Endpoint& ep) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = entries_[ep.ToString()];
    if (!slot) slot = std::make_shared<Entry>();
    entry = slot;
  }
  // Only callers for this endpoint wait here, while the first one connects.
  std::lock_guard<std::mutex> lock(entry->mu);
  if (!entry->done) {
    {
      std::lock_guard<std::mutex> count(mu_);
      ++attempts_;
    }
    Result<std::unique_ptr<Session>> r = connect_(ep);
    if (r.ok()) {
      entry->session = std::shared_ptr<Session>(std::move(r).value());
    } else {
      entry->error = r.status();
    }
    entry->done = true;
  }
  if (entry->session) return entry->session;
  return entry->error;
}

void ConnectionPool::Forget(const Endpoint& ep) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(ep.ToString());
}

int ConnectionPool::connect_attempts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return attempts_;
}

}  // namespace onboard::ssh
