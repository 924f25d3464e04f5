// Unit tests of kubeconfig resolution and credentials (providers/kubernetes/kubeconfig.h).
#include "providers/kubernetes/kubeconfig.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace onboard::k8s {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/k8s_kubeconfig_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& body, mode_t mode = 0644) const {
    std::string p = path_ + "/" + name;
    std::string dir = p.substr(0, p.rfind('/'));
    std::system(("mkdir -p '" + dir + "'").c_str());
    std::ofstream(p) << body;
    chmod(p.c_str(), mode);
    return p;
  }
  std::string Read(const std::string& name) const {
    std::ifstream in(path_ + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string path_;
};

// An environment for LoadKubeConfig without touching the process's.
struct Env {
  std::map<std::string, std::string> vars;
  std::function<std::optional<std::string>(const std::string&)> Fn() const {
    return [v = vars](const std::string& k) -> std::optional<std::string> {
      auto it = v.find(k);
      if (it == v.end()) return std::nullopt;
      return it->second;
    };
  }
};

const char* kFileA = R"(apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c1
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: UEVNLUEK
contexts:
- name: a
  context: {cluster: c1, user: u1, namespace: team-a}
users:
- name: u1
  user: {token: token-a}
)";

const char* kFileB = R"(apiVersion: v1
kind: Config
current-context: b
clusters:
- name: c1
  cluster: {server: "https://ignored.example:1"}
- name: c2
  cluster:
    server: https://127.0.0.2:7443
    certificate-authority: certs/ca.pem
    tls-server-name: api.internal
contexts:
- name: a
  context: {cluster: c2, user: u2}
- name: b
  context: {cluster: c2, user: u2}
users:
- name: u1
  user: {token: ignored}
- name: u2
  user:
    tokenFile: secrets/token
    client-certificate: certs/client.pem
    client-key-data: S0VZLUIK
)";

TEST(KubeConfig, MergesKubeconfigListFirstFileWins) {
  TempDir d;
  std::string a = d.Write("a/config", kFileA);
  std::string b = d.Write("b/config", kFileB);
  d.Write("b/certs/ca.pem", "PEM-B\n");
  d.Write("b/certs/client.pem", "CERT-B\n");
  d.Write("b/secrets/token", "token-b\n");
  Env env{{{"KUBECONFIG", a + ":" + d.path() + "/missing:" + b}, {"HOME", d.path()}}};
  KubeConfigOptions o;
  o.getenv = env.Fn();
  auto cfg = LoadKubeConfig(o);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  EXPECT_EQ(cfg->files, (std::vector<std::string>{a, b}));
  EXPECT_EQ(cfg->context, "a");  // current-context of the first file that sets one
  EXPECT_EQ(cfg->ns, "team-a");
  EXPECT_EQ(cfg->cluster_name, "c1");
  EXPECT_EQ(cfg->server, "https://127.0.0.1:6443");  // c1 from the first file; trailing '/' dropped
  EXPECT_EQ(cfg->ca_pem, "PEM-A\n");
  EXPECT_THAT(cfg->ca_source, HasSubstr("certificate-authority-data"));
  EXPECT_EQ(cfg->token, "token-a");  // u1 from the first file

  // The second file's context, cluster and user, with paths relative to the second file.
  o.context = "b";
  cfg = LoadKubeConfig(o);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  EXPECT_EQ(cfg->server, "https://127.0.0.2:7443");
  EXPECT_EQ(cfg->tls_server_name, "api.internal");
  EXPECT_EQ(cfg->ca_pem, "PEM-B\n");
  EXPECT_THAT(cfg->ca_source, HasSubstr(d.path() + "/b/certs/ca.pem"));
  EXPECT_EQ(cfg->token_file, d.path() + "/b/secrets/token");
  EXPECT_EQ(cfg->client_cert_pem, "CERT-B\n");
  EXPECT_EQ(cfg->client_key_pem, "KEY-B\n");
  CredentialSource creds(*cfg);
  auto c = creds.Get();
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->token, "token-b");  // tokenFile read, newline trimmed
  d.Write("b/secrets/token", "token-b2\n");
  EXPECT_EQ(creds.Get()->token, "token-b2");  // re-read on use
}

