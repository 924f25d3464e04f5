#include "engine/desired.h"

#include <set>

#include "engine/bootstrap.h"
#include "engine/hash.h"

namespace onboard {
namespace {

using nlohmann::json;

json Connection(const Workload& w) {
  return json{{"host", w.ssh.host.empty() ? w.address : w.ssh.host},
              {"port", w.ssh.port},
              {"user", w.ssh.user},
              {"identity_file", w.ssh.identity_file},
              {"known_hosts", w.ssh.known_hosts}};
}

Resource Make(ResourceType t, const Workload& w) {
  Resource r;
  r.address = Address{t, w.Key()};
  r.workload = w.Key();
  return r;
}

// Ingress ports of the workload's Sidecar spec (the ports the cluster dials on the VM).
std::vector<int> IngressPorts(const Workload& w) {
  std::set<int> ports;
  if (w.sidecar.is_object() && w.sidecar.contains("ingress") && w.sidecar["ingress"].is_array())
    for (const auto& in : w.sidecar["ingress"])
      if (in.contains("port") && in["port"].contains("number") && in["port"]["number"].is_number_integer())
        ports.insert(in["port"]["number"].get<int>());
  return {ports.begin(), ports.end()};
}

}  // namespace

std::vector<Resource> BuildDesired(const Model& model, const MeshFacts* facts) {
  std::vector<Resource> out;
  const Cluster& c = model.cluster;
  if (c.mesh_expansion) {
    Resource r;
    r.address = Address{ResourceType::kMeshExpansion, c.name};
    r.attributes = json{{"control_plane", c.mesh_expansion->control_plane},
                        {"namespace", c.mesh_expansion->ns.empty() ? c.istio_namespace
                                                                    : c.mesh_expansion->ns}};
    out.push_back(std::move(r));
  }
  std::set<std::string> sidecars;  // one Sidecar object may select several workloads (tctl style)
  for (const Workload& w : model.workloads) {
    {
      Resource r = Make(ResourceType::kWorkloadEntry, w);
      r.attributes = json{{"object", WorkloadEntryObject(w)}};
      out.push_back(std::move(r));
    }
    json sidecar = SidecarObject(w);
    std::string sidecar_key = w.ns + "/" + (w.sidecar_name.empty() ? w.name : w.sidecar_name);
    if (!sidecar.is_null() && sidecars.insert(sidecar_key).second) {
      Resource r = Make(ResourceType::kSidecar, w);
      // Addressed by the Sidecar's own name: the object is shared when several workloads use it.
      r.address.name = sidecar_key;
      r.attributes = json{{"object", sidecar}};
      out.push_back(std::move(r));
    }
    {
      Resource r = Make(ResourceType::kToken, w);
      r.attributes = json{{"namespace", w.ns},
                          {"service_account", w.service_account},
                          {"audience", w.token.audience},
                          {"duration_seconds", w.token.duration_seconds}};
      r.payload = json{{"renew_before_seconds", w.token.renew_before_seconds}};
      out.push_back(std::move(r));
    }
    std::string env_sha;
    {
      Resource r = Make(ResourceType::kFiles, w);
      json files = json::object();
      if (facts) {
        std::string env = RenderSidecarEnv(SidecarEnv(w, c, *facts));
        auto root = facts->root_certs.find(w.ns);
        std::string root_pem = root == facts->root_certs.end() ? "" : root->second;
        env_sha = Sha256Hex(env);
        files["sidecar.env"] = {{"mode", "0644"}, {"sha256", env_sha}};
        files["istio-ca.pem"] = {{"mode", "0644"}, {"sha256", Sha256Hex(root_pem)}};
        files["k8s-ca.pem"] = {{"mode", "0644"}, {"sha256", Sha256Hex(facts->kube_ca)}};
        r.payload = json{{"contents",
                          {{"sidecar.env", env}, {"istio-ca.pem", root_pem}, {"k8s-ca.pem", facts->kube_ca}}}};
      } else {
        for (const char* name : {"sidecar.env", "istio-ca.pem", "k8s-ca.pem"})
          files[name] = {{"mode", "0644"}, {"sha256", Unknown()}};
      }
      files["istio-token"] = {{"mode", "0640"}};
      r.attributes = json{{"connection", Connection(w)}, {"dir", w.proxy.config_dir}, {"files", files}};
      out.push_back(std::move(r));
    }
    if (!w.hosts.empty()) {
      Resource r = Make(ResourceType::kHosts, w);
      json entries = json::object();
      for (const auto& [ip, names] : w.hosts) entries[ip] = names;
      r.attributes = json{{"connection", Connection(w)}, {"hosts_file", w.vm.hosts_file}, {"entries", entries}};
      out.push_back(std::move(r));
    }
    {
      Resource r = Make(ResourceType::kContainer, w);
      json attrs{{"connection", Connection(w)}, {"name", w.proxy.container_name}, {"docker", w.vm.docker}};
      if (facts) {
        std::vector<std::string> argv = DockerRunArgs(w, c, *facts);
        std::string joined;
        for (const auto& a : argv) joined += a + '\0';
        attrs["image"] = ProxyImage(w, *facts);
        // Everything that needs a new container: its arguments and the env file it reads at start.
        // The token and CA files are bind-mounted and renewed in place, so they are not in the hash.
        attrs["config_hash"] = Sha256Hex(joined + env_sha).substr(0, 16);
        r.payload = json{{"argv", argv}};
      } else {
        attrs["image"] = w.proxy.image.empty() ? Unknown() : json(w.proxy.image);
        attrs["config_hash"] = Unknown();
      }
      r.attributes = std::move(attrs);
      out.push_back(std::move(r));
    }
    if (!w.network.empty() && !c.vm_gateway.address.empty()) {
      Resource r = Make(ResourceType::kCheckGateway, w);
      r.attributes = json{{"connection", Connection(w)}, {"gateway", c.vm_gateway.address},
                          {"ports", c.vm_gateway.ports}};
      out.push_back(std::move(r));
    }
    std::vector<int> inbound = IngressPorts(w);
    if (!w.network.empty() && !inbound.empty()) {
      Resource r = Make(ResourceType::kCheckInbound, w);
      r.attributes = json{{"address", w.address}, {"ports", inbound}};
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace onboard
