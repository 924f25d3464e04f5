// The http state backend (state/http.cc) against onboard-test-httpstate, one server per test.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <thread>

#include "engine/model.h"
#include "state/backends.h"
#include "state/http.h"
#include "state/http_client.h"
#include "state/local.h"
#include "state/lock.h"
#include "tests/sandbox/httpstate/harness.h"
#include "tests/state/sample.h"

namespace onboard {
namespace {

using nlohmann::json;
using sandbox::HttpStateProcess;

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << "in: " << (text)
#define EXPECT_LACKS(text, part) \
  EXPECT_EQ(std::string(text).find(part), std::string::npos) << "in: " << (text)

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

class HttpStore : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("NO_PROXY", "*", 1);
    ::setenv("no_proxy", "*", 1);
    ::unsetenv("ONBOARD_HTTP_USERNAME");
    ::unsetenv("ONBOARD_HTTP_PASSWORD");
  }
  void TearDown() override {
    ::unsetenv("ONBOARD_HTTP_USERNAME");
    ::unsetenv("ONBOARD_HTTP_PASSWORD");
  }

  std::unique_ptr<HttpStateProcess> Start(const HttpStateProcess::Options& options = {}) {
    std::string error;
    auto p = HttpStateProcess::Start(HTTPSTATE_BINARY, options, &error);
    EXPECT_TRUE(p) << error;
    return p;
  }
  void StartServer(const HttpStateProcess::Options& options = {}) { server_ = Start(options); }

  // Locking at the state's own path, short retry waits.
  json Config(const std::string& path = "/state", bool lock = true) const {
    json c = {{"address", server_->url(path)}, {"retryWaitMin", 0.01}, {"retryWaitMax", 0.05}};
    if (lock) c["lockAddress"] = server_->url(path);
    return c;
  }

  std::unique_ptr<StateStore> Open(const json& config) {
    Result<std::unique_ptr<StateStore>> r = OpenHttpStateStore(config, "spec.backend");
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? std::move(*r) : nullptr;
  }
  std::string OpenError(const json& config) {
    Result<std::unique_ptr<StateStore>> r = OpenHttpStateStore(config, "spec.backend");
    EXPECT_FALSE(r.ok()) << config.dump();
    return r.ok() ? "" : r.error();
  }

  static LockInfo Info(const StateStore& store, const std::string& operation, const std::string& who = "") {
    LockInfo info = NewLockInfo(operation, store.Describe(), static_cast<int64_t>(std::time(nullptr)));
    if (!who.empty()) info.who = who;
    return info;
  }

  std::unique_ptr<HttpStateProcess> server_;
};

// ---------------------------------------------------------------------------------------------
// Reading and writing

TEST_F(HttpStore, WriteThenReadRoundTripsTheLocalFilesBytes) {
  StartServer();
  auto store = Open(Config());
  ASSERT_TRUE(store);
  EXPECT_EQ(store->Describe(), "http " + server_->url("/state"));
  Result<std::optional<State>> none = store->Read();
  ASSERT_TRUE(none.ok()) << none.error();
  EXPECT_FALSE(none->has_value());

  State s = test::SampleState();
  Status w = store->Write(s);
  ASSERT_TRUE(w.ok()) << w.message();
  auto other = Open(Config());
  Result<std::optional<State>> back = other->Read();
  ASSERT_TRUE(back.ok()) << back.error();
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ(EncodeState(**back), EncodeState(s));
  EXPECT_EQ(server_->Request("GET", "/state").body, *LocalStateStore::Serialize(s));

  auto posts = server_->Requests("POST", "/state");
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(posts[0]["headers"].value("Content-Type", ""), "application/json");
  EXPECT_FALSE(posts[0]["headers"].value("Content-MD5", "").empty());  // the server checks it (400 otherwise)
  EXPECT_EQ(posts[0]["query"], "");
}

