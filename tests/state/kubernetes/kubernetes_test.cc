// The kubernetes state backend against the test API server (tests/sandbox/apiserver), started as a
// child process for each test: state in gzipped, split Secrets with conditional writes, and the lock
// in a renewed Lease, with real processes (fork) contending, dying, and losing the lease.
#include "state/kubernetes.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "engine/clock.h"
#include "engine/encoding.h"
#include "engine/hash.h"
#include "providers/kubernetes/client.h"
#include "providers/kubernetes/kubeconfig.h"
#include "state/lock.h"
#include "tests/sandbox/apiserver/harness.h"
#include "tests/state/child.h"
#include "tests/state/sample.h"

namespace onboard {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::ChildGuard;
using test::Pipe;

constexpr const char* kIndex = "onboard-state-prod";
constexpr const char* kLease = "onboard-lock-prod";
constexpr size_t kPart = 512 * 1024;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// An independent gunzip (zlib directly), to check what is really stored.
std::string Gunzip(const std::string& gz) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return "";
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  zs.avail_in = static_cast<uInt>(gz.size());
  std::string out;
  char buf[65536];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
  } while (rc == Z_OK);
  inflateEnd(&zs);
  return rc == Z_STREAM_END ? out : "";
}

std::string Gzip(const std::string& text) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, text.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(&out[0]);
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// `n` bytes of random hex: compresses to about half, never less.
std::string RandomHex(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  static const char* kHex = "0123456789abcdef";
  std::string out(n, '0');
  for (auto& c : out) c = kHex[rng() & 15];
  return out;
}

// A state of about `bytes` of incompressible attribute data over a few records.
State LargeState(size_t bytes, unsigned seed, int64_t serial = 1) {
  State s;
  s.lineage = "9e8d7c6b-5a49-4382-b716-0f1e2d3c4b5a";
  s.serial = serial;
  const int records = 8;
  for (int i = 0; i < records; ++i) {
    std::string w = "bookinfo/vm-" + std::to_string(i);
    ResourceState f = test::Record(ResourceType::kFiles, w, w);
    f.attributes = {{"blob", RandomHex(bytes / records, seed * 100 + i)}, {"index", i}};
    f.observed = {{"sha256", std::string(64, '0')}};
    test::Put(s, f);
  }
  return s;
}

class KubeState : public ::testing::Test {
 public:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(apiserver_.Start(STATE_TEST_APISERVER, {}, &error))
        << "test API server did not start: " << error;
    dir_ = apiserver_.dir();
    token_ = apiserver_.File("token");
    k8s::KubeConfigOptions ko;
    ko.path = dir_ + "/kubeconfig";
    auto cfg = k8s::LoadKubeConfig(ko);
    ASSERT_TRUE(cfg.ok()) << cfg.error();
    auto client = k8s::Client::Create(*cfg);
    ASSERT_TRUE(client.ok()) << client.error();
    raw_ = std::move(*client);
  }

  KubernetesBackendDefaults Defaults() const {
    KubernetesBackendDefaults d;
    d.kubeconfig = dir_ + "/kubeconfig";
    d.name = "prod";
    return d;
  }

  Result<std::unique_ptr<StateStore>> TryOpen(const json& config) {
    return OpenKubernetesStateStore(config, Defaults(), "spec.backend");
  }

  std::unique_ptr<StateStore> Open(json config = json::object()) {
    auto s = TryOpen(config);
    EXPECT_TRUE(s.ok()) << s.error();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Forks a process that opens a store with `config`, locks it for `operation` and exits with what
  // `then` returns (2: the store did not open; 3: it could not lock). The child's pid, or -1.
  pid_t ForkHolder(const json& config, const std::string& operation,
                   const std::function<int(StateStore& store, const LockInfo& info)>& then) {
    pid_t child = ::fork();
    if (child != 0) return child;
    auto store = OpenKubernetesStateStore(config, Defaults(), "spec.backend");
    if (!store.ok()) ::_exit(2);
    LockInfo info = NewLockInfo(operation, (*store)->Describe(), Now());
    if (!(*store)->Lock(info, 0).ok()) ::_exit(3);
    ::_exit(then(**store, info));
  }

  // A raw API request; the status and the parsed body.
  std::pair<long, json> Raw(const std::string& method, const std::string& path, const json& body = nullptr) {
    k8s::Request r;
    r.method = method;
    r.path = path;
    if (!body.is_null()) r.body = body.dump();
    auto resp = raw_->Send(r);
    EXPECT_TRUE(resp.ok()) << resp.error();
    if (!resp.ok()) return {0, json()};
    return {resp->status, resp->Json()};
  }
  static std::string SecretPath(const std::string& name = "") {
    return "/api/v1/namespaces/default/secrets" + (name.empty() ? "" : "/" + name);
  }
  static std::string LeasePath(const std::string& name = kLease) {
    return "/apis/coordination.k8s.io/v1/namespaces/default/leases/" + name;
  }
  json Secret(const std::string& name) {
    auto [status, body] = Raw("GET", SecretPath(name));
    return status == 200 ? body : json();
  }
  std::string Data(const json& secret) {
    auto bytes = Base64Decode(secret["data"]["state.json.gz"].get<std::string>());
    EXPECT_TRUE(bytes.ok());
    return bytes.ok() ? *bytes : "";
  }
  // The Secrets of state "prod" other than the index, by name.
  std::vector<std::string> PartNames() {
    auto [status, list] = Raw("GET", SecretPath() + "?labelSelector=onboard.tetrate.io%2Fstate%3Dprod");
    std::vector<std::string> out;
    for (const auto& item : list["items"]) {
      std::string name = item["metadata"]["name"];
      if (name != kIndex) out.push_back(name);
    }
    return out;
  }

  json Admin(const std::string& method, const std::string& path, const json& body = nullptr) {
    return sandbox::ApiServerAdmin(apiserver_, method, path, body);
  }
  // Secret writes (POST/PUT/DELETE) logged since the last reset.
  int SecretWrites() {
    int n = 0;
    for (const auto& r : Admin("GET", "/__admin/requests"))
      n += r.value("path", "").find("/secrets") != std::string::npos && r.value("method", "") != "GET";
    return n;
  }

  sandbox::ServerProcess apiserver_;
  std::string dir_, token_;
  std::unique_ptr<k8s::Client> raw_;
};

