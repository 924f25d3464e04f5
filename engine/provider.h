// The provider interface: everything the engine does to the world goes through it.
// The engine does no I/O (ninja's DiskInterface / CommandRunner idea). Plan is apply with a
// recording executor; rollback is a derived plan of inverse changes walked the same way.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/change.h"
#include "engine/facts.h"
#include "engine/model.h"
#include "engine/resource.h"
#include "engine/state.h"
#include "engine/status.h"

namespace onboard {

// What refresh saw for one resource.
struct Observation {
  bool exists = false;
  // Attributes as they are in the world, in the same shape as Resource::attributes, for the
  // fields the provider can read (others absent). Compared against desired to explain drift.
  nlohmann::json attributes = nlohmann::json::object();
  // Observed facts, same shape as ResourceState::observed (uid, sha256, running, ...).
  nlohmann::json observed = nlohmann::json::object();
};

struct RefreshItem {
  Address address;
  std::string workload;
  const Resource* desired = nullptr;      // null: in state only (an orphan to delete)
  const ResourceState* prior = nullptr;   // null: not in state
};

// Values handed from one step of a workload to the next in memory, never persisted:
// the token step puts the minted token here for the files step.
class SecretBag {
 public:
  void Put(const std::string& workload, const std::string& key, std::string value) {
    std::lock_guard<std::mutex> l(mu_);
    values_[workload + "\n" + key] = std::move(value);
  }
  std::optional<std::string> Get(const std::string& workload, const std::string& key) const {
    std::lock_guard<std::mutex> l(mu_);
    auto it = values_.find(workload + "\n" + key);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> values_;
};

// Where dry runs and progress go. Implementations must be thread-safe.
class Reporter {
 public:
  virtual ~Reporter() = default;
  // A remote command or request that would run (dry run) or runs (verbose).
  virtual void Action(const std::string& target, const std::string& what) = 0;
  // A generated file, with secrets already redacted.
  virtual void File(const std::string& target, const std::string& path, const std::string& body) = 0;
  virtual void Warn(const std::string& message) = 0;
};

struct StepRequest {
  const Change* change = nullptr;          // action, before, after
  const Resource* desired = nullptr;       // null for delete
  const ResourceState* prior = nullptr;    // null when not in state
  bool rollback = false;  // an inverse step: restore what this run replaced (backups)
  bool dry_run = false;   // report every action and file via reporter, execute nothing
  SecretBag* secrets = nullptr;
  Reporter* reporter = nullptr;
};

struct StepResult {
  // The record to keep; nullopt when the resource no longer exists (deleted).
  std::optional<ResourceState> state;
  // Number of writes made to the world (0 when the check found it already right).
  int writes = 0;
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual std::string Name() const = 0;
  virtual bool Handles(ResourceType t) const = 0;
  // Called once before refresh/apply with the loaded model.
  virtual Status Configure(const Model& model) { (void)model; return Status::Ok(); }
  // Only the cluster provider returns facts; others return nullopt.
  virtual Result<std::optional<MeshFacts>> ReadFacts() { return std::optional<MeshFacts>(); }
  // Read the world for a batch of resources (one SSH exec per VM, GETs per object).
  // Every item gets an entry: an Observation or an error naming the host/object.
  virtual std::map<std::string, Result<Observation>> Refresh(const std::vector<RefreshItem>& items) = 0;
  // Perform one step; checks before it acts and skips what is already right.
  virtual Result<StepResult> Apply(const StepRequest& req) = 0;
  // The run is over for a workload: drop backups (succeeded) or keep nothing stale.
  virtual void Finish(const std::string& workload, bool succeeded) {
    (void)workload;
    (void)succeeded;
  }
};

}  // namespace onboard
