#include "state/backends.h"

#include "state/http.h"
#include "state/kubernetes.h"
#include "state/local.h"

namespace onboard {

Result<std::unique_ptr<StateStore>> OpenStateStore(const Backend& manifest_backend, const Cluster& cluster,
                                                   const std::string& fleet_name, const BackendFlags& flags) {
  using R = Result<std::unique_ptr<StateStore>>;
  const bool from_flag = !flags.type.empty();
  const std::string type = from_flag ? flags.type : manifest_backend.type.empty() ? "local" : manifest_backend.type;
  // The Fleet's settings apply only to the backend it names; --backend-config overrides key by key.
  nlohmann::json config = nlohmann::json::object();
  if (!from_flag || flags.type == manifest_backend.type) {
    for (auto it = manifest_backend.config.begin(); it != manifest_backend.config.end(); ++it)
      if (it.key() != "type") config[it.key()] = it.value();
  }
  for (const auto& kv : flags.config) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return R::Error("--backend-config \"" + kv + "\" is not KEY=VALUE (for example --backend-config namespace=onboard)");
    config[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  const std::string origin = flags.config.empty() ? "spec.backend" : "spec.backend and --backend-config";
  if (type == "local") {
    std::string path = flags.default_path;
    if (!flags.state_path_given && config.contains("path")) {
      if (!config["path"].is_string() || config["path"].get<std::string>().empty())
        return R::Error(origin + ": path must be a file name (the local state file)");
      path = config["path"].get<std::string>();
    }
    for (auto it = config.begin(); it != config.end(); ++it)
      if (it.key() != "path")
        return R::Error(origin + ": the local backend has no setting \"" + it.key() + "\" (it takes only path)");
    return R(std::make_unique<LocalStateStore>(path));
  }
  if (type == "kubernetes") {
    KubernetesBackendDefaults d;
    d.kubeconfig = !flags.kubeconfig.empty() ? flags.kubeconfig : cluster.kubeconfig;
    d.context = !flags.context.empty() ? flags.context : cluster.context;
    d.name = fleet_name;
    return OpenKubernetesStateStore(config, d, origin);
  }
  if (type == "http") return OpenHttpStateStore(config, origin);
  return R::Error("unknown state backend \"" + type + "\": use local, kubernetes or http (--backend or spec.backend.type)");
}

}  // namespace onboard
