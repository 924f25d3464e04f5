// onboard-test-httpstate: an in-memory server speaking Terraform's http state backend protocol,
// for the tests of onboard's http state backend (state/http.cc).
//
//   onboard-test-httpstate --dir DIR [--port N (0 = a free port)] [--bind 127.0.0.1] [--tls]
//                          [--username USER --password PASSWORD] [--lock-conflict-status 423|409]
//                          [--persist DIR]
//
//   --dir DIR      writes DIR/port, DIR/pid, with --tls DIR/ca.pem (the CA of its generated
//                  certificate for localhost and 127.0.0.1), and last DIR/ready once it accepts
//   --tls          https instead of http
//   --username/--password   every protocol request needs this basic auth (401 otherwise);
//                  the admin endpoints never do
//   --lock-conflict-status  the status of a LOCK on a held lock: 423 (default) or 409
//   --persist DIR  states are also kept in DIR (one file per path) and loaded at start; locks
//                  live in memory only
//
// Protocol, per request path P (any path; a lock at P/lock guards the state at P):
//   GET P       200 with the bytes last written (and their Content-MD5), 404 when none
//   POST/PUT P  stores the body (200); 400 when a Content-MD5 header does not match it; while P
//               is locked, 409 with the holder's lock info unless the query has ID=<holder's ID>
//   DELETE P    removes the state (200), with the same lock check
//   LOCK P      body: lock info JSON with "ID". Free: 200 and the lock is taken; held: the
//               --lock-conflict-status with the holder's lock info as body
//   UNLOCK P    body: lock info JSON with "ID". The holder's ID: 200 and the lock is released;
//               another ID: 409 with the holder's lock info; not locked: 200
// Admin endpoints (no auth, not logged):
//   POST /__admin/faults {"method"?, "path_regex", "status", "count"?, "body"?, "retry_after"?,
//                         "headers"?}
//               the next `count` (default 1) requests whose method (any when absent) and path
//               match get `status` (with `body`, a Retry-After header and the other `headers`
//               when given) and nothing else happens
//   GET /__admin/requests   the request log: [{method, path, query, status, user, headers, body}]
//               (headers never include Authorization; user is the basic-auth user name)
//   DELETE /__admin/requests  clears the log
//   GET /__admin/lock[?path=P]  the lock info held at P (without path: the only lock held), or 404
//
// cpp-httplib 0.11 answers 400 to methods it does not know, LOCK and UNLOCK among them, before a
// handler runs. The server therefore reads each connection itself (plain or TLS) and hands
// httplib a stream in which the request line "LOCK /p HTTP/1.1" reads as "PUT /p HTTP/1.1" plus
// a header "X-Httpstate-Method: LOCK"; the handlers dispatch on that header. Like any PUT, such a
// request needs a Content-Length (0 is fine) or a chunked body, else httplib answers 400.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace httplib {
struct Request;
struct Response;
class Server;
}  // namespace httplib

namespace onboard::sandbox {

struct HttpStateOptions {
  std::string dir;
  std::string bind = "127.0.0.1";
  int port = 0;
  bool tls = false;
  std::string username, password;
  int conflict_status = 423;
  std::string persist_dir;
};

class HttpStateServer {
 public:
  explicit HttpStateServer(HttpStateOptions options);
  ~HttpStateServer();
  // Binds, writes DIR/port, DIR/pid and DIR/ca.pem. False with *error on failure.
  bool Start(std::string* error);
  // Accepts until Stop(); writes DIR/ready once listening.
  void Serve();
  void Stop();

 private:
  struct Fault {
    std::string method;  // "" = any
    std::string path_regex;
    std::regex path;
    int status = 500;
    int count = 1;
    std::string body;
    std::string retry_after;
    std::map<std::string, std::string> headers;
  };

  void Handle(const httplib::Request& req, httplib::Response& res);
  void Admin(const std::string& method, const httplib::Request& req, httplib::Response& res);
  void Protocol(const std::string& method, const httplib::Request& req, httplib::Response& res,
                std::string* user);
  bool Authorized(const httplib::Request& req, std::string* user) const;
  void Persist(const std::string& path);
  bool Load(std::string* error);

  HttpStateOptions options_;
  void* ssl_ctx_ = nullptr;  // SSL_CTX*
  std::unique_ptr<httplib::Server> server_;
  int bound_port_ = 0;

  std::mutex mu_;
  std::map<std::string, std::string> states_;    // path -> bytes
  std::map<std::string, nlohmann::json> locks_;  // lock key (path without /lock) -> lock info
  std::vector<Fault> faults_;
  nlohmann::json log_ = nlohmann::json::array();
};

}  // namespace onboard::sandbox
