// Tests of the bootstrap generators (engine/bootstrap.h): golden sidecar.env and docker argv for
// the ratings VM of DESIGN §2 in each network shape, plus the precedence rules one by one.
#include "engine/bootstrap.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "golden_util.h"

namespace onboard {
namespace {

using ::onboard::testing::ExpectGolden;
using Env = std::vector<std::pair<std::string, std::string>>;

const std::vector<std::string> kFixedKeys = {
    "JWT_POLICY",          "PROV_CERT",          "OUTPUT_CERTS",
    "PILOT_CERT_PROVIDER", "CA_ADDR",            "CA_SNI",
    "PILOT_SNI",           "POD_NAME",           "POD_NAMESPACE",
    "IDENTITY_IP",         "INSTANCE_IP",        "SERVICE_ACCOUNT",
    "HOST_IP",             "CANONICAL_SERVICE",  "CANONICAL_REVISION",
    "PROXY_CONFIG",        "ISTIO_META_CLUSTER_ID", "ISTIO_META_INTERCEPTION_MODE",
    "ISTIO_META_NETWORK",  "ISTIO_METAJSON_LABELS", "ISTIO_METAJSON_ISTIO_ANNOTATIONS",
    "ISTIO_META_WORKLOAD_NAME", "ISTIO_META_OWNER", "ISTIO_META_MESH_ID",
};

// The ratings VM of DESIGN §2, defaults merged as the loader does.
Workload Ratings() {
  Workload w;
  w.name = "ratings-vm";
  w.ns = "bookinfo";
  w.address = "35.194.38.142";
  w.instance_ip = "10.128.0.2";
  w.network = "vm-network";
  w.service_account = "bookinfo-ratings";
  w.labels = {{"class", "vm"}, {"app", "ratings"}, {"version", "v3"}};
  w.ports = {{"http", 9080}};
  w.sidecar = nlohmann::json::parse(R"({
    "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                 "defaultEndpoint": "127.0.0.1:9080"}],
    "egress": [{"bind": "127.0.0.2", "hosts": ["./*"]}]})");
  w.hosts = {{"127.0.0.2", {"reviews.bookinfo.svc"}}};
  w.ssh.host = "35.194.38.142";
  w.ssh.user = "istio-proxy";
  w.proxy.config_dir = "/etc/istio-proxy";
  w.proxy.image_hub = "docker.io/tetrate";
  w.proxy.tag = "1.8.6";
  w.proxy.container_name = "istio-proxy";
  return w;
}

Cluster ProdCluster(const std::string& gateway) {
  Cluster c;
  c.name = "prod";
  c.istio_namespace = "istio-system";
  c.vm_gateway.address = gateway;
  return c;
}

// What a TSB 1.x cluster's `istio` and `istio-sidecar-injector` ConfigMaps say.
MeshFacts RealisticFacts() {
  MeshFacts f;
  f.mesh_config = nlohmann::json::parse(R"({
    "trustDomain": "cluster.local",
    "enableTracing": true,
    "defaultConfig": {
      "discoveryAddress": "istiod.istio-system.svc:15012",
      "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "DNS_AGENT": ""},
      "tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}, "sampling": 1.0},
      "envoyAccessLogService": {"address": "oap.istio-system.svc.cluster.local:11800"}
    }
  })");
  f.injector_values = nlohmann::json::parse(R"({
    "global": {
      "hub": "containers.dl.tetrate.io",
      "tag": "1.8.6-tetrate-v0",
      "jwtPolicy": "third-party-jwt",
      "pilotCertProvider": "istiod",
      "meshID": "tsb-mesh",
      "network": "cluster-network",
      "multiCluster": {"clusterName": "prod-gke-us-east1"}
    }
  })");
  return f;
}

std::string Get(const Env& env, const std::string& key) {
  for (const auto& [k, v] : env) {
    if (k == key) return v;
  }
  ADD_FAILURE() << "sidecar.env has no " << key;
  return "";
}

std::vector<std::string> Keys(const Env& env) {
  std::vector<std::string> keys;
  for (const auto& kv : env) keys.push_back(kv.first);
  return keys;
}

