#include "tests/sandbox/httpstate/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "tests/sandbox/apiserver/tls.h"
#include "tests/sandbox/serve.h"

namespace onboard::sandbox {
namespace {

using nlohmann::json;

constexpr const char* kMethodHeader = "X-Httpstate-Method";
constexpr int kIoTimeoutMs = 10000;  // a stalled peer
constexpr int kIdleMs = 5000;        // keep-alive: wait this long for the next request

// ---------------------------------------------------------------------------------------------
// The connection layer: a keep-alive loop over plain or TLS sockets that lets LOCK and UNLOCK
// (and any other extension method) through cpp-httplib as PUT plus a header naming the method.

bool KnownToHttplib(const std::string& m) {
  static const char* const kKnown[] = {"GET",     "HEAD",    "POST",  "PUT",   "DELETE",
                                       "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI"};
  for (const char* k : kKnown)
    if (m == k) return true;
  return false;
}

bool IsToken(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::strchr("!#$%&'*+-.^_`|~", c) == nullptr)
      return false;
  return true;
}

class ConnStream : public httplib::Stream {
 public:
  ConnStream(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}

  // Called before each request: the next read starts with its request line.
  void BeginRequest() { at_request_line_ = true; }

  // Waits for the next request's first byte (or the peer's close) while `running` holds.
  bool WaitForData(const std::function<bool()>& running, int timeout_ms) const {
    if (Buffered()) return true;
    for (int waited = 0; waited < timeout_ms && running(); waited += 100)
      if (Poll(POLLIN, 100)) return true;
    return false;
  }

  bool is_readable() const override { return Buffered() || Poll(POLLIN, kIoTimeoutMs); }
  bool is_writable() const override { return Poll(POLLOUT, kIoTimeoutMs); }

