// The VM provider over real SSH: sandbox sshd "VMs" on 127.0.0.1 (tests/sandbox/vm) with the
// recording docker stand-in as the VMs' `docker`.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "providers/ssh/pool.h"
#include "providers/vm/vm_provider.h"
#include "tests/providers/vm/vm_test_support.h"
#include "tests/sandbox/vm/vm_harness.h"

namespace onboard::vm {
namespace {

using namespace testing;  // NOLINT

class VmSshTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("onboard-vm-ssh-");
    ASSERT_FALSE(dir_.empty());
    std::string wrapper = MakeDockerWrapper(dir_ + "/docker-wrapper", "");
    sandbox::HarnessOptions o;
    o.dir = dir_ + "/vms";
    o.count = 2;
    o.docker_script = wrapper;
    auto h = sandbox::VmHarness::Start(o);
    if (!h.ok()) GTEST_SKIP() << "sandbox VMs unavailable: " << h.error();
    harness_ = std::move(h.value());
    pool_ = std::make_shared<ssh::ConnectionPool>();
    VmProviderOptions po;
    auto pool = pool_;
    po.connector = [pool](const ssh::Endpoint& ep) { return pool->Get(ep); };
    po.container_grace_seconds = 0.5;
    po.container_stop_timeout_seconds = 1;
    po.port_check_timeout_seconds = 1;
    provider_ = std::make_unique<VmProvider>(po);
  }
  void TearDown() override {
    provider_.reset();
    pool_.reset();
    harness_.reset();
    if (!dir_.empty()) Sh("rm -rf " + ssh::ShellQuote(dir_));
  }
  nlohmann::json Connection(int i) {
    const auto& vm = harness_->vms()[i];
    return {{"host", vm.host}, {"port", vm.port}, {"user", vm.user},
            {"identity_file", harness_->client_key()}, {"known_hosts", harness_->known_hosts()}};
  }
  ssh::SessionStats Stats(int i) {
    auto ep = provider_->EndpointOf({{"connection", Connection(i)}});
    auto s = pool_->Get(*ep);
    return s.ok() ? (*s)->stats() : ssh::SessionStats{};
  }

  std::string dir_;
  std::unique_ptr<sandbox::VmHarness> harness_;
  std::shared_ptr<ssh::ConnectionPool> pool_;
  std::unique_ptr<VmProvider> provider_;
  RecordingReporter reporter_;
};

