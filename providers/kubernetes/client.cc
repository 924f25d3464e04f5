#include "providers/kubernetes/client.h"

#include <curl/curl.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

namespace onboard::k8s {
namespace {

std::once_flag g_curl_init;

std::string Quote(const std::string& s) { return "\"" + s + "\""; }

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t WriteHeader(char* data, size_t size, size_t n, void* user) {
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string key = line.substr(0, colon);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
    if (key == "retry-after") {
      std::string v = line.substr(colon + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
      *static_cast<std::string*>(user) = v;
    }
  }
  return size * n;
}

bool DefaultIdempotent(const Request& req) {
  if (req.method == "GET" || req.method == "HEAD" || req.method == "PUT" || req.method == "DELETE") return true;
  if (req.method == "PATCH" && req.content_type == "application/apply-patch+yaml") return true;
  return false;
}

bool RetryableCurl(int code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
      return true;
    default:
      return false;
  }
}

bool TlsCurl(int code) {
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return true;
    default:
      return false;
  }
}

std::string KubeVerb(const std::string& method) {
  if (method == "GET") return "get";
  if (method == "POST") return "create";
  if (method == "PUT") return "update";
  if (method == "PATCH") return "patch";
  if (method == "DELETE") return "delete";
  return method;
}

std::string What(const Request& req) {
  std::string verb = req.verb.empty() ? KubeVerb(req.method) : req.verb;
  std::string out = verb;
  if (!req.resource.empty()) out += " " + req.resource;
  if (!req.name.empty() || !req.ns.empty()) {
    out += " " + (req.ns.empty() ? req.name : req.ns + (req.name.empty() ? "" : "/" + req.name));
  }
  if (req.resource.empty()) out += " " + req.method + " " + req.path;
  return out;
}

// Server URL split so tls-server-name can be honoured through CURLOPT_CONNECT_TO.
struct ServerUrl {
  std::string scheme, host, port, prefix;
};

ServerUrl SplitServer(const std::string& server) {
  ServerUrl u;
  auto p = server.find("://");
  u.scheme = server.substr(0, p);
  std::string rest = server.substr(p + 3);
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos) u.prefix = rest.substr(slash);
  if (!hostport.empty() && hostport[0] == '[') {
    auto close = hostport.find(']');
    u.host = hostport.substr(0, close + 1);
    if (close + 1 < hostport.size() && hostport[close + 1] == ':') u.port = hostport.substr(close + 2);
  } else {
    auto colon = hostport.rfind(':');
    u.host = hostport.substr(0, colon);
    if (colon != std::string::npos) u.port = hostport.substr(colon + 1);
  }
  if (u.port.empty()) u.port = u.scheme == "http" ? "80" : "443";
  return u;
}

}  // namespace

nlohmann::json Response::Json() const { return nlohmann::json::parse(body, nullptr, false); }

