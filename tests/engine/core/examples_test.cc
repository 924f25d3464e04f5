// The two manifest styles of examples/ (a Fleet, and tctl-style WorkloadEntry + Sidecar) onboard
// ratings-vm identically: same WorkloadEntry, Sidecar, token request, files and container.
#include <gtest/gtest.h>

#include "engine/desired.h"
#include "engine/manifest.h"
#include "fakes.h"

namespace onboard {
namespace {

std::map<std::string, Resource> RatingsResources(const std::string& dir) {
  LoadOptions lo{"/home/tester", "tester"};
  LoadResult r = LoadManifests({std::string(ONBOARD_SOURCE_DIR) + "/examples/" + dir}, lo);
  EXPECT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : r.diagnostics[0].ToString());
  if (!r.ok()) return {};
  MeshFacts facts = testing::SampleFacts();
  facts.root_certs["bookinfo"] = facts.root_certs["ns"];
  std::map<std::string, Resource> out;
  for (auto& res : BuildDesired(*r.model, &facts))
    if (res.workload == "bookinfo/ratings-vm") out[TypeName(res.address.type)] = res;
  return out;
}

TEST(Examples, FleetAndTctlStylesOnboardRatingsIdentically) {
  auto fleet = RatingsResources("fleet");
  auto tctl = RatingsResources("tctl");
  ASSERT_FALSE(fleet.empty());
  std::vector<std::string> types;
  for (const auto& [t, _] : fleet) types.push_back(t);
  std::vector<std::string> tctl_types;
  for (const auto& [t, _] : tctl) tctl_types.push_back(t);
  EXPECT_EQ(types, tctl_types);
  for (const auto& [t, res] : fleet) {
    auto it = tctl.find(t);
    if (it == tctl.end()) continue;
    EXPECT_EQ(res.address.ToString(), it->second.address.ToString());
    EXPECT_EQ(res.attributes, it->second.attributes) << t;
    EXPECT_EQ(res.payload, it->second.payload) << t << " (generated files / docker argv)";
  }
  // The comparison covers what reaches the cluster and the VM.
  for (const char* t : {"workload_entry", "sidecar", "token", "files", "hosts", "container"})
    EXPECT_TRUE(fleet.count(t)) << t;
}

}  // namespace
}  // namespace onboard