TEST_F(HttpStore, NoStateIs404Or204OrAnEmpty200) {
  StartServer();
  auto store = Open(Config());
  Result<std::optional<State>> r404 = store->Read();
  ASSERT_TRUE(r404.ok()) << r404.error();
  EXPECT_FALSE(r404->has_value());

  ASSERT_TRUE(server_->Request("POST", "/state", *LocalStateStore::Serialize(test::SampleState())).status ==
              200);
  ASSERT_TRUE(server_->Fault({{"method", "GET"}, {"path_regex", "/state"}, {"status", 204}}));
  Result<std::optional<State>> r204 = store->Read();
  ASSERT_TRUE(r204.ok()) << r204.error();
  EXPECT_FALSE(r204->has_value());
  Result<std::optional<State>> there = store->Read();  // the fault is used up: the state is there
  ASSERT_TRUE(there.ok()) << there.error();
  EXPECT_TRUE(there->has_value());

  ASSERT_EQ(server_->Request("POST", "/state", std::string()).status, 200);
  Result<std::optional<State>> empty = store->Read();
  ASSERT_TRUE(empty.ok()) << empty.error();
  EXPECT_FALSE(empty->has_value());
}

TEST_F(HttpStore, AStateDamagedInTransitIsCaughtByItsContentMd5) {
  StartServer();
  auto store = Open(Config());
  const std::string good = *LocalStateStore::Serialize(test::SampleState());
  ASSERT_TRUE(server_->Fault({{"method", "GET"},
                              {"path_regex", "/state"},
                              {"status", 200},
                              {"body", good},
                              {"headers", {{"Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA=="}}}}));
  Result<std::optional<State>> r = store->Read();
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error(), "arrived damaged");
  EXPECT_FALSE(store->Write(test::SampleState()).ok());
  ASSERT_EQ(server_->Request("POST", "/state", good).status, 200);
  Result<std::optional<State>> ok = store->Read();  // with the server's own, matching Content-MD5
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_TRUE(ok->has_value());
}

TEST_F(HttpStore, AnIdenticalWriteSendsNothingAndLineageAndSerialAreChecked) {
  StartServer();
  auto store = Open(Config());
  State s = test::SampleState();
  ASSERT_TRUE(store->Write(s).ok());
  ASSERT_TRUE(store->Write(s).ok());
  EXPECT_EQ(server_->Requests("POST").size(), 1u);
  EXPECT_EQ(server_->Requests("GET").size(), 1u);  // the first write looked at what was there

  auto other = Open(Config());  // writes without reading first: it reads before its first write
  State t = s;
  t.lineage = "11111111-2222-4333-8444-555555555555";
  Status lineage = other->Write(t);
  ASSERT_FALSE(lineage.ok());
  EXPECT_HAS(lineage.message(), "different state");
  EXPECT_HAS(lineage.message(), s.lineage);
  t = s;
  t.serial = s.serial - 1;
  Status older = other->Write(t);
  ASSERT_FALSE(older.ok());
  EXPECT_HAS(older.message(), "newer than this state's serial");
  EXPECT_EQ(server_->Requests("POST").size(), 1u);
  t.serial = s.serial + 1;
  EXPECT_TRUE(other->Write(t).ok());
  EXPECT_EQ(server_->Requests("POST").size(), 2u);
}

TEST_F(HttpStore, ACorruptOrNewerStateIsRefusedAndNeverOverwritten) {
  StartServer();
  const std::string corrupt = "{\"format_version\": 1, \"lineage\": ";
  ASSERT_EQ(server_->Request("POST", "/state", corrupt).status, 200);
  auto store = Open(Config());
  Result<std::optional<State>> r = store->Read();
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error(), "not valid JSON");
  EXPECT_HAS(r.error(), server_->url("/state"));
  Status w = store->Write(test::SampleState());
  ASSERT_FALSE(w.ok());
  EXPECT_HAS(w.message(), "never overwrites");
  EXPECT_EQ(server_->Request("GET", "/state").body, corrupt);

  // A store that writes without reading first reads, and refuses too.
  auto fresh = Open(Config());
  ASSERT_FALSE(fresh->Write(test::SampleState()).ok());

  json newer = EncodeState(test::SampleState());
  newer["format_version"] = 99;
  ASSERT_EQ(server_->Request("POST", "/state", newer.dump()).status, 200);
  Result<std::optional<State>> n = store->Read();
  ASSERT_FALSE(n.ok());
  EXPECT_HAS(n.error(), "upgrade onboard");
  ASSERT_FALSE(store->Write(test::SampleState()).ok());
  EXPECT_EQ(server_->Request("GET", "/state").body, newer.dump());
  EXPECT_EQ(server_->Requests("POST").size(), 2u);  // only the two written by hand
}

