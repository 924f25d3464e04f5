// The Kubernetes provider and its HTTPS client against the test API server
// (tests/sandbox/apiserver), started as a child process for each test.
#include "providers/kubernetes/provider.h"

#include <curl/curl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/bootstrap.h"
#include "tests/sandbox/apiserver/harness.h"

namespace onboard::k8s {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

void WriteFile(const std::string& path, const std::string& body, mode_t mode = 0644) {
  std::ofstream(path) << body;
  chmod(path.c_str(), mode);
}

class RecordingReporter : public Reporter {
 public:
  void Action(const std::string& target, const std::string& what) override {
    std::lock_guard<std::mutex> l(mu);
    actions.push_back(target + ": " + what);
  }
  void File(const std::string&, const std::string&, const std::string&) override {}
  void Warn(const std::string& message) override {
    std::lock_guard<std::mutex> l(mu);
    warnings.push_back(message);
  }
  std::mutex mu;
  std::vector<std::string> actions, warnings;
};

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(apiserver_.Start(K8S_TEST_APISERVER, {}, &error))
        << "test API server did not start: " << error;
    dir_ = apiserver_.dir();
    token_ = apiserver_.File("token");
    server_ = sandbox::ApiServerUrl(apiserver_);

    model_.cluster.name = "sandbox";
    model_.cluster.kubeconfig = dir_ + "/kubeconfig";
    model_.cluster.context = "sandbox";
    model_.cluster.istio_namespace = "istio-system";
    Workload w;
    w.name = "ratings-vm";
    w.ns = "bookinfo";
    w.address = "10.0.0.1";
    w.service_account = "bookinfo-ratings";
    w.labels = {{"app", "ratings"}, {"version", "v3"}, {"class", "vm"}};
    w.ports = {{"http", 9080}};
    w.sidecar = json::parse(R"({"ingress":[{"port":{"number":9080,"protocol":"HTTP","name":"http"},
                                 "defaultEndpoint":"127.0.0.1:9080"}],
                                 "egress":[{"bind":"127.0.0.2","hosts":["./*"]}]})");
    model_.workloads.push_back(w);
  }

  std::unique_ptr<KubernetesProvider> MakeProvider(ProviderOptions o = {}) {
    o.reporter = o.reporter ? o.reporter : &reporter_;
    o.client.backoff_initial_ms = 20;
    auto p = std::make_unique<KubernetesProvider>(o);
    Status s = p->Configure(model_);
    EXPECT_TRUE(s.ok()) << s.message();
    return p;
  }

  // Admin endpoints (no auth), verified with the server's CA.
  json Admin(const std::string& method, const std::string& path, const json& body = nullptr) {
    return sandbox::ApiServerAdmin(apiserver_, method, path, body);
  }

  void Fault(const json& f) { Admin("POST", "/__admin/faults", f); }

  // API requests logged since the last reset, admin requests left out.
  std::vector<json> ApiRequests() {
    std::vector<json> out;
    json all = Admin("GET", "/__admin/requests");
    if (!all.is_array()) return out;
    for (const auto& r : all) {
      if (r.value("path", "").rfind("/__admin", 0) != 0) out.push_back(r);
    }
    return out;
  }
  int CountMethod(const std::vector<json>& reqs, const std::string& method) {
    int n = 0;
    for (const auto& r : reqs) n += r.value("method", "") == method;
    return n;
  }

  Resource WorkloadEntryResource(const Workload& w) {
    Resource r;
    r.address = Address{ResourceType::kWorkloadEntry, w.Key()};
    r.workload = w.Key();
    r.attributes = {{"object", WorkloadEntryObject(w)}};
    return r;
  }
  Resource SidecarResource(const Workload& w) {
    Resource r;
    r.address = Address{ResourceType::kSidecar, w.Key()};
    r.workload = w.Key();
    r.attributes = {{"object", SidecarObject(w)}};
    return r;
  }
  Resource TokenResource(const Workload& w, int64_t duration = 3600) {
    Resource r;
    r.address = Address{ResourceType::kToken, w.Key()};
    r.workload = w.Key();
    r.attributes = {{"namespace", w.ns},
                    {"service_account", w.service_account},
                    {"audience", "istio-ca"},
                    {"duration_seconds", duration}};
    r.payload = {{"renew_before_seconds", 600}};
    return r;
  }
  Resource MeshExpansionResource() {
    Resource r;
    r.address = Address{ResourceType::kMeshExpansion, "sandbox"};
    r.attributes = {{"control_plane", "controlplane"}, {"namespace", "istio-system"}};
    return r;
  }

  Result<StepResult> Step(KubernetesProvider& p, const Resource* desired, const ResourceState* prior, Action a,
                          bool dry_run = false) {
    Change c;
    c.address = desired ? desired->address : prior->address;
    c.workload = desired ? desired->workload : prior->workload;
    c.action = a;
    c.before = prior ? prior->attributes : json();
    c.after = a == Action::kDelete || !desired ? json() : desired->attributes;
    StepRequest req;
    req.change = &c;
    req.desired = a == Action::kDelete ? nullptr : desired;
    req.prior = prior;
    req.dry_run = dry_run;
    req.secrets = &secrets_;
    req.reporter = &reporter_;
    return p.Apply(req);
  }

  Result<Observation> RefreshOne(KubernetesProvider& p, const Resource* desired, const ResourceState* prior) {
    RefreshItem item;
    item.address = desired ? desired->address : prior->address;
    item.desired = desired;
    item.prior = prior;
    auto m = p.Refresh({item});
    auto it = m.find(item.address.ToString());
    if (it == m.end()) return Result<Observation>::Error("no entry for " + item.address.ToString());
    return it->second;
  }

  sandbox::ServerProcess apiserver_;
  std::string dir_, token_, server_;
  Model model_;
  RecordingReporter reporter_;
  SecretBag secrets_;
};

