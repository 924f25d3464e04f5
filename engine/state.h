// Recorded state (DESIGN §4) and the StateStore interface its backends implement.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/resource.h"
#include "engine/status.h"

namespace onboard {

constexpr int kStateFormatVersion = 1;

enum class Origin { kCreated, kAdopted };

// An intent written before a step runs; cleared when its result is recorded.
// A record still carrying one means a run was killed during that step.
struct Intent {
  std::string action;   // "create" | "update" | "replace" | "delete"
  std::string run_id;   // the lock ID of the run
  int64_t started = 0;  // epoch seconds
};

struct ResourceState {
  Address address;
  std::string workload;  // "<ns>/<name>", "" for cluster-wide
  nlohmann::json attributes = nlohmann::json::object();  // last applied desired attributes
  // Facts observed after the last apply: Kubernetes uid/resourceVersion, file sha256+mode,
  // container id + config hash, token sha256 + expires_at. Never a secret.
  nlohmann::json observed = nlohmann::json::object();
  Origin origin = Origin::kCreated;
  std::optional<Intent> intent;
};

struct State {
  int format_version = kStateFormatVersion;
  std::string lineage;  // UUID, fixed at creation
  int64_t serial = 0;   // +1 on each write that changes content
  std::map<std::string, ResourceState> resources;  // by Address::ToString()

  const ResourceState* Find(const std::string& address) const {
    auto it = resources.find(address);
    return it == resources.end() ? nullptr : &it->second;
  }
};

// JSON codec (schemas/state.schema.json). Decode refuses unknown format_version.
nlohmann::json EncodeState(const State& s);
Result<State> DecodeState(const nlohmann::json& j, const std::string& source);
// The same, taking the document apart instead of copying it (large states).
Result<State> DecodeState(nlohmann::json&& j, const std::string& source);
std::string NewLineage();  // random UUID v4

// Who holds a lock (Terraform's lock info shape).
struct LockInfo {
  std::string id;         // UUID
  std::string operation;  // "plan", "apply", "destroy", ...
  std::string who;        // user@host
  std::string host;
  int pid = 0;
  std::string version;    // onboard version
  int64_t created = 0;    // epoch seconds
  std::string path;       // state location
  nlohmann::json ToJson() const;
  static LockInfo FromJson(const nlohmann::json& j);
  // "state is locked by USER@HOST pid N since T for OPERATION (lock ID ...)"
  std::string Describe() const;
};

class StateStore {
 public:
  virtual ~StateStore() = default;
  // Human-readable location, e.g. "onboard.state.json" or "kubernetes secret ns/name".
  virtual std::string Describe() const = 0;
  // Take the exclusive lock, waiting up to timeout_seconds (0: fail at once).
  // On contention the error names the holder and says how to wait or force-unlock.
  virtual Status Lock(const LockInfo& info, int timeout_seconds) = 0;
  virtual Status Unlock(const std::string& id) = 0;
  // The current holder, if any (for force-unlock and messages).
  virtual Result<std::optional<LockInfo>> Holder() = 0;
  virtual Status ForceUnlock(const std::string& id) = 0;
  // Absent state: nullopt. Corrupt or unknown-version state: an error (never overwritten).
  virtual Result<std::optional<State>> Read() = 0;
  // Atomic replace. The caller bumps serial when content changed.
  virtual Status Write(const State& s) = 0;
  // Write() that may replace a state of another lineage: only for `state push --force`, which
  // the user asked for by name. Backends that refuse another lineage in Write() skip that check
  // while replacing_lineage() is true.
  Status Replace(const State& s) {
    replacing_lineage_ = true;
    Status st = Write(s);
    replacing_lineage_ = false;
    return st;
  }

 protected:
  bool replacing_lineage() const { return replacing_lineage_; }

 private:
  bool replacing_lineage_ = false;
};

}  // namespace onboard
