#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "engine/apply.h"
#include "engine/run.h"
#include "fakes.h"

namespace onboard {
namespace {

using testing::FakeProvider;
using testing::MemStateStore;

struct Rig {
  Model model = testing::SampleModel(3);
  FakeProvider provider;
  MemStateStore store;
  State state;
  FakeClock clock{1'000'000};
  Rig() { state.lineage = "lineage-1"; }

  Result<PlanOutputs> PlanNow(bool destroy = false) {
    PlanInputs in;
    in.model = &model;
    in.state = state.resources.empty() && state.serial == 0 ? nullptr : &state;
    in.providers = {&provider};
    in.clock = &clock;
    in.destroy = destroy;
    return MakePlan(in);
  }
  ApplyReport Run(ApplyOptions opts = {}, bool destroy = false) {
    auto p = PlanNow(destroy);
    EXPECT_TRUE(p.ok()) << p.error();
    return Apply(p->plan, p->desired, &state, &store, {&provider}, nullptr, nullptr, clock, opts);
  }
};

TEST(Apply, CreatesEverythingAndRecordsIt) {
  Rig r;
  ApplyReport rep = r.Run();
  ASSERT_TRUE(rep.ok()) << rep.Summary();
  EXPECT_EQ(rep.created, 1 + 3 * 6);
  EXPECT_EQ(rep.checked, 6);
  EXPECT_EQ(rep.Summary(), "19 created, 0 updated, 0 destroyed, 0 rolled back, 0 failed");
  EXPECT_EQ(r.state.resources.size(), 19u);  // checks are never stored
  for (const auto& [a, rs] : r.state.resources) EXPECT_FALSE(rs.intent) << a;
  // An intent before and a record after each step.
  EXPECT_EQ(r.store.writes, 2 * 19);
  EXPECT_EQ(r.state.serial, 2 * 19);
  EXPECT_TRUE(r.store.state.has_value());
}

TEST(Apply, UnchangedFleetMakesZeroWrites) {
  Rig r;
  ASSERT_TRUE(r.Run().ok());
  int world_writes = r.provider.writes, state_writes = r.store.writes;
  auto again = r.PlanNow();
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->plan.HasChanges()) << RenderPlanText(again->plan, {});
  ApplyReport rep = r.Run();
  EXPECT_TRUE(rep.ok());
  EXPECT_EQ(rep.writes, 0);
  EXPECT_EQ(r.provider.writes, world_writes);
  EXPECT_EQ(r.store.writes, state_writes);
}

// A fake that fails at every step position in turn: the failing workload is rolled back to
// nothing, the others finish, the state stays consistent, and the next run converges.
TEST(Apply, FailureAtEveryStepRollsBackThatWorkloadOnly) {
  Rig probe;
  auto first = probe.PlanNow();
  ASSERT_TRUE(first.ok());
  int steps = 0;
  for (const auto& c : first->plan.changes) steps += c.action != Action::kNoOp;
  ASSERT_EQ(steps, 25);
  for (int k = 0; k < steps; ++k) {
    SCOPED_TRACE("failing step " + std::to_string(k));
    Rig r;
    ApplyOptions opts;
    opts.parallelism = 1;  // deterministic step order
    r.provider.fail_at = k;
    ApplyReport rep = r.Run(opts);
    EXPECT_EQ(rep.failed, 1);
    ASSERT_EQ(rep.errors.size(), 1u) << rep.errors.back();
    // Find the failing workload from the error.
    std::string failed_addr = rep.errors[0].substr(0, rep.errors[0].find(':'));
    auto failed = Address::Parse(failed_addr);
    ASSERT_TRUE(failed.ok());
    for (const auto& [a, rs] : r.state.resources) EXPECT_FALSE(rs.intent) << a;
    if (failed->type == ResourceType::kMeshExpansion) {
      // Nothing can proceed without mesh expansion; WorkloadEntries never start.
      EXPECT_EQ(r.provider.world.count("workload_entry.ns/w0"), 0u);
    } else {
      std::string w = failed->name;
      EXPECT_EQ(rep.failed_workloads, std::set<std::string>{w});
      // That workload's resources are gone from the world and from the state (created this run).
      for (const auto& [a, _] : r.provider.world) {
        auto addr = Address::Parse(a);
        if (addr->type != ResourceType::kToken) {
          EXPECT_NE(addr->name, w) << a << " left behind";
        }
      }
      for (const auto& [a, rs] : r.state.resources)
        if (rs.address.type != ResourceType::kToken) {
          EXPECT_NE(rs.workload, w) << a << " left in state";
        }
      // The other workloads were onboarded.
      for (const auto& other : {"ns/w0", "ns/w1", "ns/w2"})
        if (other != w) {
          EXPECT_TRUE(r.provider.world.count(std::string("container.") + other)) << other;
        }
      EXPECT_FALSE(r.provider.finished.at(w));
    }
    // The next run completes it, and then nothing is left to do.
    r.provider.fail_at = -1;
    ApplyReport again = r.Run(opts);
    EXPECT_TRUE(again.ok()) << (again.errors.empty() ? "" : again.errors[0]);
    auto after = r.PlanNow();
    EXPECT_FALSE(after->plan.HasChanges()) << RenderPlanText(after->plan, {});
  }
}

TEST(Apply, RollbackRunsInReverseOrder) {
  Rig r;
  r.model = testing::SampleModel(1, false);
  r.provider.fail_addresses = {"container.ns/w0"};
  ApplyOptions opts;
  opts.parallelism = 1;
  ApplyReport rep = r.Run(opts);
  EXPECT_EQ(rep.failed, 1);
  std::vector<std::string> forward, back;
  for (const auto& c : r.provider.calls) {
    if (c.rfind("rollback ", 0) == 0)
      back.push_back(c.substr(c.rfind(' ') + 1));
    else if (c.rfind("read", 0) != 0)
      forward.push_back(c.substr(c.find(' ') + 1));
  }
  // Every completed step (the failed container included) is undone, latest first; tokens
  // cannot be taken back and are left to expire.
  std::vector<std::string> expected;
  for (auto it = forward.rbegin(); it != forward.rend(); ++it)
    if (it->rfind("token.", 0) != 0) expected.push_back(*it);
  EXPECT_EQ(back, expected);
  EXPECT_EQ(rep.rolled_back, static_cast<int>(expected.size()));
  EXPECT_EQ(rep.rolled_back_addresses.front(), "container.ns/w0");
}

TEST(Apply, RollbackNoneKeepsCompletedSteps) {
  Rig r;
  r.model = testing::SampleModel(1, false);
  r.provider.fail_addresses = {"container.ns/w0"};
  ApplyOptions opts;
  opts.rollback = false;
  ApplyReport rep = r.Run(opts);
  EXPECT_EQ(rep.rolled_back, 0);
  EXPECT_TRUE(r.provider.world.count("files.ns/w0"));
  EXPECT_TRUE(r.state.Find("files.ns/w0"));
  EXPECT_FALSE(r.state.Find("container.ns/w0"));
}

TEST(Apply, RollbackRestoresPreviousAttributes) {
  Rig r;
  r.model = testing::SampleModel(1, false);
  ASSERT_TRUE(r.Run().ok());
  auto before_we = r.provider.world.at("workload_entry.ns/w0");
  r.model.workloads[0].labels["version"] = "v2";
  r.provider.fail_addresses = {"container.ns/w0"};
  ApplyReport rep = r.Run();
  EXPECT_EQ(rep.failed, 1);
  EXPECT_EQ(r.provider.world.at("workload_entry.ns/w0"), before_we);
  EXPECT_EQ(r.state.Find("workload_entry.ns/w0")->attributes, before_we);
}

TEST(Apply, FailedStateWriteFailsTheStep) {
  Rig r;
  r.model = testing::SampleModel(1, false);
  r.store.fail_write_at = 0;
  ApplyReport rep = r.Run();
  EXPECT_GE(rep.failed, 1);
  EXPECT_NE(rep.errors.at(0).find("could not save state to memory"), std::string::npos) << rep.errors[0];
}

TEST(Apply, DryRunChangesNothing) {
  Rig r;
  ApplyOptions opts;
  opts.dry_run = true;
  ApplyReport rep = r.Run(opts);
  EXPECT_TRUE(rep.ok());
  EXPECT_TRUE(r.provider.world.empty());
  EXPECT_EQ(r.store.writes, 0);
  EXPECT_TRUE(r.state.resources.empty());
}

TEST(Apply, DestroyWalksEdgesReversed) {
  Rig r;
  r.model = testing::SampleModel(1);
  ASSERT_TRUE(r.Run().ok());
  r.provider.calls.clear();
  ApplyOptions opts;
  opts.parallelism = 1;
  ApplyReport rep = r.Run(opts, true);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep.destroyed, 7);
  EXPECT_TRUE(r.state.resources.empty());
  auto pos = [&](const std::string& a) {
    return std::find(r.provider.calls.begin(), r.provider.calls.end(), "delete " + a) - r.provider.calls.begin();
  };
  EXPECT_LT(pos("container.ns/w0"), pos("files.ns/w0"));
  EXPECT_LT(pos("container.ns/w0"), pos("workload_entry.ns/w0"));
  EXPECT_LT(pos("files.ns/w0"), pos("token.ns/w0"));
  EXPECT_LT(pos("workload_entry.ns/w0"), pos("mesh_expansion.prod"));
}

