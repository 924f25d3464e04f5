// Running onboard-test-httpstate from a test: a child process per server in a temporary
// directory, stopped (SIGTERM, then SIGKILL) and cleaned up by the destructor (and sent SIGTERM
// if the test process dies first), plus direct requests to it with libcurl (including
// LOCK/UNLOCK and the admin endpoints).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

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
    char tmpl[] = "/tmp/onboard-httpstate.XXXXXX";
    if (!::mkdtemp(tmpl)) {
      *error = "mkdtemp failed";
      return nullptr;
    }
    p->dir_ = tmpl;
    std::vector<std::string> args = {binary, "--dir", p->dir_, "--port", "0"};
    if (options.tls) args.push_back("--tls");
    if (!options.username.empty()) args.insert(args.end(), {"--username", options.username});
    if (!options.password.empty()) args.insert(args.end(), {"--password", options.password});
    if (options.conflict_status)
      args.insert(args.end(), {"--lock-conflict-status", std::to_string(options.conflict_status)});
    args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
    const std::string log = p->dir_ + "/server.log";
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      *error = "fork failed";
      return nullptr;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a crashed test leaves no server behind
      if (::getppid() != parent) ::_exit(1);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    p->pid_ = pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!std::filesystem::exists(p->dir_ + "/ready")) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        p->pid_ = -1;
        *error = "onboard-test-httpstate exited early: " + Slurp(log);
        return nullptr;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        *error = "onboard-test-httpstate did not become ready in 20s: " + Slurp(log);
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    p->port_ = std::atoi(Slurp(p->dir_ + "/port").c_str());
    return p;
  }

  ~HttpStateProcess() {
    Stop();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  // Stops the server (its port then refuses connections).
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  std::string ca_file() const { return dir_ + "/ca.pem"; }
  std::string url(const std::string& path) const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + path;
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

  static std::string Slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  HttpStateProcess() = default;
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
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
