#include "providers/kubernetes/provider.h"

#include <openssl/evp.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <set>
#include <thread>

namespace onboard::k8s {
namespace {

using json = nlohmann::json;

std::string Quote(const std::string& s) { return "\"" + s + "\""; }

struct ObjectKind {
  std::string group, version, plural, kind;
};

ObjectKind KindOf(ResourceType t, const json& object) {
  ObjectKind k{"networking.istio.io", "v1beta1", "workloadentries", "WorkloadEntry"};
  if (t == ResourceType::kSidecar) {
    k.plural = "sidecars";
    k.kind = "Sidecar";
  }
  if (object.is_object() && object.contains("apiVersion") && object["apiVersion"].is_string()) {
    std::string av = object["apiVersion"].get<std::string>();
    auto slash = av.find('/');
    if (slash != std::string::npos) {
      k.group = av.substr(0, slash);
      k.version = av.substr(slash + 1);
    }
  }
  return k;
}

std::string Str(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

const json& Member(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// "<ns>/<name>" -> ns, name.
void SplitName(const std::string& full, std::string* ns, std::string* name) {
  auto slash = full.find('/');
  if (slash == std::string::npos) {
    ns->clear();
    *name = full;
  } else {
    *ns = full.substr(0, slash);
    *name = full.substr(slash + 1);
  }
}

json ObservedOf(const json& live) {
  json o = json::object();
  const json& md = Member(live, "metadata");
  if (!Str(md, "uid").empty()) o["uid"] = Str(md, "uid");
  if (!Str(md, "resourceVersion").empty()) o["resourceVersion"] = Str(md, "resourceVersion");
  return o;
}

const char* OriginName(Origin o) { return o == Origin::kAdopted ? "adopted" : "created"; }

}  // namespace

json NormalizeObject(const json& desired) {
  if (!desired.is_object()) return desired;
  json out = json::object();
  for (const char* k : {"apiVersion", "kind", "spec"}) {
    if (desired.contains(k)) out[k] = desired[k];
  }
  json md = json::object();
  const json& dmd = Member(desired, "metadata");
  for (const char* k : {"name", "namespace", "labels", "annotations"}) {
    if (dmd.is_object() && dmd.contains(k)) md[k] = dmd[k];
  }
  out["metadata"] = md;
  return out;
}

json ReduceObject(const json& live, const json& desired, const json& prior) {
  json out = json::object();
  if (live.contains("apiVersion")) out["apiVersion"] = live["apiVersion"];
  if (live.contains("kind")) out["kind"] = live["kind"];
  const json& lmd = Member(live, "metadata");
  json md = json::object();
  if (lmd.contains("name")) md["name"] = lmd["name"];
  if (lmd.contains("namespace")) md["namespace"] = lmd["namespace"];
  for (const char* field : {"labels", "annotations"}) {
    std::set<std::string> keys;
    bool template_has = false;
    for (const json* t : {&desired, &prior}) {
      const json& m = Member(Member(*t, "metadata"), field);
      if (t == &desired && m.is_object()) template_has = true;
      if (m.is_object()) {
        for (auto it = m.begin(); it != m.end(); ++it) keys.insert(it.key());
      }
    }
    json vals = json::object();
    const json& lm = Member(lmd, field);
    for (const auto& k : keys) {
      if (lm.is_object() && lm.contains(k)) vals[k] = lm[k];
    }
    if (template_has || !vals.empty()) md[field] = vals;
  }
  out["metadata"] = md;
  if (live.contains("spec")) out["spec"] = live["spec"];
  return out;
}

KubernetesProvider::KubernetesProvider(ProviderOptions options) : options_(std::move(options)) {}
KubernetesProvider::~KubernetesProvider() = default;

bool KubernetesProvider::Handles(ResourceType t) const {
  return t == ResourceType::kMeshExpansion || t == ResourceType::kWorkloadEntry || t == ResourceType::kSidecar ||
         t == ResourceType::kToken;
}

void KubernetesProvider::Warn(const std::string& message) const {
  if (options_.reporter) {
    options_.reporter->Warn(message);
  } else if (options_.warn) {
    options_.warn(message);
  } else {
    std::fprintf(stderr, "warning: %s\n", message.c_str());
  }
}

Status KubernetesProvider::Configure(const Model& model) {
  model_ = model;
  KubeConfigOptions ko;
  ko.path = options_.kubeconfig.empty() ? model.cluster.kubeconfig : options_.kubeconfig;
  ko.context = options_.context.empty() ? model.cluster.context : options_.context;
  ko.getenv = options_.getenv;
  auto cfg = LoadKubeConfig(ko);
  if (!cfg.ok()) return cfg.status();
  ClientOptions co = options_.client;
  if (!co.warn) co.warn = [this](const std::string& m) { Warn(m); };
  auto client = Client::Create(*cfg, co);
  if (!client.ok()) return client.status();
  client_ = std::move(*client);
  return Status::Ok();
}

ClientStats KubernetesProvider::stats() const { return client_ ? client_->stats() : ClientStats{}; }

Result<json> KubernetesProvider::GetConfigMap(const std::string& ns, const std::string& name,
                                              const std::string& purpose) {
  Request r;
  r.path = CorePath(ns, "configmaps", name);
  r.verb = "get";
  r.resource = "configmaps";
  r.ns = ns;
  r.name = name;
  auto resp = client_->Send(r);
  if (!resp.ok()) return resp.status();
  if (resp->status == 404) {
    return Result<json>::Error("ConfigMap " + name + " in namespace " + ns + " not found (" +
                               client_->config().Where() + "): it holds " + purpose);
  }
  if (!resp->ok()) return Result<json>::Error(client_->ErrorMessage(r, *resp));
  json cm = resp->Json();
  if (!cm.is_object()) return Result<json>::Error("ConfigMap " + ns + "/" + name + ": the response is not JSON");
  return cm;
}

Result<std::optional<MeshFacts>> KubernetesProvider::ReadFacts() {
  using R = Result<std::optional<MeshFacts>>;
  if (!client_) return R::Error("kubernetes provider: ReadFacts called before Configure");
  MeshFacts f;
  const std::string& ins = model_.cluster.istio_namespace;
  std::string hint_ns = " (is Istio installed there? set spec.cluster.istioNamespace otherwise)";

  auto mesh_cm = GetConfigMap(ins, "istio",
                              "the mesh config (trustDomain, defaultConfig.discoveryAddress, proxyMetadata)" + hint_ns);
  if (!mesh_cm.ok()) return mesh_cm.status();
  std::string mesh_text = Str(Member(*mesh_cm, "data"), "mesh");
  if (mesh_text.empty()) {
    return R::Error("ConfigMap " + ins + "/istio has no data.mesh: it should hold the mesh config YAML");
  }
  auto mesh = YamlToJson(mesh_text, "ConfigMap " + ins + "/istio data.mesh");
  if (!mesh.ok()) return mesh.status();
  f.mesh_config = mesh->is_object() ? *mesh : json::object();

  auto inj_cm = GetConfigMap(ins, "istio-sidecar-injector",
                             "the injector values (global.hub, global.tag, global.network, ...)" + hint_ns);
  if (!inj_cm.ok()) return inj_cm.status();
  std::string values = Str(Member(*inj_cm, "data"), "values");
  if (values.empty()) {
    return R::Error("ConfigMap " + ins + "/istio-sidecar-injector has no data.values: it should hold the "
                    "injector values (JSON or YAML)");
  }
  json v = json::parse(values, nullptr, false);
  if (v.is_discarded()) {
    auto y = YamlToJson(values, "ConfigMap " + ins + "/istio-sidecar-injector data.values");
    if (!y.ok()) return y.status();
    v = *y;
  }
  f.injector_values = v.is_object() ? v : json::object();

  std::set<std::string> namespaces;
  for (const auto& w : model_.workloads) namespaces.insert(w.ns);
  for (const auto& ns : namespaces) {
    auto cm = GetConfigMap(ns, "istio-ca-root-cert",
                           "the mesh root certificate (root-cert.pem) for the VMs' istio-ca.pem; istiod "
                           "creates it in every namespace: check that istiod runs and the namespace exists");
    if (!cm.ok()) return cm.status();
    std::string pem = Str(Member(*cm, "data"), "root-cert.pem");
    if (pem.empty()) return R::Error("ConfigMap " + ns + "/istio-ca-root-cert has no data.root-cert.pem");
    f.root_certs[ns] = pem;
  }

  if (!client_->config().ca_pem.empty()) {
    f.kube_ca = client_->config().ca_pem;
  } else {
    std::string ns = namespaces.empty() ? ins : *namespaces.begin();
    auto cm = GetConfigMap(ns, "kube-root-ca.crt",
                           "the Kubernetes cluster CA (ca.crt) for the VMs' k8s-ca.pem; the kubeconfig has no "
                           "certificate-authority, so it is read from the cluster");
    if (!cm.ok()) return cm.status();
    f.kube_ca = Str(Member(*cm, "data"), "ca.crt");
    if (f.kube_ca.empty()) return R::Error("ConfigMap " + ns + "/kube-root-ca.crt has no data.ca.crt");
  }

  if (model_.cluster.mesh_expansion) {
    const auto& me = *model_.cluster.mesh_expansion;
    std::string ns = me.ns.empty() ? ins : me.ns;
    Request r;
    r.path = GroupPath("install.tetrate.io", "v1alpha1", ns, "controlplanes", me.control_plane);
    r.resource = "controlplanes.install.tetrate.io";
    r.ns = ns;
    r.name = me.control_plane;
    auto resp = client_->Send(r);
    if (!resp.ok()) return resp.status();
    if (resp->status == 404) {
      return R::Error("ControlPlane " + ns + "/" + me.control_plane +
                      " (install.tetrate.io/v1alpha1) not found: mesh expansion is switched on there; check "
                      "spec.cluster.meshExpansion.controlPlane, or omit meshExpansion to leave it alone");
    }
    if (!resp->ok()) return R::Error(client_->ErrorMessage(r, *resp));
    json cp = resp->Json();
    const json& spec = Member(cp, "spec");
    f.mesh_expansion_on = spec.is_object() && spec.contains("meshExpansion") && !spec["meshExpansion"].is_null();
  }
  return std::optional<MeshFacts>(f);
}

// ---- refresh ----

std::map<std::string, Result<Observation>> KubernetesProvider::Refresh(const std::vector<RefreshItem>& items) {
  std::map<std::string, Result<Observation>> out;
  std::mutex mu;
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    while (true) {
      std::size_t i = next++;
      if (i >= items.size()) return;
      auto r = RefreshOne(items[i]);
      std::lock_guard<std::mutex> l(mu);
      out.insert_or_assign(items[i].address.ToString(), std::move(r));
    }
  };
  int n = std::max(1, std::min<int>(options_.refresh_threads, static_cast<int>(items.size())));
  std::vector<std::thread> threads;
  for (int t = 1; t < n; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  return out;
}

Result<Observation> KubernetesProvider::RefreshOne(const RefreshItem& item) {
  if (!client_) return Result<Observation>::Error("kubernetes provider: Refresh called before Configure");
  Observation obs;
  const json desired_attrs = item.desired ? item.desired->attributes : json();
  const json prior_attrs = item.prior ? item.prior->attributes : json();
  switch (item.address.type) {
    case ResourceType::kToken: {
      // A token cannot be read back: what state recorded is all there is; the engine renews by expiry.
      obs.exists = item.prior != nullptr;
      if (item.prior) {
        obs.attributes = item.prior->attributes;
        obs.observed = item.prior->observed;
      }
      return obs;
    }
    case ResourceType::kMeshExpansion: {
      const json& a = desired_attrs.is_object() ? desired_attrs : prior_attrs;
      std::string cp = Str(a, "control_plane");
      std::string ns = Str(a, "namespace");
      if (cp.empty()) cp = "controlplane";
      if (ns.empty()) ns = model_.cluster.istio_namespace;
      Request r;
      r.path = GroupPath("install.tetrate.io", "v1alpha1", ns, "controlplanes", cp);
      r.resource = "controlplanes.install.tetrate.io";
      r.ns = ns;
      r.name = cp;
      auto resp = client_->Send(r);
      if (!resp.ok()) return resp.status();
      if (resp->status == 404) return obs;
      if (!resp->ok()) return Result<Observation>::Error(client_->ErrorMessage(r, *resp));
      json live = resp->Json();
      const json& spec = Member(live, "spec");
      obs.exists = spec.is_object() && spec.contains("meshExpansion") && !spec["meshExpansion"].is_null();
      if (obs.exists) obs.attributes = {{"control_plane", cp}, {"namespace", ns}};
      obs.observed = ObservedOf(live);
      if (item.prior && item.prior->observed.contains("was_on")) obs.observed["was_on"] = item.prior->observed["was_on"];
      return obs;
    }
    case ResourceType::kWorkloadEntry:
    case ResourceType::kSidecar: {
      const json desired_obj = Member(desired_attrs, "object");
      const json prior_obj = Member(prior_attrs, "object");
      const json& tmpl = desired_obj.is_object() ? desired_obj : prior_obj;
      std::string ns, name;
      SplitName(item.address.name, &ns, &name);
      const json& md = Member(tmpl, "metadata");
      if (!Str(md, "name").empty()) name = Str(md, "name");
      if (!Str(md, "namespace").empty()) ns = Str(md, "namespace");
      ObjectKind k = KindOf(item.address.type, tmpl);
      Request r;
      r.path = GroupPath(k.group, k.version, ns, k.plural, name);
      r.resource = k.plural + "." + k.group;
      r.ns = ns;
      r.name = name;
      auto resp = client_->Send(r);
      if (!resp.ok()) return resp.status();
      if (resp->status == 404) return obs;
      if (!resp->ok()) return Result<Observation>::Error(client_->ErrorMessage(r, *resp));
      json live = resp->Json();
      if (!live.is_object()) {
        return Result<Observation>::Error("get " + r.resource + " " + ns + "/" + name + ": the response is not JSON");
      }
      obs.exists = true;
      obs.attributes = {{"object", ReduceObject(live, desired_obj, prior_obj)}};
      obs.observed = ObservedOf(live);
      return obs;
    }
    default:
      return Result<Observation>::Error("kubernetes provider does not handle " + item.address.ToString());
  }
}

// ---- apply ----

Result<StepResult> KubernetesProvider::Apply(const StepRequest& req) {
  if (!req.change) return Result<StepResult>::Error("kubernetes provider: Apply without a change");
  if (!client_ && !req.dry_run) return Result<StepResult>::Error("kubernetes provider: Apply called before Configure");
  switch (req.change->address.type) {
    case ResourceType::kWorkloadEntry:
    case ResourceType::kSidecar:
      return ApplyObject(req);
    case ResourceType::kMeshExpansion:
      return ApplyMeshExpansion(req);
    case ResourceType::kToken:
      return ApplyToken(req);
    default:
      return Result<StepResult>::Error("kubernetes provider does not handle " + req.change->address.ToString());
  }
}

namespace {

// What the step should make true: the attributes to apply, or null to delete.
json TargetAttributes(const StepRequest& req) {
  if (req.rollback) return req.change->after;
  if (req.change->action == Action::kDelete) return json();
  if (req.desired) return req.desired->attributes;
  return req.change->after;
}

std::string WorkloadOf(const StepRequest& req) {
  if (req.desired && !req.desired->workload.empty()) return req.desired->workload;
  if (!req.change->workload.empty()) return req.change->workload;
  if (req.prior) return req.prior->workload;
  return "";
}

}  // namespace

Result<StepResult> KubernetesProvider::ApplyObject(const StepRequest& req) {
  using R = Result<StepResult>;
  const Address& addr = req.change->address;
  std::string target = addr.ToString();
  json attrs = TargetAttributes(req);
  json target_obj = Member(attrs, "object");
  json prior_obj = req.prior ? Member(req.prior->attributes, "object") : json();
  if (prior_obj.is_null() && req.change->before.is_object()) prior_obj = Member(req.change->before, "object");
  const json& tmpl = target_obj.is_object() ? target_obj : prior_obj;

  std::string ns, name;
  SplitName(addr.name, &ns, &name);
  const json& md = Member(tmpl, "metadata");
  if (!Str(md, "name").empty()) name = Str(md, "name");
  if (!Str(md, "namespace").empty()) ns = Str(md, "namespace");
  ObjectKind k = KindOf(addr.type, tmpl);
  std::string path = GroupPath(k.group, k.version, ns, k.plural, name);
  std::string resource = k.plural + "." + k.group;

  StepResult result;
  if (attrs.is_null() || !target_obj.is_object()) {
    if (!attrs.is_null() && !target_obj.is_object()) {
      return R::Error(target + ": attributes.object is missing; nothing to apply");
    }
    // Delete, with the uid recorded in state as a precondition (never delete someone else's object).
    std::string uid = req.prior ? Str(req.prior->observed, "uid") : "";
    json body = {{"apiVersion", "v1"}, {"kind", "DeleteOptions"}};
    if (!uid.empty()) body["preconditions"] = {{"uid", uid}};
    if (req.dry_run) {
      if (req.reporter) req.reporter->Action(target, "DELETE " + path + " " + body.dump());
      return result;
    }
    if (uid.empty()) {
      // No uid in state: delete only what GET shows now, by its uid.
      Request g;
      g.path = path;
      g.resource = resource;
      g.ns = ns;
      g.name = name;
      auto live = client_->Send(g);
      if (!live.ok()) return live.status();
      if (live->status == 404) return result;
      if (!live->ok()) return R::Error(client_->ErrorMessage(g, *live));
      uid = Str(Member(live->Json(), "metadata"), "uid");
      if (!uid.empty()) body["preconditions"] = {{"uid", uid}};
    }
    Request d;
    d.method = "DELETE";
    d.path = path;
    d.body = body.dump();
    d.verb = "delete";
    d.resource = resource;
    d.ns = ns;
    d.name = name;
    auto resp = client_->Send(d);
    if (!resp.ok()) return resp.status();
    if (resp->status == 404) return result;  // already gone
    if (resp->status == 409) {
      return R::Error(client_->ErrorMessage(d, *resp) + " (the object now has a different uid than " + uid +
                      " recorded in state: it was re-created by someone else, so onboard leaves it; "
                      "delete it by hand or run `onboard state rm " + target + "`)");
    }
    if (!resp->ok()) return R::Error(client_->ErrorMessage(d, *resp));
    result.writes = 1;
    return result;
  }

  json desired_norm = NormalizeObject(target_obj);
  std::string query = std::string("fieldManager=") + kFieldManager;
  if (options_.force_conflicts) query += "&force=true";
  ResourceState st;
  st.address = addr;
  st.workload = WorkloadOf(req);
  st.attributes = attrs;
  st.origin = req.prior ? req.prior->origin : Origin::kCreated;

  if (req.dry_run) {
    if (req.reporter) {
      req.reporter->Action(target, "PATCH " + path + "?" + query +
                                       " (server-side apply, application/apply-patch+yaml)\n" +
                                       desired_norm.dump(2));
    }
    if (req.prior) st.observed = req.prior->observed;
    result.state = st;
    return result;
  }

  // Check before acting: no write when the live object already has exactly these fields.
  Request g;
  g.path = path;
  g.resource = resource;
  g.ns = ns;
  g.name = name;
  auto live = client_->Send(g);
  if (!live.ok()) return live.status();
  if (live->status != 404 && !live->ok()) return R::Error(client_->ErrorMessage(g, *live));
  if (live->ok()) {
    json lj = live->Json();
    if (!req.prior) st.origin = Origin::kAdopted;  // it was there before onboard recorded it
    if (lj.is_object() && ReduceObject(lj, target_obj, prior_obj) == desired_norm) {
      st.observed = ObservedOf(lj);
      result.state = st;
      return result;
    }
  }

  Request p;
  p.method = "PATCH";
  p.path = path;
  p.query = query;
  p.content_type = "application/apply-patch+yaml";
  p.body = desired_norm.dump();  // JSON is YAML
  p.verb = "apply";
  p.resource = resource;
  p.ns = ns;
  p.name = name;
  auto resp = client_->Call(p);
  if (!resp.ok()) return resp.status();
  st.observed = ObservedOf(resp->Json());
  result.state = st;
  result.writes = 1;
  return result;
}

Result<StepResult> KubernetesProvider::ApplyMeshExpansion(const StepRequest& req) {
  using R = Result<StepResult>;
  std::string target = req.change->address.ToString();
  json attrs = TargetAttributes(req);
  const json& a = attrs.is_object() ? attrs : (req.prior ? req.prior->attributes : req.change->before);
  std::string cp = Str(a, "control_plane");
  std::string ns = Str(a, "namespace");
  if (cp.empty()) cp = "controlplane";
  if (ns.empty()) ns = model_.cluster.istio_namespace;
  std::string path = GroupPath("install.tetrate.io", "v1alpha1", ns, "controlplanes", cp);
  std::string resource = "controlplanes.install.tetrate.io";
  StepResult result;

  Request patch;
  patch.method = "PATCH";
  patch.path = path;
  patch.content_type = "application/merge-patch+json";
  patch.verb = "patch";
  patch.resource = resource;
  patch.ns = ns;
  patch.name = cp;
  patch.idempotent = true;  // setting a fixed value twice gives the same object

  if (attrs.is_null()) {
    // Switch it off only when onboard switched it on; an adopted setting belongs to someone else.
    bool created = req.prior && req.prior->origin == Origin::kCreated &&
                   !(req.prior->observed.contains("was_on") && req.prior->observed["was_on"] == true);
    if (!created) {
      if (req.dry_run && req.reporter) {
        req.reporter->Action(target, "leave spec.meshExpansion of ControlPlane " + ns + "/" + cp +
                                         " on (it was on before onboard: " +
                                         (req.prior ? OriginName(req.prior->origin) : "not in state") + ")");
      }
      return result;
    }
    patch.body = R"({"spec":{"meshExpansion":null}})";
    if (req.dry_run) {
      if (req.reporter) req.reporter->Action(target, "PATCH " + path + " (merge patch) " + patch.body);
      return result;
    }
    auto resp = client_->Send(patch);
    if (!resp.ok()) return resp.status();
    if (resp->status == 404) return result;  // the ControlPlane is gone: nothing to switch off
    if (!resp->ok()) return R::Error(client_->ErrorMessage(patch, *resp));
    result.writes = 1;
    return result;
  }

  ResourceState st;
  st.address = req.change->address;
  st.workload = "";
  st.attributes = attrs;
  patch.body = R"({"spec":{"meshExpansion":{}}})";
  if (req.dry_run) {
    if (req.reporter) {
      req.reporter->Action(target, "PATCH " + path + " (merge patch, unless spec.meshExpansion is already on) " +
                                       patch.body);
    }
    st.origin = req.prior ? req.prior->origin : Origin::kCreated;
    if (req.prior) st.observed = req.prior->observed;
    result.state = st;
    return result;
  }
  Request g;
  g.path = path;
  g.resource = resource;
  g.ns = ns;
  g.name = cp;
  auto live = client_->Call(g);
  if (!live.ok()) {
    return R::Error(live.error() + " (mesh expansion is switched on in this ControlPlane; check "
                                   "spec.cluster.meshExpansion)");
  }
  json lj = live->Json();
  const json& spec = Member(lj, "spec");
  bool on = spec.is_object() && spec.contains("meshExpansion") && !spec["meshExpansion"].is_null();
  if (on) {
    // Already on. If onboard turned it on earlier (state says created), it stays onboard's.
    bool ours = req.prior && req.prior->origin == Origin::kCreated &&
                !(req.prior->observed.contains("was_on") && req.prior->observed["was_on"] == true);
    st.origin = ours ? Origin::kCreated : Origin::kAdopted;
    st.observed = ObservedOf(lj);
    st.observed["was_on"] = !ours;
    result.state = st;
    return result;
  }
  auto resp = client_->Call(patch);
  if (!resp.ok()) return resp.status();
  st.origin = Origin::kCreated;
  st.observed = ObservedOf(resp->Json());
  st.observed["was_on"] = false;
  result.state = st;
  result.writes = 1;
  return result;
}

Result<StepResult> KubernetesProvider::ApplyToken(const StepRequest& req) {
  using R = Result<StepResult>;
  std::string target = req.change->address.ToString();
  StepResult result;
  if (req.rollback || req.change->action == Action::kDelete) {
    // A bound token cannot be revoked, and a replaced one cannot be brought back: nothing to do
    // remotely. On rollback the record is dropped so the next run mints a fresh token.
    return result;
  }
  json attrs = TargetAttributes(req);
  std::string ns = Str(attrs, "namespace");
  std::string sa = Str(attrs, "service_account");
  std::string audience = Str(attrs, "audience");
  int64_t duration = attrs.is_object() && attrs.contains("duration_seconds") && attrs["duration_seconds"].is_number()
                         ? attrs["duration_seconds"].get<int64_t>()
                         : 24 * 3600;
  if (ns.empty() || sa.empty()) {
    return R::Error(target + ": attributes namespace and service_account are required to request a token");
  }
  json spec = {{"expirationSeconds", duration}};
  if (!audience.empty()) spec["audiences"] = json::array({audience});
  json body = {{"apiVersion", "authentication.k8s.io/v1"}, {"kind", "TokenRequest"}, {"spec", spec}};
  std::string path = CorePath(ns, "serviceaccounts", sa, "token");
  ResourceState st;
  st.address = req.change->address;
  st.workload = WorkloadOf(req);
  st.attributes = attrs;
  st.origin = Origin::kCreated;
  if (req.dry_run) {
    if (req.reporter) req.reporter->Action(target, "POST " + path + " " + body.dump());
    if (req.prior) st.observed = req.prior->observed;
    result.state = st;
    return result;
  }
  Request p;
  p.method = "POST";
  p.path = path;
  p.body = body.dump();
  p.verb = "create token for";
  p.resource = "serviceaccounts";
  p.ns = ns;
  p.name = sa;
  p.secret_response = true;
  auto resp = client_->Call(p);
  if (!resp.ok()) return resp.status();
  json tr = resp->Json();
  const json& status = Member(tr, "status");
  std::string token = Str(status, "token");
  std::string exp = Str(status, "expirationTimestamp");
  if (token.empty()) {
    return R::Error("create token for serviceaccounts " + ns + "/" + sa + " on " + client_->config().server +
                    ": the TokenRequest response has no status.token");
  }
  int64_t expires_at = 0;
  if (!ParseTime(exp, &expires_at)) {
    return R::Error("create token for serviceaccounts " + ns + "/" + sa + " on " + client_->config().server +
                    ": the TokenRequest response has an invalid status.expirationTimestamp " + Quote(exp));
  }
  if (req.secrets) req.secrets->Put(st.workload, "token", token);
  st.observed = {{"sha256", Sha256Hex(token)},
                 {"expires_at", expires_at},
                 {"issued_at", static_cast<int64_t>(std::time(nullptr))}};
  std::fill(token.begin(), token.end(), '\0');
  result.state = st;
  result.writes = 1;
  return result;
}

}  // namespace onboard::k8s
