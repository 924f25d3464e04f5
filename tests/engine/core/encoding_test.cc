// Base64 and RFC 3339 times: the one implementation every module uses (engine/encoding.h,
// engine/clock.h).
#include <gtest/gtest.h>

#include "engine/clock.h"
#include "engine/encoding.h"

namespace onboard {
namespace {

TEST(Encoding, Base64RoundTripsEveryLength) {
  for (const std::string& s : {std::string(), std::string("a"), std::string("ab"), std::string("abc"),
                               std::string("abcd"), std::string("\0\xff\x10", 3)}) {
    auto back = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(back.ok()) << back.error();
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(Base64Encode("abc"), "YWJj");
  EXPECT_EQ(Base64Encode("ab"), "YWI=");
  EXPECT_EQ(Base64Encode("a"), "YQ==");
}

TEST(Encoding, Base64DecodeAcceptsWhitespaceUrlAlphabetAndMissingPadding) {
  EXPECT_EQ(*Base64Decode("YW\nJj"), "abc");
  EXPECT_EQ(*Base64Decode("YQ"), "a");
  EXPECT_EQ(*Base64Decode("-_8="), std::string("\xfb\xff", 2));
  EXPECT_EQ(*Base64Decode("+/8="), std::string("\xfb\xff", 2));
}

TEST(Encoding, Base64DecodeNamesTheBadCharacter) {
  auto bad = Base64Decode("ab$c");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), "invalid base64 at character 3");
  EXPECT_FALSE(Base64Decode("YQ==YQ").ok());  // data after padding
}

TEST(Time, Rfc3339ParsesOffsetsAndFractionsAndRefusesTheRest) {
  int64_t t = 0;
  ASSERT_TRUE(ParseTime("1970-01-02T00:00:01Z", &t));
  EXPECT_EQ(t, 86401);
  ASSERT_TRUE(ParseTime("1970-01-02T01:00:01.123456+01:00", &t));
  EXPECT_EQ(t, 86401);
  ASSERT_TRUE(ParseTime("2026-11-26T03:22:27.123456789Z", &t));  // Terraform's lock Created
  EXPECT_EQ(FormatTime(t), "2026-11-26T03:22:27Z");
  for (const char* bad : {"yesterday", "2026-11-26T03:22:27", "2026-11-26T03:22:27Zjunk", "2026-13-01T00:00:00Z",
                          "2026-11-26X03:22:27Z"}) {
    EXPECT_FALSE(ParseTime(bad, &t)) << bad;
  }
}

}  // namespace
}  // namespace onboard
