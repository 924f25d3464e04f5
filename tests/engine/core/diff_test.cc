#include <gtest/gtest.h>

#include "engine/apply.h"
#include "engine/desired.h"
#include "engine/plan.h"
#include "fakes.h"

namespace onboard {
namespace {

using nlohmann::json;
using testing::FakeProvider;
using testing::MemStateStore;

// Applies the model to a fake world and returns the resulting state.
struct Applied {
  FakeProvider provider;
  MemStateStore store;
  State state;
  FakeClock clock{1'000'000};
};

void ApplyModel(const Model& m, Applied* a) {
  MeshFacts f = testing::SampleFacts();
  auto desired = BuildDesired(m, &f);
  auto plan = Diff(desired, a->state.lineage.empty() ? nullptr : &a->state, a->clock, {});
  ASSERT_TRUE(plan.ok()) << plan.error();
  if (a->state.lineage.empty()) a->state.lineage = "lineage-1";
  ApplyReport r = Apply(*plan, desired, &a->state, &a->store, {&a->provider}, nullptr, nullptr, a->clock, {});
  ASSERT_TRUE(r.ok()) << r.Summary();
}

const Change& Get(const Plan& p, const std::string& addr) {
  const Change* c = p.Find(addr);
  if (!c) throw std::runtime_error("no change for " + addr);
  return *c;
}

TEST(Diff, EmptyStateCreatesEverything) {
  Model m = testing::SampleModel(2);
  MeshFacts f = testing::SampleFacts();
  FakeClock clock(1000);
  auto plan = Diff(BuildDesired(m, &f), nullptr, clock, {});
  ASSERT_TRUE(plan.ok());
  // mesh expansion + per workload: WE, sidecar, token, files, hosts, container = 1 + 2*6
  EXPECT_EQ(plan->CountAdd(), 13);
  EXPECT_EQ(plan->CountChange(), 0);
  EXPECT_EQ(Get(*plan, "check.gateway.ns/w0").action, Action::kRead);
  EXPECT_TRUE(plan->HasChanges());
}

TEST(Diff, NoChangesAfterApply) {
  Applied a;
  Model m = testing::SampleModel(2);
  ApplyModel(m, &a);
  MeshFacts f = testing::SampleFacts();
  auto desired = BuildDesired(m, &f);
  auto plan = Diff(desired, &a.state, a.clock, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->HasChanges()) << RenderPlanText(*plan, {});
  EXPECT_EQ(Get(*plan, "check.gateway.ns/w0").action, Action::kNoOp);
  // The same with --refresh=false: values that need the cluster are taken as recorded.
  auto blind = Diff(BuildDesired(m, nullptr), &a.state, a.clock, {});
  ASSERT_TRUE(blind.ok());
  EXPECT_FALSE(blind->HasChanges()) << RenderPlanText(*blind, {});
}

TEST(Diff, UnknownValuesWithoutRefreshAndState) {
  Model m = testing::SampleModel(1);
  FakeClock clock(1000);
  auto plan = Diff(BuildDesired(m, nullptr), nullptr, clock, {});
  ASSERT_TRUE(plan.ok());
  std::string text = RenderPlanText(*plan, {});
  EXPECT_NE(text.find("files.sidecar.env.sha256 = (known after refresh)"), std::string::npos) << text;
  EXPECT_NE(text.find("config_hash = (known after refresh)"), std::string::npos) << text;
}

TEST(Diff, ManifestChangeIsAnUpdateWithFieldReason) {
  Applied a;
  Model m = testing::SampleModel(1);
  ApplyModel(m, &a);
  m.workloads[0].address = "10.9.9.9";
  m.workloads[0].ssh.host = "10.9.9.9";
  MeshFacts f = testing::SampleFacts();
  auto plan = Diff(BuildDesired(m, &f), &a.state, a.clock, {});
  ASSERT_TRUE(plan.ok());
  const Change& we = Get(*plan, "workload_entry.ns/w0");
  EXPECT_EQ(we.action, Action::kUpdate);
  ASSERT_FALSE(we.reasons.empty());
  EXPECT_EQ(we.reasons[0].field, "object.spec.address");
  EXPECT_EQ(we.reasons[0].message, "\"10.1.0.1\" -> \"10.9.9.9\"");
  EXPECT_FALSE(we.reasons[0].drift);
  // sidecar.env carries IDENTITY_IP: the env file changes and the container must be replaced.
  EXPECT_EQ(Get(*plan, "files.ns/w0").action, Action::kUpdate);
  EXPECT_EQ(Get(*plan, "container.ns/w0").action, Action::kReplace);
  // The SSH host moved too, but a connection change alone needs nothing.
  EXPECT_EQ(Get(*plan, "hosts.ns/w0").action, Action::kNoOp);
}

TEST(Diff, DriftIsSeenThroughRefresh) {
  Applied a;
  Model m = testing::SampleModel(1);
  ApplyModel(m, &a);
  MeshFacts f = testing::SampleFacts();
  auto desired = BuildDesired(m, &f);
  std::vector<RefreshItem> items;
  for (const auto& r : desired)
    if (!IsCheck(r.address.type)) items.push_back(RefreshItem{r.address, r.workload, &r, a.state.Find(r.address.ToString())});
  // Someone deleted the WorkloadEntry and edited the Sidecar.
  a.provider.world.erase("workload_entry.ns/w0");
  a.provider.world["sidecar.ns/w0"]["object"]["spec"]["egress"][0]["bind"] = "127.0.0.9";
  auto obs = a.provider.Refresh(items);
  DiffOptions opts;
  opts.observations = &obs;
  auto plan = Diff(desired, &a.state, a.clock, opts);
  ASSERT_TRUE(plan.ok());
  const Change& we = Get(*plan, "workload_entry.ns/w0");
  EXPECT_EQ(we.action, Action::kCreate);
  EXPECT_TRUE(we.reasons.at(0).drift);
  EXPECT_NE(we.reasons[0].message.find("deleted outside onboard"), std::string::npos);
  const Change& sc = Get(*plan, "sidecar.ns/w0");
  EXPECT_EQ(sc.action, Action::kUpdate);
  EXPECT_EQ(sc.reasons.at(0).field, "object.spec.egress");
  EXPECT_TRUE(sc.reasons[0].drift);
  EXPECT_EQ(Get(*plan, "files.ns/w0").action, Action::kNoOp);
}

TEST(Diff, ObservedFileDriftAndStoppedContainer) {
  Applied a;
  Model m = testing::SampleModel(1);
  ApplyModel(m, &a);
  a.state.resources["files.ns/w0"].observed = {{"files", {{"sidecar.env", {{"sha256", "aaa"}, {"mode", "644"}}}}}};
  a.state.resources["container.ns/w0"].observed = {{"running", true}, {"id", "c1"}};
  MeshFacts f = testing::SampleFacts();
  auto desired = BuildDesired(m, &f);
  std::map<std::string, Result<Observation>> obs;
  for (const auto& r : desired) {
    Observation o;
    o.exists = true;
    o.observed = a.state.resources[r.address.ToString()].observed;
    obs.emplace(r.address.ToString(), o);
  }
  obs.at("files.ns/w0").value().observed["files"]["sidecar.env"]["sha256"] = "bbb";
  obs.at("container.ns/w0").value().observed["running"] = false;
  obs.at("container.ns/w0").value().observed["id"] = "c2";  // volatile: not drift by itself
  DiffOptions opts;
  opts.observations = &obs;
  auto plan = Diff(desired, &a.state, a.clock, opts);
  ASSERT_TRUE(plan.ok());
  const Change& files = Get(*plan, "files.ns/w0");
  EXPECT_EQ(files.action, Action::kUpdate);
  EXPECT_EQ(files.reasons.at(0).field, "files.sidecar.env.sha256");
  EXPECT_TRUE(files.reasons[0].drift);
  const Change& ct = Get(*plan, "container.ns/w0");
  EXPECT_EQ(ct.action, Action::kUpdate);
  ASSERT_EQ(ct.reasons.size(), 1u);
  EXPECT_EQ(ct.reasons[0].message, "is not running (stopped outside onboard)");
  // The token file is untouched: no new token.
  EXPECT_EQ(Get(*plan, "token.ns/w0").action, Action::kNoOp);
  EXPECT_EQ(Get(*plan, "check.gateway.ns/w0").action, Action::kRead);
}

TEST(Diff, TokenInsideRenewWindowIsReplacedAndFilesFollow) {
  Applied a;
  Model m = testing::SampleModel(1);
  ApplyModel(m, &a);
  int64_t expires = a.state.resources["token.ns/w0"].observed["expires_at"].get<int64_t>();
  MeshFacts f = testing::SampleFacts();
  auto desired = BuildDesired(m, &f);
  a.clock.Set(expires - 9 * 3600);  // 9h left, renewBefore 8h: fine
  auto fine = Diff(desired, &a.state, a.clock, {});
  EXPECT_FALSE(fine->HasChanges());
  a.clock.Set(expires - (5 * 3600 + 12 * 60));
  auto plan = Diff(desired, &a.state, a.clock, {});
  ASSERT_TRUE(plan.ok());
  const Change& tok = Get(*plan, "token.ns/w0");
  EXPECT_EQ(tok.action, Action::kReplace);
  EXPECT_NE(tok.reasons.at(0).message.find("expires in 5h12m"), std::string::npos) << tok.reasons[0].message;
  EXPECT_EQ(Get(*plan, "files.ns/w0").action, Action::kUpdate);
  EXPECT_EQ(Get(*plan, "container.ns/w0").action, Action::kNoOp);
  EXPECT_EQ(Get(*plan, "workload_entry.ns/w0").action, Action::kNoOp);
  a.clock.Set(expires + 7200);
  auto expired = Diff(desired, &a.state, a.clock, {});
  EXPECT_NE(Get(*expired, "token.ns/w0").reasons.at(0).message.find("expired 2h ago"), std::string::npos);
}

TEST(Diff, RemovedWorkloadIsDeletedAndDestroyDeletesAll) {
  Applied a;
  Model m = testing::SampleModel(2);
  ApplyModel(m, &a);
  Model fewer = m;
  fewer.workloads.pop_back();
  MeshFacts f = testing::SampleFacts();
  auto plan = Diff(BuildDesired(fewer, &f), &a.state, a.clock, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->CountDestroy(), 6);
  EXPECT_EQ(Get(*plan, "container.ns/w1").action, Action::kDelete);
  EXPECT_EQ(Get(*plan, "container.ns/w1").reasons.at(0).message, "no longer in the manifests");
  DiffOptions d;
  d.destroy = true;
  auto destroy = Diff(BuildDesired(m, &f), &a.state, a.clock, d);
  ASSERT_TRUE(destroy.ok());
  EXPECT_EQ(destroy->CountDestroy(), static_cast<int>(a.state.resources.size()));
  EXPECT_EQ(destroy->CountAdd(), 0);
}

TEST(Diff, TargetKeepsItsDependenciesOnly) {
  Model m = testing::SampleModel(2);
  MeshFacts f = testing::SampleFacts();
  FakeClock clock(1000);
  DiffOptions d;
  d.targets = {*Address::Parse("files.ns/w1")};
  auto plan = Diff(BuildDesired(m, &f), nullptr, clock, d);
  ASSERT_TRUE(plan.ok());
  std::vector<std::string> addrs;
  for (const auto& c : plan->changes) addrs.push_back(c.address.ToString());
  EXPECT_EQ(addrs, (std::vector<std::string>{"check.gateway.ns/w1", "files.ns/w1", "token.ns/w1"}));
  d.targets = {*Address::Parse("files.ns/nope")};
  auto bad = Diff(BuildDesired(m, &f), nullptr, clock, d);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("--target files.ns/nope"), std::string::npos);
}

TEST(Diff, InterruptedStepIsDoneAgain) {
  Applied a;
  Model m = testing::SampleModel(1);
  ApplyModel(m, &a);
  a.state.resources["files.ns/w0"].intent = Intent{"update", "run-7", 1000};
  MeshFacts f = testing::SampleFacts();
  auto plan = Diff(BuildDesired(m, &f), &a.state, a.clock, {});
  const Change& files = Get(*plan, "files.ns/w0");
  EXPECT_EQ(files.action, Action::kUpdate);
  EXPECT_NE(files.reasons.at(0).message.find("run-7"), std::string::npos);
  // A placeholder left by an interrupted create is created again.
  ResourceState placeholder;
  placeholder.address = *Address::Parse("hosts.ns/w0");
  placeholder.workload = "ns/w0";
  placeholder.intent = Intent{"create", "run-8", 1000};
  a.state.resources["hosts.ns/w0"] = placeholder;
  auto again = Diff(BuildDesired(m, &f), &a.state, a.clock, {});
  EXPECT_EQ(Get(*again, "hosts.ns/w0").action, Action::kCreate);
}

}  // namespace
}  // namespace onboard
