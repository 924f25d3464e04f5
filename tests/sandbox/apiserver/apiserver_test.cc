// Black-box tests of onboard-test-apiserver: the server runs as a child process on port 0 and is
// spoken to over verified HTTPS (cpp-httplib), and with the real kubectl when it is installed.
#include <httplib.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/sandbox/server_process.h"

namespace {

using nlohmann::json;
using onboard::sandbox::Slurp;

std::string Base64UrlDecode(const std::string& in) {
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    int d;
    if (c >= 'A' && c <= 'Z') d = c - 'A';
    else if (c >= 'a' && c <= 'z') d = c - 'a' + 26;
    else if (c >= '0' && c <= '9') d = c - '0' + 52;
    else if (c == '-') d = 62;
    else if (c == '_') d = 63;
    else return "";
    val = (val << 6) + d;
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

// The server as a child process.
class ApiServerProcess {
 public:
  explicit ApiServerProcess(const std::vector<std::string>& extra = {}) {
    ready_ = process_.Start(APISERVER_BINARY, extra, &error_);
    if (ready_) token_ = process_.File("token");
  }
  // SIGTERM and wait; returns the exit status (or -1 when killed by a signal / timed out).
  int Stop() { return process_.Stop(); }

  std::unique_ptr<httplib::SSLClient> Client(const std::string& host = "127.0.0.1",
                                             bool with_token = true) const {
    auto cli = std::make_unique<httplib::SSLClient>(host, port());
    cli->set_ca_cert_path((dir() + "/ca.pem").c_str());
    cli->enable_server_certificate_verification(true);
    if (with_token) cli->set_bearer_token_auth(token_.c_str());
    cli->set_read_timeout(10, 0);
    return cli;
  }

  bool ready() const { return ready_; }
  // Why it is not ready, with what the server wrote.
  const std::string& error() const { return error_; }
  const std::string& dir() const { return process_.dir(); }
  const std::string& token() const { return token_; }
  int port() const { return process_.port(); }

 private:
  onboard::sandbox::ServerProcess process_;
  bool ready_ = false;
  std::string error_;
  std::string token_;
};

json Body(const httplib::Result& r) {
  if (!r) return json();
  return json::parse(r->body, nullptr, false);
}

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ready()) << "server did not become ready: " << server_.error();
    cli_ = server_.Client();
  }

  httplib::Result Apply(const std::string& path, const std::string& body,
                        const std::string& manager = "onboard") {
    return cli_->Patch((path + "?fieldManager=" + manager).c_str(), body,
                       "application/apply-patch+yaml");
  }

  ApiServerProcess server_;
  std::unique_ptr<httplib::SSLClient> cli_;
};

constexpr const char* kCmPath = "/api/v1/namespaces/bookinfo/configmaps";
constexpr const char* kWePath = "/apis/networking.istio.io/v1beta1/namespaces/bookinfo/workloadentries";