void ExpectSameState(const std::optional<State>& got, const State& want) {
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(EncodeState(*got), EncodeState(want));
}

// ---------------------------------------------------------------------------------------------
// Settings

TEST_F(KubeState, SettingsAreCheckedAndNamed) {
  auto r = TryOpen({{"namespace", "default"}, {"colour", "blue"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(),
            "spec.backend: the kubernetes backend has no setting \"colour\" (valid settings: namespace, "
            "name, kubeconfig, context, leaseDurationSeconds)");

  r = TryOpen({{"name", "Prod_1"}});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(
      Contains(r.error(), "spec.backend: kubernetes backend setting name \"Prod_1\" must be a DNS-1123 name"))
      << r.error();
  r = TryOpen({{"name", std::string(64, 'a')}});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.error(), "at most 63 characters")) << r.error();
  KubernetesBackendDefaults d = Defaults();
  d.name = "My Fleet";
  r = OpenKubernetesStateStore(json::object(), d, "spec.backend");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.error(), "name \"My Fleet\" (the Fleet's name) must be a DNS-1123 name"))
      << r.error();
  d.name = "";
  r = OpenKubernetesStateStore(json::object(), d, "spec.backend");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.error(), "--backend-config name=")) << r.error();

  for (json bad : {json("1"), json(1), json("abc"), json("3601"), json(2.5), json("")}) {
    r = TryOpen({{"leaseDurationSeconds", bad}});
    ASSERT_FALSE(r.ok()) << bad.dump();
    EXPECT_TRUE(Contains(r.error(),
                         "spec.backend: kubernetes backend setting leaseDurationSeconds must be a whole "
                         "number of seconds from 2 to 3600, got " +
                             bad.dump()))
        << r.error();
  }
  r = TryOpen({{"namespace", "Bad_NS"}});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.error(), "setting namespace \"Bad_NS\" is not a namespace name")) << r.error();
  r = TryOpen({{"context", "nope"}});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.error(), "spec.backend: kubernetes state backend: ")) << r.error();
  EXPECT_TRUE(Contains(r.error(), "nope")) << r.error();

  // Strings (from --backend-config) and numbers are both accepted.
  EXPECT_TRUE(TryOpen({{"leaseDurationSeconds", "2"}, {"name", "a.b-c"}}).ok());
  EXPECT_TRUE(TryOpen({{"leaseDurationSeconds", 3600}, {"context", "sandbox"}}).ok());
  auto store = Open({{"namespace", "bookinfo"}});
  ASSERT_TRUE(store);
  EXPECT_EQ(store->Describe(), "kubernetes secret bookinfo/onboard-state-prod (context sandbox)");
  // No credential in any message.
  EXPECT_FALSE(Contains(r.error(), token_));
}

TEST_F(KubeState, AMissingNamespaceIsReportedWithWhatToDo) {
  auto store = Open({{"namespace", "nowhere"}});
  ASSERT_TRUE(store);
  auto none = store->Read();
  ASSERT_TRUE(none.ok()) << none.error();
  Status st = store->Write(test::SampleState());
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(),
                       "namespace nowhere does not exist: create it (kubectl create namespace nowhere)"))
      << st.message();
  st = store->Lock(NewLockInfo("apply", store->Describe(), Now()), 0);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), "namespace nowhere does not exist")) << st.message();
  EXPECT_FALSE(Contains(st.message(), token_));
}

// ---------------------------------------------------------------------------------------------
// Read and Write

TEST_F(KubeState, AbsentStateIsNoState) {
  auto store = Open();
  auto st = store->Read();
  ASSERT_TRUE(st.ok()) << st.error();
  EXPECT_FALSE(st->has_value());
}

