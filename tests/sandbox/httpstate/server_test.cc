// Black-box tests of onboard-test-httpstate itself: the protocol semantics the backend tests rely on.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/sandbox/httpstate/harness.h"

namespace onboard::sandbox {
namespace {

using nlohmann::json;

std::unique_ptr<HttpStateProcess> StartServer(const HttpStateProcess::Options& options = {}) {
  std::string error;
  auto p = HttpStateProcess::Start(HTTPSTATE_BINARY, options, &error);
  EXPECT_TRUE(p) << error;
  return p;
}

std::string LockBody(const std::string& id) { return json{{"ID", id}, {"Who", "t@h"}}.dump(); }

TEST(HttpStateServer, LockUnlockAndTheLockIdOnWrites) {
  auto s = StartServer();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->Request("GET", "/st").status, 404);
  EXPECT_EQ(s->Request("LOCK", "/st", LockBody("a")).status, 200);
  RawReply held = s->Request("LOCK", "/st", LockBody("b"));
  EXPECT_EQ(held.status, 423);
  EXPECT_EQ(json::parse(held.body).value("ID", ""), "a");
  EXPECT_EQ(s->Lock("/st").value("ID", ""), "a");

  EXPECT_EQ(s->Request("POST", "/st", std::string("{}")).status, 409);       // no ID
  EXPECT_EQ(s->Request("POST", "/st?ID=b", std::string("{}")).status, 409);  // wrong ID
  EXPECT_EQ(s->Request("POST", "/st?ID=a", std::string("{\"x\":1}")).status, 200);
  EXPECT_EQ(s->Request("GET", "/st").body, "{\"x\":1}");

  RawReply wrong = s->Request("UNLOCK", "/st", LockBody("b"));
  EXPECT_EQ(wrong.status, 409);
  EXPECT_EQ(json::parse(wrong.body).value("ID", ""), "a");
  EXPECT_EQ(s->Request("UNLOCK", "/st", LockBody("a")).status, 200);
  EXPECT_TRUE(s->Lock("/st").is_null());
  EXPECT_EQ(s->Request("POST", "/st", std::string("{}")).status, 200);
  EXPECT_EQ(s->Request("LOCK", "/st", std::string("not json")).status, 400);
}

TEST(HttpStateServer, ConflictStatusOptionAndLockAtPathSlashLockGuardsPath) {
  auto s = StartServer({false, "", "", 409, {}});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->Request("LOCK", "/st/lock", LockBody("a")).status, 200);
  EXPECT_EQ(s->Request("LOCK", "/st/lock", LockBody("b")).status, 409);
  EXPECT_EQ(s->Request("POST", "/st", std::string("{}")).status, 409);
  EXPECT_EQ(s->Request("POST", "/st?ID=a", std::string("{}")).status, 200);
}

TEST(HttpStateServer, BasicAuthIsRequiredAndNeverLogged) {
  auto s = StartServer({false, "alice", "s3cret-pw", 0, {}});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->Request("GET", "/st").status, 401);
  EXPECT_EQ(s->Request("GET", "/st", nullptr, "alice:wrong").status, 401);
  EXPECT_EQ(s->Request("GET", "/st", nullptr, "alice:s3cret-pw").status, 404);
  std::string log = s->Requests().dump();
  EXPECT_EQ(log.find("s3cret"), std::string::npos) << log;
  EXPECT_EQ(log.find("Authorization"), std::string::npos) << log;
  EXPECT_NE(log.find("\"user\":\"alice\""), std::string::npos) << log;
}

TEST(HttpStateServer, FaultsFailTheNextMatchingRequestsOnly) {
  auto s = StartServer();
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->Fault({{"method", "GET"}, {"path_regex", "/st"}, {"status", 503}, {"count", 2}}));
  EXPECT_EQ(s->Request("POST", "/st", std::string("{}")).status, 200);  // another method
  EXPECT_EQ(s->Request("GET", "/other").status, 404);                   // another path
  EXPECT_EQ(s->Request("GET", "/st").status, 503);
  EXPECT_EQ(s->Request("GET", "/st").status, 503);
  EXPECT_EQ(s->Request("GET", "/st").status, 200);
  EXPECT_FALSE(s->Fault({{"path_regex", "("}, {"status", 500}}));
}

TEST(HttpStateServer, TlsServesWithItsCaAndPersistKeepsStatesAcrossRestarts) {
  char tmpl[] = "/tmp/onboard-httpstate-persist.XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  const std::string persist = tmpl;
  {
    auto s = StartServer({true, "", "", 0, {"--persist", persist}});
    ASSERT_TRUE(s);
    EXPECT_EQ(s->Request("POST", "/a/b", std::string("{\"v\":2}")).status, 200);
  }
  auto s = StartServer({true, "", "", 0, {"--persist", persist}});
  ASSERT_TRUE(s);
  RawReply r = s->Request("GET", "/a/b");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "{\"v\":2}");
  std::error_code ec;
  std::filesystem::remove_all(persist, ec);
}

}  // namespace
}  // namespace onboard::sandbox
