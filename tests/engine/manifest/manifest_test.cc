// Manifest loader behaviour: examples, defaults merging, "~", tctl style, directories, digest,
// robustness. Error messages themselves are golden-tested in manifest_errors_test.cc.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/manifest.h"

namespace onboard {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kSrc = ONBOARD_SOURCE_DIR;
const LoadOptions kOpts{"/home/alice", "alice"};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string Dump(const LoadResult& r) {
  std::string out;
  for (const Diagnostic& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

const Workload* Find(const Model& m, const std::string& key) {
  for (const Workload& w : m.workloads) {
    if (w.Key() == key) return &w;
  }
  return nullptr;
}

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "manifest_test.XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    path_ = mkdtemp(buf.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

const char* kMinimal = R"(apiVersion: onboard.dev/v1alpha1
kind: Fleet
metadata: {name: demo}
spec:
  workloads:
    - name: vm1
      namespace: ns1
      address: 10.0.0.1
      labels: {app: a, version: v1}
)";

// Every field of a workload except where it was declared.
void ExpectSameWorkload(const Workload& a, const Workload& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.ns, b.ns);
  EXPECT_EQ(a.address, b.address);
  EXPECT_EQ(a.instance_ip, b.instance_ip);
  EXPECT_EQ(a.network, b.network);
  EXPECT_EQ(a.service_account, b.service_account);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.annotations, b.annotations);
  EXPECT_EQ(a.ports, b.ports);
  EXPECT_EQ(a.weight, b.weight);
  EXPECT_EQ(a.sidecar, b.sidecar) << a.sidecar.dump() << "\n" << b.sidecar.dump();
  EXPECT_EQ(a.sidecar_name, b.sidecar_name);
  EXPECT_EQ(a.hosts, b.hosts);
  EXPECT_EQ(a.ssh.host, b.ssh.host);
  EXPECT_EQ(a.ssh.port, b.ssh.port);
  EXPECT_EQ(a.ssh.user, b.ssh.user);
  EXPECT_EQ(a.ssh.identity_file, b.ssh.identity_file);
  EXPECT_EQ(a.ssh.known_hosts, b.ssh.known_hosts);
  EXPECT_EQ(a.proxy.config_dir, b.proxy.config_dir);
  EXPECT_EQ(a.proxy.image_hub, b.proxy.image_hub);
  EXPECT_EQ(a.proxy.tag, b.proxy.tag);
  EXPECT_EQ(a.proxy.image, b.proxy.image);
  EXPECT_EQ(a.proxy.container_name, b.proxy.container_name);
  EXPECT_EQ(a.proxy.log_level, b.proxy.log_level);
  EXPECT_EQ(a.proxy.component_log_level, b.proxy.component_log_level);
  EXPECT_EQ(a.proxy.interception_mode, b.proxy.interception_mode);
  EXPECT_EQ(a.proxy.concurrency, b.proxy.concurrency);
  EXPECT_EQ(a.proxy.proxy_config, b.proxy.proxy_config);
  EXPECT_EQ(a.token.duration_seconds, b.token.duration_seconds);
  EXPECT_EQ(a.token.renew_before_seconds, b.token.renew_before_seconds);
  EXPECT_EQ(a.token.audience, b.token.audience);
  EXPECT_EQ(a.vm.hosts_file, b.vm.hosts_file);
  EXPECT_EQ(a.vm.docker, b.vm.docker);
}

// ---------------------------------------------------------------------------------------------
// Examples

