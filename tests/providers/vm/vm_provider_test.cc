// VM provider unit tests with a local Session fake (commands run through /bin/sh here) and the
// recording docker stand-in.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "providers/vm/vm_provider.h"
#include "tests/providers/vm/vm_test_support.h"

namespace onboard::vm {
namespace {

using namespace testing;  // NOLINT

class VmProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir("onboard-vm-test-");
    ASSERT_FALSE(root_.empty());
    dir_ = root_ + "/etc/istio-proxy";
    hosts_ = root_ + "/etc/hosts";
    Sh("mkdir -p " + ssh::ShellQuote(root_ + "/etc") + " " + ssh::ShellQuote(root_ + "/tools"));
    WriteAll(hosts_, "127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    docker_ = MakeDockerWrapper(root_ + "/tools/docker", root_ + "/docker-state");
    session_ = std::make_shared<LocalSession>(ssh::Endpoint{});
    provider_ = MakeProvider({});
  }
  void TearDown() override {
    if (!root_.empty()) Sh("rm -rf " + ssh::ShellQuote(root_));
  }

  std::unique_ptr<VmProvider> MakeProvider(VmProviderOptions o) {
    o.connector = [this](const ssh::Endpoint& ep) -> Result<std::shared_ptr<ssh::Session>> {
      connects_++;
      return std::static_pointer_cast<ssh::Session>(session_);
    };
    o.container_grace_seconds = 0.3;
    o.container_stop_timeout_seconds = 1;
    o.port_check_timeout_seconds = 1;
    return std::make_unique<VmProvider>(std::move(o));
  }

  std::string Token(const std::string& v) { return "eyJhbGciOiJSUzI1NiJ9." + v + ".sig"; }

  // Applies the files resource with the given token (empty: none in the bag).
  Result<StepResult> ApplyFiles(const Resource& r, const std::string& token,
                                const ResourceState* prior = nullptr, Action a = Action::kCreate) {
    SecretBag bag;
    if (!token.empty()) bag.Put(kWorkload, "token", token);
    Step s(&r, a, prior, &bag, &reporter_);
    return provider_->Apply(s.req);
  }

  std::string DockerCalls() { return ReadAll(root_ + "/docker-state/calls.log"); }