// ---------------------------------------------------------------------------------------------
// Locking

TEST_F(HttpStore, WritesCarryTheEscapedLockIdOnlyWhileLocked) {
  StartServer();
  auto store = Open(Config("/fleets/prod?env=prod&token=abc"));
  EXPECT_EQ(store->Describe(), "http " + server_->url("/fleets/prod"));
  LockInfo info = Info(*store, "apply");
  info.id = "run 7&x=/y";
  ASSERT_TRUE(store->Lock(info, 0).ok());
  State s = test::SampleState();
  Status w = store->Write(s);
  ASSERT_TRUE(w.ok()) << w.message();
  Status u = store->Unlock(info.id);
  ASSERT_TRUE(u.ok()) << u.message();
  s.serial++;
  s.resources.erase(s.resources.begin());
  ASSERT_TRUE(store->Write(s).ok());

  auto posts = server_->Requests("POST", "/fleets/prod");
  ASSERT_EQ(posts.size(), 2u);
  EXPECT_EQ(posts[0]["query"], "env=prod&token=abc&ID=run%207%26x%3D%2Fy");
  EXPECT_EQ(posts[0]["status"], 200);  // the server matched it to the holder's ID
  EXPECT_EQ(posts[1]["query"], "env=prod&token=abc");

  auto locks = server_->Requests("LOCK");
  ASSERT_EQ(locks.size(), 1u);
  json sent = json::parse(locks[0]["body"].get<std::string>());
  EXPECT_EQ(sent["ID"], info.id);
  EXPECT_EQ(sent["Operation"], "apply");
  EXPECT_EQ(sent["Pid"], static_cast<int>(::getpid()));
  EXPECT_FALSE(sent["Who"].get<std::string>().empty());
  EXPECT_FALSE(sent["Created"].get<std::string>().empty());
  auto unlocks = server_->Requests("UNLOCK");
  ASSERT_EQ(unlocks.size(), 1u);
  EXPECT_EQ(json::parse(unlocks[0]["body"].get<std::string>())["ID"], info.id);
  EXPECT_TRUE(server_->Lock("/fleets/prod").is_null());
}

class HttpStoreConflict : public HttpStore, public ::testing::WithParamInterface<int> {};

TEST_P(HttpStoreConflict, AHeldLockNamesItsHolderAndWhatToDo) {
  StartServer({false, "", "", GetParam(), {}});
  auto a = Open(Config());
  auto b = Open(Config());
  LockInfo ia = Info(*a, "apply", "alice@build-7");
  ASSERT_TRUE(a->Lock(ia, 0).ok());
  Status st = b->Lock(Info(*b, "plan"), 0);
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.message(), "alice@build-7");
  EXPECT_HAS(st.message(), "for apply");
  EXPECT_HAS(st.message(), "pid " + std::to_string(::getpid()));
  EXPECT_HAS(st.message(), "--lock-timeout SECONDS");
  EXPECT_HAS(st.message(), "onboard force-unlock " + ia.id);
  EXPECT_EQ(server_->Lock("/state").value("ID", ""), ia.id);
  EXPECT_EQ(server_->Requests("LOCK").back()["status"], GetParam());

  // Holder(): what this process knows.
  Result<std::optional<LockInfo>> ha = a->Holder();
  ASSERT_TRUE(ha.ok() && ha->has_value());
  EXPECT_EQ((*ha)->id, ia.id);
  Result<std::optional<LockInfo>> hb = b->Holder();
  ASSERT_TRUE(hb.ok());
  EXPECT_FALSE(hb->has_value());

  // A write without the lock is refused by the server, and the message says why.
  Status w = b->Write(test::SampleState());
  ASSERT_FALSE(w.ok());
  EXPECT_HAS(w.message(), "this run holds no lock");
  EXPECT_HAS(w.message(), "alice@build-7");
}

INSTANTIATE_TEST_SUITE_P(Status, HttpStoreConflict, ::testing::Values(423, 409));