TEST(ManifestExamples, WholeExamplesDirectoryLoads) {
  LoadResult r = LoadManifests({kSrc + "/examples/"}, kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  const Model& m = *r.model;
  EXPECT_EQ(m.fleet_name, "bookinfo-vms");
  ASSERT_EQ(m.workloads.size(), 3u);
  EXPECT_EQ(m.workloads[0].Key(), "bookinfo/details-vm");
  EXPECT_EQ(m.workloads[1].Key(), "bookinfo/ratings-vm");
  EXPECT_EQ(m.workloads[2].Key(), "bookinfo/reviews-vm");
  // Subdirectories are not read: only the top-level file (the link to fleet/bookinfo.yaml).
  ASSERT_EQ(m.files.size(), 1u);
  EXPECT_EQ(fs::path(m.files[0]).filename(), "bookinfo.yaml");
  EXPECT_EQ(m.digest.size(), 64u);
}

TEST(ManifestExamples, FleetExample) {
  LoadResult r = LoadManifests({kSrc + "/examples/fleet"}, kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  const Model& m = *r.model;
  EXPECT_EQ(m.cluster.name, "prod");  // defaults to the context
  EXPECT_EQ(m.cluster.context, "prod");
  EXPECT_EQ(m.cluster.kubeconfig, "/home/alice/.kube/config");
  EXPECT_EQ(m.cluster.istio_namespace, "istio-system");
  ASSERT_TRUE(m.cluster.mesh_expansion.has_value());
  EXPECT_EQ(m.cluster.mesh_expansion->control_plane, "controlplane");
  EXPECT_EQ(m.cluster.mesh_expansion->ns, "istio-system");
  EXPECT_EQ(m.cluster.vm_gateway.address, "34.120.1.10");
  EXPECT_EQ(m.cluster.vm_gateway.ports, (std::vector<int>{15012, 15443, 9411, 11800}));
  EXPECT_EQ(m.backend.type, "local");
  EXPECT_EQ(m.backend.config, json::object());

  const Workload* ratings = Find(m, "bookinfo/ratings-vm");
  ASSERT_NE(ratings, nullptr);
  EXPECT_EQ(ratings->address, "35.194.38.142");
  EXPECT_EQ(ratings->instance_ip, "10.128.0.2");
  EXPECT_EQ(ratings->network, "vm-network");
  EXPECT_EQ(ratings->service_account, "bookinfo-ratings");
  EXPECT_EQ(ratings->labels, (std::map<std::string, std::string>{{"app", "ratings"}, {"class", "vm"}, {"version", "v3"}}));
  EXPECT_EQ(ratings->ports, (std::map<std::string, int>{{"http", 9080}}));
  EXPECT_EQ(ratings->sidecar_name, "bookinfo-ratings-no-iptables");
  EXPECT_EQ(ratings->sidecar["egress"][0]["bind"], "127.0.0.2");
  EXPECT_EQ(ratings->sidecar["ingress"][0]["defaultEndpoint"], "127.0.0.1:9080");
  EXPECT_EQ(ratings->hosts.at("127.0.0.2"), (std::vector<std::string>{"reviews.bookinfo.svc", "www.example.org"}));
  EXPECT_EQ(ratings->ssh.host, "35.194.38.142");
  EXPECT_EQ(ratings->ssh.user, "istio-proxy");
  EXPECT_EQ(ratings->ssh.identity_file, "/home/alice/.ssh/id_ed25519");
  EXPECT_EQ(ratings->proxy.image_hub, "docker.io/tetrate");
  EXPECT_EQ(ratings->proxy.tag, "1.8.6");
  EXPECT_EQ(ratings->source.line, 36);
  EXPECT_EQ(ratings->source.column, 7);

  const Workload* reviews = Find(m, "bookinfo/reviews-vm");
  ASSERT_NE(reviews, nullptr);
  EXPECT_EQ(reviews->ssh.host, "bastion-reviews.example.com");
  EXPECT_EQ(reviews->ssh.port, 2222);
  EXPECT_EQ(reviews->ssh.user, "istio-proxy");  // the rest of ssh still from defaults
  EXPECT_EQ(reviews->proxy.log_level, "info");
  EXPECT_EQ(reviews->proxy.proxy_config["proxyMetadata"]["ISTIO_META_DNS_CAPTURE"], "false");
  // The details Sidecar has no selector in the manifest: it selects the workload's labels.
  const Workload* details = Find(m, "bookinfo/details-vm");
  ASSERT_NE(details, nullptr);
  EXPECT_EQ(details->sidecar["workloadSelector"]["labels"],
            json({{"app", "details"}, {"class", "vm"}, {"version", "v1"}}));
  EXPECT_EQ(details->sidecar_name, "details-vm");
  EXPECT_TRUE(details->hosts.empty());
}

TEST(ManifestExamples, TctlRatingsEqualsFleetRatings) {
  LoadResult fleet = LoadManifests({kSrc + "/examples/fleet/bookinfo.yaml"}, kOpts);
  LoadResult tctl = LoadManifests({kSrc + "/examples/tctl"}, kOpts);
  ASSERT_TRUE(fleet.ok()) << Dump(fleet);
  ASSERT_TRUE(tctl.ok()) << Dump(tctl);
  ASSERT_EQ(tctl.model->workloads.size(), 1u);
  const Workload* a = Find(*fleet.model, "bookinfo/ratings-vm");
  const Workload& b = tctl.model->workloads[0];
  ASSERT_NE(a, nullptr);
  ExpectSameWorkload(*a, b);
  EXPECT_EQ(b.source.file, kSrc + "/examples/tctl/ratings.yaml");
  // And the two files agree on the cluster.
  EXPECT_EQ(fleet.model->cluster.name, tctl.model->cluster.name);
  EXPECT_EQ(fleet.model->cluster.kubeconfig, tctl.model->cluster.kubeconfig);
  EXPECT_EQ(fleet.model->cluster.vm_gateway.address, tctl.model->cluster.vm_gateway.address);
}

TEST(ManifestExamples, FleetAndTctlTogetherAreADuplicate) {
  LoadResult r = LoadManifests({kSrc + "/examples/fleet", kSrc + "/examples/tctl"}, kOpts);
  ASSERT_FALSE(r.ok());
  bool named_both = false;
  for (const Diagnostic& d : r.diagnostics) {
    if (d.message.find("declared twice") != std::string::npos &&
        d.message.find("examples/fleet/bookinfo.yaml:36:7") != std::string::npos &&
        d.where.file == kSrc + "/examples/tctl/ratings.yaml") {
      named_both = true;
    }
  }
  EXPECT_TRUE(named_both) << Dump(r);
}

TEST(ManifestExamples, EmbeddedSchemaMatchesFile) {
  // The schema is compiled in; a stale build (schema edited, library not rebuilt) fails here.
  EXPECT_EQ(FleetSchemaText(), ReadFile(kSrc + "/schemas/fleet.schema.json"));
  EXPECT_NO_THROW((void)json::parse(FleetSchemaText()));
}

// ---------------------------------------------------------------------------------------------
// Defaults and "~"

TEST(ManifestDefaults, DefaultsMergeUnderWorkloadsAndWorkloadWins) {
  const char* text = R"(apiVersion: onboard.dev/v1alpha1
kind: Fleet
metadata: {name: demo}
spec:
  defaults:
    ssh: {user: ops, port: 2200, identityFile: ~/.ssh/id_ops}
    proxy:
      configDir: /opt/istio
      imageHub: registry.example.com:5000/istio
      tag: 1.20.1
      logLevel: debug
      proxyConfig: {concurrency: 4, proxyMetadata: {A: "1", B: "2"}}
    token: {duration: 48h, renewBefore: 12h, audience: mesh}
    vm: {hostsFile: /etc/hosts.mesh, docker: /usr/bin/docker}
  workloads:
    - name: vm1
      namespace: ns1
      address: 10.0.0.1
      labels: {app: a, version: v1}
      ssh: {port: 22}
      proxy:
        tag: 1.21.0
        proxyConfig: {proxyMetadata: {B: "3"}}
      token: {renewBefore: 1h}
      vm: {docker: podman}
    - name: vm2
      namespace: ns1
      address: vm2.example.com
      labels: {app: b, version: v1}
      proxy: {concurrency: 1}
)";
  LoadResult r = LoadManifestText(text, "defaults.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  const Workload* w1 = Find(*r.model, "ns1/vm1");
  const Workload* w2 = Find(*r.model, "ns1/vm2");
  ASSERT_NE(w1, nullptr);
  ASSERT_NE(w2, nullptr);
  EXPECT_EQ(w1->ssh.user, "ops");
  EXPECT_EQ(w1->ssh.port, 22);  // workload wins
  EXPECT_EQ(w1->ssh.identity_file, "/home/alice/.ssh/id_ops");
  EXPECT_EQ(w1->ssh.host, "10.0.0.1");
  EXPECT_EQ(w1->proxy.config_dir, "/opt/istio");
  EXPECT_EQ(w1->proxy.image_hub, "registry.example.com:5000/istio");
  EXPECT_EQ(w1->proxy.tag, "1.21.0");
  EXPECT_EQ(w1->proxy.log_level, "debug");
  // proxyConfig objects merge, the workload's keys win.
  EXPECT_EQ(w1->proxy.proxy_config, json::parse(R"({"concurrency":4,"proxyMetadata":{"A":"1","B":"3"}})"));
  EXPECT_EQ(w1->proxy.concurrency, 4);  // from ProxyConfig.concurrency
  EXPECT_EQ(w1->token.duration_seconds, 48 * 3600);
  EXPECT_EQ(w1->token.renew_before_seconds, 3600);
  EXPECT_EQ(w1->token.audience, "mesh");
  EXPECT_EQ(w1->vm.hosts_file, "/etc/hosts.mesh");
  EXPECT_EQ(w1->vm.docker, "podman");

  EXPECT_EQ(w2->ssh.port, 2200);
  EXPECT_EQ(w2->ssh.host, "vm2.example.com");
  EXPECT_EQ(w2->proxy.tag, "1.20.1");
  EXPECT_EQ(w2->proxy.concurrency, 1);  // explicit concurrency beats ProxyConfig's
  EXPECT_EQ(w2->proxy.proxy_config["proxyMetadata"]["B"], "2");
  EXPECT_EQ(w2->token.renew_before_seconds, 12 * 3600);
  EXPECT_EQ(w2->vm.docker, "/usr/bin/docker");
}

TEST(ManifestDefaults, BuiltInDefaults) {
  LoadResult r = LoadManifestText(kMinimal, "min.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  const Model& m = *r.model;
  EXPECT_EQ(m.fleet_name, "demo");
  EXPECT_EQ(m.cluster.name, "default");
  EXPECT_EQ(m.cluster.istio_namespace, "istio-system");
  EXPECT_FALSE(m.cluster.mesh_expansion.has_value());
  EXPECT_EQ(m.backend.type, "local");
  ASSERT_EQ(m.workloads.size(), 1u);
  const Workload& w = m.workloads[0];
  EXPECT_EQ(w.ssh.host, "10.0.0.1");
  EXPECT_EQ(w.ssh.port, 22);
  EXPECT_EQ(w.ssh.user, "alice");
  EXPECT_EQ(w.ssh.identity_file, "");
  EXPECT_EQ(w.ssh.known_hosts, "/home/alice/.ssh/known_hosts");
  EXPECT_EQ(w.service_account, "default");
  EXPECT_EQ(w.sidecar_name, "vm1");
  EXPECT_EQ(w.sidecar, json::object());
  EXPECT_EQ(w.proxy.config_dir, "/etc/istio-proxy");
  EXPECT_EQ(w.proxy.container_name, "istio-proxy");
  EXPECT_EQ(w.proxy.concurrency, 2);
  EXPECT_EQ(w.token.duration_seconds, 24 * 3600);
  EXPECT_EQ(w.token.renew_before_seconds, 8 * 3600);
  EXPECT_EQ(w.vm.hosts_file, "/etc/hosts");
  EXPECT_EQ(w.vm.docker, "docker");
  EXPECT_EQ(w.source.ToString(), "min.yaml:6:7");
  EXPECT_EQ(m.files, std::vector<std::string>{"min.yaml"});
}

TEST(ManifestDefaults, ClusterNameAndMeshExpansionNamespace) {
  const char* text = R"(apiVersion: onboard.dev/v1alpha1
kind: Fleet
metadata: {name: demo}
spec:
  cluster:
    context: gke_proj_us-east1_prod
    istioNamespace: mesh-system
    meshExpansion: {}
    clusterID: c1
    meshID: mesh1
    trustDomain: cluster.local
  backend: {type: http, address: "http://127.0.0.1:8080/state", lock_address: "http://127.0.0.1:8080/lock"}
)";
  LoadResult r = LoadManifestText(text, "c.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->cluster.name, "gke_proj_us-east1_prod");
  ASSERT_TRUE(r.model->cluster.mesh_expansion.has_value());
  EXPECT_EQ(r.model->cluster.mesh_expansion->control_plane, "controlplane");
  EXPECT_EQ(r.model->cluster.mesh_expansion->ns, "mesh-system");
  EXPECT_EQ(r.model->cluster.cluster_id, "c1");
  EXPECT_EQ(r.model->cluster.mesh_id, "mesh1");
  EXPECT_EQ(r.model->cluster.trust_domain, "cluster.local");
  EXPECT_EQ(r.model->backend.type, "http");
  EXPECT_EQ(r.model->backend.config,
            json({{"address", "http://127.0.0.1:8080/state"}, {"lock_address", "http://127.0.0.1:8080/lock"}}));
  EXPECT_TRUE(r.model->workloads.empty());
}

TEST(ManifestDefaults, RelativeLocalPathsAreRelativeToTheManifest) {
  // A GitOps repository keeps known_hosts beside its Fleet: the path must not depend on where
  // onboard is started from.
  std::string text = std::string(kMinimal) + "      ssh: {identityFile: keys/id, knownHosts: known_hosts}\n";
  LoadResult r = LoadManifestText(text, "clusters/staging/fleet.yaml", LoadOptions{"/home/bob", "bob"});
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->workloads[0].ssh.identity_file, "clusters/staging/keys/id");
  EXPECT_EQ(r.model->workloads[0].ssh.known_hosts, "clusters/staging/known_hosts");
  r = LoadManifestText(text, "/repo/clusters/prod/fleet.yaml", LoadOptions{"/home/bob", "bob"});
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->workloads[0].ssh.known_hosts, "/repo/clusters/prod/known_hosts");
  // A file named without a directory: relative to the current directory, as before.
  r = LoadManifestText(text, "fleet.yaml", LoadOptions{"/home/bob", "bob"});
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->workloads[0].ssh.known_hosts, "known_hosts");
}

