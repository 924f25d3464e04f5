// Fakes of the engine's interfaces: an in-memory world behind one Provider for every resource
// type, and an in-memory StateStore.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/provider.h"
#include "engine/state.h"

namespace onboard::testing {

// A world of resources keyed by address; each Apply is one "write" unless already right.
class FakeProvider : public Provider {
 public:
  std::string Name() const override { return "fake"; }
  bool Handles(ResourceType) const override { return true; }
  Result<std::optional<MeshFacts>> ReadFacts() override;
  std::map<std::string, Result<Observation>> Refresh(const std::vector<RefreshItem>& items) override;
  Result<StepResult> Apply(const StepRequest& req) override;
  void Finish(const std::string& workload, bool ok) override;

  // Fail the n-th (0-based) non-rollback Apply call of this provider; -1: never.
  int fail_at = -1;
  // Fail every Apply of this address.
  std::set<std::string> fail_addresses;
  std::map<std::string, nlohmann::json> world;  // address -> attributes as they are
  std::vector<std::string> calls;               // "create files.ns/a", "rollback update ...", ...
  int applies = 0;
  int writes = 0;
  std::map<std::string, bool> finished;
  std::string minted_token = "tok-";
  int tokens_minted = 0;
  std::mutex mu;
};

class MemStateStore : public StateStore {
 public:
  std::string Describe() const override { return "memory"; }
  Status Lock(const LockInfo& info, int) override;
  Status Unlock(const std::string& id) override;
  Result<std::optional<LockInfo>> Holder() override { return holder; }
  Status ForceUnlock(const std::string& id) override { return Unlock(id); }
  Result<std::optional<State>> Read() override { return state; }
  Status Write(const State& s) override;

  std::optional<State> state;
  std::optional<LockInfo> holder;
  int writes = 0;
  int fail_write_at = -1;  // fail the n-th Write (0-based)
};

// A model of `n` workloads "w0".."w{n-1}" in namespace "ns", each with a Sidecar and hosts.
Model SampleModel(int n, bool mesh_expansion = true);
MeshFacts SampleFacts();

}  // namespace onboard::testing