TEST_F(ApiServerTest, WorkloadEntryCreateNoOpUpdateDriftDelete) {
  auto p = MakeProvider();
  Workload w = model_.workloads[0];
  Resource we = WorkloadEntryResource(w);

  auto obs = RefreshOne(*p, &we, nullptr);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_FALSE(obs->exists);

  auto created = Step(*p, &we, nullptr, Action::kCreate);
  ASSERT_TRUE(created.ok()) << created.error();
  EXPECT_EQ(created->writes, 1);
  ASSERT_TRUE(created->state.has_value());
  EXPECT_EQ(created->state->origin, Origin::kCreated);
  EXPECT_EQ(created->state->attributes, we.attributes);
  EXPECT_EQ(created->state->workload, "bookinfo/ratings-vm");
  std::string uid = created->state->observed.value("uid", "");
  EXPECT_FALSE(uid.empty());
  EXPECT_FALSE(created->state->observed.value("resourceVersion", "").empty());
  ResourceState st = *created->state;

  obs = RefreshOne(*p, &we, &st);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_TRUE(obs->exists);
  EXPECT_EQ(obs->attributes, we.attributes);  // reduced to what onboard set: equal
  EXPECT_EQ(obs->observed["uid"], uid);

  // Re-apply of the same object: a GET, no write.
  Admin("POST", "/__admin/reset-log");
  auto stats_before = p->stats();
  auto again = Step(*p, &we, &st, Action::kUpdate);
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(again->writes, 0);
  auto reqs = ApiRequests();
  EXPECT_EQ(CountMethod(reqs, "PATCH") + CountMethod(reqs, "POST") + CountMethod(reqs, "PUT") +
                CountMethod(reqs, "DELETE"),
            0);
  EXPECT_EQ(CountMethod(reqs, "GET"), 1);
  EXPECT_EQ(p->stats().writes, stats_before.writes);
  EXPECT_EQ(p->stats().reads, stats_before.reads + 1);

  // Update: a new address and a label removed.
  Workload w2 = w;
  w2.address = "10.0.0.2";
  w2.labels.erase("class");
  Resource we2 = WorkloadEntryResource(w2);
  auto updated = Step(*p, &we2, &st, Action::kUpdate);
  ASSERT_TRUE(updated.ok()) << updated.error();
  EXPECT_EQ(updated->writes, 1);
  EXPECT_EQ(updated->state->observed["uid"], uid);
  st = *updated->state;
  obs = RefreshOne(*p, &we2, &st);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_EQ(obs->attributes["object"]["spec"]["address"], "10.0.0.2");
  EXPECT_FALSE(obs->attributes["object"]["spec"]["labels"].contains("class"));
  EXPECT_EQ(obs->attributes, we2.attributes);

  // Drift: someone changes the object behind onboard's back; refresh shows it.
  Request patch;
  patch.method = "PATCH";
  patch.path = GroupPath("networking.istio.io", "v1beta1", "bookinfo", "workloadentries", "ratings-vm");
  patch.content_type = "application/merge-patch+json";
  patch.body = R"({"spec":{"address":"192.168.9.9"},"metadata":{"labels":{"someone":"else"}}})";
  patch.query = "fieldManager=kubectl-edit";
  ASSERT_TRUE(p->client()->Call(patch).ok());
  obs = RefreshOne(*p, &we2, &st);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_EQ(obs->attributes["object"]["spec"]["address"], "192.168.9.9");
  EXPECT_NE(obs->attributes, we2.attributes);
  EXPECT_FALSE(obs->attributes["object"]["metadata"]["labels"].contains("someone"));  // not onboard's field
  // The editor now owns spec.address: apply without force reports the conflict and what to do.
  auto conflicted = Step(*p, &we2, &st, Action::kUpdate);
  ASSERT_FALSE(conflicted.ok());
  EXPECT_THAT(conflicted.error(), HasSubstr("HTTP 409"));
  EXPECT_THAT(conflicted.error(), HasSubstr("--force-conflicts"));
  // With force_conflicts, apply repairs the drift with one write.
  ProviderOptions fo;
  fo.force_conflicts = true;
  auto forced = MakeProvider(fo);
  auto repaired = Step(*forced, &we2, &st, Action::kUpdate);
  ASSERT_TRUE(repaired.ok()) << repaired.error();
  EXPECT_EQ(repaired->writes, 1);
  obs = RefreshOne(*p, &we2, &st);
  EXPECT_EQ(obs->attributes, we2.attributes);

  // Delete with the uid precondition.
  Admin("POST", "/__admin/reset-log");
  auto deleted = Step(*p, nullptr, &st, Action::kDelete);
  ASSERT_TRUE(deleted.ok()) << deleted.error();
  EXPECT_EQ(deleted->writes, 1);
  EXPECT_FALSE(deleted->state.has_value());
  reqs = ApiRequests();
  ASSERT_EQ(CountMethod(reqs, "DELETE"), 1);
  obs = RefreshOne(*p, &we2, nullptr);
  ASSERT_TRUE(obs.ok());
  EXPECT_FALSE(obs->exists);
  // Already gone: no error, no write.
  auto gone = Step(*p, nullptr, &st, Action::kDelete);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->writes, 0);
}

