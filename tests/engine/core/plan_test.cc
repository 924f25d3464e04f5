#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include "engine/apply.h"
#include "engine/run.h"
#include "fakes.h"

namespace onboard {
namespace {

using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Golden files: expected output kept beside the test; ONBOARD_UPDATE_GOLDEN=1 rewrites them.
void ExpectGolden(const std::string& name, const std::string& actual) {
  std::string path = std::string(ENGINE_TESTDATA) + "/" + name;
  if (std::getenv("ONBOARD_UPDATE_GOLDEN")) {
    std::ofstream(path) << actual;
    return;
  }
  EXPECT_EQ(ReadFile(path), actual) << "golden " << path << " differs (ONBOARD_UPDATE_GOLDEN=1 to rewrite)";
}

struct Fixture {
  Model model = testing::SampleModel(1);
  testing::FakeProvider provider;
  testing::MemStateStore store;
  State state;
  FakeClock clock{1'790'000'000};
  Fixture() { state.lineage = "6f1c2a9e-0000-4000-8000-000000000001"; }
  Plan PlanNow(bool refresh = true) {
    PlanInputs in;
    in.model = &model;
    in.state = state.resources.empty() ? nullptr : &state;
    in.providers = {&provider};
    in.clock = &clock;
    in.refresh = refresh;
    auto p = MakePlan(in);
    EXPECT_TRUE(p.ok()) << p.error();
    return p->plan;
  }
  void ApplyAll() {
    PlanInputs in;
    in.model = &model;
    in.state = state.resources.empty() ? nullptr : &state;
    in.providers = {&provider};
    in.clock = &clock;
    auto p = MakePlan(in);
    auto rep = Apply(p->plan, p->desired, &state, &store, {&provider}, nullptr, nullptr, clock, {});
    ASSERT_TRUE(rep.ok());
  }
};

TEST(PlanText, CreateFromEmptyState) {
  Fixture f;
  ExpectGolden("create.plan.txt", RenderPlanText(f.PlanNow(), {}));
}

TEST(PlanText, CreateWithoutRefresh) {
  Fixture f;
  ExpectGolden("create-norefresh.plan.txt", RenderPlanText(f.PlanNow(false), {}));
}

TEST(PlanText, UpdateAndDrift) {
  Fixture f;
  f.ApplyAll();
  f.model.workloads[0].labels["version"] = "v2";
  f.provider.world.erase("hosts.ns/w0");
  ExpectGolden("update-drift.plan.txt", RenderPlanText(f.PlanNow(), {}));
}

TEST(PlanText, NoChanges) {
  Fixture f;
  f.ApplyAll();
  Plan p = f.PlanNow();
  EXPECT_EQ(RenderPlanText(p, {}), "No changes. The fleet matches the manifests and the world.\n");
}

TEST(PlanText, ColorOnlyWhenAsked) {
  Fixture f;
  Plan p = f.PlanNow();
  EXPECT_EQ(RenderPlanText(p, {false}).find("\x1b["), std::string::npos);
  EXPECT_NE(RenderPlanText(p, {true}).find("\x1b[32m+\x1b[0m"), std::string::npos);
}

TEST(PlanJson, RoundTripsAndMatchesSchema) {
  Fixture f;
  f.ApplyAll();
  f.model.workloads[0].address = "10.2.2.2";
  Plan p = f.PlanNow();
  json j = PlanToJson(p);
  auto back = PlanFromJson(j, "plan.json");
  ASSERT_TRUE(back.ok()) << back.error();
  EXPECT_EQ(PlanToJson(*back), j);

  json schema_doc = json::parse(ReadFile(std::string(ONBOARD_SOURCE_DIR) + "/schemas/plan.schema.json"));
  valijson::Schema schema;
  valijson::SchemaParser parser;
  valijson::adapters::NlohmannJsonAdapter schema_adapter(schema_doc);
  parser.populateSchema(schema_adapter, schema);
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(j);
  EXPECT_TRUE(validator.validate(schema, target, &results));
  // And the schema bites: an unknown action is refused.
  j["changes"][0]["action"] = "explode";
  valijson::adapters::NlohmannJsonAdapter bad(j);
  EXPECT_FALSE(validator.validate(schema, bad, nullptr));
}

TEST(PlanJson, BadPlanFileIsRefusedClearly) {
  auto r = PlanFromJson(json{{"format_version", 9}}, "old.plan");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("plan file old.plan"), std::string::npos);
  EXPECT_NE(r.error().find("format_version 9"), std::string::npos);
}

TEST(SavedPlan, StalePlansAreRefusedWithTheReason) {
  Fixture f;
  f.ApplyAll();
  f.model.workloads[0].labels["version"] = "v2";
  Plan saved = f.PlanNow();
  saved.manifest_digest = f.model.digest;
  EXPECT_TRUE(CheckSavedPlan(saved, f.PlanNow(), f.state.lineage, f.state.serial, f.model.digest).ok());
  // Another run wrote the state since.
  Status s = CheckSavedPlan(saved, f.PlanNow(), f.state.lineage, f.state.serial + 1, f.model.digest);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("stale"), std::string::npos);
  EXPECT_NE(s.message().find("serial"), std::string::npos);
  // The manifests changed.
  s = CheckSavedPlan(saved, f.PlanNow(), f.state.lineage, f.state.serial, "other-digest");
  EXPECT_NE(s.message().find("manifests changed"), std::string::npos);
  // Another state altogether.
  s = CheckSavedPlan(saved, f.PlanNow(), "other-lineage", f.state.serial, f.model.digest);
  EXPECT_NE(s.message().find("another state"), std::string::npos);
  // The world changed: a resource now needs something else than planned.
  f.provider.world.erase("hosts.ns/w0");
  s = CheckSavedPlan(saved, f.PlanNow(), f.state.lineage, f.state.serial, f.model.digest);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("hosts.ns/w0 was planned as no-op but now needs create"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace onboard