TEST_F(KubeState, RoundTripStoresGzippedJsonInTheIndexSecret) {
  auto writer = Open();
  ASSERT_TRUE(writer->Read().ok());
  State s = test::SampleState();
  ASSERT_TRUE(writer->Write(s).ok());

  auto reader = Open();
  auto got = reader->Read();
  ASSERT_TRUE(got.ok()) << got.error();
  ExpectSameState(*got, s);

  // What is really stored: gzip of the state JSON, described by annotations and labels.
  json secret = Secret(kIndex);
  ASSERT_TRUE(secret.is_object());
  std::string gz = Data(secret);
  ASSERT_GE(gz.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(gz[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(gz[1]), 0x8b);
  json text = json::parse(Gunzip(gz), nullptr, false);
  EXPECT_EQ(text, EncodeState(s));
  const json& md = secret["metadata"];
  EXPECT_EQ(md["labels"]["app.kubernetes.io/managed-by"], "onboard");
  EXPECT_EQ(md["labels"]["onboard.tetrate.io/state"], "prod");
  EXPECT_EQ(md["annotations"]["onboard.tetrate.io/sha256"], Sha256Hex(gz));
  EXPECT_EQ(md["annotations"]["onboard.tetrate.io/size"], std::to_string(gz.size()));
  EXPECT_EQ(md["annotations"]["onboard.tetrate.io/parts"], "");
  EXPECT_EQ(md["annotations"]["onboard.tetrate.io/lineage"], s.lineage);
  EXPECT_EQ(md["annotations"]["onboard.tetrate.io/serial"], "7");
  EXPECT_TRUE(PartNames().empty());

  // Writing the same state again writes nothing; a changed one replaces the Secret.
  Admin("POST", "/__admin/reset-log");
  ASSERT_TRUE(reader->Write(**got).ok());
  EXPECT_EQ(SecretWrites(), 0);
  State next = **got;
  next.serial++;
  next.resources.erase(next.resources.begin());
  ASSERT_TRUE(reader->Write(next).ok());
  EXPECT_EQ(SecretWrites(), 1);
  auto again = Open()->Read();
  ASSERT_TRUE(again.ok()) << again.error();
  ExpectSameState(*again, next);
  EXPECT_EQ(Secret(kIndex)["metadata"]["uid"], md["uid"]);  // replaced in place, not recreated
}

TEST_F(KubeState, LabelsAndAnnotationsOthersPutOnTheIndexAreKept) {
  auto store = Open();
  ASSERT_TRUE(store->Read().ok());
  State s = test::SampleState();
  ASSERT_TRUE(store->Write(s).ok());
  json secret = Secret(kIndex);
  secret["metadata"]["labels"]["team"] = "platform";
  secret["metadata"]["annotations"]["note"] = "backed up nightly";
  ASSERT_EQ(Raw("PUT", SecretPath(kIndex), secret).first, 200);
  ASSERT_TRUE(store->Read().ok());
  s.serial++;
  s.resources.erase(s.resources.begin());
  ASSERT_TRUE(store->Write(s).ok());
  json now = Secret(kIndex);
  EXPECT_EQ(now["metadata"]["labels"]["team"], "platform");
  EXPECT_EQ(now["metadata"]["annotations"]["note"], "backed up nightly");
  EXPECT_EQ(now["metadata"]["annotations"]["onboard.tetrate.io/serial"], "8");
}

TEST_F(KubeState, ALargeStateIsSplitOverSecretsBelowTheLimitAndOldPartsAreDeleted) {
  auto store = Open();
  ASSERT_TRUE(store->Read().ok());
  State big = LargeState(3 * 1024 * 1024, 1);
  auto t0 = Clock::now();
  Status st = store->Write(big);
  auto write_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  ASSERT_TRUE(st.ok()) << st.message();

  json index = Secret(kIndex);
  const json& ann = index["metadata"]["annotations"];
  std::string digest = ann["onboard.tetrate.io/sha256"];
  std::vector<std::string> listed;
  std::string parts = ann["onboard.tetrate.io/parts"];
  for (size_t b = 0, c; b < parts.size(); b = c + 1) {
    c = parts.find(',', b);
    if (c == std::string::npos) c = parts.size();
    listed.push_back(parts.substr(b, c - b));
  }
  ASSERT_GE(listed.size(), 2u) << "3 MiB of random hex gzips to about 1.5 MiB: at least 3 Secrets";
  std::string gz = Data(index);
  EXPECT_EQ(gz.size(), kPart);
  for (size_t i = 0; i < listed.size(); ++i) {
    EXPECT_EQ(listed[i], std::string(kIndex) + "-" + digest.substr(0, 12) + "-" + std::to_string(i + 1));
    json part = Secret(listed[i]);
    ASSERT_TRUE(part.is_object()) << listed[i];
    std::string bytes = Data(part);
    EXPECT_LE(bytes.size(), kPart);
    EXPECT_EQ(part["metadata"]["labels"]["onboard.tetrate.io/part"], std::to_string(i + 1));
    EXPECT_EQ(part["metadata"]["annotations"]["onboard.tetrate.io/sha256"], digest);
    gz += bytes;
  }
  EXPECT_EQ(Sha256Hex(gz), digest);
  EXPECT_EQ(json::parse(Gunzip(gz), nullptr, false), EncodeState(big));
  std::vector<std::string> stored = PartNames();
  std::sort(stored.begin(), stored.end());
  std::vector<std::string> sorted = listed;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(stored, sorted);

  auto reader = Open();
  t0 = Clock::now();
  auto got = reader->Read();
  auto read_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  ASSERT_TRUE(got.ok()) << got.error();
  ExpectSameState(*got, big);
  std::printf("3 MiB state (%zu bytes gzipped, %zu Secrets): write %lld ms, read %lld ms\n", gz.size(),
              listed.size() + 1, static_cast<long long>(write_ms), static_cast<long long>(read_ms));

  // A rewrite with other content: new parts, the previous ones deleted.
  State bigger = LargeState(2 * 1024 * 1024 + 1000, 2, 2);
  ASSERT_TRUE(reader->Write(bigger).ok());
  for (const auto& name : listed) EXPECT_EQ(Raw("GET", SecretPath(name)).first, 404) << name;
  std::vector<std::string> now = PartNames();
  EXPECT_GE(now.size(), 2u);
  for (const auto& name : now)
    EXPECT_TRUE(Contains(
        name,
        Secret(kIndex)["metadata"]["annotations"]["onboard.tetrate.io/sha256"].get<std::string>().substr(
            0, 12)));
  auto back = Open()->Read();
  ASSERT_TRUE(back.ok()) << back.error();
  ExpectSameState(*back, bigger);

  // Shrinking to a state that fits the index leaves no part behind.
  State small = test::SampleState();
  small.lineage = bigger.lineage;
  small.serial = 3;
  ASSERT_TRUE(reader->Write(small).ok());
  EXPECT_TRUE(PartNames().empty());
  auto last = Open()->Read();
  ASSERT_TRUE(last.ok()) << last.error();
  ExpectSameState(*last, small);
}

TEST_F(KubeState, AWriteBasedOnAStaleResourceVersionIsRefused) {
  auto a = Open(), b = Open();
  ASSERT_TRUE(a->Read().ok());
  ASSERT_TRUE(b->Read().ok());
  State first = test::SampleState();
  ASSERT_TRUE(b->Write(first).ok());

  // a read "no state" before b created it: its create is refused.
  State other = test::SampleState();
  other.serial = 9;
  other.resources.erase(other.resources.begin());
  Status st = a->Write(other);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(),
                       "refusing to write state to kubernetes secret default/onboard-state-prod: "
                       "another writer created it since this run read it"))
      << st.message();
  EXPECT_TRUE(Contains(st.message(), "nothing was written")) << st.message();
  ExpectSameState(*Open()->Read(), first);

  // Both read; b writes a large state; a's write (also large) is refused and leaves no parts behind.
  ASSERT_TRUE(a->Read().ok());
  ASSERT_TRUE(b->Read().ok());
  State b_state = LargeState(1536 * 1024, 3, 8);
  b_state.lineage = first.lineage;
  ASSERT_TRUE(b->Write(b_state).ok());
  std::vector<std::string> b_parts = PartNames();
  ASSERT_FALSE(b_parts.empty());
  State a_state = LargeState(1536 * 1024, 4, 8);
  a_state.lineage = first.lineage;
  st = a->Write(a_state);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(
      Contains(st.message(), "another writer changed it since this run read it (it is at serial 8 now)"))
      << st.message();
  EXPECT_EQ(PartNames(), b_parts);
  ExpectSameState(*Open()->Read(), b_state);
  // And it keeps refusing until it reads again.
  EXPECT_FALSE(a->Write(a_state).ok());
  ASSERT_TRUE(a->Read().ok());
  a_state.serial = 9;
  EXPECT_TRUE(a->Write(a_state).ok());
  ExpectSameState(*Open()->Read(), a_state);
}

