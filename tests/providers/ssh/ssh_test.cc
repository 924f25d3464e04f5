// The SSH layer against real OpenSSH sshd processes started by the VM harness.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "providers/ssh/known_hosts.h"
#include "providers/ssh/pool.h"
#include "providers/ssh/session.h"
#include "tests/sandbox/vm/vm_harness.h"

namespace onboard::ssh {
namespace {

using sandbox::HarnessOptions;
using sandbox::VmHarness;
using testing::HasSubstr;
using testing::Not;
using Clock = std::chrono::steady_clock;

std::string Sh(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  EXPECT_EQ(rc, 0) << "local command failed: " << command;
  return out;
}

std::string ReadLocal(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteLocal(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::vector<std::string>& TempDirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

// Removes every temporary directory at the end, also those of tests that stopped early.
class TempDirCleanup : public testing::Environment {
 public:
  void TearDown() override {
    for (const std::string& d : TempDirs()) {
      std::string cmd = "rm -rf '" + d + "'";
      if (std::system(cmd.c_str()) != 0) std::cerr << "could not remove " << d << "\n";
    }
  }
};
testing::Environment* const kCleanup = testing::AddGlobalTestEnvironment(new TempDirCleanup);

std::string MakeTempDir(const std::string& tag) {
  std::string tmpl = "/tmp/onboard-ssh-test-" + tag + "-XXXXXX";
  char* d = mkdtemp(tmpl.data());
  EXPECT_NE(d, nullptr);
  TempDirs().push_back(tmpl);
  return tmpl;
}

// The SHA256 fingerprint of a public key file as ssh-keygen prints it.
std::string KeygenFingerprint(const std::string& pub) {
  std::istringstream in(Sh("ssh-keygen -l -E sha256 -f " + pub));
  std::string bits, fp;
  in >> bits >> fp;
  return fp;
}

class SshTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    unsetenv("SSH_AUTH_SOCK");  // only the keys the tests choose
    unsetenv("ONBOARD_SSH_PASSPHRASE");
    dir_ = new std::string(MakeTempDir("suite"));
    HarnessOptions o;
    o.dir = *dir_;
    o.count = 3;
    auto h = VmHarness::Start(o);
    ASSERT_TRUE(h.ok()) << h.error();
    harness_ = std::move(h).value().release();
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
    if (dir_) Sh("rm -rf " + ShellQuote(*dir_));
    delete dir_;
  }

  void SetUp() override { ASSERT_NE(harness_, nullptr) << "harness did not start"; }

  static Endpoint Ep(int i = 0) {
    const auto& vm = harness_->vms()[i];
    Endpoint ep;
    ep.host = vm.host;
    ep.port = vm.port;
    ep.user = vm.user;
    ep.identity_file = harness_->client_key();
    ep.known_hosts = harness_->known_hosts();
    ep.connect_timeout_seconds = 5;
    return ep;
  }

  static std::unique_ptr<Session> MustConnect(const Endpoint& ep) {
    auto s = Connect(ep);
    EXPECT_TRUE(s.ok()) << s.error();
    if (!s.ok()) return nullptr;
    return std::move(s).value();
  }

  static ExecResult MustExec(Session& s, const std::string& cmd, const std::string& in = "") {
    auto r = s.Exec(cmd, in);
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? r.value() : ExecResult{};
  }

  static VmHarness* harness_;
  static std::string* dir_;
};

VmHarness* SshTest::harness_ = nullptr;
std::string* SshTest::dir_ = nullptr;

// ---------- quoting ----------

TEST(ShellQuoteTest, QuotesEveryValue) {
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("abc"), "'abc'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("'"), "''\\'''");
  EXPECT_EQ(ShellJoin({"docker", "run", "--name", "a b", ""}), "'docker' 'run' '--name' 'a b' ''");
  EXPECT_EQ(ShellJoin({}), "");
}

TEST(EndpointTest, ToStringNamesUserHostPort) {
  Endpoint ep;
  ep.host = "10.0.0.5";
  ep.port = 2222;
  ep.user = "ubuntu";
  EXPECT_EQ(ep.ToString(), "ubuntu@10.0.0.5:2222");
  ep.host = "::1";
  EXPECT_EQ(ep.ToString(), "ubuntu@[::1]:2222");
}

TEST(KnownHostsHelpersTest, Names) {
  EXPECT_EQ(KnownHostsName("h", 22), "h");
  EXPECT_EQ(KnownHostsName("127.0.0.1", 2200), "[127.0.0.1]:2200");
  EXPECT_EQ(KeyTypeLabel("ssh-ed25519"), "ED25519");
  EXPECT_EQ(KeyscanType("ecdsa-sha2-nistp256"), "ecdsa");
}

// ---------- exec ----------

TEST_F(SshTest, ExecReturnsStdoutStderrAndExitStatus) {
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  ExecResult r = MustExec(*s, "echo out; echo err >&2; exit 3");
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_EQ(r.exit_status, 3);
  EXPECT_TRUE(r.exit_signal.empty());
  EXPECT_FALSE(r.ok());
  ExecResult t = MustExec(*s, "true");
  EXPECT_TRUE(t.ok());
  EXPECT_EQ(t.out, "");
  EXPECT_EQ(s->stats().connects, 1);
  EXPECT_EQ(s->stats().execs, 2);
}

TEST_F(SshTest, KilledCommandReportsSignalAsFailure) {
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  ExecResult r = MustExec(*s, "echo before; kill -9 $$");
  EXPECT_EQ(r.out, "before\n");
  EXPECT_EQ(r.exit_signal, "KILL");
  EXPECT_EQ(r.exit_status, 128 + 9);
  EXPECT_FALSE(r.ok());
  // The session is still usable afterwards.
  EXPECT_TRUE(MustExec(*s, "true").ok());
}

TEST_F(SshTest, StdinIsDeliveredWhole) {
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  std::string big;
  for (int i = 0; i < 50000; ++i) big += "line " + std::to_string(i) + "\n";
  ExecResult r = MustExec(*s, "cat", big);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.out.size(), big.size());
  EXPECT_TRUE(r.out == big);
  ExecResult wc = MustExec(*s, "wc -c", "12345");
  EXPECT_EQ(wc.out, "5\n");
  // A command that ignores stdin still finishes.
  ExecResult ignore = MustExec(*s, "echo done", big);
  EXPECT_EQ(ignore.out, "done\n");
}

TEST_F(SshTest, LargeStdoutAndStderrTogether) {
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  ExecResult r = MustExec(*s, "head -c 2000000 /dev/zero | tr '\\0' a; head -c 500000 /dev/zero | tr '\\0' b >&2");
  EXPECT_TRUE(r.ok()) << r.err.substr(0, 200);
  EXPECT_EQ(r.out.size(), 2000000u);
  EXPECT_EQ(r.err.size(), 500000u);
  EXPECT_EQ(r.out.find_first_not_of('a'), std::string::npos);
}

TEST_F(SshTest, TcpNoDelayKeepsExecsFast) {
  // The remote side spawns a shell per exec; on a loaded machine that alone can take tens of ms,
  // so the bound is 40 ms on top of twice the local cost of spawning the same shell. Nagle's
  // algorithm against delayed ACKs would add ~40 ms stalls to every exec.
  const int local_n = 20;
  auto local_start = Clock::now();
  for (int i = 0; i < local_n; ++i) Sh("bash -c true");
  double local_ms = std::chrono::duration<double, std::milli>(Clock::now() - local_start).count() / local_n;
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  const int n = 100;
  auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto r = s->Exec("true");
    ASSERT_TRUE(r.ok()) << r.error();
    ASSERT_TRUE(r->ok());
  }
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count() / n;
  std::cout << "[ SSH exec ] " << ms << " ms/exec over " << n << " execs on one connection (local shell spawn: "
            << local_ms << " ms)" << std::endl;
  EXPECT_LT(ms, 40.0 + 2 * local_ms);
}

