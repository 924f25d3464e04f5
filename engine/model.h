// The fleet model: what the manifests say, after defaults are merged.
// Both manifest styles (Fleet kind, tctl-style WorkloadEntry + Sidecar) load into this.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace onboard {

// Where a value came from, for error messages ("file:line:col").
struct SourceRef {
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based; 0 when unknown
  std::string ToString() const;  // "examples/fleet.yaml:12:7" (or just the file)
};

struct SshSettings {
  std::string host;          // default: the workload's address
  int port = 22;
  std::string user;          // default: the local user name
  std::string identity_file; // "~" already expanded; empty: agent / default keys
  std::string known_hosts;   // default: ~/.ssh/known_hosts, "~" expanded
};

struct ProxySettings {
  std::string config_dir = "/etc/istio-proxy";
  std::string image_hub;         // empty: mesh global.hub, else docker.io/istio
  std::string tag;               // empty: mesh global.tag
  std::string image;             // full image (sidecar.istio.io/proxyImage); overrides hub/tag
  std::string container_name = "istio-proxy";
  std::string log_level = "warning";        // sidecar.istio.io/logLevel
  std::string component_log_level;          // sidecar.istio.io/componentLogLevel
  std::string interception_mode = "NONE";   // sidecar.istio.io/interceptionMode
  int concurrency = 2;
  nlohmann::json proxy_config = nlohmann::json::object();  // proxy.istio.io/config (ProxyConfig)
};

struct TokenSettings {
  int64_t duration_seconds = 24 * 3600;
  int64_t renew_before_seconds = 8 * 3600;
  std::string audience = "istio-ca";
};

struct VmSettings {
  std::string hosts_file = "/etc/hosts";
  std::string docker = "docker";
};

struct Workload {
  std::string name;        // WorkloadEntry name (DNS-1123)
  std::string ns;          // namespace
  std::string address;     // WorkloadEntry.spec.address
  std::string instance_ip; // proxy-instance-ip; empty: address
  std::string network;     // WorkloadEntry.spec.network; empty: same network
  std::string service_account;  // default "default"
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;  // kept on the WorkloadEntry
  std::map<std::string, int> ports;
  std::string weight;      // unused by onboard; reserved
  // The Istio Sidecar spec (ingress/egress/...). Empty object: no Sidecar resource.
  nlohmann::json sidecar = nlohmann::json::object();
  std::string sidecar_name;  // default: the workload name
  // Egress names pointed at a local address in the VM's hosts file: ip -> names.
  std::map<std::string, std::vector<std::string>> hosts;
  SshSettings ssh;
  ProxySettings proxy;
  TokenSettings token;
  VmSettings vm;
  SourceRef source;  // the document that declared it

  std::string Key() const { return ns + "/" + name; }  // "<ns>/<name>"
};

struct VmGateway {
  std::string address;  // IP or DNS name; empty: no gateway (same network)
  std::vector<int> ports{15012, 15443, 9411, 11800};
};

struct MeshExpansion {
  std::string control_plane = "controlplane";
  std::string ns;  // default: the Istio namespace
};

struct Cluster {
  std::string name;        // address suffix of mesh_expansion.<name>; default context, else "default"
  std::string kubeconfig;  // empty: $KUBECONFIG, then ~/.kube/config
  std::string context;     // empty: current-context
  std::string istio_namespace = "istio-system";
  std::optional<MeshExpansion> mesh_expansion;  // absent: leave the ControlPlane alone
  VmGateway vm_gateway;
  // Overrides of mesh facts read from the cluster (empty: from the cluster).
  std::string cluster_id;
  std::string mesh_id;
  std::string trust_domain;
};

struct Backend {
  std::string type = "local";             // local | kubernetes | http
  nlohmann::json config = nlohmann::json::object();
};

struct Model {
  std::string fleet_name;
  Cluster cluster;
  Backend backend;
  std::vector<Workload> workloads;  // sorted by Key()
  std::vector<std::string> files;   // manifest files read, sorted
  std::string digest;               // sha256 over the files' bytes, for saved plans
};

}  // namespace onboard
