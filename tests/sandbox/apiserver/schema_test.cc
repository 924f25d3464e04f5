// Unit tests of the test API server's YAML->JSON conversion and CRD schema validation.
#include "tests/sandbox/apiserver/schema.h"

#include <gtest/gtest.h>

namespace onboard::sandbox {
namespace {

using nlohmann::json;

const std::string kCrds = std::string(ONBOARD_SOURCE_DIR) + "/../shared/reference/istio-crds";

TEST(ParseYamlOrJson, QuotedScalarsStayStrings) {
  json out;
  std::string error;
  ASSERT_TRUE(ParseYamlOrJson("a: \"true\"\nb: true\nc: 10\nd: '10'\ne: ~\nf: 1.5\ng: hello\nh: [1, x]\n", &out,
                              &error))
      << error;
  EXPECT_EQ(out["a"], "true");
  EXPECT_EQ(out["b"], true);
  EXPECT_EQ(out["c"], 10);
  EXPECT_EQ(out["d"], "10");
  EXPECT_TRUE(out["e"].is_null());
  EXPECT_DOUBLE_EQ(out["f"].get<double>(), 1.5);
  EXPECT_EQ(out["g"], "hello");
  EXPECT_EQ(out["h"], json::array({1, "x"}));
  ASSERT_TRUE(ParseYamlOrJson(R"({"x": {"y": [true, "s"]}})", &out, &error));
  EXPECT_EQ(out["x"]["y"][1], "s");
  EXPECT_FALSE(ParseYamlOrJson("a: [unclosed\n", &out, &error));
  EXPECT_NE(error.find("line"), std::string::npos) << error;
}

TEST(CrdSchema, LoadErrorsNameTheFileAndVersion) {
  CrdSchema schema;
  std::string error;
  EXPECT_FALSE(CrdSchema::Load(kCrds + "/nope.yaml", "v1beta1", &schema, &error));
  EXPECT_NE(error.find("nope.yaml"), std::string::npos);
  EXPECT_FALSE(CrdSchema::Load(kCrds + "/workloadentry.crd.yaml", "v9", &schema, &error));
  EXPECT_NE(error.find("v9"), std::string::npos) << error;
}

TEST(CrdSchema, ValidatesWorkloadEntries) {
  CrdSchema schema;
  std::string error;
  ASSERT_TRUE(CrdSchema::Load(kCrds + "/workloadentry.crd.yaml", "v1beta1", &schema, &error)) << error;
  json good = {{"apiVersion", "networking.istio.io/v1beta1"}, {"kind", "WorkloadEntry"},
               {"metadata", {{"name", "x"}, {"unknownMetaIsNotChecked", 1}}},
               {"spec", {{"address", "10.0.0.1"}, {"ports", {{"http", 9080}}}, {"labels", {{"a", "b"}}}}},
               {"status", {{"anything", "goes"}}}};
  EXPECT_TRUE(schema.Validate(good).empty());
  EXPECT_TRUE(WorkloadEntryRules(good).empty());

  json bad = good;
  bad["spec"]["weight"] = "heavy";
  bad["spec"]["bogus"] = true;
  bad["spec"]["labels"]["n"] = 5;
  auto causes = schema.Validate(bad);
  std::set<std::string> fields;
  for (const auto& c : causes) fields.insert(c.field);
  EXPECT_TRUE(fields.count("spec.bogus")) << causes.size();
  EXPECT_TRUE(fields.count("spec.weight"));
  EXPECT_TRUE(fields.count("spec.labels.n"));
  json unknown_top = good;
  unknown_top["extra"] = 1;
  ASSERT_EQ(schema.Validate(unknown_top).size(), 1u);
  EXPECT_EQ(schema.Validate(unknown_top)[0].field, "extra");

  json network_only = good;
  network_only["spec"] = {{"network", "vpc-1"}};
  EXPECT_TRUE(WorkloadEntryRules(network_only).empty());
  json none = good;
  none["spec"] = {{"serviceAccount", "sa"}};
  auto rules = WorkloadEntryRules(none);
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(rules[0].field, "spec");
  EXPECT_NE(rules[0].message.find("Address is required"), std::string::npos);
  json uds = good;
  uds["spec"] = {{"address", "unix://relative"}, {"ports", {{"http", 1}}}};
  EXPECT_EQ(WorkloadEntryRules(uds).size(), 2u);
}

}  // namespace
}  // namespace onboard::sandbox
