// The VM provider against the real Docker engine (ctest label "docker"): a private dockerd
// (tests/sandbox/docker/start-dockerd.sh), a busybox stand-in for istio/proxyv2
// (make-proxy-image.sh), and a sandbox sshd VM whose `docker` talks to that engine.
// Needs root; otherwise every test skips with the reason.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include <gtest/gtest.h>

#include "providers/vm/vm_provider.h"
#include "tests/providers/vm/vm_test_support.h"
#include "tests/sandbox/vm/vm_harness.h"

namespace onboard::vm {
namespace {

using namespace testing;  // NOLINT

const char* kImage = "docker.io/istio/proxyv2:1.8.6-onboard-test";

std::string Capture(const std::string& cmd, int* rc = nullptr) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (rc) *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string Chomp(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

class VmDockerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) {
      skip_ = "the real Docker engine test needs root (uid " + std::to_string(geteuid()) + ")";
      return;
    }
    dock_dir_ = MakeTempDir("onboard-dock-");
    std::string scripts = std::string(ONBOARD_SOURCE_DIR) + "/tests/sandbox/docker/";
    int rc = 0;
    std::string out = Capture(scripts + "start-dockerd.sh " + ssh::ShellQuote(dock_dir_) + " 2>&1", &rc);
    if (rc != 0) {
      skip_ = "dockerd could not start: " + out;
      return;
    }
    sock_ = dock_dir_ + "/docker.sock";
    out = Capture(scripts + "make-proxy-image.sh " + ssh::ShellQuote(sock_) + " " + kImage + " 2>&1", &rc);
    if (rc != 0) {
      skip_ = "building the proxy stand-in image failed: " + out;
      return;
    }
    started_ = true;
  }
  static void TearDownTestSuite() {
    if (!dock_dir_.empty()) {
      std::string scripts = std::string(ONBOARD_SOURCE_DIR) + "/tests/sandbox/docker/";
      Sh(scripts + "stop-dockerd.sh " + ssh::ShellQuote(dock_dir_) + " >/dev/null 2>&1");
      Sh("rm -rf " + ssh::ShellQuote(dock_dir_));
    }
  }

  void SetUp() override {
    if (!started_) GTEST_SKIP() << skip_;
    dir_ = MakeTempDir("onboard-vm-dock-");
    // The VM's `docker`: the real client talking to the private engine.
    WriteAll(dir_ + "/docker-wrapper",
             "#!/bin/sh\nexec /usr/bin/docker -H " + ssh::ShellQuote("unix://" + sock_) + " \"$@\"\n", 0755);
    sandbox::HarnessOptions o;
    o.dir = dir_ + "/vms";
    o.count = 1;
    o.docker_script = dir_ + "/docker-wrapper";
    auto h = sandbox::VmHarness::Start(o);
    if (!h.ok()) GTEST_SKIP() << "sandbox VMs unavailable: " << h.error();
    harness_ = std::move(h.value());
    VmProviderOptions po;
    po.container_grace_seconds = 1.0;
    po.container_stop_timeout_seconds = 1;
    provider_ = std::make_unique<VmProvider>(po);
  }
  void TearDown() override {
    if (started_) Sh(Docker() + " rm --force istio-proxy istio-proxy-onboard-prev >/dev/null 2>&1");
    provider_.reset();
    harness_.reset();
    if (!dir_.empty()) Sh("rm -rf " + ssh::ShellQuote(dir_));
  }

  static std::string Docker() { return "/usr/bin/docker -H " + ssh::ShellQuote("unix://" + sock_); }
  std::string Inspect(const std::string& tmpl, const std::string& name = "istio-proxy") {
    return Chomp(Capture(Docker() + " inspect -f " + ssh::ShellQuote(tmpl) + " " + name + " 2>/dev/null"));
  }
  std::string ExecCat(const std::string& path) {
    return Capture(Docker() + " exec istio-proxy cat " + path + " 2>&1");
  }
  nlohmann::json Connection() {
    const auto& vm = harness_->vms()[0];
    return {{"host", vm.host}, {"port", vm.port}, {"user", vm.user},
            {"identity_file", harness_->client_key()}, {"known_hosts", harness_->known_hosts()}};
  }
  Result<StepResult> Apply(const Resource& r, Action a, const ResourceState* prior,
                           const std::string& token = "") {
    SecretBag bag;
    if (!token.empty()) bag.Put(kWorkload, "token", token);
    Step s(&r, a, prior, &bag, &reporter_);
    return provider_->Apply(s.req);
  }

  static inline std::string skip_;
  static inline std::string dock_dir_;
  static inline std::string sock_;
  static inline bool started_ = false;
  std::string dir_;
  std::unique_ptr<sandbox::VmHarness> harness_;
  std::unique_ptr<VmProvider> provider_;
  RecordingReporter reporter_;
};

