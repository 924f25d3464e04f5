// Diff: desired resources vs recorded state vs the refreshed world -> changes with reasons.
#include <algorithm>
#include <map>
#include <set>

#include "engine/plan.h"

namespace onboard {
namespace {

using nlohmann::json;

// Observed keys that change without anything being wrong (a new resourceVersion after a status
// update, the issue time of a token): never drift by themselves.
const std::set<std::string> kVolatileObserved = {"resourceVersion", "uid", "id", "issued_at",
                                                 "expires_at", "was_on", "generation"};

bool IsSha256(const json& v) {
  if (!v.is_string() || v.get_ref<const std::string&>().size() != 64) return false;
  return v.get_ref<const std::string&>().find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::string Short(const json& v) {
  if (IsUnknown(v)) return "(known after refresh)";
  if (v.is_null()) return "(none)";
  if (IsSha256(v)) return "sha256:" + v.get<std::string>().substr(0, 12);
  std::string s = v.dump();
  if (s.size() > 72) s = s.substr(0, 69) + "...";
  return s;
}

void Compare(const json& before, const json& after, const std::string& path, bool subset,
             bool drift, std::vector<Reason>* out) {
  if (IsUnknown(after)) return;
  if (before.is_object() && after.is_object() && !IsUnknown(before)) {
    // Both objects are ordered maps: walk them side by side (no key set, no copies).
    static const json kNull;
    auto b = before.begin(), a = after.begin();
    while (b != before.end() || a != after.end()) {
      const std::string* key;
      const json* bv = &kNull;
      const json* av = &kNull;
      if (a == after.end() || (b != before.end() && b.key() < a.key())) {
        key = &b.key();
        bv = &*b;
        ++b;
        if (subset) continue;
      } else if (b == before.end() || a.key() < b.key()) {
        key = &a.key();
        av = &*a;
        ++a;
      } else {
        key = &a.key();
        bv = &*b;
        av = &*a;
        ++a;
        ++b;
      }
      if (path.empty() && *key == "connection") continue;
      if (*bv == *av) continue;
      Compare(*bv, *av, path.empty() ? *key : path + "." + *key, subset, drift, out);
    }
    return;
  }
  if (before == after) return;
  Reason r;
  r.field = path;
  r.drift = drift;
  r.message = drift ? "changed outside onboard: recorded " + Short(before) + ", found " + Short(after)
                    : Short(before) + " -> " + Short(after);
  if (!drift && path == "config_hash") r.message += " (the proxy's docker run arguments or sidecar.env changed)";
  out->push_back(std::move(r));
}

std::vector<Reason> ObservedDrift(const json& recorded, const json& seen, const std::string& path) {
  std::vector<Reason> out;
  if (!recorded.is_object() || !seen.is_object()) return out;
  for (auto it = recorded.begin(); it != recorded.end(); ++it) {
    if (kVolatileObserved.count(it.key()) || !seen.contains(it.key())) continue;
    std::string p = path.empty() ? it.key() : path + "." + it.key();
    const json& s = seen[it.key()];
    if (it->is_object() && s.is_object()) {
      auto sub = ObservedDrift(*it, s, p);
      out.insert(out.end(), sub.begin(), sub.end());
    } else if (*it != s) {
      Reason r;
      r.field = p;
      r.drift = true;
      if (it.key() == "running" && s == false)
        r.message = "is not running (stopped outside onboard)";
      else if (s.is_null())
        r.message = "is missing (removed outside onboard)";
      else
        r.message = "changed outside onboard: recorded " + Short(*it) + ", found " + Short(s);
      out.push_back(std::move(r));
    }
  }
  // Things recorded as present that refresh did not see at all (a file deleted on the VM).
  return out;
}

bool IsReplaceField(ResourceType t, const std::string& field) {
  if (t == ResourceType::kToken) return true;
  if (t == ResourceType::kContainer)
    return field == "config_hash" || field == "image" || field == "name";
  return false;
}

const Change* FindIn(const std::vector<Change>& changes, const std::map<std::string, size_t>& idx,
                     ResourceType t, const std::string& workload) {
  auto it = idx.find(Address{t, workload}.ToString());
  return it == idx.end() ? nullptr : &changes[it->second];
}

bool Acts(const Change* c) {
  return c && c->action != Action::kNoOp && c->action != Action::kRead;
}

}  // namespace

std::vector<Reason> FieldChanges(const json& before, const json& after, bool drift) {
  std::vector<Reason> out;
  Compare(before, after, "", drift, drift, &out);
  return out;
}

Result<Plan> Diff(const std::vector<Resource>& desired, const State* state, const Clock& clock,
                  const DiffOptions& opts) {
  Plan plan;
  plan.destroy = opts.destroy;
  plan.refreshed = opts.observations != nullptr;
  plan.created_at = clock.Now();
  if (state) {
    plan.lineage = state->lineage;
    plan.serial = state->serial;
  }
  for (const auto& t : opts.targets) plan.targets.push_back(t.ToString());

  std::map<std::string, const Resource*> want;
  if (!opts.destroy)
    for (const auto& r : desired) want[r.address.ToString()] = &r;
  std::set<std::string> all;
  for (const auto& [a, _] : want) all.insert(a);
  if (state)
    for (const auto& [a, _] : state->resources) all.insert(a);

  for (const auto& addr : all) {
    auto wi = want.find(addr);
    const Resource* d = wi == want.end() ? nullptr : wi->second;
    const ResourceState* prior = state ? state->Find(addr) : nullptr;
    const Observation* obs = nullptr;
    if (opts.observations) {
      auto oi = opts.observations->find(addr);
      if (oi != opts.observations->end() && oi->second.ok()) obs = &oi->second.value();
    }
    Change c;
    c.address = d ? d->address : prior->address;
    c.workload = d ? d->workload : prior->workload;
    // before/after are filled in only for resources that change (copies of large trees otherwise).
    auto fill = [&] {
      c.before = prior ? prior->attributes : json();
      c.after = d ? d->attributes : json();
    };

    if (d && IsCheck(d->address.type)) {
      c.after = d->attributes;
      c.action = Action::kNoOp;  // promoted to kRead below when its workload changes
      plan.changes.push_back(std::move(c));
      continue;
    }
    if (!d) {
      fill();
      c.action = Action::kDelete;
      c.reasons.push_back({"", opts.destroy ? "destroy requested" : "no longer in the manifests", false});
      if (obs && !obs->exists)
        c.reasons.push_back({"", "already gone from the world (deleted outside onboard)", true});
      plan.changes.push_back(std::move(c));
      continue;
    }
    if (!prior) {
      fill();
      c.action = Action::kCreate;
      if (obs && obs->exists) {
        c.before = obs->attributes;
        c.reasons.push_back({"", "exists already but is not in state: onboard takes it over", true});
      }
      plan.changes.push_back(std::move(c));
      continue;
    }
    if (prior->intent) {
      fill();
      auto a = ActionFromName(prior->intent->action);
      c.action = a && *a != Action::kDelete ? (prior->attributes.empty() ? Action::kCreate : *a)
                                             : Action::kUpdate;
      c.reasons.push_back({"", "a previous run (" + prior->intent->run_id + ") stopped during this step at " +
                                   FormatTime(prior->intent->started) + ": it is done again",
                           true});
      plan.changes.push_back(std::move(c));
      continue;
    }
    if (obs && !obs->exists) {
      fill();
      c.action = Action::kCreate;
      c.reasons.push_back({"", "recorded in state but missing from the world (deleted outside onboard)", true});
      plan.changes.push_back(std::move(c));
      continue;
    }
    std::vector<Reason> reasons = FieldChanges(prior->attributes, d->attributes, false);
    if (obs) {
      auto drift = FieldChanges(prior->attributes, obs->attributes, true);
      reasons.insert(reasons.end(), drift.begin(), drift.end());
      auto odrift = ObservedDrift(prior->observed, obs->observed, "");
      reasons.insert(reasons.end(), odrift.begin(), odrift.end());
    }
    if (d->address.type == ResourceType::kToken && prior->observed.contains("expires_at") &&
        prior->observed["expires_at"].is_number_integer()) {
      int64_t expires = prior->observed["expires_at"].get<int64_t>();
      int64_t renew = d->payload.value("renew_before_seconds", int64_t{0});
      int64_t left = expires - clock.Now();
      if (left <= renew) {
        std::string msg = left > 0 ? "expires in " + FormatDuration(left) + " (at " + FormatTime(expires) +
                                         "), within renewBefore " + FormatDuration(renew) +
                                         ": a new token is minted"
                                   : "expired " + FormatDuration(-left) + " ago (at " +
                                         FormatTime(expires) + "): a new token is minted";
        reasons.push_back({"expires_at", msg, false});
      }
    }
    // The same field can be seen both in the attributes and in the observed facts (a file's
    // sha256): say it once.
    {
      std::set<std::string> seen;
      std::vector<Reason> unique;
      for (auto& r : reasons)
        if (r.field.empty() || seen.insert(r.field).second) unique.push_back(std::move(r));
      reasons = std::move(unique);
    }
    if (reasons.empty()) {
      // Unchanged resources carry no before/after: nothing shows or acts on them, and a plan of
      // a large unchanged fleet stays small.
      c.action = Action::kNoOp;
    } else {
      fill();
      bool replace = false;
      for (const auto& r : reasons) replace = replace || IsReplaceField(d->address.type, r.field);
      c.action = replace ? Action::kReplace : Action::kUpdate;
    }
    c.reasons = std::move(reasons);
    plan.changes.push_back(std::move(c));
  }

  // Rules that cross resources of one workload.
  std::map<std::string, size_t> idx;
  for (size_t i = 0; i < plan.changes.size(); ++i) idx[plan.changes[i].address.ToString()] = i;
  // A no-op promoted to a change gets its before/after now.
  auto promote = [&](Change* c, Action a) {
    c->action = a;
    std::string addr = c->address.ToString();
    const ResourceState* prior = state ? state->Find(addr) : nullptr;
    auto wi = want.find(addr);
    c->before = prior ? prior->attributes : json();
    c->after = wi != want.end() ? wi->second->attributes : json();
  };
  std::set<std::string> workloads;
  for (const auto& c : plan.changes)
    if (!c.workload.empty()) workloads.insert(c.workload);
  for (const auto& w : workloads) {
    auto* token = const_cast<Change*>(FindIn(plan.changes, idx, ResourceType::kToken, w));
    auto* files = const_cast<Change*>(FindIn(plan.changes, idx, ResourceType::kFiles, w));
    if (token && files && token->action != Action::kDelete && files->action != Action::kDelete) {
      // The VM's token file must be (re)written but a token can't be read back: mint one.
      bool token_file_needed = files->action == Action::kCreate;
      for (const auto& r : files->reasons)
        token_file_needed = token_file_needed || r.field.rfind("files.istio-token", 0) == 0;
      if (token_file_needed && token->action == Action::kNoOp) {
        promote(token, Action::kReplace);
        token->reasons.push_back({"", "the VM's istio-token must be rewritten and a token can't be read back", false});
      }
      if (Acts(token) && files->action == Action::kNoOp) {
        promote(files, Action::kUpdate);
        files->reasons.push_back({"files.istio-token", "a new token is written in place", false});
      }
    }
    const Change* container = FindIn(plan.changes, idx, ResourceType::kContainer, w);
    bool vm_changes = (Acts(files) && files->action != Action::kDelete) ||
                      (Acts(container) && container->action != Action::kDelete);
    for (ResourceType t : {ResourceType::kCheckGateway, ResourceType::kCheckInbound}) {
      auto* check = const_cast<Change*>(FindIn(plan.changes, idx, t, w));
      if (check && vm_changes) {
        check->action = Action::kRead;
        check->reasons.push_back({"", "checked before the VM is changed", false});
      }
    }
  }

  if (!opts.targets.empty()) {
    Dag g = BuildGraph(plan.changes, opts.destroy);
    std::vector<size_t> roots;
    for (const auto& t : opts.targets) {
      std::string a = t.ToString();
      if (!g.Has(a))
        return Result<Plan>::Error("--target " + a + ": no such resource in the manifests or the state");
      roots.push_back(g.Index(a));
    }
    std::set<std::string> keep;
    for (size_t i : g.WithDependencies(roots)) keep.insert(g.Name(i));
    std::vector<Change> kept;
    for (auto& c : plan.changes)
      if (keep.count(c.address.ToString())) kept.push_back(std::move(c));
    plan.changes = std::move(kept);
  }
  auto order = BuildGraph(plan.changes, opts.destroy).TopologicalOrder();
  if (!order.ok()) return Result<Plan>(order.status());
  return plan;
}

Dag BuildGraph(const std::vector<Change>& changes, bool destroy) {
  Dag g;
  std::map<std::string, std::map<ResourceType, size_t>> by_workload;
  std::vector<size_t> mesh;
  std::vector<bool> deleting;
  for (const auto& c : changes) {
    size_t i = g.AddNode(c.address.ToString());
    deleting.resize(i + 1);
    deleting[i] = destroy || c.action == Action::kDelete;
    if (c.address.type == ResourceType::kMeshExpansion)
      mesh.push_back(i);
    else
      by_workload[c.workload][c.address.type] = i;
  }
  using T = ResourceType;
  // DESIGN §3: A -> B means B needs A. check.inbound runs once the proxy is up.
  static const std::pair<T, T> kEdges[] = {
      {T::kWorkloadEntry, T::kContainer}, {T::kSidecar, T::kContainer},  {T::kToken, T::kFiles},
      {T::kCheckGateway, T::kFiles},      {T::kFiles, T::kContainer},    {T::kHosts, T::kContainer},
      {T::kContainer, T::kCheckInbound},
  };
  // Deletions walk the edges reversed (Terraform's destroy edges): the container goes before the
  // files it mounts, the WorkloadEntry before the mesh expansion.
  auto add = [&](size_t from, size_t to) {
    if (deleting[from] && deleting[to])
      g.AddEdge(to, from);
    else
      g.AddEdge(from, to);
  };
  for (const auto& [w, nodes] : by_workload) {
    for (const auto& [from, to] : kEdges) {
      auto f = nodes.find(from), t = nodes.find(to);
      if (f != nodes.end() && t != nodes.end()) add(f->second, t->second);
    }
    auto we = nodes.find(T::kWorkloadEntry);
    if (we != nodes.end())
      for (size_t m : mesh) add(m, we->second);
  }
  return g;
}

}  // namespace onboard
