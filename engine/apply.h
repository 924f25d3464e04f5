// The apply walker: runs a plan's steps over its graph with bounded parallelism, persisting an
// intent before each step and the result after it; on a failure, rolls that workload's steps of
// this run back (a derived plan of inverse changes, walked step by step), while other workloads go on.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/plan.h"
#include "engine/provider.h"
#include "engine/state.h"

namespace onboard {

struct ApplyOptions {
  int parallelism = 10;
  bool rollback = true;  // --rollback=workload (true) | none (false)
  bool dry_run = false;
  std::string run_id;    // the lock ID; recorded in intents
};

// Progress of a run, for the CLI's display. Called from worker threads.
class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void Started(const Change& c, int done, int total) = 0;
  virtual void Finished(const Change& c, const Status& s, int writes, int done, int total) = 0;
  virtual void RolledBack(const Change& c, const Status& s) = 0;
};

struct ApplyReport {
  int created = 0, updated = 0, destroyed = 0, checked = 0, unchanged = 0;
  int rolled_back = 0, failed = 0, skipped = 0;
  int writes = 0;  // writes to the world, as providers counted them
  std::vector<std::string> errors;       // "<address>: <message>"
  std::vector<std::string> rolled_back_addresses;
  std::set<std::string> failed_workloads;
  bool ok() const { return failed == 0 && errors.empty(); }
  // "3 created, 1 updated, 0 destroyed, 0 rolled back, 0 failed"
  std::string Summary() const;
};

// Persists state around steps; thread-safe. A write happens only when content changed.
class StateKeeper {
 public:
  StateKeeper(StateStore* store, State* state, bool dry_run) : store_(store), state_(state), dry_(dry_run) {}
  Status Intent(const Change& c, const std::string& run_id, int64_t now);
  // result nullopt: the resource is gone; otherwise replaces the record (intent cleared).
  Status Record(const std::string& address, const std::optional<ResourceState>& result);
  // Put back a record exactly as it was (nullptr: absent).
  Status Restore(const std::string& address, const ResourceState* before);
  int writes() const { return writes_; }

 private:
  Status Persist();  // under mu_
  std::mutex mu_;
  StateStore* store_;
  State* state_;
  bool dry_;
  int writes_ = 0;
};

ApplyReport Apply(const Plan& plan, const std::vector<Resource>& desired, State* state,
                  StateStore* store, const std::vector<Provider*>& providers, Reporter* reporter,
                  ProgressSink* progress, const Clock& clock, const ApplyOptions& opts);

}  // namespace onboard