TEST_F(ApiServerTest, DeleteRefusesAnObjectRecreatedByOthers) {
  auto p = MakeProvider();
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  auto created = Step(*p, &we, nullptr, Action::kCreate);
  ASSERT_TRUE(created.ok()) << created.error();
  ResourceState st = *created->state;
  // Someone deletes it and creates it again: new uid.
  Request del;
  del.method = "DELETE";
  del.path = GroupPath("networking.istio.io", "v1beta1", "bookinfo", "workloadentries", "ratings-vm");
  ASSERT_TRUE(p->client()->Call(del).ok());
  ASSERT_TRUE(Step(*p, &we, nullptr, Action::kCreate).ok());

  auto r = Step(*p, nullptr, &st, Action::kDelete);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("delete workloadentries.networking.istio.io bookinfo/ratings-vm"));
  EXPECT_THAT(r.error(), HasSubstr("HTTP 409"));
  EXPECT_THAT(r.error(), HasSubstr(st.observed["uid"].get<std::string>()));
  auto obs = RefreshOne(*p, &we, nullptr);
  ASSERT_TRUE(obs.ok());
  EXPECT_TRUE(obs->exists);  // left alone
}

TEST_F(ApiServerTest, AdoptsAnExistingObjectAndSidecarRoundTrip) {
  auto p = MakeProvider();
  Resource sc = SidecarResource(model_.workloads[0]);
  ASSERT_TRUE(sc.attributes["object"].is_object());
  auto created = Step(*p, &sc, nullptr, Action::kCreate);
  ASSERT_TRUE(created.ok()) << created.error();
  EXPECT_EQ(created->writes, 1);
  // State lost: the next create finds it as desired and adopts it without a write.
  auto adopted = Step(*p, &sc, nullptr, Action::kCreate);
  ASSERT_TRUE(adopted.ok()) << adopted.error();
  EXPECT_EQ(adopted->writes, 0);
  EXPECT_EQ(adopted->state->origin, Origin::kAdopted);
  auto obs = RefreshOne(*p, &sc, &*adopted->state);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_EQ(obs->attributes, sc.attributes);
}

TEST_F(ApiServerTest, DryRunReportsAndWritesNothing) {
  auto p = MakeProvider();
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  Resource tok = TokenResource(model_.workloads[0]);
  Admin("POST", "/__admin/reset-log");
  auto r = Step(*p, &we, nullptr, Action::kCreate, /*dry_run=*/true);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->writes, 0);
  auto t = Step(*p, &tok, nullptr, Action::kCreate, /*dry_run=*/true);
  ASSERT_TRUE(t.ok()) << t.error();
  EXPECT_TRUE(ApiRequests().empty());
  ASSERT_EQ(reporter_.actions.size(), 2u);
  EXPECT_THAT(reporter_.actions[0], HasSubstr("PATCH /apis/networking.istio.io/v1beta1/namespaces/bookinfo/"
                                              "workloadentries/ratings-vm?fieldManager=onboard"));
  EXPECT_THAT(reporter_.actions[0], HasSubstr("10.0.0.1"));
  EXPECT_THAT(reporter_.actions[1], HasSubstr("POST /api/v1/namespaces/bookinfo/serviceaccounts/bookinfo-ratings/token"));
  EXPECT_FALSE(secrets_.Get("bookinfo/ratings-vm", "token").has_value());
}

TEST_F(ApiServerTest, UnauthorizedNamesUserAndKubeconfigNotTheToken) {
  auto p = MakeProvider();
  Admin("POST", "/__admin/revoke-token", {{"token", token_}});
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  auto obs = RefreshOne(*p, &we, nullptr);
  ASSERT_FALSE(obs.ok());
  EXPECT_THAT(obs.error(), HasSubstr("HTTP 401"));
  EXPECT_THAT(obs.error(), HasSubstr("user \"sandbox\""));
  EXPECT_THAT(obs.error(), HasSubstr(dir_ + "/kubeconfig"));
  EXPECT_THAT(obs.error(), HasSubstr("context \"sandbox\""));
  EXPECT_THAT(obs.error(), Not(HasSubstr(token_)));
}

