#include "engine/apply.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <thread>

namespace onboard {
namespace {

using nlohmann::json;

bool SameRecord(const ResourceState& a, const ResourceState& b) {
  auto intent = [](const std::optional<Intent>& i) {
    return i ? json{i->action, i->run_id, i->started} : json();
  };
  return a.attributes == b.attributes && a.observed == b.observed && a.origin == b.origin &&
         a.workload == b.workload && intent(a.intent) == intent(b.intent);
}

Provider* ProviderFor(const std::vector<Provider*>& providers, ResourceType t) {
  for (Provider* p : providers)
    if (p->Handles(t)) return p;
  return nullptr;
}

// The change that undoes a completed (or failed) step: restore what was recorded before the run.
Change Inverse(const Change& c) {
  Change inv;
  inv.address = c.address;
  inv.workload = c.workload;
  inv.before = c.after;
  inv.after = c.before;
  switch (c.action) {
    case Action::kCreate:
      inv.action = c.before.is_null() ? Action::kDelete : Action::kUpdate;
      break;
    case Action::kDelete:
      inv.action = Action::kCreate;
      break;
    default:
      inv.action = Action::kUpdate;
  }
  inv.reasons.push_back({"", "rollback of the failed run's " + std::string(ActionName(c.action)), false});
  return inv;
}

}  // namespace

std::string ApplyReport::Summary() const {
  return std::to_string(created) + " created, " + std::to_string(updated) + " updated, " +
         std::to_string(destroyed) + " destroyed, " + std::to_string(rolled_back) + " rolled back, " +
         std::to_string(failed) + " failed";
}

Status StateKeeper::Persist() {
  if (dry_) return Status::Ok();
  state_->serial++;
  Status s = store_->Write(*state_);
  if (!s.ok()) {
    state_->serial--;
    return Status::Error("could not save state to " + store_->Describe() + ": " + s.message());
  }
  ++writes_;
  return s;
}

Status StateKeeper::Intent(const Change& c, const std::string& run_id, int64_t now) {
  std::lock_guard<std::mutex> l(mu_);
  const std::string addr = c.address.ToString();
  auto it = state_->resources.find(addr);
  if (it == state_->resources.end()) {
    ResourceState rs;  // a placeholder: attributes empty means "being created"
    rs.address = c.address;
    rs.workload = c.workload;
    it = state_->resources.emplace(addr, std::move(rs)).first;
  }
  it->second.intent = onboard::Intent{ActionName(c.action), run_id, now};
  return Persist();
}

Status StateKeeper::Record(const std::string& address, const std::optional<ResourceState>& result) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = state_->resources.find(address);
  if (!result) {
    if (it == state_->resources.end()) return Status::Ok();
    state_->resources.erase(it);
    return Persist();
  }
  ResourceState next = *result;
  next.intent.reset();
  if (it != state_->resources.end() && SameRecord(it->second, next)) return Status::Ok();
  state_->resources[address] = std::move(next);
  return Persist();
}

Status StateKeeper::Restore(const std::string& address, const ResourceState* before) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = state_->resources.find(address);
  if (!before) {
    if (it == state_->resources.end()) return Status::Ok();
    state_->resources.erase(it);
    return Persist();
  }
  if (it != state_->resources.end() && SameRecord(it->second, *before)) return Status::Ok();
  state_->resources[address] = *before;
  return Persist();
}