std::string Lines(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) out += a + "\n";
  return out;
}

// Parses a rendered file back the way docker --env-file does (split at the first '=').
Env ParseEnvFile(const std::string& text) {
  Env env;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    auto eq = line.find('=');
    env.emplace_back(line.substr(0, eq), eq == std::string::npos ? "" : line.substr(eq + 1));
  }
  return env;
}

// ---- goldens ---------------------------------------------------------------------------------

TEST(SidecarEnvGolden, RatingsVmBehindIpGateway) {
  const Env env = SidecarEnv(Ratings(), ProdCluster("34.120.1.10"), RealisticFacts());
  ExpectGolden("ratings-ip-gateway.sidecar.env", RenderSidecarEnv(env));
  // An IP gateway leaves the addresses alone (docker run maps the names instead).
  EXPECT_EQ(Get(env, "CA_ADDR"), "istiod.istio-system.svc:15012");
}

TEST(SidecarEnvGolden, DnsGatewayRewritesClusterLocalAddresses) {
  const Env env = SidecarEnv(Ratings(), ProdCluster("vmgw.prod.example.com"), RealisticFacts());
  ExpectGolden("ratings-dns-gateway.sidecar.env", RenderSidecarEnv(env));
  EXPECT_EQ(Get(env, "CA_ADDR"), "vmgw.prod.example.com:15012");
  EXPECT_EQ(Get(env, "CA_SNI"), "istiod.istio-system.svc");
  EXPECT_EQ(Get(env, "PILOT_SNI"), "istiod.istio-system.svc");
  auto pc = nlohmann::json::parse(Get(env, "PROXY_CONFIG"));
  EXPECT_EQ(pc["discoveryAddress"], "vmgw.prod.example.com:15012");
  EXPECT_EQ(pc["tracing"]["zipkin"]["address"], "vmgw.prod.example.com:9411");
  EXPECT_EQ(pc["envoyAccessLogService"]["address"], "vmgw.prod.example.com:11800");
  EXPECT_EQ(pc["tracing"]["sampling"], 1.0);  // other fields untouched
}

TEST(SidecarEnvGolden, SameNetworkWithoutGateway) {
  Workload w = Ratings();
  w.network.clear();
  w.instance_ip.clear();
  w.address = "10.128.0.2";
  const Env env = SidecarEnv(w, ProdCluster(""), RealisticFacts());
  ExpectGolden("ratings-same-network.sidecar.env", RenderSidecarEnv(env));
  EXPECT_EQ(Get(env, "CA_ADDR"), "istiod.istio-system.svc:15012");
  EXPECT_EQ(Get(env, "INSTANCE_IP"), "10.128.0.2");
  EXPECT_EQ(Get(env, "ISTIO_META_NETWORK"), "cluster-network");  // the cluster's own network
}

TEST(SidecarEnvGolden, CanonicalNameLabelPrecedence) {
  Workload w = Ratings();
  w.labels["service.istio.io/canonical-name"] = "ratings-canonical";
  w.labels["app.kubernetes.io/name"] = "ratings-k8s";
  w.labels["service.istio.io/canonical-revision"] = "v3-canary";
  w.labels["app.kubernetes.io/version"] = "3.0.1";
  const Env env = SidecarEnv(w, ProdCluster("34.120.1.10"), RealisticFacts());
  ExpectGolden("ratings-canonical-labels.sidecar.env", RenderSidecarEnv(env));
  EXPECT_EQ(Get(env, "CANONICAL_SERVICE"), "ratings-canonical");
  EXPECT_EQ(Get(env, "CANONICAL_REVISION"), "v3-canary");
}

TEST(DockerRunGolden, IpGatewayAddsHostEntries) {
  const auto args = DockerRunArgs(Ratings(), ProdCluster("34.120.1.10"), RealisticFacts());
  ExpectGolden("ratings-ip-gateway.docker-run.args", Lines(args));
  std::vector<std::string> add_hosts;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--add-host") add_hosts.push_back(args[i + 1]);
  }
  EXPECT_THAT(add_hosts, ::testing::ElementsAre("istiod.istio-system.svc:34.120.1.10",
                                                "oap.istio-system.svc.cluster.local:34.120.1.10",
                                                "zipkin.istio-system:34.120.1.10"));
}

