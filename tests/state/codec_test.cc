// State codec, lineage UUIDs, LockInfo, and the state JSON schema.
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "engine/clock.h"
#include "engine/state.h"
#include "state/lock.h"
#include "tests/state/sample.h"

namespace onboard {
namespace {

using nlohmann::json;

TEST(StateCodec, RoundTripsEveryField) {
  State s = test::SampleState();
  json j = EncodeState(s);
  // Through text, as it goes through a file.
  Result<State> back = DecodeState(json::parse(j.dump(2)), "mem.json");
  ASSERT_TRUE(back.ok()) << back.error();
  EXPECT_EQ(back->format_version, 1);
  EXPECT_EQ(back->lineage, s.lineage);
  EXPECT_EQ(back->serial, 7);
  ASSERT_EQ(back->resources.size(), s.resources.size());
  for (const auto& [key, want] : s.resources) {
    const ResourceState* got = back->Find(key);
    ASSERT_NE(got, nullptr) << key;
    EXPECT_EQ(got->address, want.address) << key;
    EXPECT_EQ(got->workload, want.workload) << key;
    EXPECT_EQ(got->attributes, want.attributes) << key;
    EXPECT_EQ(got->observed, want.observed) << key;
    EXPECT_EQ(got->origin, want.origin) << key;
    ASSERT_EQ(got->intent.has_value(), want.intent.has_value()) << key;
    if (want.intent) {
      EXPECT_EQ(got->intent->action, want.intent->action);
      EXPECT_EQ(got->intent->run_id, want.intent->run_id);
      EXPECT_EQ(got->intent->started, want.intent->started);
    }
  }
  EXPECT_EQ(EncodeState(*back), j);
}

TEST(StateCodec, EncodesTheDocumentedShape) {
  json j = EncodeState(test::SampleState());
  EXPECT_EQ(j["format_version"], 1);
  ASSERT_TRUE(j["resources"].is_array());
  std::vector<std::string> addresses;
  for (const auto& r : j["resources"]) addresses.push_back(r["address"]);
  EXPECT_EQ(addresses, (std::vector<std::string>{"container.bookinfo/ratings-vm",
                                                 "mesh_expansion.prod",
                                                 "token.bookinfo/ratings-vm",
                                                 "workload_entry.bookinfo/ratings-vm"}));
  const json& we = j["resources"][3];
  EXPECT_EQ(we["type"], "workload_entry");
  EXPECT_EQ(we["name"], "bookinfo/ratings-vm");
  EXPECT_EQ(we["workload"], "bookinfo/ratings-vm");
  EXPECT_EQ(we["origin"], "adopted");
  EXPECT_EQ(we["intent"], (json{{"action", "update"}, {"run_id", "8d0b6f5e-run"},
                                {"started", "2026-11-26T03:22:27Z"}}));
  const json& mesh = j["resources"][1];
  EXPECT_EQ(mesh["origin"], "created");
  EXPECT_EQ(mesh["workload"], "");
  EXPECT_FALSE(mesh.contains("intent"));
}

TEST(StateCodec, RefusesANewerFormatVersion) {
  json j = EncodeState(test::SampleState());
  j["format_version"] = 7;
  j["something_new"] = {1, 2, 3};  // a newer layout: the version is reported, not the field
  Result<State> r = DecodeState(j, "/srv/fleet/onboard.state.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(),
            "state file /srv/fleet/onboard.state.json was written by a newer onboard "
            "(format_version 7); this onboard reads format_version 1: upgrade onboard");
}

struct BadCase {
  const char* name;
  std::function<void(json&)> mutate;
  const char* want;        // expected in the error
  bool schema_rejects;     // the JSON schema catches it too
};

std::vector<BadCase> BadCases() {
  return {
      {"not an object", [](json& j) { j = json::array(); }, "$: a state file must be a JSON object", true},
      {"no version", [](json& j) { j.erase("format_version"); }, "$.format_version: missing", true},
      {"version string", [](json& j) { j["format_version"] = "1"; }, "$.format_version: must be an integer", true},
      {"version 0", [](json& j) { j["format_version"] = 0; }, "$.format_version: unsupported value 0", true},
      {"no lineage", [](json& j) { j.erase("lineage"); }, "$.lineage: missing", true},
      {"empty lineage", [](json& j) { j["lineage"] = ""; }, "$.lineage: must not be empty", true},
      {"serial float", [](json& j) { j["serial"] = 1.5; }, "$.serial: must be an integer, got a number", true},
      {"serial negative", [](json& j) { j["serial"] = -1; }, "$.serial: must not be negative", true},
      {"resources object", [](json& j) { j["resources"] = json::object(); }, "$.resources: must be an array", true},
      {"unknown top field", [](json& j) { j["extra"] = 1; }, "$.extra: unknown field", true},
      {"resource not object", [](json& j) { j["resources"][2] = 5; }, "$.resources[2]: must be an object", true},
      {"bad origin", [](json& j) { j["resources"][1]["origin"] = "stolen"; },
       "$.resources[1].origin: must be \"created\" or \"adopted\", got \"stolen\"", true},
      {"bad address", [](json& j) { j["resources"][0]["address"] = "vm.x"; }, "$.resources[0].address: ", true},
      {"check address", [](json& j) {
         j["resources"][0]["address"] = "check.gateway.bookinfo/ratings-vm";
         j["resources"][0]["type"] = "check.gateway";
       }, "$.resources[0].address: \"check.gateway.bookinfo/ratings-vm\" is a read-only check", true},
      {"type mismatch", [](json& j) { j["resources"][0]["type"] = "sidecar"; },
       "$.resources[0].type: \"sidecar\" does not match the address", false},
      {"name mismatch", [](json& j) { j["resources"][0]["name"] = "other/vm"; },
       "$.resources[0].name: \"other/vm\" does not match the address", false},
      {"duplicate", [](json& j) { j["resources"][1] = j["resources"][0]; },
       "$.resources[1].address: \"container.bookinfo/ratings-vm\" appears more than once", false},
      {"no workload", [](json& j) { j["resources"][0].erase("workload"); }, "$.resources[0].workload: missing", true},
      {"attributes array", [](json& j) { j["resources"][2]["attributes"] = json::array(); },
       "$.resources[2].attributes: must be an object, got an array", true},
      {"observed missing", [](json& j) { j["resources"][2].erase("observed"); }, "$.resources[2].observed: missing", true},
      {"unknown resource field", [](json& j) { j["resources"][3]["secret"] = "x"; }, "$.resources[3].secret: unknown field", true},
      {"intent action", [](json& j) { j["resources"][3]["intent"]["action"] = "explode"; },
       "$.resources[3].intent.action: must be create, update, replace or delete", true},
      {"intent time", [](json& j) { j["resources"][3]["intent"]["started"] = "yesterday"; },
       "$.resources[3].intent.started: \"yesterday\" is not an RFC 3339", true},
      {"intent run_id", [](json& j) { j["resources"][3]["intent"].erase("run_id"); },
       "$.resources[3].intent.run_id: missing", true},
      {"intent not object", [](json& j) { j["resources"][3]["intent"] = "update"; },
       "$.resources[3].intent: must be an object, got a string", true},
  };
}

TEST(StateCodec, RefusesStructuralProblemsNamingFileAndPath) {
  for (const auto& c : BadCases()) {
    json j = EncodeState(test::SampleState());
    c.mutate(j);
    Result<State> r = DecodeState(j, "fleet/onboard.state.json");
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(r.error().find("state file fleet/onboard.state.json: "), std::string::npos)
        << c.name << ": " << r.error();
    EXPECT_NE(r.error().find(c.want), std::string::npos) << c.name << ": " << r.error();
  }
}

class StateSchema : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ifstream in(std::string(ONBOARD_SOURCE_DIR) + "/schemas/state.schema.json");
    ASSERT_TRUE(in.good()) << "schemas/state.schema.json not found";
    schema_doc_ = json::parse(in);
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    valijson::adapters::NlohmannJsonAdapter adapter(schema_doc_);
    parser.populateSchema(adapter, schema_);
  }