std::string UrlEscape(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string CorePath(const std::string& ns, const std::string& resource, const std::string& name,
                     const std::string& sub) {
  std::string p = "/api/v1";
  if (!ns.empty()) p += "/namespaces/" + UrlEscape(ns);
  p += "/" + resource;
  if (!name.empty()) p += "/" + UrlEscape(name);
  if (!sub.empty()) p += "/" + sub;
  return p;
}

std::string GroupPath(const std::string& group, const std::string& version, const std::string& ns,
                      const std::string& resource, const std::string& name, const std::string& sub) {
  std::string p = "/apis/" + group + "/" + version;
  if (!ns.empty()) p += "/namespaces/" + UrlEscape(ns);
  p += "/" + resource;
  if (!name.empty()) p += "/" + UrlEscape(name);
  if (!sub.empty()) p += "/" + sub;
  return p;
}

Client::Client(const KubeConfig& config, ClientOptions options)
    : options_(std::move(options)), creds_(config, options_.now) {
  if (!options_.warn) {
    options_.warn = [](const std::string& m) { std::fprintf(stderr, "warning: %s\n", m.c_str()); };
  }
  if (options_.max_tries < 1) options_.max_tries = 1;
}

Result<std::unique_ptr<Client>> Client::Create(const KubeConfig& config, ClientOptions options) {
  std::call_once(g_curl_init, [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    // CURLOPT_NOSIGNAL (needed with threads) leaves SIGPIPE to the application: a peer closing a
    // TLS connection must not kill the process.
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  });
  if (config.server.rfind("https://", 0) != 0 && config.server.rfind("http://", 0) != 0) {
    return Result<std::unique_ptr<Client>>::Error(config.Where() + ": server " + Quote(config.server) +
                                                  " must be an https:// URL");
  }
  return std::unique_ptr<Client>(new Client(config, std::move(options)));
}

Client::~Client() {
  for (void* h : pool_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* Client::Acquire() {
  {
    std::lock_guard<std::mutex> l(pool_mu_);
    if (!pool_.empty()) {
      void* h = pool_.back();
      pool_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void Client::Release(void* handle) {
  std::lock_guard<std::mutex> l(pool_mu_);
  if (pool_.size() < options_.pool_size) {
    pool_.push_back(handle);
  } else {
    curl_easy_cleanup(static_cast<CURL*>(handle));
  }
}

ClientStats Client::stats() const {
  ClientStats s;
  s.reads = reads_.load();
  s.writes = writes_.load();
  s.retries = retries_.load();
  return s;
}

Result<Response> Client::Attempt(const Request& req, const Credentials& creds, int* curl_code) {
  const KubeConfig& cfg = creds_.config();
  CURL* h = static_cast<CURL*>(Acquire());
  if (!h) return Result<Response>::Error("cannot create a libcurl handle (out of memory?)");
  curl_easy_reset(h);  // keeps the connection cache: keep-alive reuse

  ServerUrl su = SplitServer(cfg.server);
  std::string host_for_url = su.host;
  std::string connect_to;
  if (!cfg.tls_server_name.empty()) {
    host_for_url = cfg.tls_server_name;
    connect_to = cfg.tls_server_name + ":" + su.port + ":" + su.host + ":" + su.port;
  }
  std::string url = su.scheme + "://" + host_for_url + ":" + su.port + su.prefix + req.path;
  if (!req.query.empty()) url += "?" + req.query;

  Response resp;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, options_.connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, options_.request_timeout_ms);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "onboard/" ONBOARD_VERSION);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp.body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &resp.retry_after);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
  curl_slist* connect_list = nullptr;
  if (!connect_to.empty()) {
    connect_list = curl_slist_append(connect_list, connect_to.c_str());
    curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_list);
  }

  if (cfg.insecure) {
    std::call_once(insecure_warned_, [&] {
      options_.warn(cfg.Where() + ": insecure-skip-tls-verify is set for cluster " + Quote(cfg.cluster_name) +
                    ": the API server " + cfg.server + " is NOT verified");
    });
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!cfg.ca_pem.empty()) {
      curl_blob blob{const_cast<char*>(cfg.ca_pem.data()), cfg.ca_pem.size(), CURL_BLOB_COPY};
      curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
  }
  if (!creds.cert_pem.empty()) {
    curl_blob cert{const_cast<char*>(creds.cert_pem.data()), creds.cert_pem.size(), CURL_BLOB_COPY};
    curl_blob key{const_cast<char*>(creds.key_pem.data()), creds.key_pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key);
  }

  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Accept: application/json");
  std::string auth;
  if (!creds.token.empty()) {
    auth = "Authorization: Bearer " + creds.token;
    headers = curl_slist_append(headers, auth.c_str());
  }
  std::string ctype;
  if (!req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
    ctype = "Content-Type: " + (req.content_type.empty() ? std::string("application/json") : req.content_type);
    headers = curl_slist_append(headers, ctype.c_str());
  }
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

  if (req.method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    if (!req.body.empty() || req.method != "DELETE") {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body.c_str());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(req.body.size()));
    }
  }

  if (req.method == "GET" || req.method == "HEAD") {
    ++reads_;
  } else {
    ++writes_;
  }
  CURLcode rc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_slist_free_all(connect_list);
  // Wipe our copy of the Authorization header.
  std::fill(auth.begin(), auth.end(), '\0');
  Release(h);
  *curl_code = static_cast<int>(rc);
  if (rc != CURLE_OK) {
    std::string detail = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
    std::string what = What(req) + " on " + cfg.server + ": ";
    if (TlsCurl(rc)) {
      return Result<Response>::Error(what + "TLS verification of the API server " + cfg.server +
                                     (cfg.tls_server_name.empty() ? "" : " (as " + cfg.tls_server_name + ")") +
                                     " failed: " + detail + "; the CA came from " + cfg.ca_source +
                                     "; check that it is this cluster's CA (" + cfg.Where() + ")");
    }
    if (rc == CURLE_SSL_CERTPROBLEM) {
      return Result<Response>::Error(what + "the client certificate of user " + Quote(cfg.user_name) + " (" +
                                     cfg.Where() + ") cannot be used: " + detail);
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return Result<Response>::Error(what + "timed out (" + detail + "); the API server did not answer in time");
    }
    return Result<Response>::Error(what + "cannot reach the API server: " + detail +
                                   "; check that the cluster is up and the server URL in " + cfg.Where() +
                                   " is right");
  }
  resp.status = status;
  return resp;
}