TEST_F(KubeState, WriteRefusesAnotherLineageAndAnOlderSerial) {
  auto store = Open();
  ASSERT_TRUE(store->Read().ok());
  State s = test::SampleState();
  ASSERT_TRUE(store->Write(s).ok());
  State foreign = s;
  foreign.lineage = NewLineage();
  Status st = store->Write(foreign);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), "it holds a different state (lineage " + s.lineage)) << st.message();
  State older = s;
  older.serial = 3;
  st = store->Write(older);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), "it is at serial 7, newer than this state's serial 3")) << st.message();
}

// Reads the state, expects an error containing every `what`, then checks that the store refuses to
// write and that the Secrets are exactly as they were.
void ExpectUnreadableAndKept(KubeState* t, StateStore& store, const std::vector<std::string>& what) {
  json before = t->Secret(kIndex);
  std::vector<std::string> parts_before = t->PartNames();
  auto got = store.Read();
  ASSERT_FALSE(got.ok());
  for (const auto& w : what)
    EXPECT_TRUE(Contains(got.error(), w)) << "missing \"" << w << "\" in: " << got.error();
  EXPECT_TRUE(Contains(got.error(), "kubernetes secret default/onboard-state-prod")) << got.error();
  EXPECT_TRUE(Contains(got.error(), "onboard never overwrites a state it cannot read")) << got.error();
  EXPECT_FALSE(Contains(got.error(), ".backup")) << got.error();
  Status st = store.Write(test::SampleState());
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(),
                       "refusing to write state to kubernetes secret default/onboard-state-prod: it "
                       "could not be read"))
      << st.message();
  EXPECT_EQ(t->Secret(kIndex), before);
  EXPECT_EQ(t->PartNames(), parts_before);
}

TEST_F(KubeState, ACorruptIndexIsAnErrorAndNeverOverwritten) {
  auto store = Open();
  ASSERT_TRUE(store->Read().ok());
  State s = test::SampleState();
  ASSERT_TRUE(store->Write(s).ok());
  json good = Secret(kIndex);
  auto put = [&](json secret) {
    secret["metadata"].erase("resourceVersion");
    ASSERT_EQ(Raw("PUT", SecretPath(kIndex), secret).first, 200);
  };

  // Not gzip at all (the digest and size made to match, so that the gzip check is what fails).
  json bad = good;
  std::string junk = "this is not gzip";
  bad["data"]["state.json.gz"] = Base64Encode(junk);
  bad["metadata"]["annotations"]["onboard.tetrate.io/sha256"] = Sha256Hex(junk);
  bad["metadata"]["annotations"]["onboard.tetrate.io/size"] = std::to_string(junk.size());
  put(bad);
  ExpectUnreadableAndKept(this, *Open(), {"not a valid gzip stream"});

  // Truncated gzip.
  std::string gz = Data(good);
  std::string cut = gz.substr(0, gz.size() - 10);
  bad["data"]["state.json.gz"] = Base64Encode(cut);
  bad["metadata"]["annotations"]["onboard.tetrate.io/sha256"] = Sha256Hex(cut);
  bad["metadata"]["annotations"]["onboard.tetrate.io/size"] = std::to_string(cut.size());
  put(bad);
  ExpectUnreadableAndKept(this, *Open(), {"truncated"});

  // A wrong digest.
  bad = good;
  bad["metadata"]["annotations"]["onboard.tetrate.io/sha256"] = std::string(64, 'a');
  put(bad);
  ExpectUnreadableAndKept(this, *Open(),
                          {"the sha256 of its parts is " + Sha256Hex(gz) + ", not " + std::string(64, 'a')});

  // Valid gzip of JSON that is no state.
  json broken = EncodeState(s);
  broken["serial"] = "seven";
  std::string bgz = Gzip(broken.dump());
  bad = good;
  bad["data"]["state.json.gz"] = Base64Encode(bgz);
  bad["metadata"]["annotations"]["onboard.tetrate.io/sha256"] = Sha256Hex(bgz);
  bad["metadata"]["annotations"]["onboard.tetrate.io/size"] = std::to_string(bgz.size());
  put(bad);
  ExpectUnreadableAndKept(this, *Open(), {"the state is invalid: ", "$.serial: must be an integer"});

  // A Secret of that name that onboard did not write.
  bad = good;
  bad["metadata"]["annotations"] = json::object();
  put(bad);
  ExpectUnreadableAndKept(this, *Open(), {"not an onboard state Secret"});

  // The store that failed to read refuses even after the Secret is repaired, until it reads again.
  auto failed = Open();
  EXPECT_FALSE(failed->Read().ok());
  put(good);
  EXPECT_FALSE(failed->Write(s).ok());
  auto fixed = failed->Read();
  ASSERT_TRUE(fixed.ok()) << fixed.error();
  ExpectSameState(*fixed, s);
  s.serial++;
  EXPECT_TRUE(failed->Write(s).ok());
}

