// Golden-file comparison for the bootstrap tests. ONBOARD_UPDATE_GOLDEN=1 rewrites the files.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace onboard::testing {

inline std::string GoldenPath(const std::string& name) {
  return std::string(ONBOARD_BOOTSTRAP_GOLDEN_DIR) + "/" + name;
}

inline bool UpdatingGoldens() {
  const char* v = std::getenv("ONBOARD_UPDATE_GOLDEN");
  return v != nullptr && std::string(v) == "1";
}

// Compares `actual` with golden/<name>; with ONBOARD_UPDATE_GOLDEN=1 writes it instead.
inline void ExpectGolden(const std::string& name, const std::string& actual) {
  const std::string path = GoldenPath(name);
  if (UpdatingGoldens()) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(out.good()) << "cannot write golden file " << path;
    out << actual;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << "golden file " << path
                         << " is missing; run the test with ONBOARD_UPDATE_GOLDEN=1 to create it";
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), actual) << "output differs from " << path
                              << " (ONBOARD_UPDATE_GOLDEN=1 rewrites it after review)";
}

}  // namespace onboard::testing