TEST(KubeConfig, ExplicitPathBeatsEnvironmentAndHomeIsTheFallback) {
  TempDir d;
  std::string a = d.Write("a/config", kFileA);
  std::string b = d.Write("b/config", kFileB);
  d.Write("b/certs/ca.pem", "PEM-B\n");
  d.Write("b/certs/client.pem", "CERT-B\n");
  d.Write("b/secrets/token", "token-b\n");
  Env env{{{"KUBECONFIG", a}, {"HOME", d.path()}}};
  KubeConfigOptions o;
  o.getenv = env.Fn();
  o.path = b;
  auto cfg = LoadKubeConfig(o);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  EXPECT_EQ(cfg->context, "b");
  EXPECT_EQ(cfg->files, std::vector<std::string>{b});

  d.Write(".kube/config", kFileA);
  Env home{{{"HOME", d.path()}}};
  KubeConfigOptions o2;
  o2.getenv = home.Fn();
  cfg = LoadKubeConfig(o2);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  EXPECT_EQ(cfg->files, std::vector<std::string>{d.path() + "/.kube/config"});
  EXPECT_EQ(cfg->context, "a");

  Env empty{{{"HOME", d.path() + "/nowhere"}}};
  KubeConfigOptions o3;
  o3.getenv = empty.Fn();
  cfg = LoadKubeConfig(o3);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr(d.path() + "/nowhere/.kube/config"));
  EXPECT_THAT(cfg.error(), HasSubstr("KUBECONFIG"));
}

TEST(KubeConfig, ErrorsNameFileContextAndField) {
  TempDir d;
  Env env{{{"HOME", d.path()}}};
  KubeConfigOptions o;
  o.getenv = env.Fn();

  o.path = d.Write("c1", kFileA);
  o.context = "prod";
  auto cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr(o.path));
  EXPECT_THAT(cfg.error(), HasSubstr("context \"prod\" not found"));
  EXPECT_THAT(cfg.error(), HasSubstr("contexts: a"));
  o.context.clear();

  o.path = d.Write("c2", R"(current-context: x
contexts: [{name: x, context: {cluster: nope, user: u}}]
clusters: []
users: [{name: u, user: {token: t}}]
)");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr(o.path));
  EXPECT_THAT(cfg.error(), HasSubstr("context \"x\""));
  EXPECT_THAT(cfg.error(), HasSubstr("context.cluster"));

  o.path = d.Write("c3", R"(current-context: x
contexts: [{name: x, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "https://h:1", certificate-authority-data: "!!notbase64"}}]
users: [{name: u, user: {token: t}}]
)");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr(o.path));
  EXPECT_THAT(cfg.error(), HasSubstr("context \"x\""));
  EXPECT_THAT(cfg.error(), HasSubstr("cluster.certificate-authority-data"));

  o.path = d.Write("c4", R"(current-context: x
contexts: [{name: x, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "https://h:1"}}]
users: [{name: u, user: {client-certificate: missing.pem, client-key: missing.key}}]
)");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr("user \"u\""));
  EXPECT_THAT(cfg.error(), HasSubstr("user.client-certificate " + d.path() + "/missing.pem"));

  o.path = d.Write("c5", R"(contexts: [{name: x, context: {cluster: c}}]
clusters: [{name: c, cluster: {server: "https://h:1"}}]
)");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr("no current-context"));
  EXPECT_THAT(cfg.error(), HasSubstr("--context"));

  o.path = d.Write("c6", R"(current-context: x
contexts: [{name: x, context: {cluster: c}}]
clusters: [{name: c, cluster: {certificate-authority-data: UEVNCg==}}]
)");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr("cluster.server is empty"));

  o.path = d.Write("c7", R"(current-context: x
contexts: [{name: x, context: {cluster: c}}]
clusters: [{name: c, cluster: {server: "https://h:1", insecure-skip-tls-verify: true, certificate-authority-data: UEVNCg==}}]
)");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr("insecure-skip-tls-verify"));

  o.path = d.Write("c8", "clusters: [unclosed\n");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr(o.path + ":"));
  EXPECT_THAT(cfg.error(), HasSubstr("invalid YAML"));

  o.path = d.path() + "/does-not-exist";
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr(o.path));
}

TEST(KubeConfig, InsecureIsHonoured) {
  TempDir d;
  KubeConfigOptions o;
  o.path = d.Write("c", R"(current-context: x
contexts: [{name: x, context: {cluster: c}}]
clusters: [{name: c, cluster: {server: "https://h:1", insecure-skip-tls-verify: true}}]
)");
  auto cfg = LoadKubeConfig(o);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  EXPECT_TRUE(cfg->insecure);
  EXPECT_TRUE(cfg->ca_pem.empty());
  EXPECT_TRUE(cfg->user_name.empty());
}

