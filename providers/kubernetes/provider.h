// The Kubernetes provider: mesh_expansion, workload_entry, sidecar and token resources, and the
// mesh facts (DESIGN §1, §3, §4). Objects are written by server-side apply (fieldManager=onboard)
// after a GET shows they differ; deletes carry a uid precondition; tokens come from TokenRequest
// and only their sha256 and expiry are recorded.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "engine/hash.h"
#include "engine/provider.h"
#include "providers/kubernetes/client.h"
#include "providers/kubernetes/kubeconfig.h"

namespace onboard::k8s {

constexpr const char* kFieldManager = "onboard";

struct ProviderOptions {
  std::string kubeconfig;  // overrides model.cluster.kubeconfig when set
  std::string context;     // overrides model.cluster.context when set
  Reporter* reporter = nullptr;  // warnings go to reporter->Warn (else `warn`, else stderr)
  std::function<void(const std::string&)> warn;
  bool force_conflicts = false;  // server-side apply with force=true
  ClientOptions client;          // timeouts, retries
  int refresh_threads = 4;
  // Environment lookup for $KUBECONFIG/$HOME (tests); default getenv.
  std::function<std::optional<std::string>(const std::string&)> getenv;
};

class KubernetesProvider : public Provider {
 public:
  explicit KubernetesProvider(ProviderOptions options = {});
  ~KubernetesProvider() override;

  std::string Name() const override { return "kubernetes"; }
  bool Handles(ResourceType t) const override;
  Status Configure(const Model& model) override;
  Result<std::optional<MeshFacts>> ReadFacts() override;
  std::map<std::string, Result<Observation>> Refresh(const std::vector<RefreshItem>& items) override;
  Result<StepResult> Apply(const StepRequest& req) override;

  // Requests sent so far (reads/writes/retries); zeros before Configure.
  ClientStats stats() const;
  // The configured client (null before Configure), e.g. for the kubernetes state backend.
  Client* client() { return client_.get(); }

 private:
  void Warn(const std::string& message) const;
  Result<Observation> RefreshOne(const RefreshItem& item);
  Result<StepResult> ApplyObject(const StepRequest& req);
  Result<StepResult> ApplyMeshExpansion(const StepRequest& req);
  Result<StepResult> ApplyToken(const StepRequest& req);
  Result<nlohmann::json> GetConfigMap(const std::string& ns, const std::string& name, const std::string& purpose);

  ProviderOptions options_;
  Model model_;
  std::unique_ptr<Client> client_;
};

// Exposed for tests: the live object reduced to the fields onboard sets (apiVersion, kind,
// metadata name/namespace and the label/annotation keys of `desired` or `prior`, spec).
nlohmann::json ReduceObject(const nlohmann::json& live, const nlohmann::json& desired,
                            const nlohmann::json& prior);
// The desired object with metadata trimmed to name/namespace/labels/annotations.
nlohmann::json NormalizeObject(const nlohmann::json& desired);
using onboard::Sha256Hex;  // engine/hash.h

}  // namespace onboard::k8s