TEST_F(SshTest, PathStartsWithTheVmToolsDir) {
  auto s = MustConnect(Ep(1));
  ASSERT_TRUE(s);
  ExecResult r = MustExec(*s, "printf '%s' \"$PATH\"");
  EXPECT_EQ(r.out.rfind(harness_->vms()[1].tools_dir + ":", 0), 0u) << r.out;
}

// ---------- quoting through a real shell ----------

TEST_F(SshTest, HostileValuesArriveLiterally) {
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  const std::vector<std::string> values = {
      "", "plain", "two words", "  lead and trail  ", "it's", "'", "''", "\"double\"", "$(id)",
      "`id`", "$HOME", "${PATH}", "a;rm -rf /tmp/nothing-here", "x && false", "a|b", "line1\nline2\n",
      "tab\there", "back\\slash\\", "*", "?[a]", "~", "#comment", "-n", "--", "ünïcödé ✓ 日本",
      "!event", "a\rb", "%s%d", "'$(echo \"`x`\")'\\"};
  for (const std::string& v : values) {
    ExecResult r = MustExec(*s, "printf '%s' " + ShellQuote(v));
    EXPECT_TRUE(r.ok()) << "value: " << v << " err: " << r.err;
    EXPECT_EQ(r.out, v);
  }
  ExecResult joined = MustExec(*s, ShellJoin({"printf", "[%s]", "a b", "$(x)", "", "c'd"}));
  EXPECT_EQ(joined.out, "[a b][$(x)][][c'd]");
  // A NUL byte cannot be passed to a shell: refused instead of silently cutting the command.
  auto nul = s->Exec("printf '%s' " + ShellQuote(std::string("a\0b", 3)));
  ASSERT_FALSE(nul.ok());
  EXPECT_THAT(nul.error(), HasSubstr("NUL byte"));
}

// ---------- SFTP ----------

TEST_F(SshTest, WriteFileKeepsInodeAndSetsMode) {
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  const std::string path = harness_->vms()[0].root_dir + "/etc/bind-mounted.yaml";
  ExecResult made = MustExec(*s, "printf 'old content that is longer' > " + ShellQuote(path) + " && chmod 644 " +
                                     ShellQuote(path) + " && stat -c %i " + ShellQuote(path));
  ASSERT_TRUE(made.ok()) << made.err;
  Status st = s->WriteFile(path, "new", 0640);
  ASSERT_TRUE(st.ok()) << st.message();
  ExecResult after = MustExec(*s, "stat -c '%i %a' " + ShellQuote(path));
  EXPECT_EQ(after.out, made.out.substr(0, made.out.size() - 1) + " 640\n");
  EXPECT_EQ(ReadLocal(path), "new");
  EXPECT_EQ(s->stats().sftp_writes, 1);

  // A new file gets exactly the mode asked for, whatever the umask.
  const std::string fresh = harness_->vms()[0].root_dir + "/etc/fresh-token";
  ASSERT_TRUE(s->WriteFile(fresh, "secret", 0600).ok());
  EXPECT_EQ(MustExec(*s, "stat -c %a " + ShellQuote(fresh)).out, "600\n");
  ASSERT_TRUE(s->WriteFile(fresh, "", 0755).ok());
  EXPECT_EQ(MustExec(*s, "stat -c '%a %s' " + ShellQuote(fresh)).out, "755 0\n");
}