TEST(ManifestDefaults, TildeExpansion) {
  std::string text = std::string(kMinimal) +
                     "      ssh: {identityFile: ~/.ssh/id_ed25519, knownHosts: \"~\"}\n";
  LoadResult r = LoadManifestText(text, "t.yaml", LoadOptions{"/home/bob", "bob"});
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->workloads[0].ssh.identity_file, "/home/bob/.ssh/id_ed25519");
  EXPECT_EQ(r.model->workloads[0].ssh.known_hosts, "/home/bob");

  // Local paths may hold characters remote paths may not.
  text = std::string(kMinimal) + "      ssh: {identityFile: \"~/My Keys/id (work)\"}\n";
  r = LoadManifestText(text, "t.yaml", LoadOptions{"/home/bob", "bob"});
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->workloads[0].ssh.identity_file, "/home/bob/My Keys/id (work)");

  // "~user" is not expanded: an error that says so.
  text = std::string(kMinimal) + "      ssh: {identityFile: ~carol/.ssh/id}\n";
  r = LoadManifestText(text, "t.yaml", LoadOptions{"/home/bob", "bob"});
  ASSERT_EQ(r.diagnostics.size(), 1u) << Dump(r);
  EXPECT_EQ(r.diagnostics[0].field, "spec.workloads[0].ssh.identityFile");
  EXPECT_EQ(r.diagnostics[0].where.line, 10);

  // No home directory known: "~" cannot expand.
  text = std::string(kMinimal) + "      ssh: {identityFile: ~/.ssh/id}\n";
  r = LoadManifestText(text, "t.yaml", LoadOptions{"", "bob"});
  ASSERT_EQ(r.diagnostics.size(), 1u) << Dump(r);
  EXPECT_NE(r.diagnostics[0].message.find("home directory is unknown"), std::string::npos);
}

