// States used by the state tests.
#pragma once

#include <string>

#include "engine/clock.h"
#include "engine/state.h"

namespace onboard::test {

inline ResourceState Record(ResourceType type, const std::string& name, const std::string& workload) {
  ResourceState r;
  r.address = Address{type, name};
  r.workload = workload;
  return r;
}

inline void Put(State& s, ResourceState r) { s.resources[r.address.ToString()] = std::move(r); }

// Every field used: both origins, an intent, nested attributes, a cluster-wide record.
inline State SampleState() {
  State s;
  s.lineage = "0f3c2a77-9b1e-4d2c-8e5f-6a7b8c9d0e1f";
  s.serial = 7;
  ResourceState mesh = Record(ResourceType::kMeshExpansion, "prod", "");
  mesh.attributes = {{"controlPlane", "controlplane"}, {"namespace", "istio-system"}};
  mesh.observed = {{"resourceVersion", "1234"}, {"uid", "6f1e2d3c-aaaa-bbbb-cccc-1234567890ab"}};
  Put(s, mesh);
  ResourceState we = Record(ResourceType::kWorkloadEntry, "bookinfo/ratings-vm", "bookinfo/ratings-vm");
  we.attributes = {{"spec",
                    {{"address", "35.194.38.142"},
                     {"labels", {{"app", "ratings"}, {"class", "vm"}, {"version", "v3"}}},
                     {"network", "vm-network"},
                     {"ports", {{"http", 9080}}},
                     {"serviceAccount", "bookinfo-ratings"}}}};
  we.observed = {{"resourceVersion", "77"}, {"uid", "0a1b2c3d"}};
  we.origin = Origin::kAdopted;
  int64_t started = 0;
  ParseTime("2026-11-26T03:22:27Z", &started);
  we.intent = Intent{"update", "8d0b6f5e-run", started};
  Put(s, we);
  ResourceState token = Record(ResourceType::kToken, "bookinfo/ratings-vm", "bookinfo/ratings-vm");
  token.attributes = {{"audience", "istio-ca"}, {"duration", 86400}, {"serviceAccount", "bookinfo-ratings"}};
  token.observed = {{"sha256", std::string(64, 'e')}, {"expires_at", "2026-11-27T03:22:27Z"}};
  Put(s, token);
  ResourceState container = Record(ResourceType::kContainer, "bookinfo/ratings-vm", "bookinfo/ratings-vm");
  container.attributes = {{"image", "docker.io/tetrate/proxyv2:1.8.6"}, {"args", {"proxy", "sidecar"}},
                          {"ratio", 0.25}, {"unicode", "caf\u00e9 \u2713"}, {"none", nullptr}};
  container.observed = {{"id", "abc123"}, {"config_hash", "ff00"}};
  Put(s, container);
  return s;
}

// `workloads` workloads of files records, each with `blob` bytes of attributes.
inline State BigState(int workloads, size_t blob) {
  State s;
  s.lineage = "9e8d7c6b-5a49-4382-b716-0f1e2d3c4b5a";
  s.serial = 1;
  for (int i = 0; i < workloads; ++i) {
    std::string w = "bookinfo/vm-" + std::to_string(i);
    ResourceState f = Record(ResourceType::kFiles, w, w);
    f.attributes = {{"blob", std::string(blob, static_cast<char>('a' + i % 26))}, {"index", i}};
    f.observed = {{"sha256", std::string(64, '0')}, {"mode", "0644"}};
    Put(s, f);
  }
  return s;
}

}  // namespace onboard::test