TEST_F(SshTest, ReadFileReturnsContentAndNamesMissingFiles) {
  auto s = MustConnect(Ep());
  ASSERT_TRUE(s);
  std::string data;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>(i * 7));
  const std::string path = harness_->vms()[0].dir + "/blob.bin";
  ASSERT_TRUE(s->WriteFile(path, data, 0644).ok());
  auto back = s->ReadFile(path);
  ASSERT_TRUE(back.ok()) << back.error();
  EXPECT_TRUE(*back == data);
  auto hosts = s->ReadFile(harness_->vms()[0].hosts_file);
  ASSERT_TRUE(hosts.ok());
  EXPECT_EQ(*hosts, "127.0.0.1 localhost\n");

  auto missing = s->ReadFile("/nonexistent-dir/file");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error(), HasSubstr("/nonexistent-dir/file"));
  EXPECT_THAT(missing.error(), HasSubstr("no such file"));
  EXPECT_THAT(missing.error(), HasSubstr(Ep().ToString()));

  Status bad = s->WriteFile("/nonexistent-dir/file", "x", 0644);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr("does the parent directory of /nonexistent-dir/file exist?"));
  // The session survives SFTP errors.
  EXPECT_TRUE(MustExec(*s, "true").ok());
}

// ---------- host keys ----------

TEST_F(SshTest, UnknownHostKeyIsRefusedWithFingerprintAndKeyscanLine) {
  const std::string dir = MakeTempDir("unknown");
  Endpoint ep = Ep(0);
  ep.known_hosts = dir + "/known_hosts";
  WriteLocal(ep.known_hosts, "# nothing yet\n");
  auto s = Connect(ep);
  ASSERT_FALSE(s.ok());
  const std::string port = std::to_string(ep.port);
  const std::string fp = KeygenFingerprint(harness_->vms()[0].host_key_pub);
  ASSERT_EQ(fp.rfind("SHA256:", 0), 0u);
  EXPECT_THAT(s.error(), HasSubstr(ep.ToString()));
  EXPECT_THAT(s.error(), HasSubstr("host key of 127.0.0.1:" + port + " is not known (ED25519 " + fp + ")"));
  EXPECT_THAT(s.error(), HasSubstr("to trust it run: ssh-keyscan -p " + port + " -t ed25519 127.0.0.1 >> " +
                                   ep.known_hosts + " (or pass --accept-new-host-keys)"));
  // Following the advice works.
  Sh("ssh-keyscan -p " + port + " -t ed25519 127.0.0.1 >> " + ep.known_hosts + " 2>/dev/null");
  auto again = Connect(ep);
  EXPECT_TRUE(again.ok()) << again.error();
  Sh("rm -rf " + dir);
}

TEST_F(SshTest, AcceptNewAppendsTheKey) {
  const std::string dir = MakeTempDir("acceptnew");
  Endpoint ep = Ep(1);
  ep.known_hosts = dir + "/known_hosts";
  WriteLocal(ep.known_hosts, "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl");
  ep.host_keys.accept_new = true;
  auto s = Connect(ep);
  ASSERT_TRUE(s.ok()) << s.error();
  std::string text = ReadLocal(ep.known_hosts);
  std::istringstream pub(ReadLocal(harness_->vms()[1].host_key_pub));
  std::string type, b64;
  pub >> type >> b64;
  EXPECT_THAT(text, HasSubstr("\n[127.0.0.1]:" + std::to_string(ep.port) + " ssh-ed25519 " + b64 + "\n"));
  EXPECT_EQ(text.rfind("[127.0.0.1]:1 ssh-ed25519", 0), 0u);  // the old line is kept
  // Now known: connects without accept_new.
  ep.host_keys.accept_new = false;
  auto again = Connect(ep);
  EXPECT_TRUE(again.ok()) << again.error();
  // A file that does not exist yet is created.
  Endpoint fresh = Ep(2);
  fresh.known_hosts = dir + "/sub-known_hosts";
  fresh.host_keys.accept_new = true;
  ASSERT_TRUE(Connect(fresh).ok());
  EXPECT_THAT(ReadLocal(fresh.known_hosts), HasSubstr("[127.0.0.1]:" + std::to_string(fresh.port) + " ssh-ed25519 "));
  Sh("rm -rf " + dir);
}

TEST_F(SshTest, ChangedHostKeyIsRefusedUnlessInsecure) {
  const std::string dir = MakeTempDir("changed");
  Endpoint ep = Ep(0);
  ep.known_hosts = dir + "/known_hosts";
  // vm1's port with vm2's key: what a re-installed VM (or an attacker) looks like.
  std::istringstream pub(ReadLocal(harness_->vms()[1].host_key_pub));
  std::string type, b64;
  pub >> type >> b64;
  const std::string content = "# header\n[127.0.0.1]:" + std::to_string(ep.port) + " " + type + " " + b64 + "\n";
  WriteLocal(ep.known_hosts, content);
  auto s = Connect(ep);
  ASSERT_FALSE(s.ok());
  const std::string old_fp = KeygenFingerprint(harness_->vms()[1].host_key_pub);
  const std::string new_fp = KeygenFingerprint(harness_->vms()[0].host_key_pub);
  EXPECT_THAT(s.error(), HasSubstr("CHANGED"));
  EXPECT_THAT(s.error(), HasSubstr(ep.known_hosts + " line 2 has ED25519 " + old_fp));
  EXPECT_THAT(s.error(), HasSubstr("the server presented ED25519 " + new_fp));
  EXPECT_THAT(s.error(), HasSubstr("--insecure-ignore-host-keys"));
  EXPECT_THAT(s.error(), HasSubstr(ep.ToString()));

  ep.host_keys.accept_new = true;
  auto with_accept = Connect(ep);
  ASSERT_FALSE(with_accept.ok());
  EXPECT_THAT(with_accept.error(), HasSubstr("CHANGED"));
  EXPECT_EQ(ReadLocal(ep.known_hosts), content);  // never replaced or appended

  ep.host_keys.accept_new = false;
  ep.host_keys.insecure_ignore = true;
  auto insecure = Connect(ep);
  ASSERT_TRUE(insecure.ok()) << insecure.error();
  EXPECT_EQ(MustExec(**insecure, "echo hi").out, "hi\n");
  EXPECT_EQ(ReadLocal(ep.known_hosts), content);
  Sh("rm -rf " + dir);
}