// An exec plugin script: counts its runs, records its environment, prints `output`.
std::string PluginScript(const TempDir& d, const std::string& output_file) {
  return d.Write("bin/plugin.sh",
                 "#!/bin/sh\n"
                 "echo run >> \"" + d.path() + "/runs\"\n"
                 "printf '%s' \"$KUBERNETES_EXEC_INFO\" > \"" + d.path() + "/exec_info\"\n"
                 "echo \"$PLUGIN_GREETING $*\" > \"" + d.path() + "/args\"\n"
                 "if [ -f \"" + d.path() + "/fail\" ]; then echo 'plugin says: login required' >&2; exit 3; fi\n"
                 "cat \"" + output_file + "\"\n",
                 0755);
}

int Runs(const TempDir& d) {
  std::string r = d.Read("runs");
  int n = 0;
  for (char c : r) n += c == '\n';
  return n;
}

TEST(KubeConfig, ExecPluginV1TokenCachedUntilExpiry) {
  TempDir d;
  PluginScript(d, d.path() + "/out.json");
  d.Write("out.json", R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",
    "status":{"token":"exec-token-1","expirationTimestamp":"2030-01-01T00:10:00Z"}})");
  KubeConfigOptions o;
  o.path = d.Write("kube/config", R"(current-context: x
contexts: [{name: x, context: {cluster: c, user: e}}]
clusters: [{name: c, cluster: {server: "https://h:1", certificate-authority-data: UEVNCg==}}]
users:
- name: e
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ../bin/plugin.sh
      args: [get-token, --cluster, c]
      env: [{name: PLUGIN_GREETING, value: hello}]
      interactiveMode: Never
      provideClusterInfo: true
)");
  auto cfg = LoadKubeConfig(o);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  ASSERT_TRUE(cfg->exec.has_value());
  EXPECT_EQ(cfg->exec->command, d.path() + "/kube/../bin/plugin.sh");  // relative to the kubeconfig

  int64_t now = 0;
  ASSERT_TRUE(ParseTime("2030-01-01T00:00:00Z", &now));
  CredentialSource creds(*cfg, [&now] { return now; });
  auto c = creds.Get();
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->token, "exec-token-1");
  EXPECT_EQ(d.Read("args"), "hello get-token --cluster c\n");
  auto info = nlohmann::json::parse(d.Read("exec_info"));
  EXPECT_EQ(info["apiVersion"], "client.authentication.k8s.io/v1");
  EXPECT_EQ(info["kind"], "ExecCredential");
  EXPECT_EQ(info["spec"]["interactive"], false);
  EXPECT_EQ(info["spec"]["cluster"]["server"], "https://h:1");
  EXPECT_EQ(info["spec"]["cluster"]["certificate-authority-data"], "UEVNCg==");

  // Cached until expiry.
  now += 300;
  EXPECT_EQ(creds.Get()->token, "exec-token-1");
  EXPECT_EQ(Runs(d), 1);
  EXPECT_EQ(creds.exec_runs(), 1);
  // Expired: run again.
  d.Write("out.json", R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",
    "status":{"token":"exec-token-2","expirationTimestamp":"2030-01-01T01:00:00Z"}})");
  now += 301;
  EXPECT_EQ(creds.Get()->token, "exec-token-2");
  EXPECT_EQ(Runs(d), 2);
  // Invalidate (a 401) forces another run.
  EXPECT_TRUE(creds.Invalidate());
  EXPECT_EQ(creds.Get()->token, "exec-token-2");
  EXPECT_EQ(Runs(d), 3);

  // A failing plugin: the error names the kubeconfig, context, user and shows its stderr.
  d.Write("fail", "");
  creds.Invalidate();
  auto bad = creds.Get();
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error(), HasSubstr(o.path));
  EXPECT_THAT(bad.error(), HasSubstr("context \"x\""));
  EXPECT_THAT(bad.error(), HasSubstr("user \"e\""));
  EXPECT_THAT(bad.error(), HasSubstr("exit code 3"));
  EXPECT_THAT(bad.error(), HasSubstr("login required"));
}