TEST_F(KubeState, AMissingOrForeignPartIsAnErrorAndNothingIsOverwritten) {
  auto store = Open();
  ASSERT_TRUE(store->Read().ok());
  State big = LargeState(3 * 1024 * 1024, 5);
  ASSERT_TRUE(store->Write(big).ok());
  std::string parts = Secret(kIndex)["metadata"]["annotations"]["onboard.tetrate.io/parts"];
  std::string second = parts.substr(parts.find(',') + 1);
  second = second.substr(0, second.find(','));
  json part = Secret(second);
  ASSERT_TRUE(part.is_object());

  // A part from elsewhere (its digest annotation differs).
  json foreign = part;
  foreign["metadata"].erase("resourceVersion");
  foreign["metadata"]["annotations"]["onboard.tetrate.io/sha256"] = std::string(64, 'b');
  ASSERT_EQ(Raw("PUT", SecretPath(second), foreign).first, 200);
  ExpectUnreadableAndKept(this, *Open(),
                          {"part Secret default/" + second + " does not carry this state's digest"});

  // Altered bytes in a part: the digest check catches them.
  foreign = part;
  foreign["metadata"].erase("resourceVersion");
  std::string bytes = Data(part);
  bytes[1000] ^= 0x55;
  foreign["data"]["state.json.gz"] = Base64Encode(bytes);
  ASSERT_EQ(Raw("PUT", SecretPath(second), foreign).first, 200);
  ExpectUnreadableAndKept(this, *Open(), {"the sha256 of its parts is"});

  // A missing part.
  ASSERT_EQ(Raw("DELETE", SecretPath(second)).first, 200);
  ExpectUnreadableAndKept(this, *Open(), {"its part 2, Secret default/" + second + ", is missing"});
  EXPECT_EQ(Raw("GET", SecretPath(second)).first, 404);
}

TEST_F(KubeState, ReadStartsOverWhenAWriterCommitsMeanwhile) {
  // The reader sees the index, then the parts it lists vanish because a writer committed.
  auto writer = Open();
  ASSERT_TRUE(writer->Read().ok());
  ASSERT_TRUE(writer->Write(LargeState(2 * 1024 * 1024, 6)).ok());
  State next = LargeState(2 * 1024 * 1024, 7, 2);
  // Slow down the reader's first part GET long enough for the writer to commit and clean up.
  Admin("POST", "/__admin/faults",
        {{"method", "GET"},
         {"path_regex", "/secrets/onboard-state-prod-[0-9a-f]{12}-1$"},
         {"delay_ms", 1500},
         {"count", 1}});
  std::optional<State> seen;
  std::string error;
  std::thread reader([&] {
    auto store = Open();
    auto got = store->Read();
    if (got.ok())
      seen = *got;
    else
      error = got.error();
  });
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE(writer->Write(next).ok());
  reader.join();
  ASSERT_TRUE(error.empty()) << error;
  ExpectSameState(seen, next);
}

TEST_F(KubeState, LeftoverPartsOfACrashedWriterAreDeletedByTheNextLockedWrite) {
  auto store = Open();
  ASSERT_TRUE(store->Read().ok());
  State s = test::SampleState();
  ASSERT_TRUE(store->Write(s).ok());
  json leftover = {{"metadata",
                    {{"name", "onboard-state-prod-0123456789ab-1"},
                     {"labels",
                      {{"app.kubernetes.io/managed-by", "onboard"},
                       {"onboard.tetrate.io/state", "prod"},
                       {"onboard.tetrate.io/part", "1"}}}}},
                   {"data", {{"state.json.gz", "AAAA"}}}};
  ASSERT_EQ(Raw("POST", SecretPath(), leftover).first, 201);
  json other = leftover;
  other["metadata"]["name"] = "onboard-state-staging-0123456789ab-1";
  other["metadata"]["labels"]["onboard.tetrate.io/state"] = "staging";
  ASSERT_EQ(Raw("POST", SecretPath(), other).first, 201);

  // Unlocked writes leave it (another writer might be mid-write); the first locked write removes it.
  s.serial++;
  s.resources.erase(s.resources.begin());
  ASSERT_TRUE(store->Write(s).ok());
  EXPECT_EQ(Raw("GET", SecretPath("onboard-state-prod-0123456789ab-1")).first, 200);
  LockInfo info = NewLockInfo("apply", store->Describe(), Now());
  ASSERT_TRUE(store->Lock(info, 0).ok());
  s.serial++;
  s.resources.erase(s.resources.begin());
  ASSERT_TRUE(store->Write(s).ok());
  EXPECT_EQ(Raw("GET", SecretPath("onboard-state-prod-0123456789ab-1")).first, 404);
  EXPECT_EQ(Raw("GET", SecretPath("onboard-state-staging-0123456789ab-1")).first, 200);
  EXPECT_TRUE(store->Unlock(info.id).ok());
}

// ---------------------------------------------------------------------------------------------
// The lock, in one process

TEST_F(KubeState, LockWritesALeaseWithHolderInfoAndUnlockDeletesIt) {
  auto store = Open({{"leaseDurationSeconds", 30}});
  LockInfo info = NewLockInfo("apply", store->Describe(), Now());
  ASSERT_TRUE(store->Lock(info, 0).ok());
  auto [status, lease] = Raw("GET", LeasePath());
  ASSERT_EQ(status, 200);
  const json& spec = lease["spec"];
  EXPECT_EQ(spec["holderIdentity"], info.id);
  EXPECT_EQ(spec["leaseDurationSeconds"], 30);
  std::regex micro(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)");
  EXPECT_TRUE(std::regex_match(spec["acquireTime"].get<std::string>(), micro)) << spec.dump();
  EXPECT_TRUE(std::regex_match(spec["renewTime"].get<std::string>(), micro)) << spec.dump();
  int64_t renewed = 0;
  ASSERT_TRUE(ParseTime(spec["renewTime"].get<std::string>(), &renewed));
  EXPECT_LE(std::abs(renewed - Now()), 5);
  EXPECT_EQ(lease["metadata"]["labels"]["app.kubernetes.io/managed-by"], "onboard");
  json recorded =
      json::parse(lease["metadata"]["annotations"]["onboard.tetrate.io/lock-info"].get<std::string>());
  LockInfo back = LockInfo::FromJson(recorded);
  EXPECT_EQ(back.id, info.id);
  EXPECT_EQ(back.pid, static_cast<int>(::getpid()));
  EXPECT_EQ(back.operation, "apply");
  EXPECT_EQ(back.who, info.who);

  auto holder = Open()->Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.error();
  EXPECT_EQ((*holder)->Describe(), info.Describe());

  Status again = store->Lock(info, 0);
  EXPECT_FALSE(again.ok());
  EXPECT_TRUE(Contains(again.message(), "already holds the lock")) << again.message();
  Status wrong = store->Unlock("not-the-id");
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(Contains(wrong.message(), "the lock held is " + info.id)) << wrong.message();

  ASSERT_TRUE(store->Unlock(info.id).ok());
  EXPECT_EQ(Raw("GET", LeasePath()).first, 404);
  auto none = store->Holder();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(store->Unlock(info.id).ok());
}