TEST_F(SshTest, RevokedKeyIsRefused) {
  const std::string dir = MakeTempDir("revoked");
  Endpoint ep = Ep(0);
  ep.known_hosts = dir + "/known_hosts";
  std::istringstream pub(ReadLocal(harness_->vms()[0].host_key_pub));
  std::string type, b64;
  pub >> type >> b64;
  WriteLocal(ep.known_hosts, ReadLocal(harness_->known_hosts()) + "@revoked * " + type + " " + b64 + "\n");
  auto s = Connect(ep);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("@revoked"));
  Sh("rm -rf " + dir);
}

TEST_F(SshTest, HashedKnownHostsEntriesWork) {
  const std::string dir = MakeTempDir("hashed");
  const std::string path = dir + "/known_hosts";
  WriteLocal(path, ReadLocal(harness_->known_hosts()));
  Sh("ssh-keygen -H -f " + path + " >/dev/null 2>&1");
  // A line libssh2 cannot parse does not hide the others.
  WriteLocal(path, "not a valid line at all\n" + ReadLocal(path));
  std::string text = ReadLocal(path);
  ASSERT_THAT(text, HasSubstr("|1|"));
  ASSERT_THAT(text, Not(HasSubstr("[127.0.0.1]")));
  for (int i = 0; i < 3; ++i) {
    Endpoint ep = Ep(i);
    ep.known_hosts = path;
    auto s = Connect(ep);
    EXPECT_TRUE(s.ok()) << s.error();
  }
  Sh("rm -rf " + dir);
}

// ---------- authentication ----------

TEST_F(SshTest, WrongClientKeyNamesUserAndHost) {
  const std::string dir = MakeTempDir("wrongkey");
  Sh("ssh-keygen -q -t ed25519 -N '' -f " + dir + "/other >/dev/null");
  Endpoint ep = Ep(0);
  ep.identity_file = dir + "/other";
  auto s = Connect(ep);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr(ep.ToString()));
  EXPECT_THAT(s.error(), HasSubstr("authentication as user '" + ep.user + "' failed"));
  EXPECT_THAT(s.error(), HasSubstr(dir + "/other (ED25519 key refused by the server)"));
  EXPECT_THAT(s.error(), Not(HasSubstr("SHA-1")));

  ep.identity_file = dir + "/missing";
  auto missing = Connect(ep);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error(), HasSubstr("identity file " + dir + "/missing does not exist"));
  Sh("rm -rf " + dir);
}

TEST_F(SshTest, RsaKeyExplainsTheSha1Limitation) {
  const std::string dir = MakeTempDir("rsa");
  Sh("ssh-keygen -q -t rsa -b 2048 -N '' -f " + dir + "/rsa >/dev/null");
  const std::string auth = harness_->dir() + "/authorized_keys";
  const std::string saved = ReadLocal(auth);
  WriteLocal(auth, saved + ReadLocal(dir + "/rsa.pub"));  // the server would accept the key itself
  Endpoint ep = Ep(0);
  ep.identity_file = dir + "/rsa";
  auto s = Connect(ep);
  WriteLocal(auth, saved);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("RSA key refused"));
  EXPECT_THAT(s.error(), HasSubstr("libssh2 1.10 signs RSA keys only with SHA-1"));
  EXPECT_THAT(s.error(), HasSubstr("OpenSSH >= 8.8 refuses: use an ed25519 or ECDSA key"));
  // Without the .pub next to it the type is read from the private key itself.
  Sh("rm " + dir + "/rsa.pub");
  auto s2 = Connect(ep);
  ASSERT_FALSE(s2.ok());
  EXPECT_THAT(s2.error(), HasSubstr("SHA-1"));
  Sh("rm -rf " + dir);
}