TEST(DockerRunGolden, LogLevelsFromAnnotations) {
  Workload w = Ratings();
  // The loader maps sidecar.istio.io/logLevel and componentLogLevel onto these fields.
  w.annotations = {{"sidecar.istio.io/logLevel", "debug"},
                   {"sidecar.istio.io/componentLogLevel", "misc:error,upstream:debug"},
                   {"sidecar-bootstrap.istio.io/ssh-user", "istio-proxy"}};
  w.proxy.log_level = "debug";
  w.proxy.component_log_level = "misc:error,upstream:debug";
  w.proxy.concurrency = 4;
  const auto args = DockerRunArgs(w, ProdCluster("vmgw.prod.example.com"), RealisticFacts());
  ExpectGolden("ratings-log-levels.docker-run.args", Lines(args));
  EXPECT_EQ(std::count(args.begin(), args.end(), "--add-host"), 0);  // DNS gateway: rewritten
  const Env env = SidecarEnv(w, ProdCluster("vmgw.prod.example.com"), RealisticFacts());
  EXPECT_EQ(Get(env, "ISTIO_METAJSON_ISTIO_ANNOTATIONS"),
            R"({"sidecar.istio.io/componentLogLevel":"misc:error,upstream:debug",)"
            R"("sidecar.istio.io/logLevel":"debug"})");
}

TEST(ObjectGolden, WorkloadEntryAndSidecar) {
  Workload w = Ratings();
  w.annotations = {{"sidecar-bootstrap.istio.io/proxy-instance-ip", "10.128.0.2"}};
  ExpectGolden("ratings.workloadentry.json", WorkloadEntryObject(w).dump(2) + "\n");
  ExpectGolden("ratings.sidecar.json", SidecarObject(w).dump(2) + "\n");
}

// ---- structure -------------------------------------------------------------------------------

TEST(SidecarEnv, EveryKeyPresentInTctlOrder) {
  for (const std::string& gw : {std::string(""), std::string("34.120.1.10"),
                                std::string("vmgw.prod.example.com")}) {
    const Env env = SidecarEnv(Ratings(), ProdCluster(gw), RealisticFacts());
    std::vector<std::string> expected = {"DNS_AGENT", "ISTIO_META_DNS_CAPTURE"};
    expected.insert(expected.end(), kFixedKeys.begin(), kFixedKeys.end());
    EXPECT_EQ(Keys(env), expected) << "gateway " << gw;
  }
  // Without proxyMetadata, the file starts with JWT_POLICY as in the guide's dry run.
  const Env bare = SidecarEnv(Ratings(), ProdCluster(""), MeshFacts{});
  EXPECT_EQ(Keys(bare), kFixedKeys);
}

TEST(SidecarEnv, ProxyMetadataMergedSortedAndNeverDuplicatesAKey) {
  Workload w = Ratings();
  w.proxy.proxy_config = nlohmann::json::parse(R"({
    "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "false", "AAA_FIRST": "1",
                      "ISTIO_META_CLUSTER_ID": "from-metadata", "BOOL_VALUE": true},
    "concurrency": 3})");
  const Env env = SidecarEnv(w, ProdCluster(""), RealisticFacts());
  const auto keys = Keys(env);
  EXPECT_THAT(std::vector<std::string>(keys.begin(), keys.begin() + 4),
              ::testing::ElementsAre("AAA_FIRST", "BOOL_VALUE", "DNS_AGENT",
                                     "ISTIO_META_DNS_CAPTURE"));
  EXPECT_EQ(Get(env, "ISTIO_META_DNS_CAPTURE"), "false");  // the workload wins over the mesh
  EXPECT_EQ(Get(env, "BOOL_VALUE"), "true");
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  EXPECT_EQ(Get(env, "ISTIO_META_CLUSTER_ID"), "prod-gke-us-east1");  // generated value wins
  auto pc = nlohmann::json::parse(Get(env, "PROXY_CONFIG"));
  EXPECT_EQ(pc["concurrency"], 3);
  EXPECT_EQ(pc["proxyMetadata"]["DNS_AGENT"], "");  // merged, not replaced
  EXPECT_EQ(pc["discoveryAddress"], "istiod.istio-system.svc:15012");
}