  std::string root_, dir_, hosts_, docker_;
  std::shared_ptr<LocalSession> session_;
  std::unique_ptr<VmProvider> provider_;
  RecordingReporter reporter_;
  int connects_ = 0;
};

TEST_F(VmProviderTest, FilesCreateWritesEveryFileWithItsMode) {
  FileSet f;
  Resource r = FilesResource(LocalConnection(), dir_, f);
  auto res = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(res.ok()) << res.error();
  EXPECT_EQ(res->writes, 4);
  EXPECT_EQ(ReadAll(dir_ + "/sidecar.env"), f.env);
  EXPECT_EQ(ReadAll(dir_ + "/istio-ca.pem"), f.ca);
  EXPECT_EQ(ReadAll(dir_ + "/k8s-ca.pem"), f.k8s);
  EXPECT_EQ(ReadAll(dir_ + "/istio-token"), Token("one"));
  EXPECT_EQ(ModeOf(dir_), "0755");
  EXPECT_EQ(ModeOf(dir_ + "/sidecar.env"), "0644");
  EXPECT_EQ(ModeOf(dir_ + "/istio-ca.pem"), "0644");
  EXPECT_EQ(ModeOf(dir_ + "/k8s-ca.pem"), "0644");
  EXPECT_EQ(ModeOf(dir_ + "/istio-token"), "0640");
  ASSERT_TRUE(res->state.has_value());
  const auto& obs = res->state->observed["files"];
  EXPECT_EQ(obs["istio-token"]["sha256"], detail::Sha256Hex(Token("one")));
  EXPECT_EQ(obs["istio-token"]["mode"], "0640");
  EXPECT_EQ(obs["sidecar.env"]["sha256"], detail::Sha256Hex(f.env));
  // No temp files left; the token never appears in the state record.
  EXPECT_FALSE(Exists(dir_ + "/.onboard-new.istio-token"));
  EXPECT_EQ(res->state->attributes.dump().find("one"), std::string::npos);
  EXPECT_EQ(res->state->address.ToString(), "files.bookinfo/ratings-vm");
}

TEST_F(VmProviderTest, FilesUnchangedMakesZeroWrites) {
  FileSet f;
  Resource r = FilesResource(LocalConnection(), dir_, f);
  auto first = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  struct stat before;
  ASSERT_EQ(stat((dir_ + "/istio-token").c_str(), &before), 0);
  auto stats0 = session_->stats();
  sleep(1);  // an mtime change would be visible
  // Same token in the bag, and (the usual case) no token in the bag at all.
  auto second = ApplyFiles(r, Token("one"), &*first->state, Action::kNoOp);
  ASSERT_TRUE(second.ok()) << second.error();
  auto third = ApplyFiles(r, "", &*first->state, Action::kUpdate);
  ASSERT_TRUE(third.ok()) << third.error();
  EXPECT_EQ(second->writes, 0);
  EXPECT_EQ(third->writes, 0);
  auto stats1 = session_->stats();
  EXPECT_EQ(stats1.sftp_writes, stats0.sftp_writes);
  EXPECT_EQ(stats1.execs - stats0.execs, 2);  // one check exec each, nothing else
  struct stat after;
  ASSERT_EQ(stat((dir_ + "/istio-token").c_str(), &after), 0);
  EXPECT_EQ(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  EXPECT_FALSE(Exists(dir_ + "/.onboard-backup"));
}

TEST_F(VmProviderTest, FilesUpdateRewritesTokenAndCaInPlaceAndReplacesEnv) {
  FileSet f;
  Resource r = FilesResource(LocalConnection(), dir_, f);
  auto first = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  ino_t token_ino = InodeOf(dir_ + "/istio-token");
  ino_t ca_ino = InodeOf(dir_ + "/istio-ca.pem");
  f.env += "ISTIO_META_NETWORK=vm-network\n";
  f.ca = "-----BEGIN CERTIFICATE-----\nMIIBnewroot\n-----END CERTIFICATE-----\n";
  Resource r2 = FilesResource(LocalConnection(), dir_, f);
  auto second = ApplyFiles(r2, Token("two"), &*first->state, Action::kUpdate);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(second->writes, 3);  // env, ca, token; k8s-ca untouched
  EXPECT_EQ(ReadAll(dir_ + "/istio-token"), Token("two"));
  EXPECT_EQ(ReadAll(dir_ + "/istio-ca.pem"), f.ca);
  EXPECT_EQ(ReadAll(dir_ + "/sidecar.env"), f.env);
  // The running container pins these inodes: they must be the same files.
  EXPECT_EQ(InodeOf(dir_ + "/istio-token"), token_ino);
  EXPECT_EQ(InodeOf(dir_ + "/istio-ca.pem"), ca_ino);
  EXPECT_EQ(ModeOf(dir_ + "/istio-token"), "0640");
  // Backups of what was replaced are kept during the run, then dropped.
  EXPECT_EQ(ReadAll(dir_ + "/.onboard-backup/istio-token"), Token("one"));
  EXPECT_EQ(ModeOf(dir_ + "/.onboard-backup"), "0700");
  provider_->Finish(kWorkload, true);
  EXPECT_FALSE(Exists(dir_ + "/.onboard-backup"));
}

TEST_F(VmProviderTest, FilesModeDriftIsFixedWithoutRewriting) {
  FileSet f;
  Resource r = FilesResource(LocalConnection(), dir_, f);
  auto first = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  chmod((dir_ + "/istio-token").c_str(), 0644);
  auto stats0 = session_->stats();
  auto second = ApplyFiles(r, "", &*first->state, Action::kUpdate);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(second->writes, 1);
  EXPECT_EQ(session_->stats().sftp_writes, stats0.sftp_writes);
  EXPECT_EQ(ModeOf(dir_ + "/istio-token"), "0640");
  EXPECT_EQ(ReadAll(dir_ + "/istio-token"), Token("one"));
}

TEST_F(VmProviderTest, RefreshShowsDriftAndUsesOneExecPerVm) {
  FileSet f;
  Resource files = FilesResource(LocalConnection(), dir_, f);
  auto applied = ApplyFiles(files, Token("one"));
  ASSERT_TRUE(applied.ok()) << applied.error();
  Resource hosts = HostsResource(LocalConnection(), hosts_, {{"127.0.0.2", {"reviews.bookinfo.svc"}}});
  Step hs(&hosts, Action::kCreate);
  ASSERT_TRUE(provider_->Apply(hs.req).ok());
  Resource container = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.6", "h1");
  Step cs(&container, Action::kCreate);
  auto c = provider_->Apply(cs.req);
  ASSERT_TRUE(c.ok()) << c.error();
  provider_->Finish(kWorkload, true);

  WriteAll(dir_ + "/sidecar.env", f.env + "EXTRA=1\n");  // drift: edited on the VM
  Resource gw;
  gw.address = {ResourceType::kCheckGateway, kWorkload};
  gw.workload = kWorkload;
  gw.attributes = {{"connection", LocalConnection()}, {"gateway", "127.0.0.1"}, {"ports", {15012}}};
  std::vector<RefreshItem> items = {
      {files.address, kWorkload, &files, &*applied->state},
      {hosts.address, kWorkload, &hosts, nullptr},
      {container.address, kWorkload, &container, nullptr},
      {gw.address, kWorkload, &gw, nullptr},
  };
  int execs0 = session_->stats().execs;
  auto obs = provider_->Refresh(items);
  EXPECT_EQ(session_->stats().execs - execs0, 1);
  ASSERT_EQ(obs.size(), 4u);
  auto& fo = obs.at("files.bookinfo/ratings-vm");
  ASSERT_TRUE(fo.ok()) << fo.error();
  EXPECT_TRUE(fo->exists);
  EXPECT_EQ(fo->observed["files"]["sidecar.env"]["sha256"], detail::Sha256Hex(f.env + "EXTRA=1\n"));
  EXPECT_NE(fo->observed["files"]["sidecar.env"]["sha256"],
            applied->state->observed["files"]["sidecar.env"]["sha256"]);
  EXPECT_EQ(fo->observed["files"]["istio-token"]["sha256"], detail::Sha256Hex(Token("one")));
  EXPECT_EQ(fo->observed["files"]["istio-token"]["mode"], "0640");
  EXPECT_EQ(fo->attributes["files"]["istio-ca.pem"]["sha256"], detail::Sha256Hex(f.ca));
  EXPECT_FALSE(fo->attributes["files"]["istio-token"].contains("sha256"));
  auto& ho = obs.at("hosts.bookinfo/ratings-vm");
  ASSERT_TRUE(ho.ok()) << ho.error();
  EXPECT_TRUE(ho->exists);
  EXPECT_EQ(ho->attributes["entries"], nlohmann::json({{"127.0.0.2", {"reviews.bookinfo.svc"}}}));
  EXPECT_EQ(ho->observed["sha256"],
            detail::Sha256Hex(detail::HostsBlock(kWorkload, hosts.attributes["entries"])));
  auto& co = obs.at("container.bookinfo/ratings-vm");
  ASSERT_TRUE(co.ok()) << co.error();
  EXPECT_TRUE(co->exists);
  EXPECT_EQ(co->observed["running"], true);
  EXPECT_EQ(co->observed["config_hash"], "h1");
  EXPECT_EQ(co->observed["image"], "docker.io/istio/proxyv2:1.8.6");
  EXPECT_EQ(co->observed["id"], c->state->observed["id"]);
  auto& go = obs.at("check.gateway.bookinfo/ratings-vm");
  ASSERT_TRUE(go.ok());
  EXPECT_FALSE(go->exists);

  // Absent things are reported as absent.
  Sh("rm -rf " + ssh::ShellQuote(dir_));
  Sh(docker_ + " rm --force istio-proxy >/dev/null 2>&1");
  auto obs2 = provider_->Refresh(items);
  EXPECT_FALSE(obs2.at("files.bookinfo/ratings-vm")->exists);
  EXPECT_FALSE(obs2.at("container.bookinfo/ratings-vm")->exists);
}

TEST_F(VmProviderTest, RefreshErrorNamesTheVmWhenConnectFails) {
  VmProviderOptions o;
  o.connector = [](const ssh::Endpoint& ep) -> Result<std::shared_ptr<ssh::Session>> {
    return Result<std::shared_ptr<ssh::Session>>::Error("connection refused");
  };
  VmProvider p(o);
  Resource files = FilesResource(LocalConnection(), dir_, FileSet{});
  auto obs = p.Refresh({{files.address, kWorkload, &files, nullptr}});
  ASSERT_FALSE(obs.at("files.bookinfo/ratings-vm").ok());
  EXPECT_NE(obs.at("files.bookinfo/ratings-vm").error().find("tester@127.0.0.1:22"), std::string::npos);
  EXPECT_NE(obs.at("files.bookinfo/ratings-vm").error().find("connection refused"), std::string::npos);
}

TEST_F(VmProviderTest, RollbackRestoresThePreviousFilesInPlace) {
  FileSet f;
  Resource r = FilesResource(LocalConnection(), dir_, f);
  auto first = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  ino_t token_ino = InodeOf(dir_ + "/istio-token");
  FileSet g = f;
  g.env += "NEW=1\n";
  g.k8s = "changed k8s ca\n";
  Resource r2 = FilesResource(LocalConnection(), dir_, g);
  auto second = ApplyFiles(r2, Token("two"), &*first->state, Action::kUpdate);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(ReadAll(dir_ + "/istio-token"), Token("two"));

  // A later step of the workload failed: the engine walks the inverse step.
  Step back(&r, Action::kUpdate, &*first->state, nullptr, &reporter_);
  back.req.rollback = true;
  auto rb = provider_->Apply(back.req);
  ASSERT_TRUE(rb.ok()) << rb.error();
  EXPECT_EQ(ReadAll(dir_ + "/istio-token"), Token("one"));
  EXPECT_EQ(ReadAll(dir_ + "/sidecar.env"), f.env);
  EXPECT_EQ(ReadAll(dir_ + "/k8s-ca.pem"), f.k8s);
  EXPECT_EQ(ModeOf(dir_ + "/istio-token"), "0640");
  EXPECT_EQ(InodeOf(dir_ + "/istio-token"), token_ino);
  EXPECT_FALSE(Exists(dir_ + "/.onboard-backup"));
  ASSERT_TRUE(rb->state.has_value());
  EXPECT_EQ(rb->state->observed, first->state->observed);
  provider_->Finish(kWorkload, false);
}

TEST_F(VmProviderTest, RollbackOfACreateRemovesWhatTheRunCreated) {
  Resource r = FilesResource(LocalConnection(), dir_, FileSet{});
  auto first = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(first.ok()) << first.error();
  Step back(&r, Action::kDelete, &*first->state);
  back.req.rollback = true;
  auto rb = provider_->Apply(back.req);
  ASSERT_TRUE(rb.ok()) << rb.error();
  EXPECT_FALSE(rb->state.has_value());
  EXPECT_FALSE(Exists(dir_));
}

TEST_F(VmProviderTest, TokenNeededButNotMintedFailsClearly) {
  Resource r = FilesResource(LocalConnection(), dir_, FileSet{});
  auto res = ApplyFiles(r, "");
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().find("token.bookinfo/ratings-vm"), std::string::npos) << res.error();
  EXPECT_NE(res.error().find("must run"), std::string::npos) << res.error();
  EXPECT_NE(res.error().find("files.bookinfo/ratings-vm"), std::string::npos) << res.error();

  // A token edited on the VM is drift that only the token step can fix.
  auto ok = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(ok.ok()) << ok.error();
  provider_->Finish(kWorkload, true);
  WriteAll(dir_ + "/istio-token", "tampered", 0640);
  auto drift = ApplyFiles(r, "", &*ok->state, Action::kUpdate);
  ASSERT_FALSE(drift.ok());
  EXPECT_NE(drift.error().find("changed on the VM"), std::string::npos) << drift.error();
}

TEST_F(VmProviderTest, FilesDeleteRemovesFilesAndDir) {
  Resource r = FilesResource(LocalConnection(), dir_, FileSet{});
  auto first = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  Step del(nullptr, Action::kDelete, &*first->state);
  auto res = provider_->Apply(del.req);
  ASSERT_TRUE(res.ok()) << res.error();
  EXPECT_EQ(res->writes, 4);
  EXPECT_FALSE(res->state.has_value());
  EXPECT_FALSE(Exists(dir_));
  auto again = provider_->Apply(del.req);
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(again->writes, 0);
}

TEST_F(VmProviderTest, HostileDirArrivesLiterally) {
  std::string dir = root_ + "/etc/istio proxy/$(touch pwned)`touch pwned2`;x'y";
  Resource r = FilesResource(LocalConnection(), dir, FileSet{});
  auto res = ApplyFiles(r, Token("one"));
  ASSERT_TRUE(res.ok()) << res.error();
  EXPECT_EQ(ReadAll(dir + "/istio-token"), Token("one"));
  EXPECT_FALSE(Exists("pwned"));
  EXPECT_FALSE(Exists("pwned2"));
  EXPECT_FALSE(Exists(root_ + "/etc/pwned"));
  auto relative = FilesResource(LocalConnection(), "etc/istio-proxy", FileSet{});
  auto bad = ApplyFiles(relative, Token("one"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("not an absolute path"), std::string::npos);
}

TEST_F(VmProviderTest, DryRunExecutesNothingAndRedactsTheToken) {
  Resource files = FilesResource(LocalConnection(), dir_, FileSet{});
  Resource hosts = HostsResource(LocalConnection(), hosts_, {{"127.0.0.2", {"reviews.bookinfo.svc"}}});
  Resource container = ContainerResource(LocalConnection(), docker_, dir_, "img:1", "h1");
  SecretBag bag;
  bag.Put(kWorkload, "token", Token("secret-value"));
  std::string hosts_before = ReadAll(hosts_);
  for (const Resource* r : {&files, &hosts, &container}) {
    Step s(r, Action::kCreate, nullptr, &bag, &reporter_);
    s.req.dry_run = true;
    auto res = provider_->Apply(s.req);
    ASSERT_TRUE(res.ok()) << res.error();
    EXPECT_EQ(res->writes, 0);
  }
  EXPECT_EQ(connects_, 0);
  EXPECT_EQ(session_->stats().execs, 0);
  EXPECT_FALSE(Exists(dir_));
  EXPECT_EQ(ReadAll(hosts_), hosts_before);
  EXPECT_FALSE(Exists(root_ + "/docker-state/calls.log"));
  std::string all = reporter_.All();
  EXPECT_EQ(all.find("secret-value"), std::string::npos);
  EXPECT_NE(all.find("<redacted: " + std::to_string(Token("secret-value").size()) + " bytes>"),
            std::string::npos);
  EXPECT_NE(all.find("POD_NAME=ratings-vm"), std::string::npos);  // generated files are shown
  EXPECT_NE(all.find("127.0.0.2 reviews.bookinfo.svc"), std::string::npos);
  EXPECT_NE(all.find("onboard.dev/config-hash=h1"), std::string::npos);
  EXPECT_NE(all.find("'--restart' 'unless-stopped'"), std::string::npos);
}

TEST_F(VmProviderTest, HostsBlockAddIdempotentOtherLinesUntouchedAndRemoved) {
  WriteAll(hosts_, "127.0.0.1 localhost\n10.0.0.9 db.internal # keep me\n");
  ino_t ino = InodeOf(hosts_);
  Resource r = HostsResource(LocalConnection(), hosts_,
                             {{"127.0.0.2", {"reviews.bookinfo.svc", "details.bookinfo.svc"}}});
  Step add(&r, Action::kCreate);
  auto res = provider_->Apply(add.req);
  ASSERT_TRUE(res.ok()) << res.error();
  EXPECT_EQ(res->writes, 1);
  EXPECT_EQ(ReadAll(hosts_),
            "127.0.0.1 localhost\n10.0.0.9 db.internal # keep me\n"
            "# BEGIN onboard bookinfo/ratings-vm\n"
            "127.0.0.2 reviews.bookinfo.svc details.bookinfo.svc\n"
            "# END onboard bookinfo/ratings-vm\n");
  EXPECT_EQ(InodeOf(hosts_), ino);  // written in place (bind-mounted in containers)
  EXPECT_EQ(res->state->observed["sha256"],
            detail::Sha256Hex(detail::HostsBlock(kWorkload, r.attributes["entries"])));

  // Idempotent.
  Step again(&r, Action::kNoOp, &*res->state);
  auto res2 = provider_->Apply(again.req);
  ASSERT_TRUE(res2.ok()) << res2.error();
  EXPECT_EQ(res2->writes, 0);

  // A line added after the block by someone else stays; the block is updated where it is.
  Sh("echo '192.168.1.1 printer' >> " + ssh::ShellQuote(hosts_));
  Resource r2 = HostsResource(LocalConnection(), hosts_, {{"127.0.0.3", {"ratings.bookinfo.svc"}}});
  Step upd(&r2, Action::kUpdate, &*res->state);
  auto res3 = provider_->Apply(upd.req);
  ASSERT_TRUE(res3.ok()) << res3.error();
  EXPECT_EQ(ReadAll(hosts_),
            "127.0.0.1 localhost\n10.0.0.9 db.internal # keep me\n"
            "# BEGIN onboard bookinfo/ratings-vm\n"
            "127.0.0.3 ratings.bookinfo.svc\n"
            "# END onboard bookinfo/ratings-vm\n"
            "192.168.1.1 printer\n");
  // Rollback puts the run's original block back.
  Step back(&r2, Action::kUpdate, &*res->state);
  back.req.rollback = true;
  auto rb = provider_->Apply(back.req);
  ASSERT_TRUE(rb.ok()) << rb.error();
  EXPECT_NE(ReadAll(hosts_).find("127.0.0.1 localhost\n10.0.0.9 db.internal # keep me\n192.168.1.1 printer\n"),
            std::string::npos) << ReadAll(hosts_);
  EXPECT_EQ(ReadAll(hosts_).find("BEGIN onboard"), std::string::npos);
  provider_->Finish(kWorkload, true);

  auto res4 = provider_->Apply(upd.req);
  ASSERT_TRUE(res4.ok()) << res4.error();
  Step del(nullptr, Action::kDelete, &*res4->state);
  auto res5 = provider_->Apply(del.req);
  ASSERT_TRUE(res5.ok()) << res5.error();
  EXPECT_EQ(res5->writes, 1);
  EXPECT_FALSE(res5->state.has_value());
  EXPECT_EQ(ReadAll(hosts_), "127.0.0.1 localhost\n10.0.0.9 db.internal # keep me\n192.168.1.1 printer\n");
  auto res6 = provider_->Apply(del.req);
  ASSERT_TRUE(res6.ok());
  EXPECT_EQ(res6->writes, 0);
}

TEST_F(VmProviderTest, HostsNotWritableWithoutSudoNamesTheFix) {
  if (geteuid() == 0) {
    // root can write anything: check the message through a user that cannot.
    if (Sh("command -v setpriv >/dev/null 2>&1 && id nobody >/dev/null 2>&1") != 0)
      GTEST_SKIP() << "needs setpriv and the nobody user to drop root";
  }
  std::string hosts = root_ + "/etc/hosts-ro";
  WriteAll(hosts, "127.0.0.1 localhost\n", 0644);
  Sh("chmod 0755 " + ssh::ShellQuote(root_) + " " + ssh::ShellQuote(root_ + "/etc"));
  // A session whose commands run as nobody (no sudo): the user cannot write the file.
  class NobodySession : public LocalSession {
   public:
    using LocalSession::LocalSession;
    Result<ssh::ExecResult> Exec(const std::string& c, const std::string& in) override {
      if (geteuid() != 0) return LocalSession::Exec(c, in);
      return LocalSession::Exec("PATH=/usr/bin:/bin exec setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c " +
                                    ssh::ShellQuote(c),
                                in);
    }
  };
  auto s = std::make_shared<NobodySession>(ssh::Endpoint{});
  VmProviderOptions o;
  o.connector = [s](const ssh::Endpoint&) -> Result<std::shared_ptr<ssh::Session>> {
    return std::static_pointer_cast<ssh::Session>(s);
  };
  VmProvider p(o);
  if (geteuid() != 0) chmod(hosts.c_str(), 0444);
  Resource r = HostsResource(LocalConnection(), hosts, {{"127.0.0.2", {"a.b.svc"}}});
  Step add(&r, Action::kCreate);
  auto res = p.Apply(add.req);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().find("cannot write " + hosts + " on 127.0.0.1 as tester: grant write access "
                             "or passwordless sudo"),
            std::string::npos)
      << res.error();
  EXPECT_EQ(ReadAll(hosts), "127.0.0.1 localhost\n");
}

// Listens on a loopback port; returns the fd and sets *port.
int Listen(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 16) != 0) return -1;
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// A port that nothing listens on (bound then closed).
int ClosedPort() {
  int p = 0;
  int fd = Listen(&p);
  close(fd);
  return p;
}

