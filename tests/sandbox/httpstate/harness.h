// Running onboard-test-httpstate from a test (a ServerProcess, tests/sandbox/server_process.h: a child
// process in a temporary directory, stopped and cleaned up by the destructor), plus direct requests to it
// with libcurl (including LOCK/UNLOCK and the admin endpoints).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/sandbox/server_process.h"

namespace onboard::sandbox {

struct RawReply {
  long status = 0;  // 0: no answer (error says why)
  std::string body;
  std::string error;
};

class HttpStateProcess {
 public:
  struct Options {
    bool tls = false;
    std::string username, password;  // basic auth required when set
    int conflict_status = 0;         // 0: the server's default (423)
    std::vector<std::string> extra_args;
  };

  // Starts `binary` and waits until it is ready. nullptr with *error (and the server's output).
  static std::unique_ptr<HttpStateProcess> Start(const std::string& binary, const Options& options,
                                                 std::string* error) {
    std::unique_ptr<HttpStateProcess> p(new HttpStateProcess());
    p->tls_ = options.tls;
    std::vector<std::string> args;
    if (options.tls) args.push_back("--tls");
    if (!options.username.empty()) args.insert(args.end(), {"--username", options.username});
    if (!options.password.empty()) args.insert(args.end(), {"--password", options.password});
    if (options.conflict_status)
      args.insert(args.end(), {"--lock-conflict-status", std::to_string(options.conflict_status)});
    args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
    if (!p->process_.Start(binary, args, error)) return nullptr;
    return p;
  }

  // Stops the server (its port then refuses connections).
  void Stop() { process_.Stop(); }

  int port() const { return process_.port(); }
  const std::string& dir() const { return process_.dir(); }
  std::string ca_file() const { return dir() + "/ca.pem"; }
  std::string url(const std::string& path) const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port()) + path;
  }

  // One request, no retries. userpwd "user:password" for basic auth.
  RawReply Request(const std::string& method, const std::string& path, const std::string* body = nullptr,
                   const std::string& userpwd = "") const {
    RawReply reply;
    CURL* h = curl_easy_init();
    const std::string u = url(path);
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_URL, u.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    if (tls_) curl_easy_setopt(h, CURLOPT_CAINFO, ca_file().c_str());
    if (!userpwd.empty()) curl_easy_setopt(h, CURLOPT_USERPWD, userpwd.c_str());
    curl_easy_setopt(
        h, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* out) {
          static_cast<std::string*>(out)->append(d, s * n);
          return s * n;
        });
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply.body);
    curl_slist* headers = curl_slist_append(nullptr, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (method != "GET") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (body) {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
    else
      reply.error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return reply;
  }
  RawReply Request(const std::string& method, const std::string& path, const std::string& body,
                   const std::string& userpwd = "") const {
    return Request(method, path, &body, userpwd);
  }

  // The request log (GET /__admin/requests).
  nlohmann::json Requests() const {
    RawReply r = Request("GET", "/__admin/requests");
    nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
    return j.is_array() ? j : nlohmann::json::array();
  }
  void ClearRequests() const { Request("DELETE", "/__admin/requests"); }
  // The log entries with this method (and path, when given).
  std::vector<nlohmann::json> Requests(const std::string& method, const std::string& path = "") const {
    std::vector<nlohmann::json> out;
    for (const auto& e : Requests())
      if (e.value("method", "") == method && (path.empty() || e.value("path", "") == path)) out.push_back(e);
    return out;
  }
  // POST /__admin/faults; true when accepted.
  bool Fault(const nlohmann::json& fault) const {
    return Request("POST", "/__admin/faults", fault.dump()).status == 200;
  }
  // GET /__admin/lock?path=PATH: the lock info, or null when not locked.
  nlohmann::json Lock(const std::string& path) const {
    RawReply r = Request("GET", "/__admin/lock?path=" + path);
    if (r.status != 200) return nullptr;
    return nlohmann::json::parse(r.body, nullptr, false);
  }

 private:
  HttpStateProcess() = default;
  ServerProcess process_;
  bool tls_ = false;
};

// A port on 127.0.0.1 with nothing listening (bound once by the kernel's choice, then closed).
inline int UnusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

}  // namespace onboard::sandbox