TEST_F(ApiServerTest, ForbiddenNamesVerbAndResource) {
  auto p = MakeProvider();
  Fault({{"method", "GET"}, {"path_regex", "workloadentries"}, {"status", 403}, {"count", 5}});
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  auto obs = RefreshOne(*p, &we, nullptr);
  ASSERT_FALSE(obs.ok());
  EXPECT_THAT(obs.error(), HasSubstr("HTTP 403"));
  EXPECT_THAT(obs.error(), HasSubstr("RBAC"));
  EXPECT_THAT(obs.error(), HasSubstr("may not get workloadentries.networking.istio.io in namespace bookinfo"));
  EXPECT_EQ(p->stats().retries, 0);  // 403 is not retried
}

TEST_F(ApiServerTest, MissingNamespaceSaysCreateIt) {
  auto p = MakeProvider();
  Workload w = model_.workloads[0];
  w.ns = "payments";
  Resource we = WorkloadEntryResource(w);
  auto r = Step(*p, &we, nullptr, Action::kCreate);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("HTTP 404"));
  EXPECT_THAT(r.error(), HasSubstr("create namespace payments"));
}

TEST_F(ApiServerTest, ConflictOnApplySuggestsForceConflicts) {
  auto p = MakeProvider();
  Fault({{"method", "PATCH"}, {"path_regex", "workloadentries"}, {"status", 409}, {"count", 1}});
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  auto r = Step(*p, &we, nullptr, Action::kCreate);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("apply workloadentries.networking.istio.io bookinfo/ratings-vm"));
  EXPECT_THAT(r.error(), HasSubstr("Conflict (HTTP 409)"));
  EXPECT_THAT(r.error(), HasSubstr("--force-conflicts"));

  // With force_conflicts, the apply carries force=true.
  ProviderOptions o;
  o.force_conflicts = true;
  auto forced = MakeProvider(o);
  Admin("POST", "/__admin/reset-log");
  ASSERT_TRUE(Step(*forced, &we, nullptr, Action::kCreate).ok());
  bool saw_force = false;
  for (const auto& q : ApiRequests()) {
    if (q.value("method", "") == "PATCH") saw_force = q.dump().find("force=true") != std::string::npos;
  }
  EXPECT_TRUE(saw_force);
}

TEST_F(ApiServerTest, InvalidObjectNamesTheField) {
  auto p = MakeProvider();
  Workload w = model_.workloads[0];
  w.address = std::string(300, 'a');  // maxLength 256
  Resource we = WorkloadEntryResource(w);
  auto r = Step(*p, &we, nullptr, Action::kCreate);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("HTTP 422"));
  EXPECT_THAT(r.error(), HasSubstr("spec.address"));
  EXPECT_THAT(r.error(), HasSubstr("fix them in the manifest"));
}

TEST_F(ApiServerTest, ThrottledThenSucceedsHonouringRetryAfter) {
  auto p = MakeProvider();
  Fault({{"method", "GET"}, {"path_regex", "workloadentries"}, {"status", 429}, {"count", 1}, {"retry_after", 1}});
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  Admin("POST", "/__admin/reset-log");
  auto start = std::chrono::steady_clock::now();
  auto obs = RefreshOne(*p, &we, nullptr);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_FALSE(obs->exists);
  EXPECT_EQ(p->stats().retries, 1);
  EXPECT_EQ(CountMethod(ApiRequests(), "GET"), 2);
  EXPECT_GE(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), 900);  // Retry-After: 1

  // Persistent 5xx on an idempotent request: 4 tries, then an error saying so.
  Fault({{"method", "GET"}, {"path_regex", "workloadentries"}, {"status", 503}, {"count", 10}});
  Admin("POST", "/__admin/reset-log");
  obs = RefreshOne(*p, &we, nullptr);
  ASSERT_FALSE(obs.ok());
  EXPECT_THAT(obs.error(), HasSubstr("HTTP 503"));
  EXPECT_THAT(obs.error(), HasSubstr("gave up after retries"));
  EXPECT_EQ(CountMethod(ApiRequests(), "GET"), 4);
}

TEST_F(ApiServerTest, ServerErrorOnTokenRequestIsNotRetried) {
  auto p = MakeProvider();
  Fault({{"method", "POST"}, {"path_regex", "/token$"}, {"status", 500}, {"count", 1}});
  Resource tok = TokenResource(model_.workloads[0]);
  Admin("POST", "/__admin/reset-log");
  auto r = Step(*p, &tok, nullptr, Action::kCreate);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("HTTP 500"));
  EXPECT_THAT(r.error(), HasSubstr("not retried"));
  EXPECT_EQ(CountMethod(ApiRequests(), "POST"), 1);
  EXPECT_EQ(p->stats().retries, 0);
}