TEST_F(VmProviderTest, GatewayCheckNamesExactlyTheUnreachablePorts) {
  int open1 = 0, open2 = 0;
  int fd1 = Listen(&open1), fd2 = Listen(&open2);
  ASSERT_GE(fd1, 0);
  ASSERT_GE(fd2, 0);
  int closed1 = ClosedPort(), closed2 = ClosedPort();
  Resource r;
  r.address = {ResourceType::kCheckGateway, kWorkload};
  r.workload = kWorkload;
  r.attributes = {{"connection", LocalConnection()},
                  {"gateway", "127.0.0.1"},
                  {"ports", {open1, closed1, open2, closed2}}};
  Step s(&r, Action::kRead);
  auto res = provider_->Apply(s.req);
  ASSERT_FALSE(res.ok());
  std::string want = "VM ratings-vm (tester@127.0.0.1) cannot reach the VM gateway 127.0.0.1 on TCP " +
                     std::to_string(closed1) + ", " + std::to_string(closed2) +
                     ": open them in the firewall";
  EXPECT_NE(res.error().find(want), std::string::npos) << res.error();
  EXPECT_EQ(res.error().find(std::to_string(open1) + ","), std::string::npos);

  r.attributes["ports"] = {open1, open2};
  Step ok(&r, Action::kRead);
  auto res2 = provider_->Apply(ok.req);
  ASSERT_TRUE(res2.ok()) << res2.error();
  EXPECT_FALSE(res2->state.has_value());
  EXPECT_EQ(res2->writes, 0);
  close(fd1);
  close(fd2);
}