TEST_F(SshTest, EncryptedKeyUsesPassphraseFromEnvironment) {
  const std::string dir = MakeTempDir("passphrase");
  Sh("ssh-keygen -q -t ed25519 -N 'correct horse' -f " + dir + "/enc >/dev/null");
  const std::string auth = harness_->dir() + "/authorized_keys";
  const std::string saved = ReadLocal(auth);
  WriteLocal(auth, saved + ReadLocal(dir + "/enc.pub"));
  Sh("rm " + dir + "/enc.pub");  // libssh2 must then decrypt the private key to derive the public one
  Endpoint ep = Ep(0);
  ep.identity_file = dir + "/enc";
  auto without = Connect(ep);
  setenv("ONBOARD_SSH_PASSPHRASE", "wrong", 1);
  auto wrong = Connect(ep);
  setenv("ONBOARD_SSH_PASSPHRASE", "correct horse", 1);
  auto right = Connect(ep);
  unsetenv("ONBOARD_SSH_PASSPHRASE");
  WriteLocal(auth, saved);
  ASSERT_FALSE(without.ok());
  EXPECT_THAT(without.error(), HasSubstr("set ONBOARD_SSH_PASSPHRASE"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.error(), HasSubstr("wrong ONBOARD_SSH_PASSPHRASE?"));
  EXPECT_TRUE(right.ok()) << right.error();
  Sh("rm -rf " + dir);
}

// Runs `body` with HOME pointing at `home` (restored afterwards).
template <class F>
void WithHome(const std::string& home, F body) {
  const char* old = std::getenv("HOME");
  std::string saved = old ? old : "";
  setenv("HOME", home.c_str(), 1);
  body();
  if (old) {
    setenv("HOME", saved.c_str(), 1);
  } else {
    unsetenv("HOME");
  }
}

TEST_F(SshTest, DefaultKeyFilesAndTildePathsAreUsed) {
  const std::string home = MakeTempDir("home");
  Sh("mkdir -m 700 " + home + "/.ssh && cp " + harness_->client_key() + " " + home + "/.ssh/id_ed25519");
  Sh("cp " + harness_->known_hosts() + " " + home + "/.ssh/known_hosts");
  WithHome(home, [&] {
    Endpoint ep = Ep(2);
    ep.identity_file.clear();  // -> ~/.ssh/id_ed25519
    ep.known_hosts.clear();    // -> ~/.ssh/known_hosts
    ep.user.clear();           // -> the current user
    auto s = Connect(ep);
    ASSERT_TRUE(s.ok()) << s.error();
    EXPECT_EQ((*s)->endpoint().user, harness_->vms()[2].user);
    Endpoint tilde = Ep(2);
    tilde.identity_file = "~/.ssh/id_ed25519";
    tilde.known_hosts = "~/.ssh/known_hosts";
    auto t = Connect(tilde);
    EXPECT_TRUE(t.ok()) << t.error();
    Sh("rm " + home + "/.ssh/id_ed25519");
    auto none = Connect(ep);
    ASSERT_FALSE(none.ok());
    EXPECT_THAT(none.error(), HasSubstr("no key to offer"));
  });
  Sh("rm -rf " + home);
}

TEST_F(SshTest, AgentKeysAreTriedFirst) {
  const std::string dir = MakeTempDir("agent");
  const std::string sock = dir + "/agent.sock";
  std::string out = Sh("ssh-agent -a " + sock + " -s");
  size_t at = out.find("SSH_AGENT_PID=");
  ASSERT_NE(at, std::string::npos) << out;
  int agent_pid = std::atoi(out.c_str() + at + std::strlen("SSH_AGENT_PID="));
  ASSERT_GT(agent_pid, 0);
  Sh("SSH_AUTH_SOCK=" + sock + " ssh-add -q " + harness_->client_key() + " 2>/dev/null");
  setenv("SSH_AUTH_SOCK", sock.c_str(), 1);
  WithHome(dir, [&] {  // no key files at all: only the agent can succeed
    Endpoint ep = Ep(0);
    ep.identity_file.clear();
    auto s = Connect(ep);
    EXPECT_TRUE(s.ok()) << s.error();
  });
  // An agent without a fitting key is reported, then the identity file is tried.
  Sh("SSH_AUTH_SOCK=" + sock + " ssh-add -q -D 2>/dev/null");
  Sh("ssh-keygen -q -t ed25519 -N '' -f " + dir + "/other >/dev/null && SSH_AUTH_SOCK=" + sock + " ssh-add -q " +
     dir + "/other 2>/dev/null");
  Endpoint ep = Ep(0);
  auto with_file = Connect(ep);
  EXPECT_TRUE(with_file.ok()) << with_file.error();
  ep.identity_file = dir + "/other";
  auto refused = Connect(ep);
  unsetenv("SSH_AUTH_SOCK");
  kill(agent_pid, SIGTERM);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error(), HasSubstr("ssh-agent (1 key(s) refused)"));
  Sh("rm -rf " + dir);
}

TEST_F(SshTest, PlainHostEntryDoesNotCoverOtherPorts) {
  // OpenSSH semantics: "127.0.0.1 KEY" is for port 22 only; for another port it is not a
  // mismatch, the key is simply not known.
  const std::string dir = MakeTempDir("plainhost");
  Endpoint ep = Ep(0);
  ep.known_hosts = dir + "/known_hosts";
  std::istringstream pub(ReadLocal(harness_->vms()[1].host_key_pub));
  std::string type, b64;
  pub >> type >> b64;
  WriteLocal(ep.known_hosts, "127.0.0.1 " + type + " " + b64 + "\n");
  auto s = Connect(ep);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("is not known"));
  Sh("rm -rf " + dir);
}

// ---------- connection failures ----------