TEST(ManifestDefaults, NoLocalUserAndNoSshUserIsAnError) {
  LoadResult r = LoadManifestText(kMinimal, "u.yaml", LoadOptions{"/home/x", ""});
  ASSERT_EQ(r.diagnostics.size(), 1u) << Dump(r);
  EXPECT_EQ(r.diagnostics[0].field, "spec.workloads[0]");
  EXPECT_NE(r.diagnostics[0].message.find("ssh.user"), std::string::npos);
}

TEST(ManifestDefaults, YamlScalarTypesFollowTheCoreSchema) {
  // Quoted numbers are strings (labels), plain numbers are integers (ports), hex/octal ints too.
  std::string text = R"(apiVersion: onboard.dev/v1alpha1
kind: Fleet
metadata: {name: demo}
spec:
  workloads:
    - name: vm1
      namespace: ns1
      address: 10.0.0.1
      labels: {app: a, version: "1.0"}
      ports: {http: 0x2378, admin: 0o17}
)";
  LoadResult r = LoadManifestText(text, "s.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->workloads[0].labels.at("version"), "1.0");
  EXPECT_EQ(r.model->workloads[0].ports.at("http"), 9080);
  EXPECT_EQ(r.model->workloads[0].ports.at("admin"), 15);
}

// ---------------------------------------------------------------------------------------------
// tctl style

