#include "state/backends.h"

#include "state/local.h"

namespace onboard {

Result<std::unique_ptr<StateStore>> OpenStateStore(const Backend& manifest_backend,
                                                   const std::string& backend_flag,
                                                   const std::string& default_path) {
  const std::string type = backend_flag.empty() ? manifest_backend.type : backend_flag;
  if (type.empty() || type == "local") {
    std::string path = default_path;
    if (backend_flag.empty() && manifest_backend.config.contains("path") &&
        manifest_backend.config["path"].is_string())
      path = manifest_backend.config["path"].get<std::string>();
    return std::unique_ptr<StateStore>(std::make_unique<LocalStateStore>(path));
  }
  return Result<std::unique_ptr<StateStore>>::Error(
      "state backend \"" + type + "\" is not available in this build of onboard (available: local); "
      "set spec.backend.type or --backend to local");
}

}  // namespace onboard