  std::string Validate(const json& doc) {
    valijson::Validator validator;
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter adapter(doc);
    if (validator.validate(schema_, adapter, &results)) return "";
    std::string out;
    valijson::ValidationResults::Error e;
    while (results.popError(e)) {
      for (const auto& c : e.context) out += c;
      out += ": " + e.description + "\n";
    }
    return out.empty() ? "invalid" : out;
  }

  json schema_doc_;
  valijson::Schema schema_;
};

TEST_F(StateSchema, AcceptsEncodedStates) {
  EXPECT_EQ(Validate(EncodeState(test::SampleState())), "");
  State empty;
  empty.lineage = NewLineage();
  EXPECT_EQ(Validate(EncodeState(empty)), "");
  EXPECT_EQ(Validate(EncodeState(test::BigState(50, 100))), "");
}

TEST_F(StateSchema, RejectsWhatTheDecoderRejects) {
  // The schema and the decoder agree on everything a schema can express.
  int checked = 0;
  for (const auto& c : BadCases()) {
    if (!c.schema_rejects) continue;
    json j = EncodeState(test::SampleState());
    c.mutate(j);
    EXPECT_NE(Validate(j), "") << c.name;
    ++checked;
  }
  EXPECT_GE(checked, 20);
  json newer = EncodeState(test::SampleState());
  newer["format_version"] = 7;
  EXPECT_NE(Validate(newer), "");
}

