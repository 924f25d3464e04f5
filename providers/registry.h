// The one explicit table of providers (Envoy extensions / Bloaty's object-file chain idea):
// every resource type is handled by exactly one provider listed here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/provider.h"
#include "providers/ssh/session.h"

namespace onboard {

struct ProviderSettings {
  // Kubernetes
  std::string kubeconfig;  // --kubeconfig (overrides the manifest)
  std::string context;     // --context (overrides the manifest)
  bool force_conflicts = false;
  // SSH / VM
  ssh::HostKeyPolicy host_keys;
  std::string ssh_key;     // -k/--ssh-key
  int ssh_connect_timeout_seconds = 10;
  bool strict_checks = false;
  double container_grace_seconds = 2.0;
  Reporter* reporter = nullptr;
};

struct ProviderEntry {
  const char* name;
  const char* handles;  // for `onboard version` and docs
  std::unique_ptr<Provider> (*make)(const ProviderSettings&);
};

// The table, in the order refresh visits them.
const std::vector<ProviderEntry>& ProviderTable();
std::vector<std::unique_ptr<Provider>> MakeProviders(const ProviderSettings& settings);

}  // namespace onboard