TEST(ManifestTctl, WorkloadEntryAloneUsesBuiltInDefaults) {
  const char* text = R"(apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata:
  name: vm1
  namespace: ns1
  annotations:
    sidecar-bootstrap.istio.io/ssh-port: "2222"
    sidecar-bootstrap.istio.io/proxy-container-name: mesh-proxy
    proxy.istio.io/config: |
      concurrency: 3
      proxyMetadata:
        ISTIO_META_DNS_CAPTURE: "true"
    sidecar.istio.io/proxyImage: docker.io/istio/proxyv2:1.20.1
    sidecar.istio.io/logLevel: debug
    sidecar.istio.io/componentLogLevel: misc:error
    sidecar.istio.io/interceptionMode: REDIRECT
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    example.com/team: payments
spec:
  address: 10.0.0.1
  labels: {app: a, version: v1}
  ports: {http: 8080}
  weight: 3
  serviceAccount: sa1
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns1}
spec: {ports: [{port: 8080}]}
)";
  LoadResult r = LoadManifestText(text, "we.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  const Model& m = *r.model;
  EXPECT_EQ(m.cluster.name, "default");
  EXPECT_EQ(m.fleet_name, "default");
  ASSERT_EQ(m.workloads.size(), 1u);
  const Workload& w = m.workloads[0];
  EXPECT_EQ(w.ssh.port, 2222);
  EXPECT_EQ(w.ssh.host, "10.0.0.1");
  EXPECT_EQ(w.ssh.user, "alice");
  EXPECT_EQ(w.proxy.config_dir, "/etc/istio-proxy");  // onboard's default, not tctl's /tmp/istio-proxy
  EXPECT_EQ(w.proxy.container_name, "mesh-proxy");
  EXPECT_EQ(w.proxy.image, "docker.io/istio/proxyv2:1.20.1");
  EXPECT_EQ(w.proxy.log_level, "debug");
  EXPECT_EQ(w.proxy.component_log_level, "misc:error");
  EXPECT_EQ(w.proxy.interception_mode, "REDIRECT");
  EXPECT_EQ(w.proxy.concurrency, 3);
  EXPECT_EQ(w.proxy.proxy_config["proxyMetadata"]["ISTIO_META_DNS_CAPTURE"], "true");
  EXPECT_EQ(w.annotations, (std::map<std::string, std::string>{{"example.com/team", "payments"}}));
  EXPECT_EQ(w.ports.at("http"), 8080);
  EXPECT_EQ(w.weight, "3");
  EXPECT_EQ(w.service_account, "sa1");
  EXPECT_EQ(w.sidecar, json::object());
  EXPECT_EQ(w.source.ToString(), "we.yaml:1:1");
}