TEST_F(HttpStore, WrongLockIdsAreRefusedOnUnlockWriteAndForceUnlock) {
  StartServer();
  auto a = Open(Config());
  auto b = Open(Config());
  auto c = Open(Config());
  LockInfo ia = Info(*a, "apply", "alice@build-7");
  ASSERT_TRUE(a->Lock(ia, 0).ok());
  Status wrong = a->Unlock("not-the-id");
  ASSERT_FALSE(wrong.ok());
  EXPECT_HAS(wrong.message(), "the lock held is " + ia.id);
  EXPECT_EQ(server_->Lock("/state").value("ID", ""), ia.id);

  // a's lock is force-unlocked and b takes it: a's write and unlock are refused.
  ASSERT_TRUE(c->ForceUnlock(ia.id).ok());
  LockInfo ib = Info(*b, "apply", "bob@build-9");
  ASSERT_TRUE(b->Lock(ib, 0).ok());
  Status w = a->Write(test::SampleState());
  ASSERT_FALSE(w.ok());
  EXPECT_HAS(w.message(), "refused this run's lock ID " + ia.id);
  EXPECT_HAS(w.message(), "bob@build-9");
  EXPECT_EQ(server_->Request("GET", "/state").status, 404);
  Status u = a->Unlock(ia.id);
  ASSERT_FALSE(u.ok());
  EXPECT_HAS(u.message(), "force-unlocked while this run held it");
  EXPECT_HAS(u.message(), ib.id);
  EXPECT_EQ(server_->Lock("/state").value("ID", ""), ib.id);

  Status f = c->ForceUnlock("not-the-id");
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.message(), "lock ID not-the-id does not match");
  EXPECT_HAS(f.message(), "onboard force-unlock " + ib.id);
  EXPECT_EQ(server_->Lock("/state").value("ID", ""), ib.id);
}

TEST_F(HttpStore, WaitingWithATimeoutGetsTheLockOnceTheHolderReleasesIt) {
  StartServer();
  auto a = Open(Config());
  auto b = Open(Config());
  LockInfo ia = Info(*a, "apply");
  LockInfo ib = Info(*b, "apply");
  ASSERT_TRUE(a->Lock(ia, 0).ok());
  Status released;
  std::thread holder([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    released = a->Unlock(ia.id);
  });
  auto start = std::chrono::steady_clock::now();
  Status st = b->Lock(ib, 30);
  double waited = Seconds(start);
  holder.join();
  ASSERT_TRUE(released.ok()) << released.message();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_GE(waited, 1.4);
  EXPECT_LT(waited, 10);
  EXPECT_EQ(server_->Lock("/state").value("ID", ""), ib.id);
  EXPECT_GE(server_->Requests("LOCK").size(), 3u);  // a's, b's refused one(s), b's granted one
}

TEST_F(HttpStore, TheLockTimeoutExpiresWhileTheHolderKeepsIt) {
  StartServer();
  auto a = Open(Config());
  auto b = Open(Config());
  LockInfo ia = Info(*a, "apply", "alice@build-7");
  ASSERT_TRUE(a->Lock(ia, 0).ok());
  auto start = std::chrono::steady_clock::now();
  Status st = b->Lock(Info(*b, "plan"), 2);
  double waited = Seconds(start);
  ASSERT_FALSE(st.ok());
  EXPECT_GE(waited, 1.9);
  EXPECT_LT(waited, 10);
  EXPECT_HAS(st.message(), "still locked after waiting");
  EXPECT_HAS(st.message(), "alice@build-7");
  EXPECT_GE(server_->Requests("LOCK").size(), 3u);  // polled about every second
}

TEST_F(HttpStore, ALockWhoseAnswerWasLostIsRecognisedAsOurs) {
  StartServer();
  auto store = Open(Config());
  LockInfo info = Info(*store, "apply");
  // An earlier attempt of this LOCK reached the server but its answer never came back.
  ASSERT_EQ(server_->Request("LOCK", "/state", info.ToJson().dump()).status, 200);
  Status st = store->Lock(info, 0);
  ASSERT_TRUE(st.ok()) << st.message();
  Result<std::optional<LockInfo>> h = store->Holder();
  ASSERT_TRUE(h.ok() && h->has_value());
  EXPECT_EQ((*h)->id, info.id);
  ASSERT_TRUE(store->Unlock(info.id).ok());
  EXPECT_TRUE(server_->Lock("/state").is_null());
}