// A provider that sleeps a little in each step and records the highest concurrency seen.
class SlowProvider : public FakeProvider {
 public:
  Result<StepResult> Apply(const StepRequest& req) override {
    int now = ++running;
    int seen = max_seen.load();
    while (now > seen && !max_seen.compare_exchange_weak(seen, now)) {}
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    --running;
    return FakeProvider::Apply(req);
  }
  std::atomic<int> running{0}, max_seen{0};
};

TEST(Apply, ParallelismBoundsConcurrentSteps) {
  for (int p : {1, 3}) {
    Model m = testing::SampleModel(8, false);
    SlowProvider prov;
    MemStateStore store;
    State state;
    state.lineage = "l";
    FakeClock clock(1000);
    PlanInputs in;
    in.model = &m;
    in.providers = {&prov};
    in.clock = &clock;
    auto plan = MakePlan(in);
    ApplyOptions opts;
    opts.parallelism = p;
    ApplyReport rep = Apply(plan->plan, plan->desired, &state, &store, {&prov}, nullptr, nullptr, clock, opts);
    EXPECT_TRUE(rep.ok());
    EXPECT_LE(prov.max_seen.load(), p);
    if (p > 1) {
      EXPECT_GT(prov.max_seen.load(), 1);
    }
  }
}

}  // namespace
}  // namespace onboard
