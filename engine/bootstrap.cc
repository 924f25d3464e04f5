// Pure generators of the VM bootstrap material (DESIGN §1.5, §1.6) and of the Kubernetes objects
// onboard applies. No I/O.
//
// Decisions where DESIGN and the guide are silent (kept in one place, tested in
// tests/engine/bootstrap/):
//  - Mesh facts: ProxyConfig = mesh config `defaultConfig`, deep-merged with the workload's
//    proxy.istio.io/config (objects merge key by key, everything else — arrays included — is
//    replaced, a JSON null deletes the key). `proxyMetadata` of the merged ProxyConfig gives the
//    leading sidecar.env entries, sorted by key. An entry whose key is one of the keys onboard
//    writes itself (JWT_POLICY ... ISTIO_META_MESH_ID) is dropped from that leading block: the
//    generated value wins, as it does in istioctl's cluster.env, and the file never holds a
//    duplicate key (which copy a process sees would depend on the runtime).
//  - The VM gateway is used when the cluster has one (vmGateway.address) AND the workload is on
//    another network (WorkloadEntry `network` set): DESIGN §1.2, a same-network VM reaches pods
//    and istiod directly. Cluster-local addresses are hosts ending in `.svc` or
//    `.svc.cluster.local`, or of the short form `<service>.<istioNamespace>` (Istio's default
//    tracer address is `zipkin.istio-system:9411`). They are found in CA_ADDR and, in
//    PROXY_CONFIG, in discoveryAddress, tracing.{zipkin,lightstep,datadog}.address,
//    envoyAccessLogService.address and envoyMetricsService.address (the gateway forwards the
//    access-log port 11800 too). A DNS-name gateway: the host is replaced by the gateway's, the
//    port kept. An IP gateway: addresses stay and `docker run` gets `--add-host <host>:<ip>` for
//    each such host (sorted, unique).
//  - CA_SNI / PILOT_SNI are the hosts of the CA / discovery addresses before any rewrite, in the
//    `<svc>.<ns>.svc` form (`.svc.cluster.local` and the short form are normalised), so the TLS
//    name still matches istiod's certificate when the connection goes to the gateway.
//  - ISTIO_METAJSON_ISTIO_ANNOTATIONS is always written: the workload's annotations in the
//    sidecar.istio.io/ and proxy.istio.io/ domains as compact JSON, `{}` when there are none
//    (every sidecar.env has the same keys, and the proxy parses `{}` as no metadata).
//  - CANONICAL_SERVICE falls back to the WorkloadEntry name when no label gives one (Istio falls
//    back to the workload's name the same way).
//  - ISTIO_META_MESH_ID: the cluster override, else injector global.meshID, else the trust
//    domain (Istio's own default for the mesh ID).
//  - Image tag: workload tag, else injector global.tag, else `latest` (what docker would pull for
//    an untagged image; an operator pins the tag in the manifest defaults).
//  - docker run carries `--label onboard.dev/workload=<ns>/<name>` so a container on a VM can be
//    traced back to its workload; the config-hash label is the container provider's to add.
//  - Values never span lines: RenderSidecarEnv writes CR, LF and NUL in a value as the
//    two-character escapes \r \n \0 (docker --env-file would otherwise read the rest as another
//    variable). CheckSidecarEnv reports such values and malformed keys so validation refuses
//    them before anything is rendered.
#include "engine/bootstrap.h"

#include <arpa/inet.h>

#include <algorithm>
#include <set>

