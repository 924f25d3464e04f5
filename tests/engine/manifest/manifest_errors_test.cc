// Golden error cases: each testdata/errors/NAME.yaml is loaded alone (as file "NAME.yaml") and
// must produce exactly the diagnostics in NAME.expected, one Diagnostic::ToString() per line.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/manifest.h"

namespace onboard {
namespace {

namespace fs = std::filesystem;

const std::string kErrors = std::string(MANIFEST_TESTDATA) + "/errors";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::vector<std::string> Cases() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kErrors, ec)) {
    if (e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class ManifestErrors : public ::testing::TestWithParam<std::string> {};

TEST_P(ManifestErrors, ReportsExactlyTheExpectedDiagnostics) {
  const std::string name = GetParam();
  const std::string text = ReadFile(kErrors + "/" + name + ".yaml");
  ASSERT_FALSE(text.empty());
  ASSERT_TRUE(fs::exists(kErrors + "/" + name + ".expected")) << "missing " << name << ".expected";
  const std::vector<std::string> expected = Lines(ReadFile(kErrors + "/" + name + ".expected"));
  ASSERT_FALSE(expected.empty()) << name << ".expected lists no diagnostics";

  LoadResult r = LoadManifestText(text, name + ".yaml", LoadOptions{"/home/alice", "alice"});
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.model.has_value()) << "a model must not be returned with errors";
  std::vector<std::string> got;
  for (const Diagnostic& d : r.diagnostics) {
    got.push_back(d.ToString());
    // Every diagnostic names a line and column in the file, and the file.
    EXPECT_EQ(d.where.file, name + ".yaml");
    EXPECT_GT(d.where.line, 0) << d.ToString();
    EXPECT_GT(d.where.column, 0) << d.ToString();
  }
  EXPECT_EQ(got, expected);
}

INSTANTIATE_TEST_SUITE_P(Golden, ManifestErrors, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(ManifestErrorsCorpus, CoversEveryErrorFamily) {
  std::vector<std::string> cases = Cases();
  for (const char* must : {"bad_yaml", "schema_type", "unknown_field", "bad_ip", "bad_port", "bad_dns_name",
                           "relative_path", "dotdot_path", "bad_duration", "renew_before", "duplicate_names",
                           "sidecar_without_workloadentry", "missing_labels", "three_mistakes",
                           "unknown_onboard_kind", "two_fleets"}) {
    EXPECT_NE(std::find(cases.begin(), cases.end(), must), cases.end()) << must;
  }
}

}  // namespace
}  // namespace onboard