TEST_F(VmProviderTest, InboundCheckWarnsOrFailsWhenStrict) {
  int open = 0;
  int fd = Listen(&open);
  int closed = ClosedPort();
  Resource r;
  r.address = {ResourceType::kCheckInbound, kWorkload};
  r.workload = kWorkload;
  r.attributes = {{"address", "127.0.0.1"}, {"ports", {open, closed}}};
  Step s(&r, Action::kRead, nullptr, nullptr, &reporter_);
  auto res = provider_->Apply(s.req);
  ASSERT_TRUE(res.ok()) << res.error();
  EXPECT_FALSE(res->state.has_value());
  ASSERT_EQ(reporter_.warnings.size(), 1u);
  EXPECT_NE(reporter_.warnings[0].find("on TCP " + std::to_string(closed) + " ("), std::string::npos)
      << reporter_.warnings[0];

  VmProviderOptions strict;
  strict.strict_checks = true;
  auto p = MakeProvider(strict);
  auto res2 = p->Apply(s.req);
  ASSERT_FALSE(res2.ok());
  EXPECT_NE(res2.error().find("cannot reach VM ratings-vm at 127.0.0.1 on TCP " + std::to_string(closed)),
            std::string::npos)
      << res2.error();
  r.attributes["ports"] = {open};
  auto res3 = p->Apply(s.req);
  EXPECT_TRUE(res3.ok());
  close(fd);
}

