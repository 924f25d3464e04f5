// Kubeconfig resolution as kubectl does it, and the credentials it describes
// (static token, token file, client certificate, exec credential plugins).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/clock.h"
#include "engine/encoding.h"
#include "engine/status.h"

namespace onboard::k8s {

// users[].user.exec (client.authentication.k8s.io/v1 or v1beta1).
struct ExecPlugin {
  std::string api_version;  // "client.authentication.k8s.io/v1" | ".../v1beta1"
  std::string command;      // resolved: relative paths with a '/' are made absolute
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;
  std::string interactive_mode;  // "Never" | "IfAvailable" | "Always" ("" on v1beta1: IfAvailable)
  bool provide_cluster_info = false;
  std::string install_hint;
};

// The selected context, fully resolved: file contents read, base64 decoded.
struct KubeConfig {
  std::vector<std::string> files;  // the files merged, in precedence order
  std::string context;             // selected context name
  std::string ns;                  // the context's namespace ("" when unset)

  std::string cluster_name;
  std::string cluster_file;  // the file that defined the cluster
  std::string server;        // https://host:port (no trailing '/')
  std::string ca_pem;        // CA bundle (PEM) from certificate-authority(-data); "" = system CAs
  std::string ca_source;     // human description of where ca_pem came from
  std::string tls_server_name;
  bool insecure = false;     // insecure-skip-tls-verify

  std::string user_name;
  std::string user_file;     // the file that defined the user
  std::string token;         // static token
  std::string token_file;    // absolute path; read on each use
  std::string client_cert_pem;
  std::string client_key_pem;
  std::optional<ExecPlugin> exec;

  // "kubeconfig FILE, context \"X\"" for messages.
  std::string Where() const;
};

// Where to look. Empty path: $KUBECONFIG (a ':'-separated list, merged), else ~/.kube/config.
struct KubeConfigOptions {
  std::string path;
  std::string context;  // empty: current-context
  // Environment lookup (tests inject one); default getenv.
  std::function<std::optional<std::string>(const std::string&)> getenv;
};

// Loads, merges and resolves. Errors name the file, the context and the field, and say what to do.
Result<KubeConfig> LoadKubeConfig(const KubeConfigOptions& options);

// What a request authenticates with.
struct Credentials {
  std::string token;  // bearer token ("" when none)
  std::string cert_pem;
  std::string key_pem;
};

// Thread-safe source of credentials for one kubeconfig user. Exec plugins are run on first use and
// their result cached until status.expirationTimestamp (forever when absent) or Invalidate().
class CredentialSource {
 public:
  // now(): epoch seconds; default the system clock.
  explicit CredentialSource(KubeConfig config, std::function<int64_t()> now = nullptr);

  Result<Credentials> Get();
  // The server said 401: drop cached exec output / re-read the token file next time.
  // Returns true when another attempt may give different credentials.
  bool Invalidate();
  // How many times the exec plugin ran (tests).
  int exec_runs() const;
  const KubeConfig& config() const { return config_; }

 private:
  Result<Credentials> RunExec();

  KubeConfig config_;
  std::function<int64_t()> now_;
  mutable std::mutex mu_;
  std::optional<Credentials> cached_;
  int64_t expires_at_ = 0;  // 0: no expiry
  int exec_runs_ = 0;
};

// YAML text -> JSON (scalars typed as YAML 1.2 core schema; quoted scalars stay strings).
Result<nlohmann::json> YamlToJson(const std::string& text, const std::string& what);

}  // namespace onboard::k8s