TEST(Lineage, IsARandomUuidV4) {
  const std::regex uuid("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = NewLineage();
    ASSERT_TRUE(std::regex_match(id, uuid)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(LockInfoJson, UsesTerraformFieldNamesPlusHostAndPid) {
  LockInfo info;
  info.id = "5d8a1f9e-0c1b-4b7e-9f2a-3c4d5e6f7a8b";
  info.operation = "apply";
  info.who = "alice@build-7";
  info.host = "build-7";
  info.pid = 4242;
  info.version = "0.1.0";
  int64_t t = 0;
  ASSERT_TRUE(ParseTime("2026-11-26T03:22:27Z", &t));
  info.created = t;
  info.path = "fleet/onboard.state.json";
  json j = info.ToJson();
  EXPECT_EQ(j, (json{{"ID", info.id}, {"Operation", "apply"}, {"Info", ""}, {"Who", "alice@build-7"},
                     {"Version", "0.1.0"}, {"Created", "2026-11-26T03:22:27Z"},
                     {"Path", "fleet/onboard.state.json"}, {"Host", "build-7"}, {"Pid", 4242}}));
  LockInfo back = LockInfo::FromJson(j);
  EXPECT_EQ(back.id, info.id);
  EXPECT_EQ(back.operation, info.operation);
  EXPECT_EQ(back.who, info.who);
  EXPECT_EQ(back.host, info.host);
  EXPECT_EQ(back.pid, info.pid);
  EXPECT_EQ(back.version, info.version);
  EXPECT_EQ(back.created, info.created);
  EXPECT_EQ(back.path, info.path);
  EXPECT_EQ(info.Describe(),
            "state is locked by alice@build-7 pid 4242 since 2026-11-26T03:22:27Z for apply "
            "(lock ID 5d8a1f9e-0c1b-4b7e-9f2a-3c4d5e6f7a8b)");
}

TEST(LockInfoJson, ReadsATerraformLockInfo) {
  // As Terraform's http backend clients send it: nanoseconds, no Host or Pid.
  json tf = json::parse(R"({"ID":"c1e7f3a2-1111-4222-8333-944455556666","Operation":"OperationTypeApply",
    "Info":"","Who":"bob@ci-runner","Version":"1.6.0","Created":"2026-11-26T03:22:27.123456789Z",
    "Path":"state/default"})");
  LockInfo info = LockInfo::FromJson(tf);
  EXPECT_EQ(info.id, "c1e7f3a2-1111-4222-8333-944455556666");
  EXPECT_EQ(info.who, "bob@ci-runner");
  EXPECT_EQ(info.host, "ci-runner");
  EXPECT_EQ(info.pid, 0);
  EXPECT_EQ(FormatTime(info.created), "2026-11-26T03:22:27Z");
  EXPECT_EQ(info.path, "state/default");
}

TEST(LockInfoJson, NewLockInfoDescribesThisProcess) {
  LockInfo info = NewLockInfo("plan", "s.json", 1795663347);
  EXPECT_EQ(info.pid, static_cast<int>(::getpid()));
  EXPECT_EQ(info.host, CurrentHost());
  EXPECT_EQ(info.who, CurrentUser() + "@" + CurrentHost());
  EXPECT_EQ(info.operation, "plan");
  EXPECT_EQ(info.path, "s.json");
  EXPECT_EQ(info.version, ONBOARD_VERSION);
  EXPECT_EQ(info.id.size(), 36u);
  EXPECT_NE(info.id, NewLockInfo("plan", "s.json", 1795663347).id);
}

}  // namespace
}  // namespace onboard