class ContainerTest : public VmProviderTest {
 protected:
  void SetUp() override {
    VmProviderTest::SetUp();
    auto res = ApplyFiles(FilesResource(LocalConnection(), dir_, FileSet{}), Token("one"));
    ASSERT_TRUE(res.ok()) << res.error();
    provider_->Finish(kWorkload, true);
  }
  Result<StepResult> Run(const Resource& r, Action a, const ResourceState* prior = nullptr) {
    Step s(&r, a, prior, nullptr, &reporter_);
    return provider_->Apply(s.req);
  }
  std::string Inspect(const std::string& name, const std::string& tmpl) {
    std::string out;
    FILE* p = popen((docker_ + " inspect -f " + ssh::ShellQuote(tmpl) + " " + name + " 2>/dev/null").c_str(), "r");
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
};

TEST_F(ContainerTest, RunNoOpReplaceAndDestroy) {
  Resource r = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.6", "hash-1");
  auto first = Run(r, Action::kCreate);
  ASSERT_TRUE(first.ok()) << first.error();
  EXPECT_EQ(first->writes, 1);
  EXPECT_EQ(Inspect("istio-proxy", "{{.State.Running}}"), "true");
  EXPECT_EQ(Inspect("istio-proxy", "{{index .Config.Labels \"onboard.dev/config-hash\"}}"), "hash-1");
  EXPECT_EQ(first->state->observed["config_hash"], "hash-1");
  EXPECT_EQ(first->state->observed["running"], true);
  EXPECT_EQ(first->state->observed["id"].get<std::string>().size(), 64u);
  EXPECT_NE(DockerCalls().find("docker run --label onboard.dev/config-hash=hash-1 -d --name istio-proxy"),
            std::string::npos) << DockerCalls();
  provider_->Finish(kWorkload, true);

  // Same hash, running: nothing but one inspect.
  std::string calls = DockerCalls();
  auto second = Run(r, Action::kNoOp, &*first->state);
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_EQ(second->writes, 0);
  std::string new_calls = DockerCalls().substr(calls.size());
  EXPECT_EQ(std::count(new_calls.begin(), new_calls.end(), '\n'), 1) << new_calls;
  EXPECT_EQ(new_calls.rfind("docker inspect", 0), 0u) << new_calls;

  // A new hash replaces it; the old one is kept stopped until Finish, then removed.
  Resource r2 = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.7", "hash-2");
  auto third = Run(r2, Action::kReplace, &*first->state);
  ASSERT_TRUE(third.ok()) << third.error();
  EXPECT_EQ(third->writes, 1);
  EXPECT_EQ(Inspect("istio-proxy", "{{index .Config.Labels \"onboard.dev/config-hash\"}}"), "hash-2");
  EXPECT_EQ(Inspect("istio-proxy", "{{.Config.Image}}"), "docker.io/istio/proxyv2:1.8.7");
  EXPECT_NE(third->state->observed["id"], first->state->observed["id"]);
  EXPECT_EQ(Inspect("istio-proxy-onboard-prev", "{{.State.Running}}"), "false");
  provider_->Finish(kWorkload, true);
  EXPECT_EQ(Inspect("istio-proxy-onboard-prev", "{{.Id}}"), "");

  // A stopped container with the right hash is started, not replaced.
  Sh(docker_ + " stop istio-proxy >/dev/null");
  auto fourth = Run(r2, Action::kUpdate, &*third->state);
  ASSERT_TRUE(fourth.ok()) << fourth.error();
  EXPECT_EQ(fourth->writes, 1);
  EXPECT_EQ(fourth->state->observed["id"], third->state->observed["id"]);
  EXPECT_EQ(Inspect("istio-proxy", "{{.State.Running}}"), "true");

  Step del(nullptr, Action::kDelete, &*fourth->state);
  auto gone = provider_->Apply(del.req);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->writes, 1);
  EXPECT_FALSE(gone->state.has_value());
  EXPECT_EQ(Inspect("istio-proxy", "{{.Id}}"), "");
  EXPECT_NE(DockerCalls().find("docker rm --force istio-proxy"), std::string::npos);
}