TEST_F(HttpStore, ForceUnlockFreesALockLeftByADeadRun) {
  StartServer();
  auto store = Open(Config());
  LockInfo dead = Info(*store, "apply", "bob@ci-3");
  dead.pid = 999999;
  ASSERT_EQ(server_->Request("LOCK", "/state", dead.ToJson().dump()).status, 200);
  LockInfo mine = Info(*store, "apply");
  Status held = store->Lock(mine, 0);
  ASSERT_FALSE(held.ok());
  EXPECT_HAS(held.message(), "bob@ci-3");
  EXPECT_HAS(held.message(), "onboard force-unlock " + dead.id);

  Status f = store->ForceUnlock(dead.id);
  ASSERT_TRUE(f.ok()) << f.message();
  EXPECT_TRUE(server_->Lock("/state").is_null());
  EXPECT_EQ(json::parse(server_->Requests("UNLOCK").back()["body"].get<std::string>())["ID"], dead.id);
  Status again = store->Lock(mine, 0);
  ASSERT_TRUE(again.ok()) << again.message();
}

TEST_F(HttpStore, DestroyingTheStoreReleasesItsLock) {
  StartServer();
  {
    auto store = Open(Config());
    ASSERT_TRUE(store->Lock(Info(*store, "apply"), 0).ok());
    EXPECT_FALSE(server_->Lock("/state").is_null());
  }
  EXPECT_TRUE(server_->Lock("/state").is_null());
}

TEST_F(HttpStore, WithoutLockAddressRunsAreNotLockedAndOneWarningSaysSo) {
  StartServer();
  auto store = Open(Config("/state", false));
  LockInfo info = Info(*store, "apply");
  ::testing::internal::CaptureStderr();
  Status l1 = store->Lock(info, 0);
  Status u1 = store->Unlock(info.id);
  Status l2 = store->Lock(info, 0);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(l1.ok() && u1.ok() && l2.ok());
  EXPECT_HAS(err, "no lockAddress");
  EXPECT_HAS(err, "does not lock");
  EXPECT_EQ(err.find("Warning"), err.rfind("Warning")) << err;  // once
  ASSERT_TRUE(store->Write(test::SampleState()).ok());
  EXPECT_EQ(server_->Requests("POST")[0]["query"], "");
  EXPECT_TRUE(server_->Requests("LOCK").empty());
  Status f = store->ForceUnlock("x");
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.message(), "nothing to force-unlock");
}

// ---------------------------------------------------------------------------------------------
// Credentials

TEST_F(HttpStore, MissingOrWrongCredentialsGiveAClearMessageWithoutThePassword) {
  StartServer({false, "alice", "S3cret-Pw!", 0, {}});
  auto none = Open(Config());
  Result<std::optional<State>> r = none->Read();
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error(), "requires credentials");
  EXPECT_HAS(r.error(), "401");
  EXPECT_HAS(r.error(), "ONBOARD_HTTP_USERNAME");
  EXPECT_HAS(r.error(), "ONBOARD_HTTP_PASSWORD");

  json config = Config();
  config["username"] = "alice";
  config["password"] = "Wrong-Pw-123";
  ::testing::internal::CaptureStderr();
  auto wrong = Open(config);
  std::string warning = ::testing::internal::GetCapturedStderr();
  EXPECT_HAS(warning, "ONBOARD_HTTP_PASSWORD");
  EXPECT_LACKS(warning, "Wrong-Pw-123");
  std::vector<std::string> messages;
  Result<std::optional<State>> rr = wrong->Read();
  ASSERT_FALSE(rr.ok());
  messages.push_back(rr.error());
  EXPECT_HAS(rr.error(), "refused the credentials");
  EXPECT_HAS(rr.error(), "user \"alice\"");
  Status lk = wrong->Lock(Info(*wrong, "apply"), 0);
  ASSERT_FALSE(lk.ok());
  messages.push_back(lk.message());
  Status fu = wrong->ForceUnlock("some-id");
  ASSERT_FALSE(fu.ok());
  messages.push_back(fu.message());
  ASSERT_TRUE(server_->Fault({{"path_regex", "/state"}, {"status", 403}}));
  Result<std::optional<State>> forbidden = wrong->Read();
  ASSERT_FALSE(forbidden.ok());
  EXPECT_HAS(forbidden.error(), "403");
  EXPECT_HAS(forbidden.error(), "ONBOARD_HTTP_PASSWORD");
  messages.push_back(forbidden.error());
  for (const std::string& m : messages) {
    EXPECT_LACKS(m, "Wrong-Pw-123");
    EXPECT_LACKS(m, "S3cret");
    EXPECT_LACKS(m, "Authorization");
    EXPECT_LACKS(m, "Basic ");
  }
  EXPECT_EQ(server_->Request("GET", "/state").status, 401);  // nothing got through
  EXPECT_EQ(server_->Requests("LOCK").back()["status"], 401);
}

