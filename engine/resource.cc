#include "engine/resource.h"

#include <array>

namespace onboard {
namespace {
struct TypeEntry {
  ResourceType type;
  const char* name;
};
constexpr std::array<TypeEntry, 9> kTypes{{
    {ResourceType::kMeshExpansion, "mesh_expansion"},
    {ResourceType::kWorkloadEntry, "workload_entry"},
    {ResourceType::kSidecar, "sidecar"},
    {ResourceType::kToken, "token"},
    {ResourceType::kFiles, "files"},
    {ResourceType::kHosts, "hosts"},
    {ResourceType::kContainer, "container"},
    {ResourceType::kCheckGateway, "check.gateway"},
    {ResourceType::kCheckInbound, "check.inbound"},
}};
constexpr const char* kUnknownKey = "$unknown";
}  // namespace

const char* TypeName(ResourceType t) {
  for (const auto& e : kTypes)
    if (e.type == t) return e.name;
  return "?";
}

std::optional<ResourceType> TypeFromName(const std::string& name) {
  for (const auto& e : kTypes)
    if (name == e.name) return e.type;
  return std::nullopt;
}

std::string Address::ToString() const { return std::string(TypeName(type)) + "." + name; }

Result<Address> Address::Parse(const std::string& text) {
  // Longest type name first so "check.gateway.x" is not read as type "check".
  const TypeEntry* best = nullptr;
  for (const auto& e : kTypes) {
    std::string prefix = std::string(e.name) + ".";
    if (text.compare(0, prefix.size(), prefix) == 0 &&
        (!best || std::string(e.name).size() > std::string(best->name).size()))
      best = &e;
  }
  if (!best || text.size() == std::string(best->name).size() + 1) {
    std::string names;
    for (const auto& e : kTypes) names += std::string(names.empty() ? "" : ", ") + e.name;
    return Result<Address>::Error("invalid resource address \"" + text +
                                  "\": expected <type>.<name> with type one of " + names +
                                  " (e.g. workload_entry.bookinfo/ratings-vm)");
  }
  Address a;
  a.type = best->type;
  a.name = text.substr(std::string(best->name).size() + 1);
  return a;
}

nlohmann::json Unknown(const std::string& why) { return nlohmann::json{{kUnknownKey, why}}; }

bool IsUnknown(const nlohmann::json& v) {
  return v.is_object() && v.size() == 1 && v.contains(kUnknownKey);
}

bool ContainsUnknown(const nlohmann::json& v) {
  if (IsUnknown(v)) return true;
  if (v.is_structured())
    for (const auto& e : v)
      if (ContainsUnknown(e)) return true;
  return false;
}

}  // namespace onboard