TEST_F(ContainerTest, FailingNewContainerRestoresTheOldOne) {
  Resource r = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.6", "hash-1");
  auto first = Run(r, Action::kCreate);
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  std::string old_id = first->state->observed["id"];

  // The new image exits at once: the old container comes back.
  Resource crash = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:crashloop", "hash-2");
  auto res = Run(crash, Action::kReplace, &*first->state);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().find("exited within"), std::string::npos) << res.error();
  EXPECT_NE(res.error().find("crashloop: the image exits at once"), std::string::npos) << res.error();
  EXPECT_NE(res.error().find("previous container was restored"), std::string::npos) << res.error();
  EXPECT_EQ(Inspect("istio-proxy", "{{.Id}}"), old_id);
  EXPECT_EQ(Inspect("istio-proxy", "{{.State.Running}}"), "true");
  EXPECT_EQ(Inspect("istio-proxy-onboard-prev", "{{.Id}}"), "");

  // docker run itself fails: its stderr is reported, the old one restored.
  Resource absent = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:absent", "hash-3");
  auto res2 = Run(absent, Action::kReplace, &*first->state);
  ASSERT_FALSE(res2.ok());
  EXPECT_NE(res2.error().find("Unable to find image"), std::string::npos) << res2.error();
  EXPECT_NE(res2.error().find("container.bookinfo/ratings-vm"), std::string::npos) << res2.error();
  EXPECT_EQ(Inspect("istio-proxy", "{{.Id}}"), old_id);
  EXPECT_EQ(Inspect("istio-proxy", "{{.State.Running}}"), "true");

  // A missing env file makes the proxy exit (like the real image): no container left behind
  // when there was none before.
  Sh(docker_ + " rm --force istio-proxy >/dev/null");
  Sh("rm -f " + ssh::ShellQuote(dir_ + "/sidecar.env"));
  auto res3 = Run(r, Action::kCreate);
  ASSERT_FALSE(res3.ok());
  EXPECT_NE(res3.error().find("sidecar.env"), std::string::npos) << res3.error();
  EXPECT_EQ(Inspect("istio-proxy", "{{.Id}}"), "");
}

