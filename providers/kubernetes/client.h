// A verified HTTPS client for the Kubernetes API: libcurl easy handles pooled per cluster
// (keep-alive reuse, thread-safe), kubeconfig CA / client certificates / bearer tokens, retries
// with exponential backoff for idempotent requests only, and Status errors turned into messages
// that say what was asked, why it failed and what to do. Never logs or reports a token.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/status.h"
#include "providers/kubernetes/kubeconfig.h"

namespace onboard::k8s {

struct ClientOptions {
  long connect_timeout_ms = 10000;
  long request_timeout_ms = 30000;
  int max_tries = 4;                // per idempotent request (1 = no retry)
  long backoff_initial_ms = 250;    // doubled per retry
  long backoff_max_ms = 8000;       // cap of one wait (Retry-After is capped here too)
  std::size_t pool_size = 8;        // idle handles kept per client
  // Warnings (insecure TLS). Default: stderr.
  std::function<void(const std::string&)> warn;
  // now() for exec credential expiry; default the system clock.
  std::function<int64_t()> now;
};

struct ClientStats {
  int64_t reads = 0;    // GET requests sent (every attempt)
  int64_t writes = 0;   // POST/PUT/PATCH/DELETE requests sent (every attempt)
  int64_t retries = 0;  // attempts after the first
};

// One API request. `resource`, `ns`, `name` describe it for messages ("create workloadentries
// bookinfo/ratings-vm"); the path is given explicitly.
struct Request {
  std::string method = "GET";  // GET POST PUT PATCH DELETE
  std::string path;            // "/apis/networking.istio.io/v1beta1/namespaces/bookinfo/workloadentries/x"
  std::string query;           // without '?', already escaped
  std::string content_type;    // for bodies; default application/json
  std::string body;
  std::string verb;            // for messages: get, create, apply, patch, delete, "create token"
  std::string resource;        // "workloadentries.networking.istio.io"
  std::string ns;
  std::string name;
  // Safe to repeat. Default (unset): GET/PUT/DELETE/HEAD and apply-patch PATCH.
  std::optional<bool> idempotent;
  // The response body holds a secret (TokenRequest): it never appears in an error message.
  bool secret_response = false;
};

struct Response {
  long status = 0;
  std::string body;
  std::string retry_after;
  nlohmann::json Json() const;  // discarded value when not JSON
  bool ok() const { return status >= 200 && status < 300; }
};

// "<server>/<path>" builders.
std::string CorePath(const std::string& ns, const std::string& resource, const std::string& name = "",
                     const std::string& sub = "");
std::string GroupPath(const std::string& group, const std::string& version, const std::string& ns,
                      const std::string& resource, const std::string& name = "", const std::string& sub = "");
std::string UrlEscape(const std::string& s);

class Client {
 public:
  static Result<std::unique_ptr<Client>> Create(const KubeConfig& config, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends the request (with retries when idempotent). Transport failures (connection, TLS,
  // timeout) are errors; any HTTP status is returned as a Response — see Check().
  Result<Response> Send(const Request& req);
  // Send() and turn a non-2xx status into an error message (ErrorMessage).
  Result<Response> Call(const Request& req);
  // "<verb> <resource> <ns>/<name> on <server>: <reason> (HTTP <code>): <message>; <hint>".
  std::string ErrorMessage(const Request& req, const Response& resp) const;

  ClientStats stats() const;
  const KubeConfig& config() const { return creds_.config(); }
  CredentialSource& credentials() { return creds_; }

 private:
  Client(const KubeConfig& config, ClientOptions options);
  void* Acquire();
  void Release(void* handle);
  Result<Response> Attempt(const Request& req, const Credentials& creds, int* curl_code);

  ClientOptions options_;
  CredentialSource creds_;
  std::mutex pool_mu_;
  std::vector<void*> pool_;
  std::atomic<int64_t> reads_{0}, writes_{0}, retries_{0};
  std::once_flag insecure_warned_;
};

}  // namespace onboard::k8s