TEST_F(HttpStore, CredentialsFromTheEnvironmentWorkAndOverrideTheConfig) {
  StartServer({false, "alice", "S3cret-Pw!", 0, {}});
  ::setenv("ONBOARD_HTTP_USERNAME", "alice", 1);
  ::setenv("ONBOARD_HTTP_PASSWORD", "S3cret-Pw!", 1);
  json config = Config();
  config["username"] = "mallory";  // overridden by the environment
  auto store = Open(config);
  LockInfo info = Info(*store, "apply");
  ASSERT_TRUE(store->Lock(info, 0).ok());
  Result<std::optional<State>> r = store->Read();
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_TRUE(store->Write(test::SampleState()).ok());
  ASSERT_TRUE(store->Unlock(info.id).ok());
  auto log = server_->Requests();
  ASSERT_EQ(log.size(), 4u);
  for (const auto& e : log) {
    EXPECT_NE(e["status"], 401) << e.dump();
    EXPECT_EQ(e["user"], "alice");
  }
}

// ---------------------------------------------------------------------------------------------
// Transport: server down, retries, TLS

TEST_F(HttpStore, AServerThatIsDownIsNamedWithCurlsReason) {
  const std::string url = "http://127.0.0.1:" + std::to_string(sandbox::UnusedPort()) + "/state";
  auto store = Open({{"address", url}, {"lockAddress", url}, {"retryWaitMin", 0.01}, {"retryWaitMax", 0.02}});
  Result<std::optional<State>> r = store->Read();
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error(), "cannot read the state at " + url);
  EXPECT_HAS(r.error(), "onnect");  // curl: "Failed to connect ... Couldn't connect to server"
  EXPECT_HAS(r.error(), "3 attempts");
  EXPECT_HAS(r.error(), "check that the state server is running");
  Status l = store->Lock(Info(*store, "apply"), 0);
  ASSERT_FALSE(l.ok());
  EXPECT_HAS(l.message(), "cannot lock the state at " + url);
}

TEST_F(HttpStore, TransientFailuresAreRetriedWithBackoff) {
  StartServer();
  json config = Config();
  config["retryWaitMin"] = 0.2;
  config["retryWaitMax"] = 5;
  auto store = Open(config);
  ASSERT_TRUE(server_->Fault({{"method", "LOCK"}, {"path_regex", "/state"}, {"status", 502}, {"count", 2}}));
  ASSERT_TRUE(
      server_->Fault({{"method", "GET"}, {"path_regex", "/state"}, {"status", 503}, {"retry_after", "1"}}));
  ASSERT_TRUE(server_->Fault({{"method", "POST"}, {"path_regex", "/state"}, {"status", 429}, {"count", 2}}));
  LockInfo info = Info(*store, "apply");
  auto start = std::chrono::steady_clock::now();
  Status l = store->Lock(info, 0);
  double waited = Seconds(start);
  ASSERT_TRUE(l.ok()) << l.message();
  EXPECT_GE(waited, 0.55);  // 0.2 s, then 0.4 s
  start = std::chrono::steady_clock::now();
  Result<std::optional<State>> r = store->Read();
  waited = Seconds(start);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_GE(waited, 0.95);  // as the 503's Retry-After said
  Status w = store->Write(test::SampleState());
  ASSERT_TRUE(w.ok()) << w.message();
  EXPECT_EQ(server_->Requests("LOCK").size(), 3u);
  EXPECT_EQ(server_->Requests("GET").size(), 2u);
  EXPECT_EQ(server_->Requests("POST").size(), 3u);
  EXPECT_EQ(server_->Requests("POST").back()["query"], "ID=" + info.id);
}