TEST(ManifestTctl, OneSidecarMaySelectSeveralWorkloadEntries) {
  const char* text = R"(apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: vm1, namespace: ns1}
spec: {address: 10.0.0.1, labels: {app: a, version: v1}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: vm2, namespace: ns1}
spec: {address: 10.0.0.2, labels: {app: a, version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: vm3, namespace: ns2}
spec: {address: 10.0.0.3, labels: {app: a, version: v1}}
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: a-sidecar, namespace: ns1}
spec:
  workloadSelector: {labels: {app: a}}
  egress: [{bind: 127.0.0.2, hosts: ["./*"]}]
)";
  LoadResult r = LoadManifestText(text, "multi.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  const Model& m = *r.model;
  ASSERT_EQ(m.workloads.size(), 3u);
  for (const char* key : {"ns1/vm1", "ns1/vm2"}) {
    const Workload* w = Find(m, key);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->sidecar_name, "a-sidecar");
    EXPECT_EQ(w->sidecar["workloadSelector"]["labels"]["app"], "a");  // kept whole
    EXPECT_EQ(w->sidecar["egress"][0]["bind"], "127.0.0.2");
  }
  const Workload* other = Find(m, "ns2/vm3");  // another namespace: not selected
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->sidecar, json::object());
  EXPECT_EQ(other->sidecar_name, "vm3");
}

TEST(ManifestTctl, TwoSidecarsForOneWorkloadNameBoth) {
  const char* text = R"(apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: vm1, namespace: ns1}
spec: {address: 10.0.0.1, labels: {app: a, version: v1}}
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: first, namespace: ns1}
spec: {workloadSelector: {labels: {app: a}}}
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: second, namespace: ns1}
spec: {workloadSelector: {labels: {version: v1}}}
)";
  LoadResult r = LoadManifestText(text, "two.yaml", kOpts);
  ASSERT_EQ(r.diagnostics.size(), 1u) << Dump(r);
  EXPECT_EQ(r.diagnostics[0].where.line, 11);
  EXPECT_NE(r.diagnostics[0].message.find("Sidecar ns1/second"), std::string::npos);
  EXPECT_NE(r.diagnostics[0].message.find("two.yaml:6:1"), std::string::npos);
}

TEST(ManifestTctl, FleetDefaultsApplyToWorkloadEntries) {
  std::string text = R"(apiVersion: onboard.dev/v1alpha1
kind: Fleet
metadata: {name: demo}
spec:
  cluster: {context: prod}
  defaults:
    ssh: {user: istio-proxy}
    proxy: {imageHub: docker.io/tetrate, tag: 1.8.6}
    token: {duration: 2h, renewBefore: 30m}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm1
  namespace: ns1
  annotations: {sidecar-bootstrap.istio.io/ssh-user: admin}
spec: {address: 10.0.0.1, labels: {app: a, version: v1}}
)";
  LoadResult r = LoadManifestText(text, "mixed.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  const Workload& w = r.model->workloads[0];
  EXPECT_EQ(r.model->cluster.name, "prod");
  EXPECT_EQ(w.ssh.user, "admin");  // the annotation wins over the Fleet default
  EXPECT_EQ(w.proxy.image_hub, "docker.io/tetrate");
  EXPECT_EQ(w.proxy.tag, "1.8.6");
  EXPECT_EQ(w.token.duration_seconds, 7200);
  EXPECT_EQ(w.token.renew_before_seconds, 1800);
}

// ---------------------------------------------------------------------------------------------
// All errors at once

TEST(ManifestErrorsAtOnce, ThreeMistakesAllReportedWithLineAndColumn) {
  const char* text = R"(apiVersion: onboard.dev/v1alpha1
kind: Fleet
metadata: {name: demo}
spec:
  workloads:
    - name: vm1
      namespace: ns1
      address: not_an_address
      labels: {app: a, version: v1}
      ssh: {port: 0}
      colour: blue
)";
  LoadResult r = LoadManifestText(text, "three.yaml", kOpts);
  ASSERT_EQ(r.diagnostics.size(), 3u) << Dump(r);
  EXPECT_EQ(r.diagnostics[0].where.line, 8);
  EXPECT_EQ(r.diagnostics[0].where.column, 16);
  EXPECT_EQ(r.diagnostics[0].field, "spec.workloads[0].address");
  EXPECT_EQ(r.diagnostics[1].where.line, 10);
  EXPECT_EQ(r.diagnostics[1].where.column, 19);
  EXPECT_EQ(r.diagnostics[1].field, "spec.workloads[0].ssh.port");
  EXPECT_EQ(r.diagnostics[2].where.line, 11);
  EXPECT_EQ(r.diagnostics[2].where.column, 7);
  EXPECT_EQ(r.diagnostics[2].field, "spec.workloads[0].colour");
  EXPECT_EQ(r.diagnostics[2].ToString().rfind("three.yaml:11:7: spec.workloads[0].colour: unknown field", 0), 0u);
}