TEST_F(VmSshTest, OnboardsTwoVmsAndSecondRunWritesNothing) {
  std::vector<Resource> files, hosts, containers;
  for (int i = 0; i < 2; ++i) {
    const auto& vm = harness_->vms()[i];
    files.push_back(FilesResource(Connection(i), vm.config_dir, FileSet{}));
    hosts.push_back(HostsResource(Connection(i), vm.hosts_file, {{"127.0.0.2", {"reviews.bookinfo.svc"}}}));
    containers.push_back(ContainerResource(Connection(i), "docker", vm.config_dir,
                                           "docker.io/istio/proxyv2:1.8.6", "hash-" + vm.name));
  }
  std::vector<ResourceState> states;
  for (int i = 0; i < 2; ++i) {
    SecretBag bag;
    bag.Put(kWorkload, "token", "token-for-" + harness_->vms()[i].name);
    for (const Resource* r : {&files[i], &hosts[i], &containers[i]}) {
      Step s(r, Action::kCreate, nullptr, &bag, &reporter_);
      auto res = provider_->Apply(s.req);
      ASSERT_TRUE(res.ok()) << res.error();
      EXPECT_GE(res->writes, 1);
      states.push_back(*res->state);
    }
    provider_->Finish(kWorkload, true);
  }
  for (int i = 0; i < 2; ++i) {
    const auto& vm = harness_->vms()[i];
    EXPECT_EQ(ReadAll(vm.config_dir + "/istio-token"), "token-for-" + vm.name);
    EXPECT_EQ(ModeOf(vm.config_dir + "/istio-token"), "0640");
    EXPECT_EQ(ModeOf(vm.config_dir + "/sidecar.env"), "0644");
    EXPECT_NE(ReadAll(vm.hosts_file).find("127.0.0.2 reviews.bookinfo.svc\n"), std::string::npos);
  }
  // The stand-in ran on the VMs through their PATH, with the hash label.
  auto calls_of = [&](int i) { return ReadAll(harness_->vms()[i].tools_dir + "/docker-state/calls.log"); };
  EXPECT_NE(calls_of(0).find("run --label onboard.dev/config-hash=hash-vm1"), std::string::npos) << calls_of(0);
  EXPECT_NE(calls_of(1).find("run --label onboard.dev/config-hash=hash-vm2"), std::string::npos) << calls_of(1);

  // Refresh: one exec per VM for all of its items.
  std::vector<RefreshItem> items;
  for (int i = 0; i < 2; ++i)
    for (const Resource* r : {&files[i], &hosts[i], &containers[i]})
      items.push_back({r->address, kWorkload, r, nullptr});
  // Items of both VMs share addresses here (same workload key), so refresh each VM separately.
  for (int i = 0; i < 2; ++i) {
    std::vector<RefreshItem> vm_items(items.begin() + 3 * i, items.begin() + 3 * i + 3);
    int execs0 = Stats(i).execs;
    auto obs = provider_->Refresh(vm_items);
    EXPECT_EQ(Stats(i).execs - execs0, 1);
    for (const auto& [addr, o] : obs) {
      ASSERT_TRUE(o.ok()) << addr << ": " << o.error();
      EXPECT_TRUE(o->exists) << addr;
    }
    EXPECT_EQ(obs.at("files.bookinfo/ratings-vm")->observed["files"]["istio-token"]["sha256"],
              detail::Sha256Hex("token-for-" + harness_->vms()[i].name));
    EXPECT_EQ(obs.at("container.bookinfo/ratings-vm")->observed["config_hash"],
              "hash-" + harness_->vms()[i].name);
  }

  // Second run, nothing changed: zero writes anywhere.
  auto sftp0 = Stats(0).sftp_writes + Stats(1).sftp_writes;
  std::string calls0_vm1 = calls_of(0), calls0_vm2 = calls_of(1);
  for (int i = 0; i < 2; ++i) {
    for (int k = 0; k < 3; ++k) {
      const Resource* r = k == 0 ? &files[i] : k == 1 ? &hosts[i] : &containers[i];
      Step s(r, Action::kNoOp, &states[3 * i + k], nullptr, &reporter_);
      auto res = provider_->Apply(s.req);
      ASSERT_TRUE(res.ok()) << res.error();
      EXPECT_EQ(res->writes, 0) << r->address.ToString();
    }
    provider_->Finish(kWorkload, true);
  }
  EXPECT_EQ(Stats(0).sftp_writes + Stats(1).sftp_writes, sftp0);
  std::string new_calls = calls_of(0).substr(calls0_vm1.size()) + calls_of(1).substr(calls0_vm2.size());
  EXPECT_EQ(new_calls.find("docker run"), std::string::npos) << new_calls;
  EXPECT_EQ(new_calls.find("docker rm"), std::string::npos) << new_calls;
  EXPECT_EQ(Stats(0).connects + Stats(1).connects, 2);  // one connection per VM for everything
}

TEST_F(VmSshTest, SpaceInConfigDirArrivesLiterally) {
  const auto& vm = harness_->vms()[0];
  std::string dir = vm.root_dir + "/etc/istio proxy";
  Resource r = FilesResource(Connection(0), dir, FileSet{});
  SecretBag bag;
  bag.Put(kWorkload, "token", "tok");
  Step s(&r, Action::kCreate, nullptr, &bag, &reporter_);
  auto res = provider_->Apply(s.req);
  ASSERT_TRUE(res.ok()) << res.error();
  EXPECT_EQ(ReadAll(dir + "/istio-token"), "tok");
  EXPECT_FALSE(Exists(vm.root_dir + "/etc/istio"));
}

TEST_F(VmSshTest, GatewayCheckOverSshAndUnreachableVm) {
  Resource r;
  r.address = {ResourceType::kCheckGateway, kWorkload};
  r.workload = kWorkload;
  int sshd_port = harness_->vms()[1].port;  // something that listens
  r.attributes = {{"connection", Connection(0)}, {"gateway", "127.0.0.1"}, {"ports", {sshd_port, 1}}};
  Step s(&r, Action::kRead);
  auto res = provider_->Apply(s.req);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().find("cannot reach the VM gateway 127.0.0.1 on TCP 1: open them in the firewall"),
            std::string::npos)
      << res.error();

  // A VM that is down: refresh names it.
  ASSERT_TRUE(harness_->Kill(1).ok());
  Resource files = FilesResource(Connection(1), harness_->vms()[1].config_dir, FileSet{});
  auto obs = provider_->Refresh({{files.address, kWorkload, &files, nullptr}});
  ASSERT_FALSE(obs.at("files.bookinfo/ratings-vm").ok());
  EXPECT_NE(obs.at("files.bookinfo/ratings-vm").error().find("127.0.0.1:" + std::to_string(harness_->vms()[1].port)),
            std::string::npos)
      << obs.at("files.bookinfo/ratings-vm").error();
}

}  // namespace
}  // namespace onboard::vm