TEST(KubeConfig, ExecPluginV1beta1ClientCertificate) {
  TempDir d;
  PluginScript(d, d.path() + "/out.json");
  d.Write("out.json", R"({"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential",
    "status":{"clientCertificateData":"CERT","clientKeyData":"KEY"}})");
  KubeConfigOptions o;
  o.path = d.Write("config", "current-context: x\n"
                             "contexts: [{name: x, context: {cluster: c, user: e}}]\n"
                             "clusters: [{name: c, cluster: {server: \"https://h:1\"}}]\n"
                             "users:\n- name: e\n  user:\n    exec:\n"
                             "      apiVersion: client.authentication.k8s.io/v1beta1\n"
                             "      command: " + d.path() + "/bin/plugin.sh\n");
  auto cfg = LoadKubeConfig(o);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  CredentialSource creds(*cfg);
  auto c = creds.Get();
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->cert_pem, "CERT");
  EXPECT_EQ(c->key_pem, "KEY");
  EXPECT_TRUE(c->token.empty());
  auto info = nlohmann::json::parse(d.Read("exec_info"));
  EXPECT_EQ(info["apiVersion"], "client.authentication.k8s.io/v1beta1");
  EXPECT_FALSE(info["spec"].contains("cluster"));  // provideClusterInfo not set
  // No expiry: cached for good.
  creds.Get();
  EXPECT_EQ(Runs(d), 1);

  // A wrong apiVersion in the output is refused, without echoing the output.
  d.Write("out.json", R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",
    "status":{"token":"secret-value"}})");
  creds.Invalidate();
  auto bad = creds.Get();
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error(), HasSubstr("apiVersion"));
  EXPECT_THAT(bad.error(), Not(HasSubstr("secret-value")));
}

TEST(KubeConfig, ExecPluginConfigErrors) {
  TempDir d;
  KubeConfigOptions o;
  std::string head = "current-context: x\n"
                     "contexts: [{name: x, context: {cluster: c, user: e}}]\n"
                     "clusters: [{name: c, cluster: {server: \"https://h:1\"}}]\n"
                     "users:\n- name: e\n  user:\n    exec:\n";
  o.path = d.Write("v1", head + "      apiVersion: client.authentication.k8s.io/v1\n      command: x\n");
  auto cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr(o.path));
  EXPECT_THAT(cfg.error(), HasSubstr("user.exec.interactiveMode"));

  o.path = d.Write("v0", head + "      apiVersion: client.authentication.k8s.io/v1alpha1\n      command: x\n");
  cfg = LoadKubeConfig(o);
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.error(), HasSubstr("user.exec.apiVersion"));

  o.path = d.Write("missing", head +
                                  "      apiVersion: client.authentication.k8s.io/v1beta1\n"
                                  "      command: no-such-plugin-anywhere\n"
                                  "      installHint: install it with the package manager\n");
  cfg = LoadKubeConfig(o);
  ASSERT_TRUE(cfg.ok()) << cfg.error();
  CredentialSource creds(*cfg);
  auto c = creds.Get();
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(), HasSubstr("no-such-plugin-anywhere"));
  EXPECT_THAT(c.error(), HasSubstr("install it with the package manager"));
}

TEST(KubeConfig, Helpers) {
  EXPECT_EQ(*Base64Decode("aGVsbG8gd29ybGQ="), "hello world");
  EXPECT_EQ(Base64Encode("hello world"), "aGVsbG8gd29ybGQ=");
  EXPECT_EQ(Base64Encode("ab"), "YWI=");
  EXPECT_FALSE(Base64Decode("a*b").ok());
  int64_t t = 0;
  ASSERT_TRUE(ParseTime("1970-01-02T00:00:01Z", &t));
  EXPECT_EQ(t, 86401);
  ASSERT_TRUE(ParseTime("1970-01-02T01:00:01.123+01:00", &t));
  EXPECT_EQ(t, 86401);
  EXPECT_FALSE(ParseTime("yesterday", &t));
  EXPECT_EQ(FormatTime(86401), "1970-01-02T00:00:01Z");
  auto j = YamlToJson("a: 1\nb: '1'\nc: true\nd: [x, 2.5]\ne: ~\nf: {g: h}\n", "test");
  ASSERT_TRUE(j.ok()) << j.error();
  EXPECT_EQ(*j, nlohmann::json::parse(R"({"a":1,"b":"1","c":true,"d":["x",2.5],"e":null,"f":{"g":"h"}})"));
  auto bad = YamlToJson("a: [", "ConfigMap x");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error(), HasSubstr("ConfigMap x:"));
}

}  // namespace
}  // namespace onboard::k8s