TEST(ManifestErrorsAtOnce, ErrorsInSeveralFilesAreAllReported) {
  LoadResult r = LoadManifestTexts({{"b.yaml", "apiVersion: onboard.dev/v1alpha1\nkind: Fleet\nmetadata: {name: demo}\n"
                                                "spec: {workloads: [{name: Bad, namespace: ns1, address: 10.0.0.1, "
                                                "labels: {app: a, version: v1}}]}\n"},
                                    {"a.yaml", "key: [unclosed\n"}},
                                   kOpts);
  ASSERT_EQ(r.diagnostics.size(), 2u) << Dump(r);
  EXPECT_EQ(r.diagnostics[0].where.file, "a.yaml");  // sorted by file
  EXPECT_EQ(r.diagnostics[1].where.file, "b.yaml");
  EXPECT_EQ(r.diagnostics[1].field, "spec.workloads[0].name");
}

TEST(ManifestErrorsAtOnce, DuplicateAcrossFilesNamesBothFiles) {
  LoadResult r = LoadManifestTexts({{"one.yaml", kMinimal}, {"two.yaml", kMinimal}}, kOpts);
  ASSERT_EQ(r.diagnostics.size(), 1u) << Dump(r);
  EXPECT_EQ(r.diagnostics[0].ToString(),
            "two.yaml:6:7: workload ns1/vm1 is declared twice: here and at one.yaml:6:7; names must be unique "
            "per namespace — rename or delete one");
}

TEST(ManifestErrorsAtOnce, SeveralFleetsWithTheSameClusterAreOneFleet) {
  std::string a = "apiVersion: onboard.dev/v1alpha1\nkind: Fleet\nmetadata: {name: demo}\n"
                  "spec: {cluster: {context: prod}, workloads: [{name: vm1, namespace: ns1, address: 10.0.0.1, "
                  "labels: {app: a, version: v1}}]}\n";
  std::string b = "apiVersion: onboard.dev/v1alpha1\nkind: Fleet\nmetadata: {name: demo-2}\n"
                  "spec: {cluster: {context: prod}, backend: {type: kubernetes, namespace: onboard},"
                  " defaults: {ssh: {port: 2222}},"
                  " workloads: [{name: vm2, namespace: ns1, address: 10.0.0.2, labels: {app: a, version: v1}}]}\n";
  LoadResult r = LoadManifestTexts({{"a.yaml", a}, {"b.yaml", b}}, kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->fleet_name, "demo");
  EXPECT_EQ(r.model->backend.type, "kubernetes");
  EXPECT_EQ(Find(*r.model, "ns1/vm1")->ssh.port, 22);    // each Fleet's defaults for its workloads
  EXPECT_EQ(Find(*r.model, "ns1/vm2")->ssh.port, 2222);
}

