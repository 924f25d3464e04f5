// The realistic cluster content the test API server starts with (unless --no-seed).
#include <httplib.h>

#include "tests/sandbox/apiserver/server.h"
#include "tests/sandbox/apiserver/tls.h"

namespace onboard::sandbox {
namespace {

using nlohmann::json;

constexpr const char* kMeshConfig =
    "defaultConfig:\n"
    "  discoveryAddress: istiod.istio-system.svc:15012\n"
    "  proxyMetadata:\n"
    "    ISTIO_META_DNS_CAPTURE: \"true\"\n"
    "  tracing:\n"
    "    zipkin:\n"
    "      address: zipkin.istio-system:9411\n"
    "enablePrometheusMerge: true\n"
    "rootNamespace: istio-system\n"
    "trustDomain: cluster.local\n";

json InjectorValues() {
  return {{"global",
           {{"hub", "docker.io/tetrate"},
            {"tag", "1.8.6"},
            {"imagePullPolicy", ""},
            {"istioNamespace", "istio-system"},
            {"jwtPolicy", "third-party-jwt"},
            {"pilotCertProvider", "istiod"},
            {"network", ""},
            {"meshID", "mesh1"},
            {"caAddress", ""},
            {"multiCluster", {{"enabled", false}, {"clusterName", "Kubernetes"}}},
            {"proxy",
             {{"image", "proxyv2"},
              {"clusterDomain", "cluster.local"},
              {"logLevel", "warning"},
              {"statusPort", 15020}}}}},
          {"revision", ""},
          {"sidecarInjectorWebhook", {{"enableNamespacesByDefault", false}}}};
}

}  // namespace

void ApiServer::Seed() {
  httplib::Request req;
  req.params.emplace("fieldManager", "onboard-test-apiserver-seed");
  const ResourceType& ns_type = *FindType("", "v1", "namespaces");
  const ResourceType& cm = *FindType("", "v1", "configmaps");
  const ResourceType& sa = *FindType("", "v1", "serviceaccounts");
  const ResourceType& cp = *FindType("install.tetrate.io", "v1alpha1", "controlplanes");
  auto create = [&](const ResourceType& t, const std::string& ns, json obj) {
    HttpResult r = Create(req, t, ns, std::move(obj));
    if (r.code != 201) {
      std::fprintf(stderr, "onboard-test-apiserver: seeding %s failed: %s\n", t.resource.c_str(),
                   r.body.dump().c_str());
    }
  };
  for (const char* name : {"default", "kube-system", "istio-system", "bookinfo"}) {
    json labels = json::object();
    if (std::string(name) == "bookinfo") labels["istio-injection"] = "enabled";
    create(ns_type, "", {{"metadata", {{"name", name}, {"labels", labels}}}});
  }
  create(cm, "istio-system",
         {{"metadata", {{"name", "istio"}, {"labels", {{"app", "istiod"}, {"istio.io/rev", "default"}}}}},
          {"data", {{"mesh", kMeshConfig}, {"meshNetworks", "networks: {}\n"}}}});
  create(cm, "istio-system",
         {{"metadata",
           {{"name", "istio-sidecar-injector"}, {"labels", {{"app", "sidecar-injector"}, {"istio.io/rev", "default"}}}}},
          {"data",
           {{"values", InjectorValues().dump(2)},
            {"config", "policy: enabled\nalwaysInjectSelector: []\nneverInjectSelector: []\ninjectedAnnotations: {}\n"}}}});
  create(cp, "istio-system",
         {{"metadata", {{"name", "controlplane"}}},
          {"spec",
           {{"hub", "docker.io/tetrate"},
            {"managementPlane",
             {{"host", "tsb.example.com"}, {"port", 8443}, {"clusterName", "demo"}, {"selfSigned", true}}},
            {"telemetryStore", {{"elastic", {{"host", "tsb.example.com"}, {"port", 8443}, {"version", 7}}}}},
            {"components", {{"istio", {{"kubeSpec", {{"deployment", {{"replicaCount", 1}}}}}}}}}}}});

  KeyAndCert istio_ca;
  std::string error;
  std::string istio_root = "";
  if (GenerateCa("Root CA cluster.local", &istio_ca, &error)) {
    istio_root = istio_ca.cert_pem;
  } else {
    std::fprintf(stderr, "onboard-test-apiserver: cannot generate the Istio root CA: %s\n", error.c_str());
  }
  for (const char* ns : {"istio-system", "bookinfo", "default"}) {
    create(cm, ns,
           {{"metadata", {{"name", "istio-ca-root-cert"}, {"labels", {{"istio.io/config", "true"}}}}},
            {"data", {{"root-cert.pem", istio_root}}}});
    create(cm, ns,
           {{"metadata",
             {{"name", "kube-root-ca.crt"},
              {"annotations", {{"kubernetes.io/description",
                                "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}}}}},
            {"data", {{"ca.crt", ca_pem_}}}});
    create(sa, ns, {{"metadata", {{"name", "default"}}}});
  }
  for (const char* ns : {"bookinfo", "default"}) {
    for (const char* name : {"bookinfo-ratings", "bookinfo-details", "bookinfo-reviews"}) {
      create(sa, ns, {{"metadata", {{"name", name}, {"labels", {{"account", std::string(name).substr(9)}}}}}});
    }
  }
}

}  // namespace onboard::sandbox
