// Resources: stable addresses and desired attributes (DESIGN §3).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/status.h"

namespace onboard {

enum class ResourceType {
  kMeshExpansion,
  kWorkloadEntry,
  kSidecar,
  kToken,
  kFiles,
  kHosts,
  kContainer,
  kCheckGateway,
  kCheckInbound,
};

// "mesh_expansion", "workload_entry", ..., "check.gateway", "check.inbound".
const char* TypeName(ResourceType t);
std::optional<ResourceType> TypeFromName(const std::string& name);
// Checks are read-only: never stored in state, never rolled back.
inline bool IsCheck(ResourceType t) {
  return t == ResourceType::kCheckGateway || t == ResourceType::kCheckInbound;
}

// "<type>.<name>", e.g. "workload_entry.bookinfo/ratings-vm", "mesh_expansion.prod".
struct Address {
  ResourceType type = ResourceType::kWorkloadEntry;
  std::string name;  // "<ns>/<workload>" or the cluster name

  std::string ToString() const;
  static Result<Address> Parse(const std::string& text);
  bool operator<(const Address& o) const { return ToString() < o.ToString(); }
  bool operator==(const Address& o) const { return type == o.type && name == o.name; }
};

// A value not known until the cluster has been read (plan with --refresh=false and no state).
// Represented in JSON as {"$unknown": "<why>"}; printed as "(known after refresh)".
nlohmann::json Unknown(const std::string& why = "known after refresh");
bool IsUnknown(const nlohmann::json& v);
// True if v or anything inside it is unknown.
bool ContainsUnknown(const nlohmann::json& v);

// A desired resource, computed purely from the model (and mesh facts when known).
struct Resource {
  Address address;
  std::string workload;  // "<ns>/<name>" of the workload it belongs to; "" for cluster-wide
  // Desired attributes: public, comparable, recorded in state after apply. Never secrets.
  nlohmann::json attributes = nlohmann::json::object();
  // What the step needs to act but is not compared or stored: generated file bodies,
  // object bodies, the docker argv. Never contains a token (tokens are minted at apply time).
  nlohmann::json payload = nlohmann::json::object();
};

}  // namespace onboard