TEST(ManifestErrorsAtOnce, NothingToLoadIsAnError) {
  LoadResult r = LoadManifestText("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "cm.yaml", kOpts);
  ASSERT_EQ(r.diagnostics.size(), 1u) << Dump(r);
  EXPECT_NE(r.diagnostics[0].message.find("no Fleet, WorkloadEntry or Sidecar"), std::string::npos);
  // An explicit empty fleet is fine (it manages zero workloads).
  r = LoadManifestText("apiVersion: onboard.dev/v1alpha1\nkind: Fleet\nmetadata: {name: x}\nspec: {workloads: []}\n",
                       "empty.yaml", kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_TRUE(r.model->workloads.empty());
}

TEST(ManifestErrorsAtOnce, NeverThrowsOnHostileInput) {
  std::vector<std::string> inputs = {
      std::string(5000, '['),
      "a: &a [*a, *a]\n",
      "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
      "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
      std::string("\0\xff\xfe kind: Fleet", 15),
      "apiVersion: onboard.dev/v1alpha1\nkind: Fleet\nmetadata: {name: x}\nspec: {workloads: "
      "[{name: vm1, namespace: ns1, address: 10.0.0.1, labels: {app: a, version: v1}, "
      "ports: {http: 99999999999999999999999}}]}\n",
      "apiVersion: onboard.dev/v1alpha1\nkind: Fleet\nmetadata: {name: x}\nspec: {workloads: "
      "[{name: vm1, namespace: ns1, address: 10.0.0.1, labels: {app: a, version: v1}, "
      "proxy: {concurrency: -1}, weight: -5}]}\n",
      "? [complex, key]\n: value\n",
      "--- !!binary |\n  R0lGODlhDAAMAIQAAP\n",
      "\t- tab\n",
      "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: vm1, namespace: ns1, "
      "annotations: {proxy.istio.io/config: '&a [*a]'}}\nspec: {address: 10.0.0.1, labels: {app: a, version: v1}}\n",
  };
  for (const std::string& in : inputs) {
    LoadResult r;
    EXPECT_NO_THROW(r = LoadManifestText(in, "hostile.yaml", kOpts));
    EXPECT_FALSE(r.ok()) << in.substr(0, 60);
    EXPECT_FALSE(r.diagnostics.empty());
  }
}

// ---------------------------------------------------------------------------------------------
// Files, directories, digest

TEST(ManifestFiles, DirectoryLoadingIsSortedAndNotRecursive) {
  TempDir dir;
  std::string wl = "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: NAME, "
                   "namespace: ns1}\nspec: {address: 10.0.0.1, labels: {app: a, version: v1}}\n";
  auto named = [&](const std::string& n) {
    std::string s = wl;
    s.replace(s.find("NAME"), 4, n);
    return s;
  };
  WriteFile(dir / "b.yaml", named("vm-b"));
  WriteFile(dir / "a.yml", named("vm-a"));
  WriteFile(dir / "c.txt", named("vm-c"));
  WriteFile(dir / ".hidden.yaml", named("vm-hidden"));
  fs::create_directory(dir / "sub");
  WriteFile(dir / "sub/d.yaml", named("vm-d"));

  LoadResult r = LoadManifests({dir.path()}, kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->files, (std::vector<std::string>{dir / "a.yml", dir / "b.yaml"}));
  ASSERT_EQ(r.model->workloads.size(), 2u);
  EXPECT_EQ(r.model->workloads[0].name, "vm-a");
  EXPECT_EQ(r.model->workloads[1].name, "vm-b");

  // A file named directly and through its directory is read once; files and dirs mix.
  r = LoadManifests({dir / "b.yaml", dir.path(), dir / "sub"}, kOpts);
  ASSERT_TRUE(r.ok()) << Dump(r);
  EXPECT_EQ(r.model->files.size(), 3u);
  EXPECT_EQ(r.model->workloads.size(), 3u);
}

TEST(ManifestFiles, MissingPathsAndEmptyDirectoriesAreErrors) {
  TempDir dir;
  fs::create_directory(dir / "empty");
  LoadResult r = LoadManifests({dir / "nope.yaml", dir / "empty"}, kOpts);
  ASSERT_EQ(r.diagnostics.size(), 2u) << Dump(r);
  EXPECT_EQ(r.diagnostics[0].where.file, dir / "nope.yaml");
  EXPECT_NE(r.diagnostics[0].message.find("no such file"), std::string::npos);
  EXPECT_EQ(r.diagnostics[1].where.file, dir / "empty");
  EXPECT_NE(r.diagnostics[1].message.find("no *.yaml"), std::string::npos);
  EXPECT_FALSE(r.model.has_value());

  // A good file does not hide a bad path.
  WriteFile(dir / "ok.yaml", kMinimal);
  r = LoadManifests({dir / "ok.yaml", dir / "nope.yaml"}, kOpts);
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 1u) << Dump(r);
}

TEST(ManifestFiles, DigestChangesWhenAFileChanges) {
  TempDir dir;
  WriteFile(dir / "fleet.yaml", kMinimal);
  LoadResult first = LoadManifests({dir.path()}, kOpts);
  LoadResult again = LoadManifests({dir.path()}, kOpts);
  ASSERT_TRUE(first.ok()) << Dump(first);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(first.model->digest, again.model->digest);
  EXPECT_EQ(first.model->digest, ManifestDigest({{dir / "fleet.yaml", kMinimal}}));

  // A comment changes the bytes, so the digest (saved plans go stale), not the model.
  WriteFile(dir / "fleet.yaml", std::string(kMinimal) + "# reviewed\n");
  LoadResult changed = LoadManifests({dir.path()}, kOpts);
  ASSERT_TRUE(changed.ok()) << Dump(changed);
  EXPECT_NE(changed.model->digest, first.model->digest);

  // A new file changes it too.
  WriteFile(dir / "more.yaml", "apiVersion: v1\nkind: ConfigMap\n");
  LoadResult added = LoadManifests({dir.path()}, kOpts);
  ASSERT_TRUE(added.ok()) << Dump(added);
  EXPECT_NE(added.model->digest, changed.model->digest);
}

TEST(ManifestFiles, DigestFormatIsPathSizeAndBytes) {
  // sha256("a.yaml\0" "1\0" "x"), computed independently.
  EXPECT_EQ(ManifestDigest({{"a.yaml", "x"}}), "123b02ec5cf3a1332d7e99141e7239ce8add147a7cd8f77f5922a22299d67081");
  EXPECT_EQ(ManifestDigest({{"a.yaml", "x"}, {"b.yaml", ""}}),
            "013fe016ebc04feaf7696bd799116549e7a1ba81d330a69045d1bbfc5466425f");
}

TEST(ManifestDiagnostics, ToStringFormats) {
  Diagnostic d;
  d.where = SourceRef{"examples/fleet.yaml", 12, 7};
  d.field = "spec.workloads[0].address";
  d.message = "not an IP address";
  EXPECT_EQ(d.ToString(), "examples/fleet.yaml:12:7: spec.workloads[0].address: not an IP address");
  d.field.clear();
  d.where.column = 0;
  EXPECT_EQ(d.ToString(), "examples/fleet.yaml:12: not an IP address");
  d.where.line = 0;
  EXPECT_EQ(d.ToString(), "examples/fleet.yaml: not an IP address");
}

}  // namespace
}  // namespace onboard
