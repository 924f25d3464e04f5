#include "providers/registry.h"

#include "providers/kubernetes/provider.h"
#include "providers/vm/vm_provider.h"

namespace onboard {
namespace {

std::unique_ptr<Provider> MakeKubernetes(const ProviderSettings& s) {
  k8s::ProviderOptions o;
  o.kubeconfig = s.kubeconfig;
  o.context = s.context;
  o.reporter = s.reporter;
  o.force_conflicts = s.force_conflicts;
  return std::make_unique<k8s::KubernetesProvider>(std::move(o));
}

std::unique_ptr<Provider> MakeVm(const ProviderSettings& s) {
  vm::VmProviderOptions o;
  o.host_keys = s.host_keys;
  o.identity_file_override = s.ssh_key;
  o.connect_timeout_seconds = s.ssh_connect_timeout_seconds;
  o.strict_checks = s.strict_checks;
  o.container_grace_seconds = s.container_grace_seconds;
  return std::make_unique<vm::VmProvider>(std::move(o));
}

}  // namespace

const std::vector<ProviderEntry>& ProviderTable() {
  static const std::vector<ProviderEntry> table = {
      {"kubernetes", "mesh_expansion, workload_entry, sidecar, token", &MakeKubernetes},
      {"vm", "files, hosts, container, check.gateway, check.inbound", &MakeVm},
  };
  return table;
}

std::vector<std::unique_ptr<Provider>> MakeProviders(const ProviderSettings& settings) {
  std::vector<std::unique_ptr<Provider>> out;
  for (const auto& e : ProviderTable()) out.push_back(e.make(settings));
  return out;
}

}  // namespace onboard