TEST_F(ApiServerTest, WrongCaFailsNamingServerAndCaSource) {
  // A CA that did not sign the server's certificate: a fresh self-signed one.
  std::string ca = dir_ + "/other-ca.pem";
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + dir_ + "/other-ca.key -out " + ca +
                    " -subj /CN=other-ca -days 1 >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::string kc = sandbox::Slurp(dir_ + "/kubeconfig");
  auto pos = kc.find(dir_ + "/ca.pem");
  ASSERT_NE(pos, std::string::npos);
  kc.replace(pos, (dir_ + "/ca.pem").size(), "other-ca.pem");  // relative to the kubeconfig
  WriteFile(dir_ + "/wrong-ca.kubeconfig", kc, 0600);
  ProviderOptions o;
  o.kubeconfig = dir_ + "/wrong-ca.kubeconfig";
  auto p = MakeProvider(o);
  auto facts = p->ReadFacts();
  ASSERT_FALSE(facts.ok());
  EXPECT_THAT(facts.error(), HasSubstr("TLS verification of the API server " + server_));
  EXPECT_THAT(facts.error(), HasSubstr("certificate-authority " + ca));
  EXPECT_EQ(p->stats().retries, 0);
}

TEST_F(ApiServerTest, InsecureKubeconfigWarns) {
  std::string kc = sandbox::Slurp(dir_ + "/kubeconfig");
  auto pos = kc.find("certificate-authority: " + dir_ + "/ca.pem");
  ASSERT_NE(pos, std::string::npos);
  kc.replace(pos, ("certificate-authority: " + dir_ + "/ca.pem").size(), "insecure-skip-tls-verify: true");
  WriteFile(dir_ + "/insecure.kubeconfig", kc, 0600);
  ProviderOptions o;
  o.kubeconfig = dir_ + "/insecure.kubeconfig";
  auto p = MakeProvider(o);
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  ASSERT_TRUE(RefreshOne(*p, &we, nullptr).ok());
  ASSERT_TRUE(RefreshOne(*p, &we, nullptr).ok());
  ASSERT_EQ(reporter_.warnings.size(), 1u);  // once
  EXPECT_THAT(reporter_.warnings[0], HasSubstr("NOT verified"));
}

TEST_F(ApiServerTest, ExecPluginRunsAgainWhenItsTokenIsRevoked) {
  std::string token_file = dir_ + "/plugin-token";
  WriteFile(token_file, token_, 0600);
  std::string script = dir_ + "/plugin.sh";
  WriteFile(script,
            "#!/bin/sh\n"
            "echo run >> " + dir_ + "/plugin-runs\n"
            "printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
            "\"status\":{\"token\":\"%s\"}}' \"$(cat " + token_file + ")\"\n",
            0755);
  std::string port = apiserver_.File("port");
  WriteFile(dir_ + "/exec.kubeconfig",
            "apiVersion: v1\nkind: Config\ncurrent-context: sandbox\n"
            "clusters: [{name: sandbox, cluster: {server: \"" + server_ + "\", certificate-authority: ca.pem}}]\n"
            "contexts: [{name: sandbox, context: {cluster: sandbox, user: plugin}}]\n"
            "users:\n- name: plugin\n  user:\n    exec:\n"
            "      apiVersion: client.authentication.k8s.io/v1\n"
            "      command: ./plugin.sh\n      interactiveMode: Never\n",
            0600);
  ProviderOptions o;
  o.kubeconfig = dir_ + "/exec.kubeconfig";
  auto p = MakeProvider(o);
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  ASSERT_TRUE(RefreshOne(*p, &we, nullptr).ok());
  ASSERT_TRUE(RefreshOne(*p, &we, nullptr).ok());
  EXPECT_EQ(p->client()->credentials().exec_runs(), 1);  // cached (no expiry given)

  // Rotate: a new token is valid, the old one revoked; the plugin now prints the new one.
  Admin("POST", "/__admin/tokens", {{"token", "rotated-token-123"}});
  Admin("POST", "/__admin/revoke-token", {{"token", token_}});
  WriteFile(token_file, "rotated-token-123", 0600);
  auto obs = RefreshOne(*p, &we, nullptr);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_EQ(p->client()->credentials().exec_runs(), 2);
  EXPECT_EQ(p->stats().retries, 1);

  // Revoked again and the plugin has nothing new: a single re-run, then the 401 message.
  Admin("POST", "/__admin/revoke-token", {{"token", "rotated-token-123"}});
  obs = RefreshOne(*p, &we, nullptr);
  ASSERT_FALSE(obs.ok());
  EXPECT_THAT(obs.error(), HasSubstr("HTTP 401"));
  EXPECT_THAT(obs.error(), HasSubstr("user \"plugin\""));
  EXPECT_THAT(obs.error(), Not(HasSubstr("rotated-token-123")));
  EXPECT_EQ(p->client()->credentials().exec_runs(), 3);
}

