#include "fakes.h"

#include "engine/hash.h"

namespace onboard::testing {

using nlohmann::json;

Result<std::optional<MeshFacts>> FakeProvider::ReadFacts() { return std::optional<MeshFacts>(SampleFacts()); }

std::map<std::string, Result<Observation>> FakeProvider::Refresh(const std::vector<RefreshItem>& items) {
  std::lock_guard<std::mutex> l(mu);
  std::map<std::string, Result<Observation>> out;
  for (const auto& it : items) {
    std::string a = it.address.ToString();
    Observation o;
    auto w = world.find(a);
    o.exists = w != world.end();
    if (o.exists) {
      o.attributes = w->second;
      o.attributes.erase("connection");
      if (it.prior) o.observed = it.prior->observed;
    }
    out.emplace(a, o);
  }
  return out;
}

Result<StepResult> FakeProvider::Apply(const StepRequest& req) {
  std::lock_guard<std::mutex> l(mu);
  const Change& c = *req.change;
  const std::string a = c.address.ToString();
  calls.push_back(std::string(req.rollback ? "rollback " : "") + ActionName(c.action) + " " + a);
  if (!req.rollback) {
    int n = applies++;
    if (n == fail_at || fail_addresses.count(a))
      return Result<StepResult>::Error("injected failure at step " + std::to_string(n) + " (" + a + ")");
  }
  if (req.dry_run) {
    if (req.reporter) req.reporter->Action(a, ActionName(c.action));
    return StepResult{};
  }
  StepResult r;
  if (IsCheck(c.address.type)) return r;
  if (c.action == Action::kDelete) {
    r.writes = world.erase(a) ? 1 : 0;
    writes += r.writes;
    return r;
  }
  ResourceState rs;
  rs.address = c.address;
  rs.workload = c.workload;
  rs.attributes = req.desired ? req.desired->attributes : c.after;
  if (c.address.type == ResourceType::kToken && !req.rollback) {
    std::string tok = minted_token + std::to_string(++tokens_minted);
    req.secrets->Put(c.workload, "token", tok);
    rs.observed = {{"sha256", Sha256Hex(tok)}, {"expires_at", 2000000000}, {"issued_at", 1000}};
  }
  if (c.address.type == ResourceType::kFiles && !req.rollback && !req.secrets->Get(c.workload, "token"))
    return Result<StepResult>::Error("files step ran without a token in the bag");
  json attrs = rs.attributes;
  auto w = world.find(a);
  if (w == world.end() || w->second != attrs) {
    world[a] = attrs;
    r.writes = 1;
    writes++;
  }
  r.state = rs;
  return r;
}

void FakeProvider::Finish(const std::string& workload, bool ok) {
  std::lock_guard<std::mutex> l(mu);
  finished[workload] = ok;
}

Status MemStateStore::Lock(const LockInfo& info, int) {
  if (holder) return Status::Error(holder->Describe());
  holder = info;
  return Status::Ok();
}

Status MemStateStore::Unlock(const std::string& id) {
  if (!holder || holder->id != id) return Status::Error("not locked by " + id);
  holder.reset();
  return Status::Ok();
}

Status MemStateStore::Write(const State& s) {
  if (writes == fail_write_at) {
    ++writes;
    return Status::Error("disk full (injected)");
  }
  ++writes;
  state = s;
  return Status::Ok();
}

Model SampleModel(int n, bool mesh_expansion) {
  Model m;
  m.fleet_name = "sample";
  m.cluster.name = "prod";
  if (mesh_expansion) m.cluster.mesh_expansion = MeshExpansion{};
  m.cluster.vm_gateway.address = "10.0.0.1";
  m.digest = "digest-1";
  for (int i = 0; i < n; ++i) {
    Workload w;
    w.name = "w" + std::to_string(i);
    w.ns = "ns";
    w.address = "10.1.0." + std::to_string(i + 1);
    w.service_account = "sa";
    w.network = "vm-net";
    w.labels = {{"app", "app" + std::to_string(i)}, {"version", "v1"}};
    w.ports = {{"http", 9080}};
    w.sidecar = json::parse(R"({"ingress":[{"port":{"number":9080,"protocol":"HTTP","name":"http"},
                              "defaultEndpoint":"127.0.0.1:9080"}],"egress":[{"bind":"127.0.0.2","hosts":["./*"]}]})");
    w.hosts = {{"127.0.0.2", {"reviews.ns.svc"}}};
    w.ssh.host = w.address;
    w.ssh.user = "istio-proxy";
    w.proxy.image_hub = "docker.io/tetrate";
    w.proxy.tag = "1.8.6";
    m.workloads.push_back(w);
  }
  return m;
}

MeshFacts SampleFacts() {
  MeshFacts f;
  f.mesh_config = json::parse(R"({"defaultConfig":{"discoveryAddress":"istiod.istio-system.svc:15012"},
                                  "trustDomain":"cluster.local"})");
  f.injector_values = json::parse(R"({"global":{"hub":"docker.io/tetrate","tag":"1.8.6","meshID":"mesh1"}})");
  f.root_certs["ns"] = "-----BEGIN CERTIFICATE-----\nROOT\n-----END CERTIFICATE-----\n";
  f.kube_ca = "-----BEGIN CERTIFICATE-----\nKUBE\n-----END CERTIFICATE-----\n";
  return f;
}

}  // namespace onboard::testing