TEST_F(ApiServerTest, WritesConnectionFilesAndExitsCleanlyOnSigterm) {
  const std::string& d = server_.dir();
  struct stat st{};
  ASSERT_EQ(::stat((d + "/token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(server_.token().size(), 48u);  // 24 random bytes, hex
  std::string kubeconfig = Slurp(d + "/kubeconfig");
  EXPECT_NE(kubeconfig.find("server: https://127.0.0.1:" + std::to_string(server_.port()) + "\n"),
            std::string::npos) << kubeconfig;
  EXPECT_NE(kubeconfig.find("certificate-authority: " + d + "/ca.pem\n"), std::string::npos);
  EXPECT_NE(kubeconfig.find("token: " + server_.token() + "\n"), std::string::npos);
  EXPECT_NE(kubeconfig.find("current-context: sandbox"), std::string::npos);
  EXPECT_NE(Slurp(d + "/ca.pem").find("-----BEGIN CERTIFICATE-----"), std::string::npos);
  EXPECT_GT(std::stoi(Slurp(d + "/pid")), 0);
  // The certificate verifies for both 127.0.0.1 (IP SAN) and localhost (DNS SAN).
  auto r = server_.Client("localhost")->Get("/version");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(server_.Stop(), 0);
  EXPECT_NE(::stat((d + "/ready").c_str(), &st), 0) << "ready must be removed on shutdown";
}

TEST_F(ApiServerTest, UnverifiedCaIsRejectedByTheClient) {
  httplib::SSLClient cli("127.0.0.1", server_.port());
  cli.set_ca_cert_path("/nonexistent-ca.pem");
  cli.enable_server_certificate_verification(true);
  auto r = cli.Get("/version");
  EXPECT_FALSE(r) << "a client without our CA must not trust the server";
}

TEST_F(ApiServerTest, BearerTokenAuthentication) {
  auto anonymous = server_.Client("127.0.0.1", false);
  auto r = anonymous->Get("/api/v1/namespaces");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  json s = Body(r);
  EXPECT_EQ(s["kind"], "Status");
  EXPECT_EQ(s["reason"], "Unauthorized");
  EXPECT_EQ(s["code"], 401);
  anonymous->set_bearer_token_auth("wrong-token");
  EXPECT_EQ(anonymous->Get("/api/v1/namespaces")->status, 401);
  EXPECT_EQ(cli_->Get("/api/v1/namespaces")->status, 200);

  // Revocation (for exec-plugin tests) and adding a new token.
  EXPECT_EQ(cli_->Post("/__admin/revoke-token", "", "application/json")->status, 200);
  EXPECT_EQ(cli_->Get("/api/v1/namespaces")->status, 401);
  EXPECT_EQ(cli_->Post("/__admin/tokens", R"({"token":"second-token"})", "application/json")->status, 200);
  anonymous->set_bearer_token_auth("second-token");
  EXPECT_EQ(anonymous->Get("/api/v1/namespaces")->status, 200);
  EXPECT_EQ(cli_->Get("/api/v1/namespaces")->status, 401);
  EXPECT_EQ(cli_->Post("/__admin/tokens", R"({"nope":1})", "application/json")->status, 400);
}

TEST_F(ApiServerTest, VersionAndDiscovery) {
  json v = Body(cli_->Get("/version"));
  EXPECT_EQ(v["major"], "1");
  EXPECT_EQ(v["gitVersion"].get<std::string>().rfind("v1.", 0), 0u);

  json api = Body(cli_->Get("/api"));
  EXPECT_EQ(api["kind"], "APIVersions");
  EXPECT_EQ(api["versions"], json::array({"v1"}));

  json groups = Body(cli_->Get("/apis"));
  EXPECT_EQ(groups["kind"], "APIGroupList");
  std::map<std::string, json> by_name;
  for (const auto& g : groups["groups"]) by_name[g["name"]] = g;
  ASSERT_TRUE(by_name.count("networking.istio.io"));
  ASSERT_TRUE(by_name.count("install.tetrate.io"));
  ASSERT_TRUE(by_name.count("coordination.k8s.io"));
  EXPECT_EQ(by_name["networking.istio.io"]["versions"].size(), 2u);

  json core = Body(cli_->Get("/api/v1"));
  EXPECT_EQ(core["kind"], "APIResourceList");
  EXPECT_EQ(core["groupVersion"], "v1");
  std::map<std::string, json> res;
  for (const auto& r : core["resources"]) res[r["name"]] = r;
  for (const char* n : {"namespaces", "configmaps", "secrets", "serviceaccounts", "serviceaccounts/token"}) {
    EXPECT_TRUE(res.count(n)) << n;
  }
  EXPECT_EQ(res["namespaces"]["namespaced"], false);
  EXPECT_EQ(res["configmaps"]["kind"], "ConfigMap");
  EXPECT_EQ(res["serviceaccounts/token"]["kind"], "TokenRequest");
  EXPECT_EQ(res["serviceaccounts/token"]["group"], "authentication.k8s.io");

  json istio = Body(cli_->Get("/apis/networking.istio.io/v1beta1"));
  EXPECT_EQ(istio["groupVersion"], "networking.istio.io/v1beta1");
  bool we = false, sidecar = false;
  for (const auto& r : istio["resources"]) {
    we |= r["name"] == "workloadentries" && r["kind"] == "WorkloadEntry" && r["namespaced"] == true;
    sidecar |= r["name"] == "sidecars" && r["kind"] == "Sidecar";
  }
  EXPECT_TRUE(we);
  EXPECT_TRUE(sidecar);
  EXPECT_EQ(Body(cli_->Get("/apis/install.tetrate.io/v1alpha1"))["resources"][0]["kind"], "ControlPlane");
  EXPECT_EQ(Body(cli_->Get("/apis/coordination.k8s.io/v1"))["resources"][0]["kind"], "Lease");
  EXPECT_EQ(cli_->Get("/apis/nope.example.com/v1")->status, 404);
  EXPECT_EQ(cli_->Get("/api/v1/nonsense")->status, 404);
}

TEST_F(ApiServerTest, SeedDataIsRealistic) {
  json mesh = Body(cli_->Get("/api/v1/namespaces/istio-system/configmaps/istio"));
  ASSERT_EQ(mesh["kind"], "ConfigMap");
  std::string mesh_yaml = mesh["data"]["mesh"];
  EXPECT_NE(mesh_yaml.find("discoveryAddress: istiod.istio-system.svc:15012"), std::string::npos);
  EXPECT_NE(mesh_yaml.find("ISTIO_META_DNS_CAPTURE: \"true\""), std::string::npos);
  EXPECT_NE(mesh_yaml.find("trustDomain: cluster.local"), std::string::npos);

  json injector = Body(cli_->Get("/api/v1/namespaces/istio-system/configmaps/istio-sidecar-injector"));
  json values = json::parse(injector["data"]["values"].get<std::string>());
  EXPECT_EQ(values["global"]["hub"], "docker.io/tetrate");
  EXPECT_EQ(values["global"]["tag"], "1.8.6");
  EXPECT_EQ(values["global"]["jwtPolicy"], "third-party-jwt");
  EXPECT_EQ(values["global"]["pilotCertProvider"], "istiod");
  EXPECT_EQ(values["global"]["network"], "");
  EXPECT_EQ(values["global"]["meshID"], "mesh1");
  EXPECT_EQ(values["global"]["multiCluster"]["clusterName"], "Kubernetes");
  EXPECT_EQ(values["global"]["caAddress"], "");

  json cp = Body(cli_->Get("/apis/install.tetrate.io/v1alpha1/namespaces/istio-system/controlplanes/controlplane"));
  EXPECT_EQ(cp["kind"], "ControlPlane");
  EXPECT_TRUE(cp["spec"].is_object());
  EXPECT_FALSE(cp["spec"].contains("meshExpansion"));

  std::string ca = Slurp(server_.dir() + "/ca.pem");
  for (const char* ns : {"bookinfo", "default"}) {
    std::string base = std::string("/api/v1/namespaces/") + ns;
    json root = Body(cli_->Get(base + "/configmaps/istio-ca-root-cert"));
    std::string pem = root["data"]["root-cert.pem"];
    EXPECT_EQ(pem.rfind("-----BEGIN CERTIFICATE-----", 0), 0u) << ns;
    EXPECT_NE(pem, ca) << "the Istio root CA is separate from the API server CA";
    EXPECT_EQ(Body(cli_->Get(base + "/configmaps/kube-root-ca.crt"))["data"]["ca.crt"], ca);
    for (const char* sa : {"bookinfo-ratings", "bookinfo-details", "bookinfo-reviews", "default"}) {
      EXPECT_EQ(cli_->Get(base + "/serviceaccounts/" + sa)->status, 200) << ns << "/" << sa;
    }
  }
  json namespaces = Body(cli_->Get("/api/v1/namespaces"));
  std::set<std::string> names;
  for (const auto& n : namespaces["items"]) names.insert(n["metadata"]["name"]);
  EXPECT_TRUE(names.count("istio-system") && names.count("bookinfo") && names.count("default"));
}

TEST(ApiServerNoSeed, StartsEmpty) {
  ApiServerProcess server({"--no-seed", "--token", "fixed-token"});
  ASSERT_TRUE(server.ready());
  EXPECT_EQ(server.token(), "fixed-token");
  json list = Body(server.Client()->Get("/api/v1/namespaces"));
  EXPECT_EQ(list["kind"], "NamespaceList");
  EXPECT_TRUE(list["items"].empty());
}

TEST_F(ApiServerTest, CreateGetListAndUpdateWithConflicts) {
  json cm = {{"apiVersion", "v1"}, {"kind", "ConfigMap"},
             {"metadata", {{"name", "app-config"}, {"labels", {{"app", "ratings"}}}}},
             {"data", {{"k", "v1"}}}};
  auto r = cli_->Post(kCmPath, cm.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  json created = Body(r);
  EXPECT_EQ(created["metadata"]["namespace"], "bookinfo");
  EXPECT_EQ(created["metadata"]["uid"].get<std::string>().size(), 36u);
  EXPECT_FALSE(created["metadata"]["resourceVersion"].get<std::string>().empty());
  EXPECT_EQ(created["metadata"]["generation"], 1);
  EXPECT_TRUE(created["metadata"].contains("creationTimestamp"));

  r = cli_->Post(kCmPath, cm.dump(), "application/json");
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(Body(r)["reason"], "AlreadyExists");
  EXPECT_EQ(Body(r)["message"], "configmaps \"app-config\" already exists");

  json got = Body(cli_->Get(std::string(kCmPath) + "/app-config"));
  EXPECT_EQ(got, created);
  r = cli_->Get(std::string(kCmPath) + "/missing");
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(Body(r)["reason"], "NotFound");
  EXPECT_EQ(Body(r)["message"], "configmaps \"missing\" not found");
  EXPECT_EQ(Body(r)["details"]["name"], "missing");

  json list = Body(cli_->Get(std::string(kCmPath) + "?labelSelector=app%3Dratings"));
  EXPECT_EQ(list["kind"], "ConfigMapList");
  ASSERT_EQ(list["items"].size(), 1u);
  EXPECT_EQ(list["items"][0]["metadata"]["name"], "app-config");
  EXPECT_FALSE(list["items"][0].contains("kind")) << "built-in list items carry no kind";
  EXPECT_FALSE(list["metadata"]["resourceVersion"].get<std::string>().empty());
  EXPECT_EQ(Body(cli_->Get(std::string(kCmPath) + "?labelSelector=app%3Dother"))["items"].size(), 0u);
  EXPECT_EQ(Body(cli_->Get(std::string(kCmPath)))["items"].size(), 3u);

  // Stale resourceVersion: 409 Conflict.
  json stale = created;
  stale["data"]["k"] = "v2";
  stale["metadata"]["resourceVersion"] = "1";
  r = cli_->Put(std::string(kCmPath) + "/app-config", stale.dump(), "application/json");
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(Body(r)["reason"], "Conflict");
  EXPECT_NE(Body(r)["message"].get<std::string>().find("the object has been modified"), std::string::npos);

  json fresh = created;
  fresh["data"]["k"] = "v2";
  r = cli_->Put(std::string(kCmPath) + "/app-config", fresh.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  json updated = Body(r);
  EXPECT_EQ(updated["data"]["k"], "v2");
  EXPECT_EQ(updated["metadata"]["uid"], created["metadata"]["uid"]);
  EXPECT_GT(std::stoll(updated["metadata"]["resourceVersion"].get<std::string>()),
            std::stoll(created["metadata"]["resourceVersion"].get<std::string>()));

  // An update that changes nothing keeps the resourceVersion.
  r = cli_->Put(std::string(kCmPath) + "/app-config", updated.dump(), "application/json");
  EXPECT_EQ(Body(r)["metadata"]["resourceVersion"], updated["metadata"]["resourceVersion"]);

  // PUT of an absent object, namespace mismatch, absent namespace.
  EXPECT_EQ(cli_->Put(std::string(kCmPath) + "/absent", cm.dump(), "application/json")->status, 400);
  json absent = cm;
  absent["metadata"]["name"] = "absent";
  EXPECT_EQ(cli_->Put(std::string(kCmPath) + "/absent", absent.dump(), "application/json")->status, 404);
  r = cli_->Post("/api/v1/namespaces/nope/configmaps", cm.dump(), "application/json");
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(Body(r)["message"], "namespaces \"nope\" not found");
  json wrong_ns = cm;
  wrong_ns["metadata"]["namespace"] = "default";
  EXPECT_EQ(cli_->Post(kCmPath, wrong_ns.dump(), "application/json")->status, 400);
  json bad_name = cm;
  bad_name["metadata"]["name"] = "Bad_Name";
  r = cli_->Post(kCmPath, bad_name.dump(), "application/json");
  EXPECT_EQ(r->status, 422);
  EXPECT_EQ(Body(r)["details"]["causes"][0]["field"], "metadata.name");
  EXPECT_EQ(cli_->Post(kCmPath, "{not json", "application/json")->status, 400);
}

TEST_F(ApiServerTest, SecretsLeasesAndNamespaces) {
  json secret = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", "s1"}}},
                 {"stringData", {{"token", "abc"}}}};
  auto r = cli_->Post("/api/v1/namespaces/bookinfo/secrets", secret.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(Body(r)["data"]["token"], "YWJj");
  EXPECT_EQ(Body(r)["type"], "Opaque");

  json lease = {{"apiVersion", "coordination.k8s.io/v1"}, {"kind", "Lease"},
                {"metadata", {{"name", "onboard-lock"}}},
                {"spec", {{"holderIdentity", "run-1"}, {"leaseDurationSeconds", 30}}}};
  r = cli_->Post("/apis/coordination.k8s.io/v1/namespaces/istio-system/leases", lease.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(Body(r)["apiVersion"], "coordination.k8s.io/v1");

  json ns = {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "team-a"}}}};
  r = cli_->Post("/api/v1/namespaces", ns.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(Body(r)["status"]["phase"], "Active");
  EXPECT_EQ(cli_->Post("/api/v1/namespaces", ns.dump(), "application/json")->status, 409);
  json cm = {{"metadata", {{"name", "x"}}}, {"data", {{"a", "b"}}}};
  EXPECT_EQ(cli_->Post("/api/v1/namespaces/team-a/configmaps", cm.dump(), "application/json")->status, 201);
  r = cli_->Delete("/api/v1/namespaces/team-a");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r)["status"]["phase"], "Terminating");
  EXPECT_EQ(cli_->Get("/api/v1/namespaces/team-a")->status, 404);
  EXPECT_EQ(cli_->Get("/api/v1/namespaces/team-a/configmaps/x")->status, 404);
  EXPECT_EQ(Body(cli_->Get("/api/v1/namespaces/team-a/configmaps"))["items"].size(), 0u);
}

TEST_F(ApiServerTest, SecretDataIsLimitedToOneMebibyteDecoded) {
  const std::string path = "/api/v1/namespaces/default/secrets";
  // Base64 of 3 bytes is 4 characters: the limit is on the decoded bytes, summed over the keys.
  auto encoded = [](size_t bytes) {
    return std::string(bytes / 3 * 4, 'A') + (bytes % 3 == 1 ? "AA==" : bytes % 3 == 2 ? "AAA=" : "");
  };
  auto secret = [&](const std::string& name, size_t a_bytes, size_t b_bytes) {
    return json{{"metadata", {{"name", name}}}, {"data", {{"a", encoded(a_bytes)}, {"b", encoded(b_bytes)}}}};
  };
  // 699051 + 349525 = 1048576 bytes: exactly at the limit.
  auto r = cli_->Post(path, secret("at-limit", 699051, 349525).dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body.substr(0, 300);

  // One byte more is refused with the real server's message, on create and on update.
  r = cli_->Post(path, secret("too-big", 699051, 349526).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
  json st = Body(r);
  EXPECT_EQ(st["reason"], "Invalid");
  EXPECT_EQ(st["message"], "Secret \"too-big\" is invalid: data: Too long: must have at most 1048576 bytes");
  EXPECT_EQ(st["details"]["causes"][0]["field"], "data");
  EXPECT_EQ(cli_->Get(path + "/too-big")->status, 404);

  json grown = secret("at-limit", 699051, 349528);
  r = cli_->Put((path + "/at-limit").c_str(), grown.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body.substr(0, 300);
  EXPECT_EQ(Body(r)["message"],
            "Secret \"at-limit\" is invalid: data: Too long: must have at most 1048576 bytes");
  // stringData counts once it is merged into data.
  json via_string = {{"metadata", {{"name", "string-data"}}},
                     {"data", {{"a", std::string(1048575 / 3 * 4, 'A')}}},
                     {"stringData", {{"b", "xy"}}}};
  r = cli_->Post(path, via_string.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body.substr(0, 300);
  via_string["stringData"]["b"] = "x";
  r = cli_->Post(path, via_string.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body.substr(0, 300);
  // The Secret kept its previous data.
  EXPECT_EQ(Body(cli_->Get((path + "/at-limit").c_str()))["data"]["b"], encoded(349525));
}

TEST_F(ApiServerTest, ServerSideApply) {
  const std::string path = std::string(kCmPath) + "/applied";
  const std::string doc =
      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: bookinfo\n"
      "data:\n  enabled: \"true\"\n  port: \"15012\"\n";
  // fieldManager is required.
  auto r = cli_->Patch(path.c_str(), doc, "application/apply-patch+yaml");
  EXPECT_EQ(r->status, 422);
  EXPECT_EQ(Body(r)["details"]["causes"][0]["field"], "fieldManager");

  r = Apply(path, doc);
  ASSERT_EQ(r->status, 201) << r->body;
  json first = Body(r);
  EXPECT_EQ(first["data"]["enabled"], "true") << "quoted YAML scalars stay strings";
  ASSERT_EQ(first["metadata"]["managedFields"].size(), 1u);
  EXPECT_EQ(first["metadata"]["managedFields"][0]["manager"], "onboard");
  EXPECT_EQ(first["metadata"]["managedFields"][0]["operation"], "Apply");
  EXPECT_TRUE(first["metadata"]["managedFields"][0]["fieldsV1"]["f:data"].contains("f:port"));

  // Identical apply: no write, no resourceVersion bump.
  r = Apply(path, doc);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r)["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
  json list = Body(cli_->Get(kCmPath));

  // JSON is YAML: a changed apply in JSON bumps and merges.
  json changed = {{"apiVersion", "v1"}, {"kind", "ConfigMap"},
                  {"metadata", {{"name", "applied"}, {"labels", {{"managed-by", "onboard"}}}}},
                  {"data", {{"extra", "1"}}}};
  r = cli_->Patch((path + "?fieldManager=onboard&force=true").c_str(), changed.dump(),
                  "application/apply-patch+yaml");
  ASSERT_EQ(r->status, 200) << r->body;
  json second = Body(r);
  EXPECT_NE(second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
  EXPECT_EQ(second["data"]["extra"], "1");
  EXPECT_FALSE(second["data"].contains("port")) << "no longer applied by its only manager";
  EXPECT_FALSE(second["data"].contains("enabled"));
  EXPECT_EQ(second["metadata"]["labels"]["managed-by"], "onboard");
  EXPECT_EQ(second["metadata"]["uid"], first["metadata"]["uid"]);

  // Fields the manager stops applying are removed; fields another manager set are kept.
  ASSERT_EQ(cli_->Patch(path.c_str(), R"({"data":{"owned-by-other":"x"}})", "application/merge-patch+json")->status, 200);
  r = Apply(path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  port: \"15012\"\n");
  ASSERT_EQ(r->status, 200) << r->body;
  json third = Body(r);
  EXPECT_FALSE(third["data"].contains("extra")) << third.dump();
  EXPECT_FALSE(third["metadata"].contains("labels") && third["metadata"]["labels"].contains("managed-by"));
  EXPECT_EQ(third["data"]["port"], "15012");
  EXPECT_EQ(third["data"]["owned-by-other"], "x");

  // Changing a field another manager owns is a conflict, unless forced.
  r = Apply(path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  owned-by-other: \"y\"\n");
  ASSERT_EQ(r->status, 409) << r->body;
  EXPECT_EQ(Body(r)["reason"], "Conflict");
  EXPECT_EQ(Body(r)["details"]["causes"][0]["field"], ".data.owned-by-other") << r->body;
  EXPECT_EQ(Body(cli_->Get(path))["data"]["owned-by-other"], "x");
  r = cli_->Patch((path + "?fieldManager=onboard&force=true").c_str(),
                  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  owned-by-other: \"y\"\n",
                  "application/apply-patch+yaml");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r)["data"]["owned-by-other"], "y");
  // Having taken it over, dropping it now removes it.
  r = Apply(path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  port: \"15012\"\n");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_FALSE(Body(r)["data"].contains("owned-by-other")) << r->body;

  // Mismatches are rejected.
  EXPECT_EQ(Apply(std::string(kCmPath) + "/other", doc)->status, 400);
  EXPECT_EQ(Apply("/api/v1/namespaces/nope/configmaps/applied",
                  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n")->status, 404);
  EXPECT_EQ(Apply(path, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\n")->status, 400);
  EXPECT_EQ(Apply(path, "a: [unclosed\n")->status, 400);
}

TEST_F(ApiServerTest, MergePatchAndGeneration) {
  const std::string cp = "/apis/install.tetrate.io/v1alpha1/namespaces/istio-system/controlplanes/controlplane";
  json before = Body(cli_->Get(cp));
  auto r = cli_->Patch(cp.c_str(), R"({"spec":{"meshExpansion":{}}})", "application/merge-patch+json");
  ASSERT_EQ(r->status, 200) << r->body;
  json after = Body(r);
  EXPECT_TRUE(after["spec"]["meshExpansion"].is_object());
  EXPECT_EQ(after["spec"]["hub"], before["spec"]["hub"]);
  EXPECT_EQ(after["metadata"]["generation"], before["metadata"]["generation"].get<int>() + 1);

  // Same patch again: nothing changes.
  r = cli_->Patch(cp.c_str(), R"({"spec":{"meshExpansion":{}}})", "application/merge-patch+json");
  EXPECT_EQ(Body(r)["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"]);

  // null deletes (RFC 7386); a metadata-only change does not bump generation.
  r = cli_->Patch(cp.c_str(), R"({"spec":{"meshExpansion":null},"metadata":{"labels":{"a":"b"}}})",
                  "application/strategic-merge-patch+json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_FALSE(Body(r)["spec"].contains("meshExpansion"));
  EXPECT_EQ(Body(r)["metadata"]["labels"]["a"], "b");
  EXPECT_EQ(Body(r)["metadata"]["generation"], after["metadata"]["generation"].get<int>() + 1);
  r = cli_->Patch(cp.c_str(), R"({"metadata":{"labels":{"c":"d"}}})", "application/merge-patch+json");
  EXPECT_EQ(Body(r)["metadata"]["generation"], after["metadata"]["generation"].get<int>() + 1);

  // Stale resourceVersion in the patch: Conflict. Absent object: NotFound. Bad type: 415.
  r = cli_->Patch(cp.c_str(), R"({"metadata":{"resourceVersion":"5"},"spec":{"x":1}})",
                  "application/merge-patch+json");
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(cli_->Patch((cp + "-absent").c_str(), "{}", "application/merge-patch+json")->status, 404);
  EXPECT_EQ(cli_->Patch(cp.c_str(), "{}", "text/plain")->status, 415);
  r = cli_->Patch(cp.c_str(), R"([{"op":"add","path":"/spec/tier","value":"gold"}])",
                  "application/json-patch+json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r)["spec"]["tier"], "gold");
}

TEST_F(ApiServerTest, DeleteWithPreconditions) {
  json cm = {{"metadata", {{"name", "doomed"}}}, {"data", {{"a", "b"}}}};
  json created = Body(cli_->Post(kCmPath, cm.dump(), "application/json"));
  const std::string path = std::string(kCmPath) + "/doomed";
  auto r = cli_->Delete(path.c_str(), R"({"preconditions":{"uid":"00000000-0000-0000-0000-000000000000"}})",
                        "application/json");
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(Body(r)["reason"], "Conflict");
  EXPECT_NE(Body(r)["message"].get<std::string>().find("UID in precondition"), std::string::npos);
  r = cli_->Delete(path.c_str(), R"({"preconditions":{"resourceVersion":"1"}})", "application/json");
  EXPECT_EQ(r->status, 409);
  json pre = {{"kind", "DeleteOptions"}, {"apiVersion", "v1"},
              {"preconditions", {{"uid", created["metadata"]["uid"]},
                                 {"resourceVersion", created["metadata"]["resourceVersion"]}}}};
  r = cli_->Delete(path.c_str(), pre.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r)["status"], "Success");
  EXPECT_EQ(Body(r)["details"]["uid"], created["metadata"]["uid"]);
  EXPECT_EQ(cli_->Get(path)->status, 404);
  EXPECT_EQ(cli_->Delete(path)->status, 404);
}

TEST_F(ApiServerTest, TokenRequest) {
  const std::string path = "/api/v1/namespaces/bookinfo/serviceaccounts/bookinfo-ratings/token";
  json req = {{"apiVersion", "authentication.k8s.io/v1"}, {"kind", "TokenRequest"},
              {"spec", {{"audiences", {"istio-ca"}}, {"expirationSeconds", 3600}}}};
  auto r = cli_->Post(path.c_str(), req.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  json tr = Body(r);
  EXPECT_EQ(tr["kind"], "TokenRequest");
  EXPECT_EQ(tr["apiVersion"], "authentication.k8s.io/v1");
  EXPECT_EQ(tr["spec"]["audiences"], json::array({"istio-ca"}));
  EXPECT_FALSE(tr["status"]["expirationTimestamp"].get<std::string>().empty());
  std::string token = tr["status"]["token"];
  auto dot1 = token.find('.'), dot2 = token.rfind('.');
  ASSERT_NE(dot1, std::string::npos);
  ASSERT_NE(dot1, dot2);
  json header = json::parse(Base64UrlDecode(token.substr(0, dot1)), nullptr, false);
  json payload = json::parse(Base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1)), nullptr, false);
  EXPECT_EQ(header["typ"], "JWT");
  EXPECT_EQ(payload["sub"], "system:serviceaccount:bookinfo:bookinfo-ratings");
  EXPECT_EQ(payload["aud"], json::array({"istio-ca"}));
  EXPECT_EQ(payload["exp"].get<long long>() - payload["iat"].get<long long>(), 3600);
  EXPECT_FALSE(payload["iss"].get<std::string>().empty());
  EXPECT_EQ(payload["jti"].get<std::string>().size(), 36u);
  EXPECT_FALSE(token.substr(dot2 + 1).empty());
  // Each token is unique.
  EXPECT_NE(Body(cli_->Post(path.c_str(), req.dump(), "application/json"))["status"]["token"], token);
  // The server never logs tokens.
  EXPECT_EQ(Slurp(server_.dir() + "/requests.log").find(token.substr(dot2 + 1)), std::string::npos);

  r = cli_->Post("/api/v1/namespaces/bookinfo/serviceaccounts/nobody/token", req.dump(), "application/json");
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(Body(r)["message"], "serviceaccounts \"nobody\" not found");
  req["spec"]["expirationSeconds"] = 60;
  r = cli_->Post(path.c_str(), req.dump(), "application/json");
  EXPECT_EQ(r->status, 422);
  EXPECT_EQ(Body(r)["details"]["causes"][0]["field"], "spec.expirationSeconds");
}

TEST(ApiServerTokenCap, LifetimeIsCapped) {
  ApiServerProcess server({"--token-lifetime-cap", "900"});
  ASSERT_TRUE(server.ready());
  json req = {{"spec", {{"audiences", {"istio-ca"}}, {"expirationSeconds", 86400}}}};
  auto r = server.Client()->Post("/api/v1/namespaces/default/serviceaccounts/default/token", req.dump(),
                                 "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  json tr = Body(r);
  EXPECT_EQ(tr["spec"]["expirationSeconds"], 900);
  std::string token = tr["status"]["token"];
  auto dot1 = token.find('.'), dot2 = token.rfind('.');
  json payload = json::parse(Base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1)));
  EXPECT_EQ(payload["exp"].get<long long>() - payload["iat"].get<long long>(), 900);
}

TEST_F(ApiServerTest, CrdValidationOfWorkloadEntriesAndSidecars) {
  const std::string good =
      "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata:\n  name: ratings-vm\n"
      "spec:\n  address: 10.0.0.5\n  serviceAccount: bookinfo-ratings\n  labels:\n    app: ratings\n"
      "  ports:\n    http: 9080\n";
  auto r = Apply(std::string(kWePath) + "/ratings-vm", good);
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(Body(r)["kind"], "WorkloadEntry");
  EXPECT_EQ(Body(r)["apiVersion"], "networking.istio.io/v1beta1");
  // The same object is served under v1 too.
  json v1 = Body(cli_->Get("/apis/networking.istio.io/v1/namespaces/bookinfo/workloadentries/ratings-vm"));
  EXPECT_EQ(v1["apiVersion"], "networking.istio.io/v1");
  json list = Body(cli_->Get(kWePath));
  ASSERT_EQ(list["items"].size(), 1u);
  EXPECT_EQ(list["items"][0]["kind"], "WorkloadEntry") << "custom resource list items carry kind";

  // No address: the CRD's CEL rule.
  json no_address = {{"apiVersion", "networking.istio.io/v1beta1"}, {"kind", "WorkloadEntry"},
                     {"metadata", {{"name", "no-address"}}}, {"spec", {{"serviceAccount", "x"}}}};
  r = cli_->Post(kWePath, no_address.dump(), "application/json");
  ASSERT_EQ(r->status, 422) << r->body;
  json s = Body(r);
  EXPECT_EQ(s["reason"], "Invalid");
  EXPECT_EQ(s["details"]["kind"], "WorkloadEntry");
  EXPECT_EQ(s["details"]["group"], "networking.istio.io");
  EXPECT_EQ(s["details"]["causes"][0]["field"], "spec");
  EXPECT_NE(s["message"].get<std::string>().find("Address is required"), std::string::npos) << s.dump();

  // Unknown field in spec, wrong type, out-of-range port.
  json unknown = no_address;
  unknown["metadata"]["name"] = "unknown-field";
  unknown["spec"] = {{"address", "10.0.0.6"}, {"adress", "typo"}};
  r = cli_->Post(kWePath, unknown.dump(), "application/json");
  ASSERT_EQ(r->status, 422) << r->body;
  EXPECT_EQ(Body(r)["details"]["causes"][0]["field"], "spec.adress");

  json wrong_type = unknown;
  wrong_type["spec"] = {{"address", "10.0.0.6"}, {"ports", {{"http", "not-a-number"}}}};
  r = cli_->Post(kWePath, wrong_type.dump(), "application/json");
  ASSERT_EQ(r->status, 422) << r->body;
  EXPECT_EQ(Body(r)["details"]["causes"][0]["field"], "spec.ports.http") << r->body;

  json bad_port = unknown;
  bad_port["spec"] = {{"address", "10.0.0.6"}, {"ports", {{"http", 70000}}}};
  EXPECT_EQ(cli_->Post(kWePath, bad_port.dump(), "application/json")->status, 422);

  // A patch that would make the object invalid is rejected and changes nothing.
  r = cli_->Patch((std::string(kWePath) + "/ratings-vm").c_str(), R"({"spec":{"address":null}})",
                  "application/merge-patch+json");
  EXPECT_EQ(r->status, 422);
  EXPECT_EQ(Body(cli_->Get(std::string(kWePath) + "/ratings-vm"))["spec"]["address"], "10.0.0.5");

  // Sidecar: the reference example is valid; a bad enum is not.
  std::string sidecar = Slurp(std::string(ONBOARD_SOURCE_DIR) + "/../shared/reference/examples/ratings-sidecar.yaml");
  ASSERT_FALSE(sidecar.empty());
  const std::string sc_path = "/apis/networking.istio.io/v1beta1/namespaces/bookinfo/sidecars/bookinfo-ratings-no-iptables";
  r = Apply(sc_path, sidecar);
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(Body(r)["spec"]["ingress"][0]["port"]["number"], 9080);
  r = cli_->Patch(sc_path.c_str(), R"({"spec":{"egress":[{"hosts":["./*"],"captureMode":"SOMETIMES"}]}})",
                  "application/merge-patch+json");
  ASSERT_EQ(r->status, 422) << r->body;
  EXPECT_EQ(Body(r)["details"]["causes"][0]["field"], "spec.egress[0].captureMode") << r->body;
}

TEST_F(ApiServerTest, FaultInjection) {
  const std::string path = "/api/v1/namespaces/istio-system/configmaps/istio";
  auto r = cli_->Post("/__admin/faults",
                      R"({"method":"GET","path_regex":"/configmaps/istio$","status":429,"count":2,"retry_after":1})",
                      "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  for (int i = 0; i < 2; ++i) {
    r = cli_->Get(path);
    ASSERT_EQ(r->status, 429);
    EXPECT_EQ(r->get_header_value("Retry-After"), "1");
    EXPECT_EQ(Body(r)["reason"], "TooManyRequests");
    EXPECT_EQ(Body(r)["details"]["retryAfterSeconds"], 1);
  }
  EXPECT_EQ(cli_->Get(path)->status, 200);
  // Other methods/paths are not affected.
  cli_->Post("/__admin/faults", R"({"method":"PATCH","path_regex":".*","status":500,"count":1})", "application/json");
  EXPECT_EQ(cli_->Get(path)->status, 200);
  r = cli_->Patch(path.c_str(), "{}", "application/merge-patch+json");
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(Body(r)["reason"], "InternalError");
  EXPECT_EQ(cli_->Patch(path.c_str(), "{}", "application/merge-patch+json")->status, 200);

  // Slow, then clear.
  cli_->Post("/__admin/faults", R"({"path_regex":"/version","status":0,"delay_ms":400,"count":5})", "application/json");
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(cli_->Get("/version")->status, 200);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(380));
  EXPECT_EQ(cli_->Delete("/__admin/faults")->status, 200);
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(cli_->Get("/version")->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(380));
  EXPECT_EQ(cli_->Post("/__admin/faults", R"({"path_regex":"(","status":500})", "application/json")->status, 400);
}

TEST_F(ApiServerTest, RequestLog) {
  ASSERT_EQ(cli_->Post("/__admin/reset-log", "", "application/json")->status, 200);
  cli_->Get("/api/v1/namespaces/istio-system/configmaps?labelSelector=app%3Distiod");
  cli_->Get("/api/v1/namespaces/istio-system/configmaps/missing");
  cli_->Patch("/api/v1/namespaces/bookinfo/configmaps/logged?fieldManager=t",
              "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: logged\n", "application/apply-patch+yaml");
  json log = Body(cli_->Get("/__admin/requests"));
  ASSERT_EQ(log.size(), 3u) << log.dump();
  EXPECT_EQ(log[0]["method"], "GET");
  EXPECT_EQ(log[0]["path"], "/api/v1/namespaces/istio-system/configmaps");
  EXPECT_EQ(log[0]["query"], "labelSelector=app%3Distiod");
  EXPECT_EQ(log[0]["status"], 200);
  EXPECT_EQ(log[0]["verb"], "list");
  EXPECT_EQ(log[1]["verb"], "get");
  EXPECT_EQ(log[1]["status"], 404);
  EXPECT_EQ(log[2]["verb"], "apply");
  EXPECT_EQ(log[2]["status"], 201);
  EXPECT_FALSE(log[2]["time"].get<std::string>().empty());
  // The file has the same lines, one JSON object each, and never the bearer token.
  std::string file = Slurp(server_.dir() + "/requests.log");
  std::istringstream lines(file);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    json entry = json::parse(line, nullptr, false);
    ASSERT_FALSE(entry.is_discarded()) << line;
    EXPECT_EQ(entry["path"], log[n]["path"]);
    ++n;
  }
  EXPECT_EQ(n, 3);
  EXPECT_EQ(file.find(server_.token()), std::string::npos);
}

TEST_F(ApiServerTest, ConcurrentWritesGetDistinctResourceVersions) {
  std::vector<std::thread> threads;
  std::vector<std::string> rvs(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto cli = server_.Client();
      json cm = {{"metadata", {{"name", "c" + std::to_string(i)}}}, {"data", {{"i", std::to_string(i)}}}};
      auto r = cli->Post(kCmPath, cm.dump(), "application/json");
      if (r && r->status == 201) rvs[i] = Body(r)["metadata"]["resourceVersion"];
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> unique(rvs.begin(), rvs.end());
  EXPECT_EQ(unique.size(), 8u);
  EXPECT_FALSE(unique.count(""));
}

// The proof of faithfulness: the real kubectl works against the server.
TEST_F(ApiServerTest, RealKubectl) {
  if (::access("/usr/bin/kubectl", X_OK) != 0 ||
      std::system("/usr/bin/kubectl version --client >/dev/null 2>&1") != 0) {
    std::printf("SKIPPED: /usr/bin/kubectl is not installed or does not run (kubectl version --client failed)\n");
    GTEST_SKIP() << "kubectl is not available on this machine";
  }
  const std::string d = server_.dir();
  const std::string kubectl = "HOME=" + d + " /usr/bin/kubectl --kubeconfig " + d + "/kubeconfig --cache-dir " + d +
                              "/kube-cache --request-timeout=10s ";
  auto run = [&](const std::string& args, std::string* out) {
    std::string cmd = kubectl + args + " 2>" + d + "/kubectl.err";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return -1;
    char buf[4096];
    size_t n;
    out->clear();
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
    int status = ::pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string out;
  ASSERT_EQ(run("get configmaps -n istio-system -o json", &out), 0) << Slurp(d + "/kubectl.err");
  json cms = json::parse(out, nullptr, false);
  ASSERT_FALSE(cms.is_discarded()) << out;
  std::set<std::string> names;
  for (const auto& cm : cms["items"]) names.insert(cm["metadata"]["name"]);
  EXPECT_TRUE(names.count("istio") && names.count("istio-sidecar-injector")) << out;

  std::ofstream(d + "/we.yaml") << "apiVersion: networking.istio.io/v1beta1\n"
                                   "kind: WorkloadEntry\n"
                                   "metadata:\n"
                                   "  name: ratings-vm\n"
                                   "  namespace: bookinfo\n"
                                   "  labels:\n"
                                   "    app: ratings\n"
                                   "spec:\n"
                                   "  address: 10.0.0.5\n"
                                   "  serviceAccount: bookinfo-ratings\n"
                                   "  labels:\n"
                                   "    app: ratings\n"
                                   "    class: vm\n"
                                   "  ports:\n"
                                   "    http: 9080\n";
  ASSERT_EQ(run("apply --server-side --field-manager=kubectl-test -f " + d + "/we.yaml", &out), 0)
      << Slurp(d + "/kubectl.err");
  EXPECT_NE(out.find("workloadentry.networking.istio.io/ratings-vm serverside-applied"), std::string::npos) << out;
  // Applying again is a no-op on the server.
  json before = Body(cli_->Get(std::string(kWePath) + "/ratings-vm"));
  ASSERT_EQ(run("apply --server-side --field-manager=kubectl-test -f " + d + "/we.yaml", &out), 0)
      << Slurp(d + "/kubectl.err");
  EXPECT_EQ(Body(cli_->Get(std::string(kWePath) + "/ratings-vm"))["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]);
  EXPECT_EQ(before["metadata"]["managedFields"][0]["manager"], "kubectl-test");

  ASSERT_EQ(run("get workloadentries -n bookinfo -o json", &out), 0) << Slurp(d + "/kubectl.err");
  json wes = json::parse(out, nullptr, false);
  ASSERT_EQ(wes["items"].size(), 1u) << out;
  EXPECT_EQ(wes["items"][0]["spec"]["address"], "10.0.0.5");
  EXPECT_EQ(wes["items"][0]["spec"]["ports"]["http"], 9080);
  EXPECT_EQ(wes["items"][0]["metadata"]["labels"]["app"], "ratings");

  // kubectl surfaces the server's validation error for an invalid WorkloadEntry.
  std::ofstream(d + "/bad.yaml") << "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\n"
                                    "metadata:\n  name: bad\n  namespace: bookinfo\nspec:\n  serviceAccount: x\n";
  EXPECT_NE(run("apply --server-side -f " + d + "/bad.yaml", &out), 0);
  EXPECT_NE(Slurp(d + "/kubectl.err").find("Address is required"), std::string::npos)
      << Slurp(d + "/kubectl.err");

  // Mesh expansion the way the TSB guide does it, and a TokenRequest through kubectl.
  ASSERT_EQ(run("patch controlplane controlplane -n istio-system --type merge -p '{\"spec\":{\"meshExpansion\":{}}}'", &out), 0)
      << Slurp(d + "/kubectl.err");
  json cp = Body(cli_->Get("/apis/install.tetrate.io/v1alpha1/namespaces/istio-system/controlplanes/controlplane"));
  EXPECT_TRUE(cp["spec"]["meshExpansion"].is_object()) << cp.dump();
  ASSERT_EQ(run("create token bookinfo-ratings -n bookinfo --audience istio-ca --duration 1h", &out), 0)
      << Slurp(d + "/kubectl.err");
  EXPECT_EQ(std::count(out.begin(), out.end(), '.'), 2) << "a JWT: " << out.substr(0, 20);

  ASSERT_EQ(run("delete workloadentry ratings-vm -n bookinfo", &out), 0) << Slurp(d + "/kubectl.err");
  EXPECT_EQ(cli_->Get(std::string(kWePath) + "/ratings-vm")->status, 404);
}

}  // namespace