int ListenSocket(int backlog, int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(listen(fd, backlog), 0);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

TEST_F(SshTest, RefusedPortFailsFastAndClearly) {
  int port = 0;
  int fd = ListenSocket(1, &port);
  close(fd);  // nothing listens there now
  Endpoint ep = Ep(0);
  ep.port = port;
  auto start = Clock::now();
  auto s = Connect(ep);
  ASSERT_FALSE(s.ok());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_THAT(s.error(), HasSubstr(ep.ToString()));
  EXPECT_THAT(s.error(), HasSubstr("Connection refused"));
  EXPECT_THAT(s.error(), HasSubstr("listening on port " + std::to_string(port)));
}

TEST_F(SshTest, SilentServerTimesOutInTheHandshake) {
  int port = 0;
  int fd = ListenSocket(16, &port);  // accepts TCP (kernel backlog) but never speaks
  Endpoint ep = Ep(0);
  ep.port = port;
  ep.connect_timeout_seconds = 1;
  auto start = Clock::now();
  auto s = Connect(ep);
  auto took = Clock::now() - start;
  close(fd);
  ASSERT_FALSE(s.ok());
  EXPECT_LT(took, std::chrono::seconds(4));
  EXPECT_THAT(s.error(), HasSubstr("SSH handshake timed out after 1 s"));
  EXPECT_THAT(s.error(), HasSubstr(ep.ToString()));
}

TEST_F(SshTest, NonSshServerIsNamed) {
  int port = 0;
  int fd = ListenSocket(16, &port);
  std::thread server([fd] {
    int c = accept(fd, nullptr, nullptr);
    if (c >= 0) {
      const char reply[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
      (void)!write(c, reply, sizeof reply - 1);
      close(c);
    }
  });
  Endpoint ep = Ep(0);
  ep.port = port;
  ep.connect_timeout_seconds = 2;
  auto s = Connect(ep);
  server.join();
  close(fd);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr(ep.ToString()));
  EXPECT_THAT(s.error(), HasSubstr("handshake"));
}

TEST_F(SshTest, UnresolvableHostIsNamed) {
  Endpoint ep = Ep(0);
  ep.host = "no-such-host.invalid";
  auto s = Connect(ep);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("cannot resolve host 'no-such-host.invalid'"));
}

// Kills the VM while a command runs: the Exec fails with a clear error instead of hanging, the
// session then fails fast, and after a restart a new connection works.
TEST(SshKillTest, SshdKilledMidExecFailsClearly) {
  unsetenv("SSH_AUTH_SOCK");
  const std::string dir = MakeTempDir("kill");
  HarnessOptions o;
  o.dir = dir;
  o.count = 1;
  auto h = VmHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.error();
  VmHarness& harness = **h;
  Endpoint ep;
  ep.host = harness.vms()[0].host;
  ep.port = harness.vms()[0].port;
  ep.user = harness.vms()[0].user;
  ep.identity_file = harness.client_key();
  ep.known_hosts = harness.known_hosts();
  auto s = Connect(ep);
  ASSERT_TRUE(s.ok()) << s.error();
  Session& session = **s;
  std::atomic<bool> started{false};
  Result<ExecResult> result = Status::Error("not run");
  auto begin = Clock::now();
  std::thread runner([&] {
    started = true;
    result = session.Exec("sleep 5; echo finished");
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(harness.Kill(0).ok());
  runner.join();
  auto took = Clock::now() - begin;
  ASSERT_FALSE(result.ok()) << "output: " << result->out;
  EXPECT_LT(took, std::chrono::milliseconds(4500));
  EXPECT_THAT(result.error(), HasSubstr(ep.ToString()));
  EXPECT_THAT(result.error(), HasSubstr("running `sleep`"));
  EXPECT_THAT(result.error(), HasSubstr("connection lost"));

  auto later = session.Exec("true");
  ASSERT_FALSE(later.ok());
  EXPECT_THAT(later.error(), HasSubstr("lost earlier"));
  EXPECT_FALSE(session.WriteFile(harness.vms()[0].dir + "/x", "x", 0644).ok());

  auto refused = Connect(ep);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error(), HasSubstr("Connection refused"));

  ASSERT_TRUE(harness.Restart(0).ok());
  EXPECT_EQ(harness.vms()[0].port, ep.port);
  auto again = Connect(ep);  // same port, same host key: known_hosts still matches
  ASSERT_TRUE(again.ok()) << again.error();
  auto r = (*again)->Exec("echo back");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "back\n");
  h = Status::Error("done");
  Sh("rm -rf " + dir);
}