TEST_F(ContainerTest, RollbackRestoresThePreviousContainer) {
  Resource r = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.6", "hash-1");
  auto first = Run(r, Action::kCreate);
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  Resource r2 = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.7", "hash-2");
  auto second = Run(r2, Action::kReplace, &*first->state);
  ASSERT_TRUE(second.ok()) << second.error();

  Step back(&r, Action::kReplace, &*first->state);
  back.req.rollback = true;
  auto rb = provider_->Apply(back.req);
  ASSERT_TRUE(rb.ok()) << rb.error();
  EXPECT_EQ(Inspect("istio-proxy", "{{.Id}}"), first->state->observed["id"]);
  EXPECT_EQ(Inspect("istio-proxy", "{{.State.Running}}"), "true");
  EXPECT_EQ(Inspect("istio-proxy", "{{index .Config.Labels \"onboard.dev/config-hash\"}}"), "hash-1");
  EXPECT_EQ(Inspect("istio-proxy-onboard-prev", "{{.Id}}"), "");
  provider_->Finish(kWorkload, false);

  // Rollback of a create removes the container this run made.
  Sh(docker_ + " rm --force istio-proxy >/dev/null");
  auto created = Run(r, Action::kCreate);
  ASSERT_TRUE(created.ok()) << created.error();
  Step undo(&r, Action::kDelete, &*created->state);
  undo.req.rollback = true;
  auto rb2 = provider_->Apply(undo.req);
  ASSERT_TRUE(rb2.ok()) << rb2.error();
  EXPECT_FALSE(rb2->state.has_value());
  EXPECT_EQ(Inspect("istio-proxy", "{{.Id}}"), "");
}