TEST(SidecarEnv, RenderedLinesAreUnquotedAndRoundTrip) {
  for (const std::string& gw : {std::string(""), std::string("34.120.1.10"),
                                std::string("vmgw.prod.example.com")}) {
    const Env env = SidecarEnv(Ratings(), ProdCluster(gw), RealisticFacts());
    EXPECT_TRUE(CheckSidecarEnv(env).empty());
    const std::string text = RenderSidecarEnv(env);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    const Env parsed = ParseEnvFile(text);
    EXPECT_EQ(parsed, env);
    for (const auto& [k, v] : parsed) {
      // docker --env-file keeps quotes literally: no value may be wrapped in them.
      if (!v.empty()) {
        EXPECT_NE(v.front(), '\'') << k;
        EXPECT_FALSE(v.front() == '"' && v.back() == '"') << k << "=" << v;
      }
      if (k == "PROXY_CONFIG" || k.rfind("ISTIO_METAJSON_", 0) == 0) {
        EXPECT_TRUE(nlohmann::json::accept(v)) << k << "=" << v;
      }
    }
  }
}

TEST(SidecarEnv, LineBreaksAreEscapedAndReported) {
  Env env = {{"GOOD", "a b"}, {"BAD", "line1\nline2\r"}, {"A=B", "x"}, {"GOOD", "again"}};
  EXPECT_EQ(RenderSidecarEnv(env), "GOOD=a b\nBAD=line1\\nline2\\r\nA=B=x\nGOOD=again\n");
  const auto problems = CheckSidecarEnv(env);
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_THAT(problems[0], ::testing::HasSubstr("value of BAD contains a line break"));
  EXPECT_THAT(problems[1], ::testing::HasSubstr("\"A=B\" is not a valid"));
  EXPECT_THAT(problems[2], ::testing::HasSubstr("GOOD appears twice"));
}

TEST(SidecarEnv, DefaultsWithoutMeshFacts) {
  Workload w = Ratings();
  w.service_account.clear();
  w.labels = {{"class", "vm"}};
  w.proxy.interception_mode.clear();
  const Env env = SidecarEnv(w, ProdCluster(""), MeshFacts{});
  EXPECT_EQ(Get(env, "JWT_POLICY"), "third-party-jwt");
  EXPECT_EQ(Get(env, "PILOT_CERT_PROVIDER"), "istiod");
  EXPECT_EQ(Get(env, "CA_ADDR"), "istiod.istio-system.svc:15012");
  EXPECT_EQ(Get(env, "SERVICE_ACCOUNT"), "default");
  EXPECT_EQ(Get(env, "ISTIO_META_WORKLOAD_NAME"), "default");  // no app label: service account
  EXPECT_EQ(Get(env, "CANONICAL_SERVICE"), "ratings-vm");      // no label: the entry's name
  EXPECT_EQ(Get(env, "CANONICAL_REVISION"), "latest");
  EXPECT_EQ(Get(env, "ISTIO_META_CLUSTER_ID"), "Kubernetes");
  EXPECT_EQ(Get(env, "ISTIO_META_INTERCEPTION_MODE"), "NONE");
  EXPECT_EQ(Get(env, "ISTIO_META_NETWORK"), "vm-network");
  EXPECT_EQ(Get(env, "ISTIO_META_MESH_ID"), "cluster.local");  // the trust domain
  EXPECT_EQ(Get(env, "ISTIO_METAJSON_ISTIO_ANNOTATIONS"), "{}");
  EXPECT_EQ(Get(env, "PROXY_CONFIG"), R"({"discoveryAddress":"istiod.istio-system.svc:15012"})");
  EXPECT_EQ(Get(env, "ISTIO_META_OWNER"),
            "kubernetes://apis/networking.istio.io/v1beta1/namespaces/bookinfo/workloadentries/"
            "ratings-vm");
  const auto args = DockerRunArgs(w, ProdCluster(""), MeshFacts{});
  EXPECT_EQ(args[args.size() - 1], "cluster.local");
  EXPECT_NE(std::find(args.begin(), args.end(), "default.bookinfo"), args.end());
}

