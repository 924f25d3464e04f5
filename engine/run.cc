#include "engine/run.h"

#include <map>

namespace onboard {

Result<PlanOutputs> MakePlan(const PlanInputs& in) {
  PlanOutputs out;
  std::optional<MeshFacts> facts;
  if (in.refresh && !in.destroy) {
    for (Provider* p : in.providers) {
      auto f = p->ReadFacts();
      if (!f.ok()) return Result<PlanOutputs>::Error("reading the cluster's mesh facts: " + f.error());
      if (f->has_value()) facts = std::move(**f);
    }
  }
  out.desired = BuildDesired(*in.model, facts ? &*facts : nullptr);

  if (in.refresh) {
    std::map<std::string, const Resource*> want;
    for (const auto& r : out.desired) want[r.address.ToString()] = &r;
    std::map<Provider*, std::vector<RefreshItem>> batches;
    std::vector<std::string> errors;
    auto add = [&](const Address& a, const std::string& workload, const Resource* d,
                   const ResourceState* prior) {
      if (IsCheck(a.type)) return;
      Provider* owner = nullptr;
      for (Provider* p : in.providers)
        if (p->Handles(a.type)) { owner = p; break; }
      if (!owner) {
        errors.push_back(a.ToString() + ": no provider handles " + TypeName(a.type));
        return;
      }
      batches[owner].push_back(RefreshItem{a, workload, d, prior});
    };
    if (!in.destroy)
      for (const auto& r : out.desired)
        add(r.address, r.workload, &r, in.state ? in.state->Find(r.address.ToString()) : nullptr);
    if (in.state)
      for (const auto& [addr, rs] : in.state->resources)
        if (in.destroy || !want.count(addr)) add(rs.address, rs.workload, nullptr, &rs);
    for (auto& [p, items] : batches) {
      auto seen = p->Refresh(items);
      for (const auto& item : items) {
        std::string a = item.address.ToString();
        auto it = seen.find(a);
        if (it == seen.end()) {
          errors.push_back(a + ": " + p->Name() + " provider returned nothing for it on refresh");
          continue;
        }
        if (!it->second.ok()) errors.push_back(a + ": " + it->second.error());
        out.observations.emplace(a, std::move(it->second));
      }
    }
    if (!errors.empty()) {
      std::string msg = "refresh failed for " + std::to_string(errors.size()) + " resource" +
                        (errors.size() == 1 ? "" : "s") + " (fix them, or plan with --refresh=false to trust the state):";
      for (const auto& e : errors) msg += "\n  " + e;
      return Result<PlanOutputs>::Error(msg);
    }
  }
  DiffOptions d;
  d.destroy = in.destroy;
  d.observations = in.refresh ? &out.observations : nullptr;
  d.targets = in.targets;
  auto plan = Diff(out.desired, in.state, *in.clock, d);
  if (!plan.ok()) return Result<PlanOutputs>(plan.status());
  out.plan = std::move(*plan);
  out.plan.manifest_digest = in.model->digest;
  return out;
}

Status CheckSavedPlan(const Plan& saved, const Plan& now, const std::string& state_lineage,
                      int64_t state_serial, const std::string& manifest_digest) {
  const std::string again = "; run onboard plan again";
  if (saved.lineage != state_lineage && !saved.lineage.empty())
    return Status::Error("the saved plan was made for another state (lineage " + saved.lineage +
                         ", the state is " + state_lineage + ")" + again);
  if (saved.serial != state_serial || (saved.lineage.empty() && !state_lineage.empty()))
    return Status::Error("the saved plan is stale: it was made against state serial " +
                         std::to_string(saved.serial) + ", the state is now at serial " +
                         std::to_string(state_serial) + " (another run changed it)" + again);
  if (saved.manifest_digest != manifest_digest)
    return Status::Error("the saved plan is stale: the manifests changed since it was made" + again);
  if (saved.destroy != now.destroy) return Status::Error("the saved plan's mode differs" + again);
  std::map<std::string, Action> planned;
  for (const auto& c : saved.changes) planned[c.address.ToString()] = c.action;
  for (const auto& c : now.changes) {
    auto it = planned.find(c.address.ToString());
    Action was = it == planned.end() ? Action::kNoOp : it->second;
    if (was != c.action && !(was == Action::kRead || c.action == Action::kRead))
      return Status::Error("the saved plan is stale: " + c.address.ToString() + " was planned as " +
                           ActionName(was) + " but now needs " + ActionName(c.action) +
                           " (the world changed)" + again);
    if (it != planned.end()) planned.erase(it);
  }
  for (const auto& [addr, a] : planned)
    if (a != Action::kNoOp && a != Action::kRead)
      return Status::Error("the saved plan is stale: " + addr + " was planned as " + ActionName(a) +
                           " but is no longer needed" + again);
  return Status::Ok();
}

}  // namespace onboard