TEST_F(KubeState, DestroyingTheStoreReleasesItsLock) {
  {
    auto store = Open();
    ASSERT_TRUE(store->Lock(NewLockInfo("apply", store->Describe(), Now()), 0).ok());
  }
  EXPECT_EQ(Raw("GET", LeasePath()).first, 404);
}

TEST_F(KubeState, ForceUnlockNeedsTheHoldersId) {
  auto holder_store = Open();
  LockInfo info = NewLockInfo("destroy", holder_store->Describe(), Now());
  ASSERT_TRUE(holder_store->Lock(info, 0).ok());

  auto other = Open();
  Status wrong = other->ForceUnlock("11111111-2222-4333-8444-555555555555");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.message(),
            "lock ID 11111111-2222-4333-8444-555555555555 does not match the lock on "
            "kubernetes secret default/onboard-state-prod (context sandbox): " +
                info.Describe() + "; to remove that lock, run onboard force-unlock " + info.id);
  EXPECT_EQ(Raw("GET", LeasePath()).second["spec"]["holderIdentity"], info.id);

  ASSERT_TRUE(other->ForceUnlock(info.id).ok());
  EXPECT_EQ(Raw("GET", LeasePath()).first, 404);
  Status none = other->ForceUnlock(info.id);
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(Contains(none.message(), "is not locked")) << none.message();

  // The holder learns it lost the lock; its Unlock says so.
  std::this_thread::sleep_for(100ms);
  Status st = holder_store->Unlock(info.id);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), "was lost while this run held it")) << st.message();
}

TEST_F(KubeState, TwoStoresInOneProcessContend) {
  auto a = Open(), b = Open();
  LockInfo ia = NewLockInfo("apply", a->Describe(), Now());
  ASSERT_TRUE(a->Lock(ia, 0).ok());
  auto t0 = Clock::now();
  Status st = b->Lock(NewLockInfo("plan", b->Describe(), Now()), 0);
  ASSERT_FALSE(st.ok());
  EXPECT_LT(Clock::now() - t0, 2s);
  EXPECT_EQ(
      st.message().rfind(ia.Describe() + "; its lease default/onboard-lock-prod was last renewed at ", 0), 0u)
      << st.message();
  EXPECT_TRUE(Contains(st.message(),
                       " unless its holder renews it (every 10s while it runs); wait with "
                       "--lock-timeout SECONDS, or if that run is gone, run onboard force-unlock " +
                           ia.id))
      << st.message();
  ASSERT_TRUE(a->Unlock(ia.id).ok());
  LockInfo ib = NewLockInfo("plan", b->Describe(), Now());
  ASSERT_TRUE(b->Lock(ib, 0).ok());
  ASSERT_TRUE(b->Unlock(ib.id).ok());
}