TEST(SidecarEnv, ClusterOverridesBeatMeshFacts) {
  Cluster c = ProdCluster("");
  c.cluster_id = "east";
  c.mesh_id = "global-mesh";
  c.trust_domain = "example.org";
  MeshFacts f = RealisticFacts();
  f.mesh_config["trustDomain"] = "mesh.example.com";
  const Env env = SidecarEnv(Ratings(), c, f);
  EXPECT_EQ(Get(env, "ISTIO_META_CLUSTER_ID"), "east");
  EXPECT_EQ(Get(env, "ISTIO_META_MESH_ID"), "global-mesh");
  const auto args = DockerRunArgs(Ratings(), c, f);
  EXPECT_EQ(args.back(), "example.org");
  c.trust_domain.clear();
  EXPECT_EQ(DockerRunArgs(Ratings(), c, f).back(), "mesh.example.com");
  c.mesh_id.clear();
  f.injector_values["global"].erase("meshID");
  EXPECT_EQ(Get(SidecarEnv(Ratings(), c, f), "ISTIO_META_MESH_ID"), "mesh.example.com");
}

TEST(SidecarEnv, CaAddressAndSniForms) {
  MeshFacts f = RealisticFacts();
  f.injector_values["global"]["caAddress"] = "cert-manager-istio-csr.cert-manager.svc.cluster.local:443";
  f.mesh_config["defaultConfig"]["discoveryAddress"] = "istiod-1-8.istio-system:15012";
  Env env = SidecarEnv(Ratings(), ProdCluster("vmgw.prod.example.com"), f);
  EXPECT_EQ(Get(env, "CA_ADDR"), "vmgw.prod.example.com:443");
  EXPECT_EQ(Get(env, "CA_SNI"), "cert-manager-istio-csr.cert-manager.svc");
  EXPECT_EQ(Get(env, "PILOT_SNI"), "istiod-1-8.istio-system.svc");
  EXPECT_EQ(nlohmann::json::parse(Get(env, "PROXY_CONFIG"))["discoveryAddress"],
            "vmgw.prod.example.com:15012");
  // An external CA is reached directly, whatever the gateway.
  f.injector_values["global"]["caAddress"] = "ca.corp.example.com:9443";
  env = SidecarEnv(Ratings(), ProdCluster("vmgw.prod.example.com"), f);
  EXPECT_EQ(Get(env, "CA_ADDR"), "ca.corp.example.com:9443");
  EXPECT_EQ(Get(env, "CA_SNI"), "ca.corp.example.com");
}

TEST(SidecarEnv, GatewayIgnoredForSameNetworkWorkload) {
  Workload w = Ratings();
  w.network.clear();
  for (const std::string& gw : {std::string("34.120.1.10"), std::string("vmgw.prod.example.com")}) {
    const Env env = SidecarEnv(w, ProdCluster(gw), RealisticFacts());
    EXPECT_EQ(Get(env, "CA_ADDR"), "istiod.istio-system.svc:15012") << gw;
    const auto args = DockerRunArgs(w, ProdCluster(gw), RealisticFacts());
    EXPECT_EQ(std::count(args.begin(), args.end(), "--add-host"), 0) << gw;
  }
}