namespace onboard {
namespace {

// The keys onboard writes after the proxyMetadata block, in tctl's order.
const char* const kFixedKeys[] = {
    "JWT_POLICY",          "PROV_CERT",          "OUTPUT_CERTS",
    "PILOT_CERT_PROVIDER", "CA_ADDR",            "CA_SNI",
    "PILOT_SNI",           "POD_NAME",           "POD_NAMESPACE",
    "IDENTITY_IP",         "INSTANCE_IP",        "SERVICE_ACCOUNT",
    "HOST_IP",             "CANONICAL_SERVICE",  "CANONICAL_REVISION",
    "PROXY_CONFIG",        "ISTIO_META_CLUSTER_ID", "ISTIO_META_INTERCEPTION_MODE",
    "ISTIO_META_NETWORK",  "ISTIO_METAJSON_LABELS", "ISTIO_METAJSON_ISTIO_ANNOTATIONS",
    "ISTIO_META_WORKLOAD_NAME", "ISTIO_META_OWNER", "ISTIO_META_MESH_ID",
};

bool IsFixedKey(const std::string& key) {
  for (const char* k : kFixedKeys) {
    if (key == k) return true;
  }
  return false;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// A JSON value at a path of object keys, as a string; "" when absent. Numbers and booleans are
// printed (a YAML `tag: 1.9` may arrive as a number).
std::string JsonString(const nlohmann::json& root, std::initializer_list<const char*> path) {
  const nlohmann::json* node = &root;
  for (const char* key : path) {
    if (!node->is_object()) return "";
    auto it = node->find(key);
    if (it == node->end()) return "";
    node = &*it;
  }
  if (node->is_string()) return node->get<std::string>();
  if (node->is_number() || node->is_boolean()) return node->dump();
  return "";
}

std::string FirstNonEmpty(std::initializer_list<std::string> values) {
  for (const auto& v : values) {
    if (!v.empty()) return v;
  }
  return "";
}

// Recursive merge: objects key by key, anything else replaced, null deletes.
void MergeInto(nlohmann::json& base, const nlohmann::json& overlay) {
  if (!overlay.is_object() || !base.is_object()) {
    base = overlay;
    return;
  }
  for (auto it = overlay.begin(); it != overlay.end(); ++it) {
    if (it.value().is_null()) {
      base.erase(it.key());
    } else if (it.value().is_object() && base.contains(it.key()) && base[it.key()].is_object()) {
      MergeInto(base[it.key()], it.value());
    } else {
      base[it.key()] = it.value();
    }
  }
}

struct HostPort {
  std::string host;
  std::string port;  // "" when the address has none
};

// "host:port", "[v6]:port", "host" or a bare IPv6 address.
HostPort SplitHostPort(const std::string& addr) {
  if (!addr.empty() && addr[0] == '[') {
    auto close = addr.find(']');
    if (close != std::string::npos) {
      HostPort hp{addr.substr(1, close - 1), ""};
      if (close + 1 < addr.size() && addr[close + 1] == ':') hp.port = addr.substr(close + 2);
      return hp;
    }
  }
  auto colon = addr.rfind(':');
  if (colon == std::string::npos || addr.find(':') != colon) return {addr, ""};
  return {addr.substr(0, colon), addr.substr(colon + 1)};
}

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool IsClusterLocalHost(const std::string& host, const std::string& istio_ns) {
  if (EndsWith(host, ".svc") || EndsWith(host, ".svc.cluster.local")) return true;
  // <service>.<istioNamespace>
  auto dot = host.find('.');
  return dot != std::string::npos && dot > 0 && host.find('.', dot + 1) == std::string::npos &&
         host.substr(dot + 1) == istio_ns;
}

// The `<svc>.<ns>.svc` form of a cluster-local host; other hosts unchanged.
std::string SniForm(const std::string& host, const std::string& istio_ns) {
  const std::string long_suffix = ".svc.cluster.local";
  if (EndsWith(host, long_suffix)) return host.substr(0, host.size() - long_suffix.size()) + ".svc";
  if (!EndsWith(host, ".svc") && IsClusterLocalHost(host, istio_ns)) return host + ".svc";
  return host;
}

std::string JoinHostPort(const std::string& host, const std::string& port) {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return port.empty() ? h : h + ":" + port;
}

std::string ServiceAccountOf(const Workload& w) {
  return w.service_account.empty() ? "default" : w.service_account;
}

std::string LabelOr(const Workload& w, std::initializer_list<const char*> keys,
                    const std::string& fallback) {
  for (const char* k : keys) {
    auto it = w.labels.find(k);
    if (it != w.labels.end() && !it->second.empty()) return it->second;
  }
  return fallback;
}

std::string WorkloadName(const Workload& w) {
  return LabelOr(w, {"app"}, ServiceAccountOf(w));
}

std::string TrustDomain(const Cluster& c, const MeshFacts& facts) {
  return FirstNonEmpty({c.trust_domain, JsonString(facts.mesh_config, {"trustDomain"}),
                        "cluster.local"});
}

// Everything derived once and shared by SidecarEnv and DockerRunArgs.
struct Derived {
  nlohmann::json proxy_config;  // merged and rewritten
  std::string ca_addr;          // rewritten
  std::string ca_sni;
  std::string pilot_sni;
  std::set<std::string> add_hosts;  // cluster-local hosts needing --add-host (IP gateway)
  std::string gateway_ip;
};

class AddressRewriter {
 public:
  AddressRewriter(const Workload& w, const Cluster& c) : istio_ns_(c.istio_namespace) {
    const std::string& gw = c.vm_gateway.address;
    if (gw.empty() || w.network.empty()) return;  // same network or no gateway: unchanged
    gateway_ = gw;
    gateway_is_ip_ = IsIpAddress(gw);
  }

  std::string Rewrite(const std::string& addr, std::set<std::string>* add_hosts) const {
    if (gateway_.empty() || addr.empty()) return addr;
    HostPort hp = SplitHostPort(addr);
    if (!IsClusterLocalHost(hp.host, istio_ns_)) return addr;
    if (gateway_is_ip_) {
      add_hosts->insert(hp.host);
      return addr;
    }
    return JoinHostPort(gateway_, hp.port);
  }

  bool gateway_is_ip() const { return !gateway_.empty() && gateway_is_ip_; }
  const std::string& gateway() const { return gateway_; }

 private:
  std::string istio_ns_;
  std::string gateway_;
  bool gateway_is_ip_ = false;
};

void RewriteField(nlohmann::json& obj, std::initializer_list<const char*> path,
                  const AddressRewriter& rw, std::set<std::string>* add_hosts) {
  nlohmann::json* node = &obj;
  for (const char* key : path) {
    if (!node->is_object()) return;
    auto it = node->find(key);
    if (it == node->end()) return;
    node = &*it;
  }
  if (node->is_string()) *node = rw.Rewrite(node->get<std::string>(), add_hosts);
}

Derived Derive(const Workload& w, const Cluster& c, const MeshFacts& facts) {
  Derived d;
  d.proxy_config = nlohmann::json::object();
  if (facts.mesh_config.is_object()) {
    auto it = facts.mesh_config.find("defaultConfig");
    if (it != facts.mesh_config.end() && it->is_object()) d.proxy_config = *it;
  }
  if (w.proxy.proxy_config.is_object()) MergeInto(d.proxy_config, w.proxy.proxy_config);

  std::string discovery = JsonString(d.proxy_config, {"discoveryAddress"});
  if (discovery.empty()) {
    discovery = "istiod." + c.istio_namespace + ".svc:15012";
    d.proxy_config["discoveryAddress"] = discovery;
  }
  std::string ca = FirstNonEmpty({JsonString(facts.injector_values, {"global", "caAddress"}),
                                  discovery});
  d.ca_sni = SniForm(SplitHostPort(ca).host, c.istio_namespace);
  d.pilot_sni = SniForm(SplitHostPort(discovery).host, c.istio_namespace);

  AddressRewriter rw(w, c);
  d.ca_addr = rw.Rewrite(ca, &d.add_hosts);
  RewriteField(d.proxy_config, {"discoveryAddress"}, rw, &d.add_hosts);
  for (const char* tracer : {"zipkin", "lightstep", "datadog"}) {
    RewriteField(d.proxy_config, {"tracing", tracer, "address"}, rw, &d.add_hosts);
  }
  RewriteField(d.proxy_config, {"envoyAccessLogService", "address"}, rw, &d.add_hosts);
  RewriteField(d.proxy_config, {"envoyMetricsService", "address"}, rw, &d.add_hosts);
  if (rw.gateway_is_ip()) d.gateway_ip = rw.gateway();
  return d;
}

std::string MetadataValue(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

bool ValidEnvKey(const std::string& key) {
  if (key.empty() || key[0] == '#') return false;
  for (char ch : key) {
    if (ch == '=' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' ||
        ch == '\f' || ch == '\0') {
      return false;
    }
  }
  return true;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> SidecarEnv(const Workload& w, const Cluster& c,
                                                            const MeshFacts& facts) {
  const Derived d = Derive(w, c, facts);
  const nlohmann::json& values = facts.injector_values;
  std::vector<std::pair<std::string, std::string>> env;

  auto meta = d.proxy_config.find("proxyMetadata");
  if (meta != d.proxy_config.end() && meta->is_object()) {
    for (auto it = meta->begin(); it != meta->end(); ++it) {  // nlohmann objects iterate sorted
      if (IsFixedKey(it.key())) continue;
      env.emplace_back(it.key(), MetadataValue(it.value()));
    }
  }

  const std::string instance_ip = w.instance_ip.empty() ? w.address : w.instance_ip;
  const std::string trust_domain = TrustDomain(c, facts);

  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : w.labels) labels[k] = v;
  nlohmann::json istio_annotations = nlohmann::json::object();
  for (const auto& [k, v] : w.annotations) {
    if (StartsWith(k, "sidecar.istio.io/") || StartsWith(k, "proxy.istio.io/")) {
      istio_annotations[k] = v;
    }
  }

  env.emplace_back("JWT_POLICY",
                   FirstNonEmpty({JsonString(values, {"global", "jwtPolicy"}), "third-party-jwt"}));
  env.emplace_back("PROV_CERT", "/var/run/secrets/istio");
  env.emplace_back("OUTPUT_CERTS", "/var/run/secrets/istio");
  env.emplace_back("PILOT_CERT_PROVIDER",
                   FirstNonEmpty({JsonString(values, {"global", "pilotCertProvider"}), "istiod"}));
  env.emplace_back("CA_ADDR", d.ca_addr);
  env.emplace_back("CA_SNI", d.ca_sni);
  env.emplace_back("PILOT_SNI", d.pilot_sni);
  env.emplace_back("POD_NAME", w.name);
  env.emplace_back("POD_NAMESPACE", w.ns);
  env.emplace_back("IDENTITY_IP", w.address);
  env.emplace_back("INSTANCE_IP", instance_ip);
  env.emplace_back("SERVICE_ACCOUNT", ServiceAccountOf(w));
  env.emplace_back("HOST_IP", instance_ip);
  env.emplace_back("CANONICAL_SERVICE",
                   LabelOr(w, {"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"},
                           w.name));
  env.emplace_back("CANONICAL_REVISION", LabelOr(w,
                                                 {"service.istio.io/canonical-revision",
                                                  "app.kubernetes.io/version", "version"},
                                                 "latest"));
  env.emplace_back("PROXY_CONFIG", d.proxy_config.dump());
  env.emplace_back("ISTIO_META_CLUSTER_ID",
                   FirstNonEmpty({c.cluster_id,
                                  JsonString(values, {"global", "multiCluster", "clusterName"}),
                                  "Kubernetes"}));
  env.emplace_back("ISTIO_META_INTERCEPTION_MODE",
                   FirstNonEmpty({w.proxy.interception_mode, "NONE"}));
  env.emplace_back("ISTIO_META_NETWORK",
                   FirstNonEmpty({w.network, JsonString(values, {"global", "network"})}));
  env.emplace_back("ISTIO_METAJSON_LABELS", labels.dump());
  env.emplace_back("ISTIO_METAJSON_ISTIO_ANNOTATIONS", istio_annotations.dump());
  env.emplace_back("ISTIO_META_WORKLOAD_NAME", WorkloadName(w));
  env.emplace_back("ISTIO_META_OWNER", "kubernetes://apis/networking.istio.io/v1beta1/namespaces/" +
                                           w.ns + "/workloadentries/" + w.name);
  env.emplace_back("ISTIO_META_MESH_ID",
                   FirstNonEmpty({c.mesh_id, JsonString(values, {"global", "meshID"}), trust_domain}));
  return env;
}

std::string RenderSidecarEnv(const std::vector<std::pair<std::string, std::string>>& env) {
  std::string out;
  for (const auto& [key, value] : env) {
    out += key;
    out += '=';
    for (char ch : value) {
      switch (ch) {
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\0': out += "\\0"; break;
        default: out += ch;
      }
    }
    out += '\n';
  }
  return out;
}

std::vector<std::string> CheckSidecarEnv(const std::vector<std::pair<std::string, std::string>>& env) {
  std::vector<std::string> problems;
  std::set<std::string> seen;
  for (const auto& [key, value] : env) {
    if (!ValidEnvKey(key)) {
      problems.push_back("sidecar.env key \"" + key +
                         "\" is not a valid environment variable name (empty, starts with '#', or "
                         "contains '=' or whitespace): rename the proxyMetadata entry");
    }
    if (!seen.insert(key).second) {
      problems.push_back("sidecar.env key " + key + " appears twice: remove the duplicate");
    }
    if (value.find_first_of(std::string("\n\r\0", 3)) != std::string::npos) {
      problems.push_back("sidecar.env value of " + key +
                         " contains a line break or NUL, which docker --env-file cannot carry: "
                         "put it on one line");
    }
  }
  return problems;
}

std::string ProxyImage(const Workload& w, const MeshFacts& facts) {
  if (!w.proxy.image.empty()) return w.proxy.image;
  std::string hub = FirstNonEmpty(
      {w.proxy.image_hub, JsonString(facts.injector_values, {"global", "hub"}), "docker.io/istio"});
  while (hub.size() > 1 && hub.back() == '/') hub.pop_back();
  const std::string tag =
      FirstNonEmpty({w.proxy.tag, JsonString(facts.injector_values, {"global", "tag"}), "latest"});
  return hub + "/proxyv2:" + tag;
}

std::vector<std::string> DockerRunArgs(const Workload& w, const Cluster& c, const MeshFacts& facts) {
  const Derived d = Derive(w, c, facts);
  std::string dir = w.proxy.config_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();

  std::vector<std::string> args = {
      "run",
      "-d",
      "--name",
      w.proxy.container_name,
      "--restart",
      "unless-stopped",
      "--network",
      "host",
      "--label",
      "onboard.dev/workload=" + w.Key(),
      "-v",
      dir + "/istio-ca.pem:/var/run/secrets/istio/root-cert.pem",
      "-v",
      dir + "/istio-token:/var/run/secrets/tokens/istio-token",
      "-v",
      dir + "/k8s-ca.pem:/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
      "--env-file",
      dir + "/sidecar.env",
  };
  for (const std::string& host : d.add_hosts) {
    args.push_back("--add-host");
    args.push_back(host + ":" + d.gateway_ip);
  }
  args.push_back(ProxyImage(w, facts));
  args.insert(args.end(), {"proxy", "sidecar", "--serviceCluster", WorkloadName(w) + "." + w.ns,
                           "--concurrency", std::to_string(w.proxy.concurrency),
                           "--proxyLogLevel", FirstNonEmpty({w.proxy.log_level, "warning"})});
  if (!w.proxy.component_log_level.empty()) {
    args.push_back("--proxyComponentLogLevel");
    args.push_back(w.proxy.component_log_level);
  }
  args.push_back("--trust-domain");
  args.push_back(TrustDomain(c, facts));
  return args;
}

nlohmann::json WorkloadEntryObject(const Workload& w) {
  nlohmann::json metadata = {
      {"name", w.name},
      {"namespace", w.ns},
      {"labels", {{kManagedByLabel, kManagedByValue}}},
  };
  if (!w.annotations.empty()) {
    nlohmann::json annotations = nlohmann::json::object();
    for (const auto& [k, v] : w.annotations) annotations[k] = v;
    metadata["annotations"] = annotations;
  }
  nlohmann::json spec = {{"address", w.address}, {"serviceAccount", ServiceAccountOf(w)}};
  if (!w.labels.empty()) {
    nlohmann::json labels = nlohmann::json::object();
    for (const auto& [k, v] : w.labels) labels[k] = v;
    spec["labels"] = labels;
  }
  if (!w.network.empty()) spec["network"] = w.network;
  if (!w.ports.empty()) {
    nlohmann::json ports = nlohmann::json::object();
    for (const auto& [k, v] : w.ports) ports[k] = v;
    spec["ports"] = ports;
  }
  return {{"apiVersion", "networking.istio.io/v1beta1"},
          {"kind", "WorkloadEntry"},
          {"metadata", metadata},
          {"spec", spec}};
}

nlohmann::json SidecarObject(const Workload& w) {
  if (!w.sidecar.is_object() || w.sidecar.empty()) return nullptr;
  nlohmann::json spec = w.sidecar;
  // A Sidecar without a selector applies to the whole namespace: default it to this VM's labels.
  if (!w.labels.empty()) {
    auto sel = spec.find("workloadSelector");
    bool has_labels = sel != spec.end() && sel->is_object() && sel->contains("labels");
    if (!has_labels) {
      nlohmann::json labels = nlohmann::json::object();
      for (const auto& [k, v] : w.labels) labels[k] = v;
      if (sel == spec.end() || !sel->is_object()) spec["workloadSelector"] = nlohmann::json::object();
      spec["workloadSelector"]["labels"] = labels;
    }
  }
  return {{"apiVersion", "networking.istio.io/v1beta1"},
          {"kind", "Sidecar"},
          {"metadata",
           {{"name", w.sidecar_name.empty() ? w.name : w.sidecar_name},
            {"namespace", w.ns},
            {"labels", {{kManagedByLabel, kManagedByValue}}}}},
          {"spec", spec}};
}

}  // namespace onboard