TEST_F(VmDockerTest, ProxyRunsRenewedTokenReachesItConfigChangeReplacesDestroyRemoves) {
  const auto& vm = harness_->vms()[0];
  const std::string cfg = vm.config_dir;
  FileSet f;
  Resource files = FilesResource(Connection(), cfg, f);
  auto fr = Apply(files, Action::kCreate, nullptr, "token-one");
  ASSERT_TRUE(fr.ok()) << fr.error();
  Resource c1 = ContainerResource(Connection(), "docker", cfg, kImage, "hash-1");
  auto cr = Apply(c1, Action::kCreate, nullptr);
  ASSERT_TRUE(cr.ok()) << cr.error() << "\ndockerd log:\n" << Capture("tail -n 20 " + dock_dir_ + "/dockerd.log");
  provider_->Finish(kWorkload, true);

  // What docker says about the running proxy.
  EXPECT_EQ(Inspect("{{.Name}}"), "/istio-proxy");
  EXPECT_EQ(Inspect("{{.State.Running}}"), "true");
  EXPECT_EQ(Inspect("{{.HostConfig.RestartPolicy.Name}}"), "unless-stopped");
  EXPECT_EQ(Inspect("{{.HostConfig.NetworkMode}}"), "host");
  EXPECT_EQ(Inspect("{{index .Config.Labels \"onboard.dev/config-hash\"}}"), "hash-1");
  EXPECT_EQ(Inspect("{{.Config.Image}}"), kImage);
  std::string mounts = Inspect("{{range .Mounts}}{{.Source}}:{{.Destination}};{{end}}");
  EXPECT_NE(mounts.find(cfg + "/istio-token:/var/run/secrets/tokens/istio-token;"), std::string::npos) << mounts;
  EXPECT_NE(mounts.find(cfg + "/istio-ca.pem:/var/run/secrets/istio/root-cert.pem;"), std::string::npos) << mounts;
  EXPECT_NE(mounts.find(cfg + "/k8s-ca.pem:/var/run/secrets/kubernetes.io/serviceaccount/ca.crt;"),
            std::string::npos) << mounts;
  std::string env = Inspect("{{range .Config.Env}}{{.}};{{end}}");
  EXPECT_NE(env.find("POD_NAME=ratings-vm;"), std::string::npos) << env;
  EXPECT_NE(env.find("CA_ADDR=istiod.istio-system.svc:15012;"), std::string::npos) << env;
  EXPECT_EQ(Chomp(ExecCat("/tmp/args")), "proxy sidecar --serviceCluster ratings.bookinfo --concurrency 2 "
                                          "--proxyLogLevel warning --trust-domain cluster.local");
  EXPECT_EQ(ExecCat("/var/run/secrets/tokens/istio-token"), "token-one");
  EXPECT_EQ(cr->state->observed["id"], Inspect("{{.Id}}"));
  std::string id1 = Inspect("{{.Id}}");

  // Token renewal by the files step alone reaches the running proxy (same inode, no restart).
  auto fr2 = Apply(files, Action::kUpdate, &*fr->state, "token-two");
  ASSERT_TRUE(fr2.ok()) << fr2.error();
  EXPECT_EQ(fr2->writes, 1);
  provider_->Finish(kWorkload, true);
  EXPECT_EQ(ExecCat("/var/run/secrets/tokens/istio-token"), "token-two");
  std::string seen;
  for (int i = 0; i < 30 && seen != "token-two"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    seen = ExecCat("/tmp/seen-token");
  }
  EXPECT_EQ(seen, "token-two");
  EXPECT_EQ(Inspect("{{.Id}}"), id1);  // not restarted

  // Unchanged: no-op.
  auto same = Apply(c1, Action::kNoOp, &*cr->state);
  ASSERT_TRUE(same.ok()) << same.error();
  EXPECT_EQ(same->writes, 0);
  EXPECT_EQ(Inspect("{{.Id}}"), id1);

  // A configuration change replaces the container.
  Resource c2 = ContainerResource(Connection(), "docker", cfg, kImage, "hash-2");
  c2.payload["argv"] = ProxyArgv(cfg, kImage);
  c2.payload["argv"][c2.payload["argv"].size() - 3] = "debug";  // --proxyLogLevel debug
  auto cr2 = Apply(c2, Action::kReplace, &*cr->state);
  ASSERT_TRUE(cr2.ok()) << cr2.error();
  EXPECT_EQ(cr2->writes, 1);
  std::string id2 = Inspect("{{.Id}}");
  EXPECT_NE(id2, id1);
  EXPECT_EQ(Inspect("{{index .Config.Labels \"onboard.dev/config-hash\"}}"), "hash-2");
  EXPECT_NE(ExecCat("/tmp/args").find("--proxyLogLevel debug"), std::string::npos);
  provider_->Finish(kWorkload, true);
  EXPECT_EQ(Inspect("{{.Id}}", "istio-proxy-onboard-prev"), "");  // the old one is gone

  // Destroy.
  Step del(nullptr, Action::kDelete, &*cr2->state);
  auto gone = provider_->Apply(del.req);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->writes, 1);
  EXPECT_EQ(Inspect("{{.Id}}"), "");
}

TEST_F(VmDockerTest, BrokenNewContainerLeavesTheOldOneRunning) {
  const auto& vm = harness_->vms()[0];
  Resource files = FilesResource(Connection(), vm.config_dir, FileSet{});
  auto fr = Apply(files, Action::kCreate, nullptr, "token-one");
  ASSERT_TRUE(fr.ok()) << fr.error();
  Resource c1 = ContainerResource(Connection(), "docker", vm.config_dir, kImage, "hash-1");
  auto cr = Apply(c1, Action::kCreate, nullptr);
  ASSERT_TRUE(cr.ok()) << cr.error();
  provider_->Finish(kWorkload, true);
  std::string id1 = Inspect("{{.Id}}");

  // The entrypoint refuses arguments other than "proxy sidecar ...": the new one exits.
  Resource bad = ContainerResource(Connection(), "docker", vm.config_dir, kImage, "hash-bad");
  bad.payload["argv"][bad.payload["argv"].size() - 9] = "router";  // "proxy router ..."
  auto res = Apply(bad, Action::kReplace, &*cr->state);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().find("expected 'proxy sidecar ...'"), std::string::npos) << res.error();
  EXPECT_NE(res.error().find("previous container was restored"), std::string::npos) << res.error();
  EXPECT_EQ(Inspect("{{.Id}}"), id1);
  EXPECT_EQ(Inspect("{{.State.Running}}"), "true");
}

}  // namespace
}  // namespace onboard::vm