// A VM that hangs (sshd and its sessions stopped, TCP still open): keepalives find out.
TEST(SshKillTest, HungVmIsDetectedByKeepalives) {
  unsetenv("SSH_AUTH_SOCK");
  const std::string dir = MakeTempDir("hung");
  HarnessOptions o;
  o.dir = dir;
  o.count = 1;
  auto h = VmHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.error();
  VmHarness& harness = **h;
  Endpoint ep;
  ep.host = harness.vms()[0].host;
  ep.port = harness.vms()[0].port;
  ep.user = harness.vms()[0].user;
  ep.identity_file = harness.client_key();
  ep.known_hosts = harness.known_hosts();
  ep.connect_timeout_seconds = 10;
  ep.alive_interval_seconds = 2;
  ep.alive_count_max = 2;
  auto s = Connect(ep);
  ASSERT_TRUE(s.ok()) << s.error();
  // A command that is silent for longer than the keepalive window is fine while the VM answers.
  auto quiet = (*s)->Exec("sleep 6; echo awake");
  ASSERT_TRUE(quiet.ok()) << quiet.error();
  EXPECT_EQ(quiet->out, "awake\n");

  Result<ExecResult> result = Status::Error("not run");
  auto begin = Clock::now();
  std::thread runner([&] { result = (*s)->Exec("sleep 20"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(harness.Pause(0).ok());
  runner.join();
  auto took = Clock::now() - begin;
  ASSERT_FALSE(result.ok());
  EXPECT_LT(took, std::chrono::seconds(12));
  EXPECT_THAT(result.error(), HasSubstr(ep.ToString()));
  EXPECT_THAT(result.error(), HasSubstr("no answer from the server for 4 s"));

  // New connections to the hung VM time out in the handshake.
  Endpoint quick = ep;
  quick.connect_timeout_seconds = 1;
  auto again = Connect(quick);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.error(), HasSubstr("SSH handshake timed out after 1 s"));
  ASSERT_TRUE(harness.Resume(0).ok());
  auto after = Connect(ep);
  EXPECT_TRUE(after.ok()) << after.error();
  h = Status::Error("done");
  Sh("rm -rf " + dir);
}

// ---------- pool ----------

TEST_F(SshTest, PoolConnectsOncePerVmAcrossThreads) {
  ConnectionPool pool;
  std::vector<std::shared_ptr<Session>> got(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto s = pool.Get(Ep(t % 2));
      if (s.ok()) got[t] = *s;
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < 8; ++t) ASSERT_TRUE(got[t]) << "thread " << t;
  for (int t = 2; t < 8; ++t) EXPECT_EQ(got[t].get(), got[t % 2].get());
  EXPECT_NE(got[0].get(), got[1].get());
  EXPECT_EQ(pool.connect_attempts(), 2);
  EXPECT_EQ(got[0]->stats().connects, 1);

  // One session used from several threads at once: calls are serialised, results stay separate.
  threads.clear();
  std::atomic<int> good{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 10; ++k) {
        std::string v = std::to_string(t) + "-" + std::to_string(k);
        auto r = got[0]->Exec("printf '%s' " + ShellQuote(v));
        if (r.ok() && r->out == v) ++good;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 60);
  EXPECT_EQ(got[0]->stats().execs, 60);
}

TEST_F(SshTest, PoolRemembersFailuresUntilForgotten) {
  int port = 0;
  close(ListenSocket(1, &port));
  Endpoint ep = Ep(0);
  ep.port = port;
  ConnectionPool pool;
  auto a = pool.Get(ep);
  auto b = pool.Get(ep);
  ASSERT_FALSE(a.ok());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(a.error(), b.error());
  EXPECT_EQ(pool.connect_attempts(), 1);
  pool.Forget(ep);
  EXPECT_FALSE(pool.Get(ep).ok());
  EXPECT_EQ(pool.connect_attempts(), 2);
}

// ---------- harness ----------

TEST_F(SshTest, HarnessLaysOutVms) {
  const auto& vms = harness_->vms();
  ASSERT_EQ(vms.size(), 3u);
  std::string known = ReadLocal(harness_->known_hosts());
  for (size_t i = 0; i < vms.size(); ++i) {
    EXPECT_EQ(vms[i].name, "vm" + std::to_string(i + 1));
    EXPECT_EQ(vms[i].root_dir, *dir_ + "/vm" + std::to_string(i + 1) + "/root");
    EXPECT_EQ(vms[i].config_dir, vms[i].root_dir + "/etc/istio-proxy");
    EXPECT_EQ(ReadLocal(vms[i].hosts_file), "127.0.0.1 localhost\n");
    EXPECT_GT(vms[i].pid, 0);
    EXPECT_THAT(known, HasSubstr("[127.0.0.1]:" + std::to_string(vms[i].port) + " ssh-ed25519 "));
    for (size_t j = 0; j < i; ++j) EXPECT_NE(vms[i].port, vms[j].port);
  }
}

TEST(VmHarnessTest, InstallsDockerStandInAndWritesJson) {
  unsetenv("SSH_AUTH_SOCK");
  const std::string dir = MakeTempDir("docker");
  WriteLocal(dir + "/fake-docker", "#!/bin/sh\necho \"fake docker: $*\"\n");
  HarnessOptions o;
  o.dir = dir + "/vms";
  o.count = 2;
  o.docker_script = dir + "/fake-docker";
  auto h = VmHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.error();
  ASSERT_TRUE(sandbox::WriteVmsJson(**h, dir + "/vms.json").ok());
  std::string json = ReadLocal(dir + "/vms.json");
  EXPECT_THAT(json, HasSubstr("\"client_key\": \"" + (*h)->client_key() + "\""));
  EXPECT_THAT(json, HasSubstr("\"port\": " + std::to_string((*h)->vms()[1].port)));
  for (int i = 0; i < 2; ++i) {
    const auto& vm = (*h)->vms()[i];
    Endpoint ep;
    ep.host = vm.host;
    ep.port = vm.port;
    ep.user = vm.user;
    ep.identity_file = (*h)->client_key();
    ep.known_hosts = (*h)->known_hosts();
    auto s = Connect(ep);
    ASSERT_TRUE(s.ok()) << s.error();
    auto r = (*s)->Exec("docker ps -a");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->out, "fake docker: ps -a\n");
  }
  pid_t pid = (*h)->vms()[0].pid;
  h = Status::Error("stopped");
  EXPECT_NE(kill(pid, 0), 0);  // the destructor stopped sshd
  Sh("rm -rf " + dir);
}

TEST(VmHarnessTest, BadOptionsAreReported) {
  HarnessOptions o;
  o.dir = "";
  EXPECT_THAT(VmHarness::Start(o).error(), HasSubstr("no directory"));
  o.dir = "/tmp/onboard-unused";
  o.count = 0;
  EXPECT_THAT(VmHarness::Start(o).error(), HasSubstr("out of range"));
  o.count = 1;
  o.sshd_path = "/nonexistent/sshd";
  EXPECT_THAT(VmHarness::Start(o).error(), HasSubstr("/nonexistent/sshd is not executable"));
}

// ---------- the onboard-sandbox-vms CLI ----------

// Runs the CLI (optionally as another user through runuser) and waits for DIR/ready.
struct Cli {
  pid_t pid = -1;
  std::string dir;
  nlohmann::json vms;
};

Cli StartCli(const std::string& dir, int count, const std::string& as_user = "",
             const std::string& binary = ONBOARD_SANDBOX_VMS_BIN) {
  Cli cli;
  cli.dir = dir;
  std::vector<std::string> argv;
  if (!as_user.empty()) argv = {"runuser", "-u", as_user, "--"};
  for (const std::string& a : {binary, std::string("--dir"), dir, std::string("--count"),
                              std::to_string(count)}) {
    argv.push_back(a);
  }
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  cli.pid = fork();
  if (cli.pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    execvp(args[0], args.data());
    _exit(127);
  }
  for (int i = 0; i < 300 && access((dir + "/ready").c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string text = ReadLocal(dir + "/vms.json");
  if (!text.empty()) cli.vms = nlohmann::json::parse(text, nullptr, false);
  return cli;
}

int StopCli(const Cli& cli) {
  // DIR/ready holds the CLI's own PID (under runuser, cli.pid is runuser's).
  pid_t target = static_cast<pid_t>(std::atoi(ReadLocal(cli.dir + "/ready").c_str()));
  kill(target > 0 ? target : cli.pid, SIGTERM);
  int status = 0;
  waitpid(cli.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void ConnectToCliVms(const Cli& cli) {
  ASSERT_TRUE(cli.vms.is_object()) << "no vms.json in " << cli.dir;
  for (const auto& vm : cli.vms["vms"]) {
    Endpoint ep;
    ep.host = vm["host"];
    ep.port = vm["port"];
    ep.user = vm["user"];
    ep.identity_file = cli.vms["client_key"];
    ep.known_hosts = cli.vms["known_hosts"];
    auto s = Connect(ep);
    ASSERT_TRUE(s.ok()) << s.error();
    auto r = (*s)->Exec("id -un; printf '%s' \"$HOME\"");
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->out, vm["user"].get<std::string>() + "\n" + vm["home_dir"].get<std::string>());
  }
}

TEST(SandboxCliTest, StartsVmsWritesJsonAndStopsOnSigterm) {
  unsetenv("SSH_AUTH_SOCK");
  const std::string dir = MakeTempDir("cli");
  Cli cli = StartCli(dir + "/vms", 2);
  ASSERT_TRUE(cli.vms.is_object());
  ASSERT_EQ(cli.vms["vms"].size(), 2u);
  ConnectToCliVms(cli);
  std::vector<pid_t> sshd;
  for (const auto& vm : cli.vms["vms"]) sshd.push_back(vm["pid"].get<pid_t>());
  EXPECT_EQ(StopCli(cli), 0);
  for (pid_t p : sshd) EXPECT_NE(kill(p, 0), 0) << "sshd " << p << " still running";
  EXPECT_NE(access((dir + "/vms/ready").c_str(), F_OK), 0);
}

TEST(SandboxCliTest, RejectsBadArguments) {
  std::string out = Sh(std::string(ONBOARD_SANDBOX_VMS_BIN) + " --count zero --dir /tmp/x 2>&1; echo \"rc=$?\"");
  EXPECT_THAT(out, HasSubstr("--count must be a number in 1..200"));
  EXPECT_THAT(out, HasSubstr("rc=2"));
  out = Sh(std::string(ONBOARD_SANDBOX_VMS_BIN) + " --count 1 2>&1; echo \"rc=$?\"");
  EXPECT_THAT(out, HasSubstr("--dir is required"));
  EXPECT_THAT(out, HasSubstr("rc=2"));
}

// sshd as an ordinary user logs in that user only; needs root to switch to such a user.
TEST(SandboxCliTest, WorksAsAnOrdinaryUser) {
  if (geteuid() != 0) GTEST_SKIP() << "already an ordinary user: covered by the other tests";
  std::string user;
  setpwent();
  while (struct passwd* pw = getpwent()) {
    std::string shell = pw->pw_shell ? pw->pw_shell : "";
    if (pw->pw_uid >= 1000 && pw->pw_uid < 60000 && shell.find("nologin") == std::string::npos &&
        shell.find("false") == std::string::npos && access(shell.c_str(), X_OK) == 0) {
      user = pw->pw_name;
      break;
    }
  }
  endpwent();
  if (user.empty()) GTEST_SKIP() << "no ordinary user with a login shell on this machine";
  if (Sh("command -v runuser || true").empty()) GTEST_SKIP() << "runuser is not installed";
  unsetenv("SSH_AUTH_SOCK");
  const std::string dir = MakeTempDir("nonroot");
  struct passwd* pw = getpwnam(user.c_str());
  ASSERT_EQ(chown(dir.c_str(), pw->pw_uid, pw->pw_gid), 0);
  // The build tree may sit below a directory that user cannot enter (a 0700 checkout): run a copy.
  const std::string bin = dir + "/onboard-sandbox-vms";
  ASSERT_EQ(Sh("cp " + std::string(ONBOARD_SANDBOX_VMS_BIN) + " " + bin + " && chmod 0755 " + bin + " && echo ok"),
            "ok\n");
  Cli cli = StartCli(dir + "/vms", 1, user, bin);
  ASSERT_TRUE(cli.vms.is_object()) << "the CLI did not start as " << user;
  EXPECT_EQ(cli.vms["vms"][0]["user"], user);
  // The client key belongs to that user (mode 0600); root may read it anyway.
  ConnectToCliVms(cli);
  pid_t sshd = cli.vms["vms"][0]["pid"].get<pid_t>();
  EXPECT_EQ(StopCli(cli), 0);
  EXPECT_NE(kill(sshd, 0), 0) << "sshd " << sshd << " still running";
}

}  // namespace
}  // namespace onboard::ssh
