// Mesh facts read from the cluster (DESIGN §1.5): what the bootstrap files are generated from.
// The Kubernetes provider fills this in during refresh; the engine only reads it.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace onboard {

struct MeshFacts {
  // ConfigMap `istio` in the Istio namespace, key `mesh`, parsed from YAML to JSON.
  nlohmann::json mesh_config = nlohmann::json::object();
  // Injector values (ConfigMap `istio-sidecar-injector`, key `values`), parsed to JSON.
  nlohmann::json injector_values = nlohmann::json::object();
  // Namespace -> PEM of ConfigMap `istio-ca-root-cert` key `root-cert.pem`.
  std::map<std::string, std::string> root_certs;
  // PEM of the Kubernetes cluster CA (kubeconfig CA, else ConfigMap `kube-root-ca.crt`).
  std::string kube_ca;
  // The ControlPlane's spec.meshExpansion was already on before onboard touched it.
  bool mesh_expansion_on = false;
};

}  // namespace onboard