  ssize_t read(char* ptr, size_t size) override {
    if (at_request_line_) {
      at_request_line_ = false;
      RewriteRequestLine();
    }
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
      ssize_t n = Fill();
      if (n <= 0) return n;
    }
    size_t n = std::min(size, buf_.size() - pos_);
    std::memcpy(ptr, buf_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (ssl_) {
      int n = SSL_write(ssl_, ptr, static_cast<int>(std::min<size_t>(size, 1 << 30)));
      return n > 0 ? n : -1;
    }
    for (;;) {
      ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { Address(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { Address(false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  bool Buffered() const { return pos_ < buf_.size() || (ssl_ && SSL_pending(ssl_) > 0); }

  bool Poll(short events, int timeout_ms) const {
    if (events == POLLIN && ssl_ && SSL_pending(ssl_) > 0) return true;
    pollfd p{fd_, events, 0};
    int rc;
    do rc = ::poll(&p, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    return rc > 0;
  }

  ssize_t Fill() {
    char chunk[16384];
    ssize_t n;
    if (ssl_) {
      int r = SSL_read(ssl_, chunk, sizeof chunk);
      n = r > 0 ? r : (SSL_get_error(ssl_, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1);
    } else {
      do n = ::recv(fd_, chunk, sizeof chunk, 0);
      while (n < 0 && errno == EINTR);
    }
    if (n > 0) buf_.append(chunk, static_cast<size_t>(n));
    return n;
  }

  // Reads up to the end of the request line and rewrites an extension method. On a short
  // read or a line too long the bytes pass as they are and httplib rejects them.
  void RewriteRequestLine() {
    size_t eol;
    while ((eol = buf_.find("\r\n", pos_)) == std::string::npos && buf_.size() - pos_ < 8192)
      if (Fill() <= 0) return;
    if (eol == std::string::npos) return;
    std::string line = buf_.substr(pos_, eol - pos_);
    size_t sp = line.find(' ');
    if (sp == std::string::npos) return;
    std::string method = line.substr(0, sp);
    if (KnownToHttplib(method) || !IsToken(method)) return;
    std::string rewritten = "PUT" + line.substr(sp) + "\r\n" + kMethodHeader + ": " + method;
    buf_.replace(pos_, eol - pos_, rewritten);
  }

  void Address(bool remote, std::string& ip, int& port) const {
    struct sockaddr_storage ss {};
    socklen_t len = sizeof ss;
    int rc = remote ? ::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len)
                    : ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    char host[NI_MAXHOST] = {0}, serv[NI_MAXSERV] = {0};
    if (rc == 0 && ::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                                 NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  int fd_;
  SSL* ssl_;
  std::string buf_;
  size_t pos_ = 0;
  bool at_request_line_ = false;
};

class ExtensionMethodServer : public httplib::Server {
 public:
  explicit ExtensionMethodServer(SSL_CTX* ctx) : ctx_(ctx) {}

 private:
  bool process_and_close_socket(socket_t sock) override {
    timeval tv{kIoTimeoutMs / 1000, 0};
    ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL* ssl = nullptr;
    bool ok = false;
    if (ctx_) {
      ssl = SSL_new(ctx_);
      if (ssl && SSL_set_fd(ssl, sock) == 1 && SSL_accept(ssl) == 1) ok = true;
    } else {
      ok = true;
    }
    if (ok) {
      ConnStream strm(sock, ssl);
      for (int n = 0; n < 100; ++n) {
        if (!strm.WaitForData([this] { return is_running(); }, kIdleMs)) break;
        strm.BeginRequest();
        bool closed = false;
        ok = process_request(strm, n == 99, closed, [](httplib::Request&) {});
        if (!ok || closed) break;
      }
    }
    if (ssl) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }

  SSL_CTX* ctx_;
};

// ---------------------------------------------------------------------------------------------

bool WriteFile(const std::string& path, const std::string& content, std::string* error) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) {
    *error = "cannot write " + tmp + ": " + std::strerror(errno);
    return false;
  }
  bool ok = std::fwrite(content.data(), 1, content.size(), f) == content.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot write " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

std::string Base64(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&out[0]),
                          reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

bool Unbase64(const std::string& in, std::string* out) {
  if (in.empty() || in.size() % 4 != 0) return false;
  std::string buf(in.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(&buf[0]),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0) return false;
  size_t pad = in[in.size() - 1] == '=' ? (in[in.size() - 2] == '=' ? 2 : 1) : 0;
  buf.resize(static_cast<size_t>(n) - pad);
  *out = buf;
  return true;
}

std::string Md5Base64(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  return Base64(std::string(reinterpret_cast<char*>(md), len));
}

std::string Unhex(const std::string& s) {
  std::string out;
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    out += static_cast<char>(std::stoi(s.substr(i, 2), nullptr, 16));
  return out;
}

// The lock that guards the state at `path`: a lock taken at P/lock guards P.
std::string LockKey(const std::string& path) {
  const std::string suffix = "/lock";
  if (path.size() > suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0)
    return path.substr(0, path.size() - suffix.size());
  return path;
}

// Bodies are logged as sent; bytes that are not UTF-8 show as U+FFFD.
void JsonReply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void TextReply(httplib::Response& res, int status, const std::string& text) {
  res.status = status;
  res.set_content(text + "\n", "text/plain");
}

}  // namespace

HttpStateServer::HttpStateServer(HttpStateOptions options) : options_(std::move(options)) {}

HttpStateServer::~HttpStateServer() {
  server_.reset();
  if (ssl_ctx_) SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
}

bool HttpStateServer::Start(std::string* error) {
  if (!options_.persist_dir.empty() && !Load(error)) return false;
  std::string ca_pem;
  if (options_.tls) {
    KeyAndCert ca, leaf;
    if (!GenerateCa("onboard-test-httpstate-ca", &ca, error) ||
        !GenerateServerCert(ca, "onboard-test-httpstate", {"localhost"}, {"127.0.0.1"}, &leaf, error))
      return false;
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    ssl_ctx_ = ctx;
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate(ctx, leaf.cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, leaf.key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      *error = "cannot set up the TLS context (OpenSSL)";
      return false;
    }
    ca_pem = ca.cert_pem;
  }
  server_ = std::make_unique<ExtensionMethodServer>(static_cast<SSL_CTX*>(ssl_ctx_));
  RouteEveryPath(
      *server_, [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); },
      /*with_options=*/true);
  server_->set_payload_max_length(256u << 20);
  ReplyToExceptions(*server_, [](httplib::Response& res, const std::string& what) {
    TextReply(res, 500, "onboard-test-httpstate: " + what);
  });
  bound_port_ = BindServer(*server_, options_.bind, options_.port, "port in use?", error);
  if (bound_port_ == 0) return false;
  const std::string& d = options_.dir;
  if (options_.tls && !WriteFile(d + "/ca.pem", ca_pem, error)) return false;
  return WriteFile(d + "/pid", std::to_string(::getpid()) + "\n", error) &&
         WriteFile(d + "/port", std::to_string(bound_port_) + "\n", error);
}

void HttpStateServer::Serve() {
  ListenAndWriteReady(*server_, "onboard-test-httpstate", [this](std::string* error) {
    return WriteFile(options_.dir + "/ready", "ok\n", error);
  });
}

void HttpStateServer::Stop() {
  if (server_) server_->stop();
}

bool HttpStateServer::Authorized(const httplib::Request& req, std::string* user) const {
  std::string auth = req.get_header_value("Authorization");
  std::string decoded;
  if (auth.rfind("Basic ", 0) == 0 && Unbase64(auth.substr(6), &decoded))
    *user = decoded.substr(0, decoded.find(':'));
  if (options_.username.empty() && options_.password.empty()) return true;
  return !decoded.empty() && decoded == options_.username + ":" + options_.password;
}

void HttpStateServer::Handle(const httplib::Request& req, httplib::Response& res) {
  const std::string method =
      req.method == "PUT" && req.has_header(kMethodHeader) ? req.get_header_value(kMethodHeader) : req.method;
  if (req.path.rfind("/__admin/", 0) == 0) {
    Admin(method, req, res);
    return;
  }
  std::string user;
  {
    std::lock_guard<std::mutex> l(mu_);
    bool faulted = false;
    for (auto it = faults_.begin(); it != faults_.end(); ++it) {
      if ((!it->method.empty() && it->method != method) || !std::regex_match(req.path, it->path)) continue;
      res.status = it->status;
      if (!it->retry_after.empty()) res.set_header("Retry-After", it->retry_after);
      for (const auto& [name, value] : it->headers) res.set_header(name, value);
      if (!it->body.empty()) res.set_content(it->body, "application/json");
      if (--it->count <= 0) faults_.erase(it);
      faulted = true;
      break;
    }
    if (!faulted) Protocol(method, req, res, &user);
    json headers = json::object();
    for (const auto& [name, value] : req.headers) {
      std::string lower = name;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower == "authorization" || lower == "x-httpstate-method") continue;
      headers[name] = headers.contains(name) ? headers[name].get<std::string>() + ", " + value : value;
    }
    auto q = req.target.find('?');
    log_.push_back({{"method", method},
                    {"path", req.path},
                    {"query", q == std::string::npos ? "" : req.target.substr(q + 1)},
                    {"status", res.status},
                    {"user", user},
                    {"headers", headers},
                    {"body", req.body}});
  }
}

void HttpStateServer::Protocol(const std::string& method, const httplib::Request& req, httplib::Response& res,
                               std::string* user) {
  if (!Authorized(req, user)) {
    res.set_header("WWW-Authenticate", "Basic realm=\"onboard-test-httpstate\"");
    TextReply(res, 401, "authentication required");
    return;
  }
  const std::string& path = req.path;
  const std::string key = LockKey(path);
  auto lock = locks_.find(key);
  if (method == "GET") {
    auto it = states_.find(path);
    if (it == states_.end()) return TextReply(res, 404, "no state at " + path);
    res.status = 200;
    res.set_header("Content-MD5", Md5Base64(it->second));
    res.set_content(it->second, "application/json");
    return;
  }
  if (method == "POST" || method == "PUT" || method == "DELETE") {
    if (req.has_header("Content-MD5") && req.get_header_value("Content-MD5") != Md5Base64(req.body))
      return TextReply(res, 400, "Content-MD5 does not match the body");
    if (lock != locks_.end() && req.get_param_value("ID") != lock->second.value("ID", "")) {
      JsonReply(res, 409, lock->second);
      return;
    }
    if (method == "DELETE")
      states_.erase(path);
    else
      states_[path] = req.body;
    Persist(path);
    res.status = 200;
    return;
  }
  if (method == "LOCK" || method == "UNLOCK") {
    json info = json::parse(req.body, nullptr, false);
    if (info.is_discarded() || !info.is_object() || !info.contains("ID") || !info["ID"].is_string() ||
        info["ID"].get<std::string>().empty())
      return TextReply(res, 400, method + " needs a lock info JSON body with an \"ID\"");
    const std::string id = info["ID"];
    if (method == "LOCK") {
      if (lock != locks_.end()) return JsonReply(res, options_.conflict_status, lock->second);
      locks_[key] = info;
      return JsonReply(res, 200, info);
    }
    if (lock == locks_.end()) return TextReply(res, 200, "not locked");
    if (lock->second.value("ID", "") != id) return JsonReply(res, 409, lock->second);
    locks_.erase(lock);
    return TextReply(res, 200, "unlocked");
  }
  TextReply(res, 405, "method " + method + " is not supported");
}

void HttpStateServer::Admin(const std::string& method, const httplib::Request& req, httplib::Response& res) {
  std::lock_guard<std::mutex> l(mu_);
  if (req.path == "/__admin/faults" && method == "POST") {
    json j = json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("path_regex") || !j["path_regex"].is_string() ||
        !j.contains("status") || !j["status"].is_number_integer())
      return TextReply(res, 400,
                       "a fault is {\"method\"?, \"path_regex\", \"status\", \"count\"?, \"body\"?, "
                       "\"retry_after\"?, \"headers\"?}");
    Fault f;
    f.method = j.value("method", "");
    f.path_regex = j["path_regex"];
    try {
      f.path = std::regex(f.path_regex);
    } catch (const std::regex_error& e) {
      return TextReply(res, 400, "path_regex: " + std::string(e.what()));
    }
    f.status = j["status"];
    f.count = j.value("count", 1);
    f.body = j.value("body", "");
    f.retry_after = j.value("retry_after", "");
    if (j.contains("headers") && j["headers"].is_object())
      for (auto h = j["headers"].begin(); h != j["headers"].end(); ++h)
        if (h->is_string()) f.headers[h.key()] = h->get<std::string>();
    faults_.push_back(std::move(f));
    return TextReply(res, 200, "ok");
  }
  if (req.path == "/__admin/requests" && method == "GET") return JsonReply(res, 200, log_);
  if (req.path == "/__admin/requests" && method == "DELETE") {
    log_ = json::array();
    return TextReply(res, 200, "ok");
  }
  if (req.path == "/__admin/lock" && method == "GET") {
    if (req.has_param("path")) {
      auto it = locks_.find(LockKey(req.get_param_value("path")));
      if (it == locks_.end()) return TextReply(res, 404, "not locked");
      return JsonReply(res, 200, it->second);
    }
    if (locks_.empty()) return TextReply(res, 404, "not locked");
    if (locks_.size() > 1) return TextReply(res, 400, "several paths are locked: pass ?path=");
    return JsonReply(res, 200, locks_.begin()->second);
  }
  TextReply(res, 404, "unknown admin endpoint " + method + " " + req.path);
}

void HttpStateServer::Persist(const std::string& path) {
  if (options_.persist_dir.empty()) return;
  const std::string file = options_.persist_dir + "/" + Hex(path) + ".state";
  auto it = states_.find(path);
  std::string error;
  if (it == states_.end())
    ::unlink(file.c_str());
  else if (!WriteFile(file, it->second, &error))
    std::fprintf(stderr, "onboard-test-httpstate: %s\n", error.c_str());
}

bool HttpStateServer::Load(std::string* error) {
  ::mkdir(options_.persist_dir.c_str(), 0700);
  DIR* d = ::opendir(options_.persist_dir.c_str());
  if (!d) {
    *error = "--persist " + options_.persist_dir + ": " + std::strerror(errno);
    return false;
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    const std::string ext = ".state";
    if (name.size() <= ext.size() || name.compare(name.size() - ext.size(), ext.size(), ext) != 0) continue;
    std::ifstream in(options_.persist_dir + "/" + name, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    try {
      states_[Unhex(name.substr(0, name.size() - ext.size()))] = ss.str();
    } catch (const std::exception&) {  // not a file of ours
    }
  }
  ::closedir(d);
  return true;
}

}  // namespace onboard::sandbox