Result<Response> Client::Send(const Request& req) {
  bool idempotent = req.idempotent.value_or(DefaultIdempotent(req));
  int tries = idempotent ? options_.max_tries : 1;
  bool reauthenticated = false;
  std::mt19937 rng(std::random_device{}());
  int attempt = 1;
  while (true) {
    auto creds = creds_.Get();
    if (!creds.ok()) return Result<Response>::Error(What(req) + ": " + creds.error());
    int code = 0;
    auto r = Attempt(req, *creds, &code);
    std::string retry_after;
    bool retry = false;
    if (r.ok()) {
      if (r->status == 401 && !reauthenticated && creds_.Invalidate()) {
        // Fresh credentials (exec plugin run again, token file re-read), once; the request
        // was rejected before it ran, so this is safe even when not idempotent.
        reauthenticated = true;
        ++retries_;
        continue;
      }
      if ((r->status == 429 || r->status >= 500) && attempt < tries) {
        retry = true;
        retry_after = r->retry_after;
      }
    } else if (RetryableCurl(code) && attempt < tries) {
      retry = true;
    }
    if (!retry) return r;
    long wait_ms = options_.backoff_initial_ms << (attempt - 1);
    wait_ms += static_cast<long>(rng() % static_cast<unsigned>(std::max<long>(1, wait_ms / 4)));
    if (!retry_after.empty()) {
      char* end = nullptr;
      long secs = std::strtol(retry_after.c_str(), &end, 10);
      if (end && *end == '\0' && secs >= 0) wait_ms = secs * 1000;
    }
    wait_ms = std::min(wait_ms, options_.backoff_max_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    ++attempt;
    ++retries_;
  }
}

Result<Response> Client::Call(const Request& req) {
  auto r = Send(req);
  if (!r.ok()) return r;
  if (!r->ok()) return Result<Response>::Error(ErrorMessage(req, *r));
  return r;
}

std::string Client::ErrorMessage(const Request& req, const Response& resp) const {
  const KubeConfig& cfg = creds_.config();
  nlohmann::json st = nlohmann::json::parse(resp.body, nullptr, false);
  std::string reason, message;
  std::vector<std::string> causes;
  std::string detail_kind, detail_name;
  if (st.is_object() && st.value("kind", "") == "Status") {
    reason = st.value("reason", "");
    message = st.value("message", "");
    if (st.contains("details") && st["details"].is_object()) {
      const auto& d = st["details"];
      detail_kind = d.value("kind", "");
      detail_name = d.value("name", "");
      if (d.contains("causes") && d["causes"].is_array()) {
        for (const auto& c : d["causes"]) {
          if (!c.is_object()) continue;
          std::string f = c.value("field", "");
          std::string m = c.value("message", "");
          causes.push_back(f.empty() ? m : f + ": " + m);
        }
      }
    }
  } else if (!req.secret_response) {
    message = resp.body.substr(0, 300);
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.pop_back();
  }
  std::string out = What(req) + " on " + cfg.server + ": ";
  out += (reason.empty() ? std::string("failed") : reason) + " (HTTP " + std::to_string(resp.status) + ")";
  if (!message.empty()) out += ": " + message;
  std::string hint;
  switch (resp.status) {
    case 401:
      hint = "the API server rejected the credentials of user " + Quote(cfg.user_name) + " (" + cfg.Where() +
             "); refresh them (log in again, renew the token) or choose another context";
      break;
    case 403:
      hint = "RBAC: user " + Quote(cfg.user_name) + " may not " + KubeVerb(req.method) + " " +
             (req.resource.empty() ? req.path : req.resource) +
             (req.ns.empty() ? std::string() : " in namespace " + req.ns) +
             "; grant it with a Role/RoleBinding (check: kubectl auth can-i " + KubeVerb(req.method) + " " +
             (req.resource.empty() ? req.path : req.resource) + (req.ns.empty() ? "" : " -n " + req.ns) + ")";
      break;
    case 404: {
      bool ns_missing = detail_kind == "namespaces" ||
                        (!req.ns.empty() && message.find("namespaces \"" + req.ns + "\" not found") != std::string::npos);
      if (ns_missing) {
        std::string ns = detail_name.empty() ? req.ns : detail_name;
        hint = "namespace " + ns + " does not exist: create namespace " + ns + " (kubectl create namespace " + ns +
               ") or fix the workload's namespace";
      } else {
        hint = "not found: check the name and namespace, and that the resource type is installed in the cluster";
      }
      break;
    }
    case 409:
      if (reason == "Conflict" && req.method == "PATCH" && req.content_type == "application/apply-patch+yaml") {
        hint = "another field manager owns these fields; change them back, or re-run with --force-conflicts "
               "to take ownership";
      } else {
        hint = "the object changed on the server (conflict or failed precondition); run plan again";
      }
      break;
    case 422:
      hint = causes.empty() ? std::string("the object is invalid") : "invalid fields: ";
      for (std::size_t i = 0; i < causes.size(); ++i) hint += (i ? "; " : "") + causes[i];
      hint += causes.empty() ? "; fix the manifest" : "; fix them in the manifest";
      break;
    case 429:
      hint = "the API server is throttling requests (gave up after retries); try again later or lower --parallelism";
      break;
    default:
      if (resp.status >= 500) {
        hint = req.idempotent.value_or(DefaultIdempotent(req))
                   ? "the API server failed (gave up after retries); check its health and try again"
                   : "the API server failed; the request was not retried because repeating it is not safe; "
                     "try again";
      }
  }
  if (!hint.empty()) out += "; " + hint;
  return out;
}

}  // namespace onboard::k8s