TEST(DockerRunArgs, Ipv6GatewayAndConfigDir) {
  Workload w = Ratings();
  w.proxy.config_dir = "/opt/istio/";
  w.proxy.container_name = "mesh-proxy";
  const auto args = DockerRunArgs(w, ProdCluster("2001:db8::10"), RealisticFacts());
  EXPECT_NE(std::find(args.begin(), args.end(), "istiod.istio-system.svc:2001:db8::10"), args.end());
  EXPECT_NE(std::find(args.begin(), args.end(), "/opt/istio/sidecar.env"), args.end());
  EXPECT_EQ(args[3], "mesh-proxy");
  EXPECT_NE(std::find(args.begin(), args.end(), "onboard.dev/workload=bookinfo/ratings-vm"),
            args.end());
  for (const auto& a : args) EXPECT_EQ(a.find("config-hash"), std::string::npos);
}

TEST(ProxyImage, Precedence) {
  Workload w = Ratings();
  MeshFacts f = RealisticFacts();
  EXPECT_EQ(ProxyImage(w, f), "docker.io/tetrate/proxyv2:1.8.6");
  w.proxy.image = "registry.local/custom-proxy@sha256:abc";
  EXPECT_EQ(ProxyImage(w, f), "registry.local/custom-proxy@sha256:abc");
  w.proxy.image.clear();
  w.proxy.image_hub.clear();
  EXPECT_EQ(ProxyImage(w, f), "containers.dl.tetrate.io/proxyv2:1.8.6");
  w.proxy.tag.clear();
  EXPECT_EQ(ProxyImage(w, f), "containers.dl.tetrate.io/proxyv2:1.8.6-tetrate-v0");
  w.proxy.image_hub = "docker.io/tetrate/";
  EXPECT_EQ(ProxyImage(w, f), "docker.io/tetrate/proxyv2:1.8.6-tetrate-v0");
  w.proxy.image_hub.clear();
  EXPECT_EQ(ProxyImage(w, MeshFacts{}), "docker.io/istio/proxyv2:latest");
  // The image reaches docker run right before the proxy's own arguments.
  w = Ratings();
  const auto args = DockerRunArgs(w, ProdCluster(""), f);
  auto it = std::find(args.begin(), args.end(), "docker.io/tetrate/proxyv2:1.8.6");
  ASSERT_NE(it, args.end());
  EXPECT_EQ(*(it + 1), "proxy");
  EXPECT_EQ(*(it + 2), "sidecar");
}

TEST(Objects, WorkloadEntryOmitsEmptyFields) {
  Workload w;
  w.name = "db";
  w.ns = "prod";
  w.address = "10.0.0.5";
  const auto we = WorkloadEntryObject(w);
  EXPECT_EQ(we["metadata"]["labels"][kManagedByLabel], kManagedByValue);
  EXPECT_FALSE(we["metadata"].contains("annotations"));
  EXPECT_FALSE(we["spec"].contains("network"));
  EXPECT_FALSE(we["spec"].contains("ports"));
  EXPECT_FALSE(we["spec"].contains("labels"));
  EXPECT_EQ(we["spec"]["serviceAccount"], "default");
  EXPECT_EQ(we["spec"]["address"], "10.0.0.5");
}

TEST(Objects, SidecarSelectorDefaultsAndName) {
  Workload w = Ratings();
  w.sidecar = nlohmann::json::object();
  EXPECT_TRUE(SidecarObject(w).is_null());

  w = Ratings();
  w.sidecar_name = "bookinfo-ratings-no-iptables";
  w.sidecar["workloadSelector"] = {{"labels", {{"app", "ratings"}}}};
  auto sc = SidecarObject(w);
  EXPECT_EQ(sc["metadata"]["name"], "bookinfo-ratings-no-iptables");
  EXPECT_EQ(sc["spec"]["workloadSelector"]["labels"], nlohmann::json({{"app", "ratings"}}));

  w.sidecar["workloadSelector"] = nlohmann::json::object();
  sc = SidecarObject(w);
  EXPECT_EQ(sc["spec"]["workloadSelector"]["labels"],
            nlohmann::json({{"app", "ratings"}, {"class", "vm"}, {"version", "v3"}}));
  EXPECT_EQ(sc["spec"]["ingress"][0]["defaultEndpoint"], "127.0.0.1:9080");
}

}  // namespace
}  // namespace onboard