TEST_F(ContainerTest, TwoReplacementsInOneRunRollBackToTheOriginal) {
  Resource r = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.6", "hash-1");
  auto first = Run(r, Action::kCreate);
  ASSERT_TRUE(first.ok()) << first.error();
  provider_->Finish(kWorkload, true);
  Resource r2 = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.7", "hash-2");
  auto second = Run(r2, Action::kReplace, &*first->state);
  ASSERT_TRUE(second.ok()) << second.error();
  Resource r3 = ContainerResource(LocalConnection(), docker_, dir_, "docker.io/istio/proxyv2:1.8.8", "hash-3");
  auto third = Run(r3, Action::kReplace, &*second->state);
  ASSERT_TRUE(third.ok()) << third.error();
  EXPECT_EQ(Inspect("istio-proxy", "{{index .Config.Labels \"onboard.dev/config-hash\"}}"), "hash-3");
  EXPECT_EQ(Inspect("istio-proxy-onboard-prev", "{{.Id}}"), first->state->observed["id"]);

  Step back(&r, Action::kReplace, &*first->state);
  back.req.rollback = true;
  auto rb = provider_->Apply(back.req);
  ASSERT_TRUE(rb.ok()) << rb.error();
  EXPECT_EQ(Inspect("istio-proxy", "{{.Id}}"), first->state->observed["id"]);
  EXPECT_EQ(Inspect("istio-proxy", "{{.State.Running}}"), "true");
  EXPECT_EQ(Inspect("istio-proxy-onboard-prev", "{{.Id}}"), "");
  ASSERT_TRUE(rb->state.has_value());
  EXPECT_EQ(rb->state->observed["config_hash"], "hash-1");
}

TEST(VmProviderHelpers, RunArgvInsertsTheHashLabelAfterRun) {
  auto argv = detail::RunArgv("docker", {"run", "-d", "--name", "x", "img"}, "abc");
  std::vector<std::string> want{"docker", "run", "--label", "onboard.dev/config-hash=abc", "-d",
                                "--name", "x", "img"};
  EXPECT_EQ(argv, want);
  EXPECT_EQ(detail::NormalizeMode("644"), "0644");
  EXPECT_EQ(detail::NormalizeMode(0640), "0640");
  EXPECT_EQ(detail::NormalizeMode("rw"), "");
}

TEST(VmProviderHelpers, EndpointComesFromConnectionWithOverrides) {
  VmProviderOptions o;
  o.identity_file_override = "/keys/id";
  o.connect_timeout_seconds = 3;
  o.host_keys.accept_new = true;
  VmProvider p(o);
  auto ep = p.EndpointOf({{"connection", {{"host", "10.0.0.5"}, {"port", 2222}, {"user", "istio-proxy"},
                                          {"identity_file", "/home/a/.ssh/id"}, {"known_hosts", "/kh"}}}});
  ASSERT_TRUE(ep.ok()) << ep.error();
  EXPECT_EQ(ep->host, "10.0.0.5");
  EXPECT_EQ(ep->port, 2222);
  EXPECT_EQ(ep->user, "istio-proxy");
  EXPECT_EQ(ep->identity_file, "/keys/id");
  EXPECT_EQ(ep->known_hosts, "/kh");
  EXPECT_EQ(ep->connect_timeout_seconds, 3);
  EXPECT_TRUE(ep->host_keys.accept_new);
  EXPECT_FALSE(p.EndpointOf(nlohmann::json::object()).ok());
  EXPECT_TRUE(p.Handles(ResourceType::kFiles));
  EXPECT_TRUE(p.Handles(ResourceType::kCheckInbound));
  EXPECT_FALSE(p.Handles(ResourceType::kToken));
}

}  // namespace
}  // namespace onboard::vm