TEST_F(ApiServerTest, MeshExpansionOnOffAndAdopted) {
  auto p = MakeProvider();
  Resource me = MeshExpansionResource();
  auto obs = RefreshOne(*p, &me, nullptr);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_FALSE(obs->exists);

  auto on = Step(*p, &me, nullptr, Action::kCreate);
  ASSERT_TRUE(on.ok()) << on.error();
  EXPECT_EQ(on->writes, 1);
  EXPECT_EQ(on->state->origin, Origin::kCreated);
  EXPECT_EQ(on->state->observed["was_on"], false);
  EXPECT_EQ(on->state->attributes, me.attributes);
  ResourceState st = *on->state;
  obs = RefreshOne(*p, &me, &st);
  ASSERT_TRUE(obs.ok());
  EXPECT_TRUE(obs->exists);
  EXPECT_EQ(obs->attributes, me.attributes);
  auto facts = p->ReadFacts();
  ASSERT_TRUE(facts.ok()) << facts.error();

  // Re-apply: no write, still onboard's.
  auto again = Step(*p, &me, &st, Action::kUpdate);
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(again->writes, 0);
  EXPECT_EQ(again->state->origin, Origin::kCreated);

  auto off = Step(*p, nullptr, &st, Action::kDelete);
  ASSERT_TRUE(off.ok()) << off.error();
  EXPECT_EQ(off->writes, 1);
  obs = RefreshOne(*p, &me, nullptr);
  EXPECT_FALSE(obs->exists);

  // Someone else turned it on: adopted, and never switched off by onboard.
  Request patch;
  patch.method = "PATCH";
  patch.path = GroupPath("install.tetrate.io", "v1alpha1", "istio-system", "controlplanes", "controlplane");
  patch.content_type = "application/merge-patch+json";
  patch.body = R"({"spec":{"meshExpansion":{}}})";
  ASSERT_TRUE(p->client()->Call(patch).ok());
  auto adopted = Step(*p, &me, nullptr, Action::kCreate);
  ASSERT_TRUE(adopted.ok()) << adopted.error();
  EXPECT_EQ(adopted->writes, 0);
  EXPECT_EQ(adopted->state->origin, Origin::kAdopted);
  EXPECT_EQ(adopted->state->observed["was_on"], true);
  auto kept = Step(*p, nullptr, &*adopted->state, Action::kDelete);
  ASSERT_TRUE(kept.ok()) << kept.error();
  EXPECT_EQ(kept->writes, 0);
  obs = RefreshOne(*p, &me, nullptr);
  EXPECT_TRUE(obs->exists);
}

TEST_F(ApiServerTest, TokenRequestRecordsHashAndExpiryNeverTheToken) {
  auto p = MakeProvider();
  Resource tok = TokenResource(model_.workloads[0], 7200);
  int64_t before = static_cast<int64_t>(std::time(nullptr));
  auto r = Step(*p, &tok, nullptr, Action::kCreate);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->writes, 1);
  auto token = secrets_.Get("bookinfo/ratings-vm", "token");
  ASSERT_TRUE(token.has_value());
  EXPECT_EQ(std::count(token->begin(), token->end(), '.'), 2);  // JWT-shaped
  const json& obs = r->state->observed;
  EXPECT_EQ(obs["sha256"], Sha256Hex(*token));
  EXPECT_NEAR(obs["expires_at"].get<int64_t>(), before + 7200, 60);
  EXPECT_NEAR(obs["issued_at"].get<int64_t>(), before, 60);
  EXPECT_EQ(r->state->attributes, tok.attributes);
  EXPECT_THAT(r->state->observed.dump(), Not(HasSubstr(*token)));
  EXPECT_THAT(r->state->attributes.dump(), Not(HasSubstr(*token)));
  // The token is in no log.
  EXPECT_THAT(sandbox::Slurp(dir_ + "/requests.log"), Not(HasSubstr(*token)));
  EXPECT_THAT(Admin("GET", "/__admin/requests").dump(), Not(HasSubstr(*token)));

  // Refresh: it cannot be read back; the recorded state is what there is.
  auto o = RefreshOne(*p, &tok, &*r->state);
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->exists);
  EXPECT_EQ(o->observed, r->state->observed);
  o = RefreshOne(*p, &tok, nullptr);
  ASSERT_TRUE(o.ok());
  EXPECT_FALSE(o->exists);

  // Delete: nothing to do remotely.
  Admin("POST", "/__admin/reset-log");
  auto d = Step(*p, nullptr, &*r->state, Action::kDelete);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->writes, 0);
  EXPECT_TRUE(ApiRequests().empty());

  // A missing service account: the error names it.
  Workload w = model_.workloads[0];
  w.service_account = "nobody";
  Resource bad = TokenResource(w);
  auto e = Step(*p, &bad, nullptr, Action::kCreate);
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(e.error(), HasSubstr("serviceaccounts bookinfo/nobody"));
  EXPECT_THAT(e.error(), HasSubstr("HTTP 404"));
}