TEST_F(HttpStore, RetryMaxExceededFailsAndClientErrorsAreNotRetried) {
  StartServer();
  json config = Config();
  config["retryMax"] = "1";  // as --backend-config gives it
  auto store = Open(config);
  ASSERT_TRUE(server_->Fault({{"method", "GET"},
                              {"path_regex", "/state"},
                              {"status", 503},
                              {"count", 2},
                              {"body", "backend overloaded"}}));
  Result<std::optional<State>> r = store->Read();
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error(), "HTTP 503 Service Unavailable (2 attempts): backend overloaded");
  EXPECT_HAS(r.error(), server_->url("/state"));
  EXPECT_EQ(server_->Requests("GET").size(), 2u);
  ASSERT_FALSE(store->Write(test::SampleState()).ok());  // never writes over what it could not read
  EXPECT_TRUE(server_->Requests("POST").empty());

  server_->ClearRequests();
  auto fresh = Open(config);
  ASSERT_TRUE(server_->Fault({{"method", "GET"}, {"path_regex", "/state"}, {"status", 501}}));
  ASSERT_FALSE(fresh->Read().ok());
  ASSERT_TRUE(server_->Fault({{"method", "GET"}, {"path_regex", "/state"}, {"status", 400}}));
  ASSERT_FALSE(fresh->Read().ok());
  EXPECT_EQ(server_->Requests("GET").size(), 2u);  // one each
}

TEST(HttpRetryPolicy, ExponentialBackoffCappedAndRetryAfterHonoured) {
  HttpTransportConfig c;  // 1 s .. 30 s
  EXPECT_DOUBLE_EQ(RetryWaitSeconds(c, 0, 500, ""), 1);
  EXPECT_DOUBLE_EQ(RetryWaitSeconds(c, 1, 500, ""), 2);
  EXPECT_DOUBLE_EQ(RetryWaitSeconds(c, 2, 0, ""), 4);
  EXPECT_DOUBLE_EQ(RetryWaitSeconds(c, 10, 0, ""), 30);
  EXPECT_DOUBLE_EQ(RetryWaitSeconds(c, 0, 503, "7"), 7);
  EXPECT_DOUBLE_EQ(RetryWaitSeconds(c, 0, 429, "100"), 30);
  EXPECT_DOUBLE_EQ(RetryWaitSeconds(c, 0, 500, "7"), 1);  // only 429 and 503 say when
  EXPECT_TRUE(RetryableStatus(429));
  EXPECT_TRUE(RetryableStatus(500));
  EXPECT_TRUE(RetryableStatus(503));
  EXPECT_FALSE(RetryableStatus(501));
  EXPECT_FALSE(RetryableStatus(404));
  EXPECT_FALSE(RetryableStatus(409));
}

TEST_F(HttpStore, HttpsIsVerifiedWithCaFileAndRefusedWithoutTheRightCa) {
  StartServer({true, "", "", 0, {}});
  json config = Config();
  ASSERT_EQ(config["address"].get<std::string>().rfind("https://", 0), 0u);
  config["caFile"] = server_->ca_file();
  auto store = Open(config);
  LockInfo info = Info(*store, "apply");
  ASSERT_TRUE(store->Lock(info, 0).ok());
  ASSERT_TRUE(store->Write(test::SampleState()).ok());
  ASSERT_TRUE(store->Unlock(info.id).ok());
  Result<std::optional<State>> r = Open(config)->Read();
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_TRUE(r->has_value());
  const size_t verified = server_->Requests().size();

  // Verification failures are not retried: with 20 s between retries, a quick answer proves it.
  json slow = Config();
  slow["retryWaitMin"] = 20;
  slow["retryWaitMax"] = 20;
  auto system_cas = Open(slow);
  auto start = std::chrono::steady_clock::now();
  Result<std::optional<State>> unknown = system_cas->Read();
  EXPECT_LT(Seconds(start), 15);
  ASSERT_FALSE(unknown.ok());
  EXPECT_HAS(unknown.error(), server_->url("/state"));
  EXPECT_HAS(unknown.error(), "set caFile");

  auto other = Start({true, "", "", 0, {}});
  ASSERT_TRUE(other);
  slow["caFile"] = other->ca_file();
  Result<std::optional<State>> wrong = Open(slow)->Read();
  ASSERT_FALSE(wrong.ok());
  EXPECT_HAS(wrong.error(), "does not verify against caFile " + other->ca_file());
  EXPECT_EQ(server_->Requests().size(), verified);  // the refused ones never got a request through
}

