// The objects onboard applies validate against Istio's own CRD schemas (reference/istio-crds/),
// and the validation provably rejects bad objects.
#include "engine/crd_schema.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/bootstrap.h"

namespace onboard {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

const std::string kCrdDir = ONBOARD_SOURCE_DIR "/../shared/reference/istio-crds";
const std::string kExamples = ONBOARD_SOURCE_DIR "/../shared/reference/examples";

const nlohmann::json& WorkloadEntrySchema() {
  static const nlohmann::json schema = [] {
    auto r = LoadCrdSchema(kCrdDir + "/workloadentry.crd.yaml", "v1beta1");
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? r.value() : nlohmann::json::object();
  }();
  return schema;
}

const nlohmann::json& SidecarSchema() {
  static const nlohmann::json schema = [] {
    auto r = LoadCrdSchema(kCrdDir + "/sidecar.crd.yaml", "v1beta1");
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? r.value() : nlohmann::json::object();
  }();
  return schema;
}

Workload Ratings() {
  Workload w;
  w.name = "ratings-vm";
  w.ns = "bookinfo";
  w.address = "35.194.38.142";
  w.network = "vm-network";
  w.service_account = "bookinfo-ratings";
  w.labels = {{"class", "vm"}, {"app", "ratings"}, {"version", "v3"}};
  w.ports = {{"http", 9080}};
  w.annotations = {{"sidecar-bootstrap.istio.io/proxy-instance-ip", "10.128.0.2"}};
  w.sidecar = nlohmann::json::parse(R"({
    "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                 "defaultEndpoint": "127.0.0.1:9080"}],
    "egress": [{"bind": "127.0.0.2", "hosts": ["./*"]}]})");
  return w;
}

nlohmann::json Yaml(const std::string& text) {
  auto r = YamlToJson(YAML::Load(text), "test.yaml");
  EXPECT_TRUE(r.ok()) << r.error();
  return r.ok() ? r.value() : nlohmann::json();
}

// ---- YAML -> JSON ----------------------------------------------------------------------------

TEST(YamlToJson, ScalarsFollowTheCoreSchemaAndQuotesMakeStrings) {
  const auto j = Yaml(R"(
plain_true: true
quoted_true: "true"
single_quoted: 'false'
Cap: False
int: 9080
quoted_int: "9080"
negative: -12
hex: 0x1F
octal: 0o17
float: 1.5
exp: 1e3
big: 4294967295
null_tilde: ~
null_word: null
empty:
str_tag: !!str 12
version: 1.10.2
leading_zero_text: 1.2.3.4
block: |
  two
  lines
list: [a, 1, "2"]
)");
  EXPECT_EQ(j["plain_true"], true);
  EXPECT_EQ(j["quoted_true"], "true");
  EXPECT_EQ(j["single_quoted"], "false");
  EXPECT_EQ(j["Cap"], false);
  EXPECT_TRUE(j["int"].is_number_integer());
  EXPECT_EQ(j["int"], 9080);
  EXPECT_EQ(j["quoted_int"], "9080");
  EXPECT_EQ(j["negative"], -12);
  EXPECT_EQ(j["hex"], 31);
  EXPECT_EQ(j["octal"], 15);
  EXPECT_TRUE(j["float"].is_number_float());
  EXPECT_EQ(j["float"], 1.5);
  EXPECT_EQ(j["exp"], 1000.0);
  EXPECT_EQ(j["big"], 4294967295LL);
  EXPECT_TRUE(j["null_tilde"].is_null());
  EXPECT_TRUE(j["null_word"].is_null());
  EXPECT_TRUE(j["empty"].is_null());
  EXPECT_EQ(j["str_tag"], "12");
  EXPECT_EQ(j["version"], "1.10.2");
  EXPECT_EQ(j["leading_zero_text"], "1.2.3.4");
  EXPECT_EQ(j["block"], "two\nlines\n");
  EXPECT_EQ(j["list"], nlohmann::json::parse(R"(["a", 1, "2"])"));
}