ApplyReport Apply(const Plan& plan, const std::vector<Resource>& desired, State* state,
                  StateStore* store, const std::vector<Provider*>& providers, Reporter* reporter,
                  ProgressSink* progress, const Clock& clock, const ApplyOptions& opts) {
  ApplyReport report;
  const State initial = *state;  // records as they were before this run, for rollback
  StateKeeper keeper(store, state, opts.dry_run);
  SecretBag secrets;
  std::map<std::string, const Resource*> want;
  for (const auto& r : desired) want[r.address.ToString()] = &r;

  Dag g = BuildGraph(plan.changes, plan.destroy);
  const size_t n = g.size();
  std::vector<const Change*> change_of(n);
  for (const auto& c : plan.changes) change_of[g.Index(c.address.ToString())] = &c;

  enum class NodeState { kWaiting, kQueued, kRunning, kDone, kFailed, kSkipped };
  std::vector<NodeState> st(n, NodeState::kWaiting);
  std::vector<size_t> waiting_on(n);
  for (size_t i = 0; i < n; ++i) waiting_on[i] = g.Predecessors(i).size();

  std::mutex mu;
  std::condition_variable cv;
  std::deque<size_t> ready;
  size_t finished = 0;
  int total_steps = 0, done_steps = 0;
  for (const auto* c : change_of)
    if (c->action != Action::kNoOp) ++total_steps;
  // Per workload: the steps completed (or failed) in this run, in completion order.
  std::map<std::string, std::vector<const Change*>> completed;
  std::set<std::string> touched_workloads;

  // Under mu: a node finished; release or skip its successors.
  std::function<void(size_t, bool)> settle = [&](size_t i, bool ok) {
    st[i] = ok ? NodeState::kDone : NodeState::kFailed;
    ++finished;
    for (size_t s : g.Successors(i)) {
      if (st[s] == NodeState::kSkipped) continue;
      if (!ok) {
        st[s] = NodeState::kSkipped;
        report.skipped += change_of[s]->action != Action::kNoOp;
        if (!change_of[s]->workload.empty()) report.failed_workloads.insert(change_of[s]->workload);
        settle(s, false);
        st[s] = NodeState::kSkipped;
        continue;
      }
      if (--waiting_on[s] == 0 && st[s] == NodeState::kWaiting) {
        st[s] = NodeState::kQueued;
        ready.push_back(s);
      }
    }
  };

  auto run_step = [&](size_t i) -> bool {
    const Change& c = *change_of[i];
    const std::string addr = c.address.ToString();
    Provider* p = ProviderFor(providers, c.address.type);
    {
      std::lock_guard<std::mutex> l(mu);
      if (progress) progress->Started(c, done_steps, total_steps);
    }
    Status status;
    int writes = 0;
    if (!p) {
      status = Status::Error("no provider handles " + std::string(TypeName(c.address.type)) + " resources");
    } else {
      bool record = !IsCheck(c.address.type);
      if (record && !opts.dry_run) status = keeper.Intent(c, opts.run_id, clock.Now());
      if (status.ok()) {
        StepRequest req;
        req.change = &c;
        auto w = want.find(addr);
        req.desired = w == want.end() ? nullptr : w->second;
        req.prior = initial.Find(addr);
        req.dry_run = opts.dry_run;
        req.secrets = &secrets;
        req.reporter = reporter;
        Result<StepResult> r = p->Apply(req);
        if (r.ok()) {
          writes = r->writes;
          if (record) status = keeper.Record(addr, r->state);
        } else {
          status = r.status();
          // The step did not complete: its record goes back to what it was before the run.
          if (record && !opts.dry_run) {
            Status back = keeper.Restore(addr, initial.Find(addr));
            if (!back.ok()) status = Status::Error(status.message() + "; and " + back.message());
          }
        }
      }
    }
    std::lock_guard<std::mutex> l(mu);
    ++done_steps;
    report.writes += writes;
    if (!c.workload.empty()) {
      completed[c.workload].push_back(&c);
      touched_workloads.insert(c.workload);
    }
    if (progress) progress->Finished(c, status, writes, done_steps, total_steps);
    if (!status.ok()) {
      report.failed++;
      report.errors.push_back(addr + ": " + status.message());
      if (!c.workload.empty()) report.failed_workloads.insert(c.workload);
      return false;
    }
    switch (c.action) {
      case Action::kCreate: report.created++; break;
      case Action::kUpdate:
      case Action::kReplace: report.updated++; break;
      case Action::kDelete: report.destroyed++; break;
      case Action::kRead: report.checked++; break;
      case Action::kNoOp: break;
    }
    return true;
  };

  {
    std::lock_guard<std::mutex> l(mu);
    for (size_t i = 0; i < n; ++i)
      if (waiting_on[i] == 0) {
        st[i] = NodeState::kQueued;
        ready.push_back(i);
      }
  }
  auto worker = [&]() {
    std::unique_lock<std::mutex> l(mu);
    while (true) {
      cv.wait(l, [&] { return !ready.empty() || finished == n; });
      if (ready.empty()) return;
      size_t i = ready.front();
      ready.pop_front();
      const Change& c = *change_of[i];
      bool workload_failed = !c.workload.empty() && report.failed_workloads.count(c.workload);
      if (c.action == Action::kNoOp || workload_failed) {
        if (c.action == Action::kNoOp) report.unchanged++;
        else report.skipped++;
        settle(i, !workload_failed);
        cv.notify_all();
        continue;
      }
      st[i] = NodeState::kRunning;
      l.unlock();
      bool ok = run_step(i);
      l.lock();
      settle(i, ok);
      cv.notify_all();
    }
  };
  int threads = std::max(1, opts.parallelism);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();

  // Rollback: each failed workload's steps of this run, undone in reverse order.
  if (opts.rollback && !opts.dry_run) {
    for (const auto& w : report.failed_workloads) {
      auto it = completed.find(w);
      if (it == completed.end()) continue;
      for (auto c = it->second.rbegin(); c != it->second.rend(); ++c) {
        const Change& orig = **c;
        if (IsCheck(orig.address.type) || orig.address.type == ResourceType::kToken) continue;
        const std::string addr = orig.address.ToString();
        Change inv = Inverse(orig);
        Provider* p = ProviderFor(providers, orig.address.type);
        StepRequest req;
        req.change = &inv;
        const ResourceState* now_rec = state->Find(addr);
        ResourceState now_copy;
        if (now_rec) now_copy = *now_rec;
        req.prior = now_rec ? &now_copy : nullptr;
        // Desired for the rollback is what was recorded before the run.
        Resource before;
        const ResourceState* was = initial.Find(addr);
        if (was) {
          before.address = was->address;
          before.workload = was->workload;
          before.attributes = was->attributes;
        }
        req.desired = was ? &before : nullptr;
        req.rollback = true;
        req.secrets = &secrets;
        req.reporter = reporter;
        Result<StepResult> r = p ? p->Apply(req) : Result<StepResult>::Error("no provider");
        Status s = r.status();
        if (r.ok()) {
          report.writes += r->writes;
          s = keeper.Restore(addr, was);
        }
        if (progress) progress->RolledBack(orig, s);
        if (s.ok()) {
          report.rolled_back++;
          report.rolled_back_addresses.push_back(addr);
        } else {
          report.errors.push_back(addr + ": rollback failed: " + s.message());
        }
      }
    }
  }
  for (const auto& w : touched_workloads)
    for (Provider* p : providers) p->Finish(w, !report.failed_workloads.count(w));
  return report;
}

}  // namespace onboard