TEST_F(KubeState, AnEmptyHolderIsFreeAndAStaleLeaseIsTakenWhileWaiting) {
  // A released lease (holder cleared, as client-go releases) is taken at once.
  json lease = {{"metadata", {{"name", kLease}}},
                {"spec", {{"holderIdentity", ""}, {"leaseDurationSeconds", 2}}}};
  ASSERT_EQ(Raw("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease).first, 201);
  auto store = Open();
  LockInfo info = NewLockInfo("apply", store->Describe(), Now());
  ASSERT_TRUE(store->Lock(info, 0).ok());
  auto [status, taken] = Raw("GET", LeasePath());
  EXPECT_EQ(taken["spec"]["holderIdentity"], info.id);
  EXPECT_EQ(taken["spec"]["leaseTransitions"], 1);
  ASSERT_TRUE(store->Unlock(info.id).ok());

  // A holder whose clock runs an hour ahead: by renewTime its lease never seems to expire, but it is
  // not renewed, and a waiter counts a lease unchanged for a whole duration as expired.
  std::string future = "2099-01-01T00:00:00.000000Z";
  LockInfo ghost = NewLockInfo("apply", store->Describe(), Now());
  lease = {{"metadata",
            {{"name", kLease}, {"annotations", {{"onboard.tetrate.io/lock-info", ghost.ToJson().dump()}}}}},
           {"spec", {{"holderIdentity", ghost.id}, {"leaseDurationSeconds", 2}, {"renewTime", future}}}};
  ASSERT_EQ(Raw("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease).first, 201);
  Status st = store->Lock(info, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), ghost.Describe())) << st.message();
  auto t0 = Clock::now();
  st = store->Lock(info, 15);
  auto waited = Clock::now() - t0;
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_GE(waited, 2s);
  EXPECT_LT(waited, 8s);
  EXPECT_EQ(Raw("GET", LeasePath()).second["spec"]["holderIdentity"], info.id);
  ASSERT_TRUE(store->Unlock(info.id).ok());
}

TEST_F(KubeState, HolderSaysWhenALeaseHasExpired) {
  LockInfo ghost = NewLockInfo("apply", "x", Now());
  json lease = {
      {"metadata",
       {{"name", kLease}, {"annotations", {{"onboard.tetrate.io/lock-info", ghost.ToJson().dump()}}}}},
      {"spec",
       {{"holderIdentity", ghost.id},
        {"leaseDurationSeconds", 2},
        {"renewTime", "2020-01-01T00:00:00.000000Z"}}}};
  ASSERT_EQ(Raw("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease).first, 201);
  auto store = Open();
  auto holder = store->Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.error();
  EXPECT_EQ((*holder)->id, ghost.id);
  EXPECT_EQ((*holder)->operation, "apply, lease expired at 2020-01-01T00:00:02Z");
  // An expired lease is taken without waiting.
  LockInfo info = NewLockInfo("apply", store->Describe(), Now());
  ASSERT_TRUE(store->Lock(info, 0).ok());
  EXPECT_TRUE(store->Unlock(info.id).ok());
}

// ---------------------------------------------------------------------------------------------
// The lock, across processes

TEST_F(KubeState, TwoProcessesContendForTheLock) {
  Pipe ready, release;
  pid_t child = ForkHolder(json::object(), "apply", [&](StateStore& store, const LockInfo& info) {
    ready.SendInt(1);
    if (release.ReceiveInt(30000) != 1) return 4;
    std::this_thread::sleep_for(1500ms);  // the parent is waiting by now
    return store.Unlock(info.id).ok() ? 0 : 5;
  });
  ASSERT_GE(child, 0);
  ChildGuard guard(child);
  ASSERT_EQ(ready.ReceiveInt(20000), 1);

  auto store = Open();
  auto holder = store->Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.error();
  EXPECT_EQ((*holder)->pid, child);
  LockInfo mine = NewLockInfo("plan", store->Describe(), Now());
  Status st = store->Lock(mine, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message().rfind((*holder)->Describe(), 0), 0u) << st.message();
  EXPECT_TRUE(Contains(st.message(), " pid " + std::to_string(child) + " since ")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "run onboard force-unlock " + (*holder)->id)) << st.message();

  // With a timeout, the parent gets the lock once the child releases it.
  release.SendInt(1);
  auto t0 = Clock::now();
  st = store->Lock(mine, 30);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_GE(Clock::now() - t0, 1s);
  EXPECT_EQ(guard.Wait(), 0);
  auto now_holder = store->Holder();
  ASSERT_TRUE(now_holder.ok() && now_holder->has_value());
  EXPECT_EQ((*now_holder)->id, mine.id);
  EXPECT_TRUE(store->Unlock(mine.id).ok());
}

TEST_F(KubeState, LockTimeoutExpiresWhileALiveProcessHoldsIt) {
  Pipe ready, release;
  auto holder = [&](StateStore& store, const LockInfo& info) {
    ready.SendInt(1);
    (void)release.ReceiveInt(60000);
    return store.Unlock(info.id).ok() ? 0 : 4;
  };
  pid_t child = ForkHolder({{"leaseDurationSeconds", 2}}, "destroy", holder);
  ASSERT_GE(child, 0);
  ChildGuard guard(child);
  ASSERT_EQ(ready.ReceiveInt(20000), 1);
  // Waiting three lease durations: the holder renews all along, so it never looks expired.
  auto store = Open({{"leaseDurationSeconds", 2}});
  auto t0 = Clock::now();
  Status st = store->Lock(NewLockInfo("apply", store->Describe(), Now()), 6);
  auto waited = Clock::now() - t0;
  ASSERT_FALSE(st.ok());
  EXPECT_GE(waited, 6s);
  EXPECT_LT(waited, 12s);
  EXPECT_TRUE(Contains(st.message(), " pid " + std::to_string(child) + " ")) << st.message();
  EXPECT_TRUE(Contains(st.message(), " for destroy ")) << st.message();
  release.SendInt(1);
  EXPECT_EQ(guard.Wait(), 0);
  EXPECT_EQ(Raw("GET", LeasePath()).first, 404);
}

TEST_F(KubeState, TheRenewerKeepsTheLockWellPastOneDurationAndItsWritesGoThrough) {
  Pipe ready;
  auto holder = [&](StateStore& store, const LockInfo& info) {
    if (!store.Read().ok()) return 4;
    ready.SendInt(1);
    std::this_thread::sleep_for(7s);  // three and a half lease durations
    State s = test::SampleState();
    Status w = store.Write(s);
    if (!w.ok()) {
      std::fprintf(stderr, "child write: %s\n", w.message().c_str());
      return 5;
    }
    return store.Unlock(info.id).ok() ? 0 : 6;
  };
  pid_t child = ForkHolder({{"leaseDurationSeconds", 2}}, "apply", holder);
  ASSERT_GE(child, 0);
  ChildGuard guard(child);
  ASSERT_EQ(ready.ReceiveInt(20000), 1);
  auto [s0, first] = Raw("GET", LeasePath());
  ASSERT_EQ(s0, 200);
  auto store = Open({{"leaseDurationSeconds", 2}});
  LockInfo mine = NewLockInfo("plan", store->Describe(), Now());
  // Again and again over five seconds: never free, never expired, whether asked at once or waiting.
  auto t0 = Clock::now();
  Status st = store->Lock(mine, 3);
  EXPECT_FALSE(st.ok());
  while (Clock::now() - t0 < 5s) {
    st = store->Lock(mine, 0);
    ASSERT_FALSE(st.ok()) << "the lock was taken from a live holder";
    std::this_thread::sleep_for(300ms);
  }
  auto [s1, later] = Raw("GET", LeasePath());
  ASSERT_EQ(s1, 200);
  EXPECT_EQ(later["spec"]["holderIdentity"], first["spec"]["holderIdentity"]);
  EXPECT_EQ(later["spec"]["acquireTime"], first["spec"]["acquireTime"]);
  int64_t r0 = 0, r1 = 0;
  ASSERT_TRUE(ParseTime(first["spec"]["renewTime"], &r0));
  ASSERT_TRUE(ParseTime(later["spec"]["renewTime"], &r1));
  EXPECT_GE(r1 - r0, 4) << "renewTime must advance while the holder runs";
  EXPECT_EQ(guard.Wait(), 0);
  auto got = store->Read();
  ASSERT_TRUE(got.ok()) << got.error();
  ExpectSameState(*got, test::SampleState());
}

TEST_F(KubeState, AKilledHoldersLeaseExpiresAndTheNextLockSucceeds) {
  Pipe ready;
  pid_t child = ForkHolder({{"leaseDurationSeconds", 2}}, "apply", [&](StateStore&, const LockInfo&) -> int {
    ready.SendInt(1);
    for (;;) std::this_thread::sleep_for(1s);
  });
  ASSERT_GE(child, 0);
  ChildGuard guard(child);
  ASSERT_EQ(ready.ReceiveInt(20000), 1);
  std::this_thread::sleep_for(1s);  // it renews meanwhile
  guard.Kill();                     // SIGKILL: no unlock, no destructor
  auto store = Open();
  LockInfo mine = NewLockInfo("apply", store->Describe(), Now());
  Status st = store->Lock(mine, 0);
  ASSERT_FALSE(st.ok()) << "a lease is not free the moment its holder dies";
  EXPECT_TRUE(Contains(st.message(), " pid " + std::to_string(child) + " ")) << st.message();
  auto t0 = Clock::now();
  st = store->Lock(mine, 20);
  auto waited = Clock::now() - t0;
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_LT(waited, 6s);
  auto [status, lease] = Raw("GET", LeasePath());
  EXPECT_EQ(lease["spec"]["holderIdentity"], mine.id);
  EXPECT_EQ(lease["spec"]["leaseTransitions"], 1);
  EXPECT_TRUE(store->Unlock(mine.id).ok());
}

TEST_F(KubeState, AWriteAfterTheLeaseCouldNotBeRenewedIsRefused) {
  auto store = Open({{"leaseDurationSeconds", 2}});
  ASSERT_TRUE(store->Read().ok());
  State s = test::SampleState();
  ASSERT_TRUE(store->Write(s).ok());
  LockInfo info = NewLockInfo("apply", store->Describe(), Now());
  ASSERT_TRUE(store->Lock(info, 0).ok());
  // The API server refuses every renewal from now on.
  Admin("POST", "/__admin/faults",
        {{"method", "PUT"}, {"path_regex", "/leases/"}, {"status", 503}, {"count", 1000}});
  std::this_thread::sleep_for(2500ms);
  Admin("POST", "/__admin/reset-log");
  State changed = s;
  changed.serial++;
  changed.resources.erase(changed.resources.begin());
  Status st = store->Write(changed);
  ASSERT_FALSE(st.ok());
  // Said by the renewer when it gave up, or by Write itself when it found the lease unrenewed.
  EXPECT_TRUE(Contains(st.message(),
                       "refusing to write state to kubernetes secret default/onboard-state-prod: the "
                       "state lock was lost ("))
      << st.message();
  EXPECT_TRUE(Contains(st.message(), "lease default/onboard-lock-prod")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "nothing was written")) << st.message();
  EXPECT_EQ(SecretWrites(), 0);
  Admin("DELETE", "/__admin/faults");
  ExpectSameState(*Open()->Read(), s);
  Status un = store->Unlock(info.id);
  ASSERT_FALSE(un.ok());
  EXPECT_TRUE(Contains(un.message(), "was lost while this run held it")) << un.message();
  // It still was ours on the server: the Unlock released it.
  EXPECT_EQ(Raw("GET", LeasePath()).first, 404);
  // A new lock makes the store usable again.
  LockInfo again = NewLockInfo("apply", store->Describe(), Now());
  ASSERT_TRUE(store->Lock(again, 0).ok());
  EXPECT_TRUE(store->Write(changed).ok());
  EXPECT_TRUE(store->Unlock(again.id).ok());
}

TEST_F(KubeState, AHolderWhoseLeaseWasTakenOverCannotWrite) {
  Pipe ready, done;
  // The old holder: locks and reads, then (after the takeover) tries to write.
  pid_t child = ForkHolder({{"leaseDurationSeconds", 2}}, "apply", [&](StateStore& store, const LockInfo&) {
    auto read = store.Read();
    if (!read.ok()) return 4;
    ready.SendInt(1);
    if (done.ReceiveInt(30000) != 1) return 5;
    std::this_thread::sleep_for(1500ms);  // more than one renewal period
    State mine = **read;
    mine.serial++;
    mine.resources.clear();
    Status w = store.Write(mine);
    if (w.ok()) return 6;
    if (w.message().find("the state lock was lost (its lease default/onboard-lock-prod was") ==
            std::string::npos ||
        w.message().find("nothing was written") == std::string::npos) {
      std::fprintf(stderr, "child write: %s\n", w.message().c_str());
      return 7;
    }
    return 0;
  });
  ASSERT_GE(child, 0);
  ChildGuard guard(child);
  auto setup = Open();
  ASSERT_TRUE(setup->Read().ok());
  State s = test::SampleState();
  ASSERT_TRUE(setup->Write(s).ok());
  ASSERT_EQ(ready.ReceiveInt(20000), 1) << "the child could not lock";
  auto holder = setup->Holder();
  ASSERT_TRUE(holder.ok() && holder->has_value());
  // An operator force-unlocks the (live) holder and another run takes the lock and writes.
  ASSERT_TRUE(setup->ForceUnlock((*holder)->id).ok());
  LockInfo info = NewLockInfo("apply", setup->Describe(), Now());
  ASSERT_TRUE(setup->Lock(info, 0).ok());
  auto cur = setup->Read();
  ASSERT_TRUE(cur.ok());
  State newer = **cur;
  newer.serial++;
  newer.resources.erase(newer.resources.begin());
  ASSERT_TRUE(setup->Write(newer).ok());
  done.SendInt(1);
  EXPECT_EQ(guard.Wait(), 0);
  ExpectSameState(*Open()->Read(), newer);
  EXPECT_EQ(Raw("GET", LeasePath()).second["spec"]["holderIdentity"], info.id);
  EXPECT_TRUE(setup->Unlock(info.id).ok());
}

}  // namespace
}  // namespace onboard