// ---------------------------------------------------------------------------------------------
// Configuration

TEST_F(HttpStore, ConfigurationErrorsNameTheOriginTheKeyAndTheFix) {
  const std::string url = "http://127.0.0.1:1/state";
  std::string unknown = OpenError({{"address", url}, {"lockAdress", url}});
  EXPECT_HAS(unknown, "spec.backend");
  EXPECT_HAS(unknown, "\"lockAdress\"");
  EXPECT_HAS(unknown,
             "valid settings: address, updateMethod, lockAddress, lockMethod, unlockAddress, "
             "unlockMethod, username, password, caFile, retryMax, retryWaitMin, retryWaitMax");
  EXPECT_HAS(OpenError(json::object()), "needs address");
  EXPECT_HAS(OpenError({{"address", "ftp://h/state"}}), "http:// or https://");
  std::string creds = OpenError({{"address", "http://bob:hunter22@h/state"}});
  EXPECT_HAS(creds, "must not carry credentials");
  EXPECT_LACKS(creds, "hunter22");
  EXPECT_HAS(OpenError({{"address", url}, {"retryMax", "many"}}), "retryMax \"many\" is not an integer");
  EXPECT_HAS(OpenError({{"address", url}, {"retryMax", 1.5}}), "retryMax");
  EXPECT_HAS(OpenError({{"address", url}, {"retryWaitMin", 5}, {"retryWaitMax", 1}}),
             "larger than retryWaitMax");
  EXPECT_HAS(OpenError({{"address", url}, {"unlockAddress", url}}), "needs lockAddress");
  EXPECT_HAS(OpenError({{"address", url}, {"updateMethod", "PO ST"}}), "not an HTTP method");
  EXPECT_HAS(OpenError({{"address", url}, {"caFile", "/nonexistent/ca.pem"}}), "caFile /nonexistent/ca.pem");
  EXPECT_HAS(OpenError({{"address", url}, {"username", true}}), "username must be a string");
  // Numbers may come as strings.
  EXPECT_TRUE(Open({{"address", url}, {"retryMax", "0"}, {"retryWaitMin", "0.5"}, {"retryWaitMax", "2"}}));
}

TEST_F(HttpStore, BackendConfigFlagsReachTheHttpBackend) {
  StartServer();
  Backend manifest;
  manifest.type = "http";
  manifest.config = {{"address", server_->url("/state")}, {"updateMethod", "PUT"}};
  BackendFlags flags;
  flags.config = {"lockAddress=" + server_->url("/state/lock"), "retryMax=0"};
  Result<std::unique_ptr<StateStore>> store = OpenStateStore(manifest, Cluster(), "fleet", flags);
  ASSERT_TRUE(store.ok()) << store.error();
  LockInfo info = Info(**store, "apply");
  ASSERT_TRUE((*store)->Lock(info, 0).ok());
  ASSERT_TRUE((*store)->Write(test::SampleState()).ok());
  EXPECT_EQ(server_->Requests("LOCK", "/state/lock").size(), 1u);
  auto puts = server_->Requests("PUT", "/state");
  ASSERT_EQ(puts.size(), 1u);
  EXPECT_EQ(puts[0]["query"], "ID=" + info.id);
  EXPECT_EQ(puts[0]["status"], 200);

  flags.config = {"lockAdress=x"};
  Result<std::unique_ptr<StateStore>> bad = OpenStateStore(manifest, Cluster(), "fleet", flags);
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.error(), "spec.backend and --backend-config");
  EXPECT_HAS(bad.error(), "lockAdress");
}

}  // namespace
}  // namespace onboard