TEST(YamlToJson, ErrorsNameTheLocation) {
  auto r = YamlToJson(YAML::Load("a: 1\nb: !!int nope\n"), "fleet.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("fleet.yaml:2:4"));
  EXPECT_THAT(r.error(), HasSubstr("!!int"));
  auto k = YamlToJson(YAML::Load("? [a, b]\n: 1\n"), "keys.yaml");
  ASSERT_FALSE(k.ok());
  EXPECT_THAT(k.error(), HasSubstr("keys.yaml:1:3: a mapping key must be a scalar"));
}

// ---- loading ---------------------------------------------------------------------------------

TEST(LoadCrdSchema, FindsTheVersionSchema) {
  const auto& schema = WorkloadEntrySchema();
  ASSERT_TRUE(schema.contains("properties"));
  EXPECT_EQ(schema["properties"]["spec"]["properties"]["address"]["maxLength"], 256);
  EXPECT_EQ(schema["properties"]["spec"]["properties"]["ports"]["additionalProperties"]["maximum"],
            4294967295LL);
  EXPECT_TRUE(SidecarSchema()["properties"]["spec"]["properties"].contains("egress"));
}

TEST(LoadCrdSchema, ErrorsSayWhatIsWrong) {
  auto missing_version = LoadCrdSchema(kCrdDir + "/workloadentry.crd.yaml", "v2");
  ASSERT_FALSE(missing_version.ok());
  EXPECT_THAT(missing_version.error(), HasSubstr("no version \"v2\" (it has: v1, v1alpha3, v1beta1)"));
  auto missing_file = LoadCrdSchema(kCrdDir + "/nope.crd.yaml", "v1");
  ASSERT_FALSE(missing_file.ok());
  EXPECT_THAT(missing_file.error(), HasSubstr("nope.crd.yaml: cannot read the CRD file"));
  auto not_crd = LoadCrdSchema(kExamples + "/ratings-sidecar.yaml", "v1beta1");
  ASSERT_FALSE(not_crd.ok());
  EXPECT_THAT(not_crd.error(), HasSubstr("no CustomResourceDefinition document"));
}

// ---- what onboard applies is valid -----------------------------------------------------------

TEST(CrdValidation, GeneratedWorkloadEntryIsValid) {
  Workload w = Ratings();
  EXPECT_THAT(ValidateAgainstSchema(WorkloadEntrySchema(), WorkloadEntryObject(w)),
              ::testing::IsEmpty());
  w.network.clear();
  w.ports.clear();
  w.annotations.clear();
  EXPECT_THAT(ValidateAgainstSchema(WorkloadEntrySchema(), WorkloadEntryObject(w)),
              ::testing::IsEmpty());
}

TEST(CrdValidation, GeneratedSidecarIsValid) {
  EXPECT_THAT(ValidateAgainstSchema(SidecarSchema(), SidecarObject(Ratings())), ::testing::IsEmpty());
}

TEST(CrdValidation, GeneratedObjectsHaveNoUnknownFields) {
  EXPECT_THAT(UnknownFields(WorkloadEntrySchema(), WorkloadEntryObject(Ratings())),
              ::testing::IsEmpty());
  EXPECT_THAT(UnknownFields(SidecarSchema(), SidecarObject(Ratings())), ::testing::IsEmpty());
}

TEST(CrdValidation, MisspelledFieldsAreFound) {
  Workload w = Ratings();
  w.sidecar["ingress"][0]["defaultEndPoint"] = w.sidecar["ingress"][0]["defaultEndpoint"];
  w.sidecar["ingress"][0].erase("defaultEndpoint");
  w.sidecar["outboundTrafficPolicy"] = {{"mode", "REGISTRY_ONLY"}, {"egressProxy", {{"host", "x"}}}};
  const auto unknown = UnknownFields(SidecarSchema(), SidecarObject(w));
  EXPECT_THAT(unknown, ::testing::ElementsAre(HasSubstr("spec.ingress[0].defaultEndPoint: unknown field")));
  auto we = WorkloadEntryObject(Ratings());
  we["spec"]["serviceaccount"] = "x";
  we["status"] = {{"anything", 1}};  // status preserves unknown fields
  EXPECT_THAT(UnknownFields(WorkloadEntrySchema(), we),
              ::testing::ElementsAre(HasSubstr("spec.serviceaccount: unknown field")));
}

TEST(CrdValidation, ReferenceSidecarExampleIsValid) {
  auto doc = YamlToJson(YAML::LoadFile(kExamples + "/ratings-sidecar.yaml"), "ratings-sidecar.yaml");
  ASSERT_TRUE(doc.ok()) << doc.error();
  EXPECT_THAT(ValidateAgainstSchema(SidecarSchema(), doc.value()), ::testing::IsEmpty());
}

// ---- and invalid objects are rejected --------------------------------------------------------

TEST(CrdValidation, PortOutOfRangeIsRejected) {
  Workload w = Ratings();
  w.ports["http"] = 70000;
  EXPECT_THAT(ValidateAgainstSchema(WorkloadEntrySchema(), WorkloadEntryObject(w)),
              Contains("spec.ports.http: port must be between 1-65535"));
  w.ports["http"] = -1;
  auto errors = ValidateAgainstSchema(WorkloadEntrySchema(), WorkloadEntryObject(w));
  EXPECT_THAT(errors, Contains(HasSubstr("spec.ports.http: ")));
  EXPECT_GE(errors.size(), 2u);  // below the schema minimum and outside the CEL range
}

TEST(CrdValidation, WrongTypesAreRejected) {
  auto we = WorkloadEntryObject(Ratings());
  we["spec"]["labels"]["app"] = 5;
  we["spec"]["ports"]["http"] = "9080";
  we["spec"]["address"] = true;
  const auto errors = ValidateAgainstSchema(WorkloadEntrySchema(), we);
  EXPECT_THAT(errors, Contains(HasSubstr("spec.labels.app: ")));
  EXPECT_THAT(errors, Contains(HasSubstr("spec.ports.http: ")));
  EXPECT_THAT(errors, Contains(HasSubstr("spec.address: ")));

  auto sc = SidecarObject(Ratings());
  sc["spec"]["ingress"][0]["port"]["number"] = "http";
  EXPECT_THAT(ValidateAgainstSchema(SidecarSchema(), sc),
              Contains(HasSubstr("spec.ingress[0].port.number: ")));
}

TEST(CrdValidation, AddressIsRequired) {
  auto we = WorkloadEntryObject(Ratings());
  we["spec"].erase("address");
  // The CRD accepts a network-only entry (has(self.address) || has(self.network)).
  EXPECT_THAT(ValidateAgainstSchema(WorkloadEntrySchema(), we), ::testing::IsEmpty());
  we["spec"].erase("network");
  EXPECT_THAT(ValidateAgainstSchema(WorkloadEntrySchema(), we), Contains("spec: Address is required"));
}

TEST(CrdValidation, OtherWorkloadEntryRules) {
  auto we = WorkloadEntryObject(Ratings());
  we["spec"]["ports"]["http_bad"] = 8080;
  EXPECT_THAT(ValidateAgainstSchema(WorkloadEntrySchema(), we),
              Contains("spec.ports: port name must be valid"));

  we = WorkloadEntryObject(Ratings());
  we["spec"]["address"] = "unix://relative/sock/";
  const auto errors = ValidateAgainstSchema(WorkloadEntrySchema(), we);
  EXPECT_THAT(errors, Contains("spec.address: UDS must be an absolute path or abstract socket"));
  EXPECT_THAT(errors, Contains("spec.address: UDS may not be a dir"));
  EXPECT_THAT(errors, Contains("spec: UDS may not include ports"));

  we["spec"]["address"] = std::string(300, 'a');
  EXPECT_THAT(ValidateAgainstSchema(WorkloadEntrySchema(), we), Contains(HasSubstr("spec.address: ")));
}

TEST(CrdValidation, SidecarWildcardSelectorIsRejected) {
  Workload w = Ratings();
  w.sidecar["workloadSelector"] = {{"labels", {{"app", "*"}}}};
  EXPECT_THAT(ValidateAgainstSchema(SidecarSchema(), SidecarObject(w)),
              Contains("spec.workloadSelector.labels.app: wildcard is not supported in selector"));
}

TEST(CrdValidation, UnusableSchemaIsReported) {
  const auto errors = ValidateAgainstSchema(nlohmann::json{{"type", 5}}, nlohmann::json::object());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0], HasSubstr("<schema>: "));
}

}  // namespace
}  // namespace onboard