TEST_F(ApiServerTest, ReadFactsFromSeededConfigMaps) {
  model_.cluster.mesh_expansion = MeshExpansion{};
  Workload w2 = model_.workloads[0];
  w2.ns = "default";
  w2.name = "other-vm";
  model_.workloads.push_back(w2);
  auto p = MakeProvider();
  auto facts = p->ReadFacts();
  ASSERT_TRUE(facts.ok()) << facts.error();
  ASSERT_TRUE(facts->has_value());
  const MeshFacts& f = **facts;
  EXPECT_TRUE(f.mesh_config.is_object());
  EXPECT_FALSE(f.mesh_config.empty());
  EXPECT_TRUE(f.injector_values.contains("global")) << f.injector_values.dump();
  ASSERT_EQ(f.root_certs.size(), 2u);
  EXPECT_THAT(f.root_certs.at("bookinfo"), HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_THAT(f.root_certs.at("default"), HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_EQ(f.kube_ca, sandbox::Slurp(dir_ + "/ca.pem"));  // from the kubeconfig
  EXPECT_FALSE(f.mesh_expansion_on);
}

TEST_F(ApiServerTest, ReadFactsNamesAMissingConfigMap) {
  Workload w2 = model_.workloads[0];
  w2.ns = "istio-system";  // no istio-ca-root-cert seeded there? then it is named
  model_.workloads = {w2};
  model_.cluster.istio_namespace = "mesh-nowhere";
  auto p = MakeProvider();
  auto facts = p->ReadFacts();
  ASSERT_FALSE(facts.ok());
  EXPECT_THAT(facts.error(), HasSubstr("ConfigMap istio in namespace mesh-nowhere not found"));
  EXPECT_THAT(facts.error(), HasSubstr("mesh config"));

  model_.cluster.istio_namespace = "istio-system";
  Workload w3 = model_.workloads[0];
  w3.ns = "payments";
  model_.workloads = {w3};
  p = MakeProvider();
  facts = p->ReadFacts();
  ASSERT_FALSE(facts.ok());
  EXPECT_THAT(facts.error(), HasSubstr("ConfigMap istio-ca-root-cert in namespace payments not found"));
  EXPECT_THAT(facts.error(), HasSubstr("root certificate"));
}

TEST_F(ApiServerTest, KubeCaFromConfigMapWhenTheKubeconfigHasNone) {
  // A kubeconfig without a CA (insecure) reads the cluster CA from kube-root-ca.crt.
  std::string kc = sandbox::Slurp(dir_ + "/kubeconfig");
  std::string ca_line = "certificate-authority: " + dir_ + "/ca.pem";
  kc.replace(kc.find(ca_line), ca_line.size(), "insecure-skip-tls-verify: true");
  WriteFile(dir_ + "/insecure.kubeconfig", kc, 0600);
  ProviderOptions o;
  o.kubeconfig = dir_ + "/insecure.kubeconfig";
  auto p = MakeProvider(o);
  auto facts = p->ReadFacts();
  ASSERT_TRUE(facts.ok()) << facts.error();
  EXPECT_THAT((*facts)->kube_ca, HasSubstr("BEGIN CERTIFICATE"));
}

TEST_F(ApiServerTest, RefreshManyItemsInParallel) {
  auto p = MakeProvider();
  std::vector<Resource> res;
  for (int i = 0; i < 12; ++i) {
    Workload w = model_.workloads[0];
    w.name = "vm-" + std::to_string(i);
    res.push_back(WorkloadEntryResource(w));
  }
  for (int i = 0; i < 12; i += 2) ASSERT_TRUE(Step(*p, &res[i], nullptr, Action::kCreate).ok());
  std::vector<RefreshItem> items;
  for (auto& r : res) {
    RefreshItem it;
    it.address = r.address;
    it.desired = &r;
    items.push_back(it);
  }
  auto m = p->Refresh(items);
  ASSERT_EQ(m.size(), 12u);
  for (int i = 0; i < 12; ++i) {
    auto& o = m.at(res[i].address.ToString());
    ASSERT_TRUE(o.ok()) << o.error();
    EXPECT_EQ(o->exists, i % 2 == 0) << i;
  }
}

TEST_F(ApiServerTest, TlsServerNameIsVerified) {
  std::string kc = sandbox::Slurp(dir_ + "/kubeconfig");
  std::string ca_line = "certificate-authority: " + dir_ + "/ca.pem";
  auto with_name = [&](const std::string& name) {
    std::string k = kc;
    k.replace(k.find(ca_line), ca_line.size(), ca_line + "\n    tls-server-name: " + name);
    WriteFile(dir_ + "/sni.kubeconfig", k, 0600);
    ProviderOptions o;
    o.kubeconfig = dir_ + "/sni.kubeconfig";
    return MakeProvider(o);
  };
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  auto good = with_name("kubernetes.default.svc");  // a name in the server certificate
  auto obs = RefreshOne(*good, &we, nullptr);
  ASSERT_TRUE(obs.ok()) << obs.error();
  auto bad = with_name("not-the-apiserver.example");
  obs = RefreshOne(*bad, &we, nullptr);
  ASSERT_FALSE(obs.ok());
  EXPECT_THAT(obs.error(), HasSubstr("TLS verification of the API server " + server_));
  EXPECT_THAT(obs.error(), HasSubstr("as not-the-apiserver.example"));
}

TEST_F(ApiServerTest, SlowResponseTimesOutAndIsRetriedWhenIdempotent) {
  ProviderOptions o;
  o.client.request_timeout_ms = 400;
  auto p = MakeProvider(o);
  Resource we = WorkloadEntryResource(model_.workloads[0]);
  Fault({{"method", "GET"}, {"path_regex", "workloadentries"}, {"delay_ms", 1500}, {"count", 1}});
  auto obs = RefreshOne(*p, &we, nullptr);
  ASSERT_TRUE(obs.ok()) << obs.error();
  EXPECT_EQ(p->stats().retries, 1);
  // Not idempotent: a slow TokenRequest is not sent twice.
  Fault({{"method", "POST"}, {"path_regex", "/token$"}, {"delay_ms", 1500}, {"count", 1}});
  Resource tok = TokenResource(model_.workloads[0]);
  auto r = Step(*p, &tok, nullptr, Action::kCreate);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("timed out"));
  EXPECT_THAT(r.error(), HasSubstr("serviceaccounts bookinfo/bookinfo-ratings"));
  EXPECT_EQ(p->stats().retries, 1);
  EXPECT_FALSE(secrets_.Get("bookinfo/ratings-vm", "token").has_value());
}

TEST_F(ApiServerTest, RollbackRestoresPriorSpecOrDeletes) {
  auto p = MakeProvider();
  Workload w = model_.workloads[0];
  Resource v1 = WorkloadEntryResource(w);
  auto created = Step(*p, &v1, nullptr, Action::kCreate);
  ASSERT_TRUE(created.ok()) << created.error();
  ResourceState st1 = *created->state;
  Workload w2 = w;
  w2.address = "10.0.0.9";
  Resource v2 = WorkloadEntryResource(w2);
  auto updated = Step(*p, &v2, &st1, Action::kUpdate);
  ASSERT_TRUE(updated.ok()) << updated.error();
  ResourceState st2 = *updated->state;

  // Inverse of the update: restore v1's attributes.
  Change inv;
  inv.address = v1.address;
  inv.workload = v1.workload;
  inv.action = Action::kUpdate;
  inv.before = st2.attributes;
  inv.after = st1.attributes;
  StepRequest req;
  req.change = &inv;
  req.prior = &st2;
  req.rollback = true;
  req.secrets = &secrets_;
  req.reporter = &reporter_;
  auto restored = p->Apply(req);
  ASSERT_TRUE(restored.ok()) << restored.error();
  EXPECT_EQ(restored->writes, 1);
  EXPECT_EQ(restored->state->attributes, st1.attributes);
  auto obs = RefreshOne(*p, &v1, &*restored->state);
  ASSERT_TRUE(obs.ok());
  EXPECT_EQ(obs->attributes["object"]["spec"]["address"], "10.0.0.1");

  // Inverse of the create: delete it (after = null).
  inv.action = Action::kDelete;
  inv.before = restored->state->attributes;
  inv.after = nullptr;
  req.prior = &*restored->state;
  auto removed = p->Apply(req);
  ASSERT_TRUE(removed.ok()) << removed.error();
  EXPECT_EQ(removed->writes, 1);
  EXPECT_FALSE(removed->state.has_value());
  obs = RefreshOne(*p, &v1, nullptr);
  ASSERT_TRUE(obs.ok());
  EXPECT_FALSE(obs->exists);
}

TEST(ReduceObject, KeepsOnlyFieldsOnboardSets) {
  json live = json::parse(R"({"apiVersion":"networking.istio.io/v1beta1","kind":"WorkloadEntry",
    "metadata":{"name":"x","namespace":"ns","uid":"u","resourceVersion":"7","labels":{"a":"1","other":"2"},
                "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"},"managedFields":[]},
    "spec":{"address":"1.2.3.4"},"status":{"conditions":[]}})");
  json desired = json::parse(R"({"apiVersion":"networking.istio.io/v1beta1","kind":"WorkloadEntry",
    "metadata":{"name":"x","namespace":"ns","labels":{"a":"1"}},"spec":{"address":"1.2.3.4"}})");
  EXPECT_EQ(ReduceObject(live, desired, nullptr), NormalizeObject(desired));
  // A label onboard set before (prior) and no longer wants shows up, so apply removes it.
  json prior = desired;
  prior["metadata"]["labels"]["other"] = "2";
  EXPECT_NE(ReduceObject(live, desired, prior), NormalizeObject(desired));
}

}  // namespace
}  // namespace onboard::k8s
