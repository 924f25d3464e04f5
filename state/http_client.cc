#include "state/http_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace onboard {
namespace {

std::once_flag g_curl_init;

// A state server answering more than this is broken (or not a state server).
constexpr size_t kMaxBody = size_t{512} << 20;

struct Sink {
  HttpReply* reply;
  bool too_large = false;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const size_t bytes = size * n;
  if (sink->reply->body.size() + bytes > kMaxBody) {
    sink->too_large = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  sink->reply->body.append(data, bytes);
  return bytes;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

struct Headers {
  std::string content_md5, retry_after, location;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* h = static_cast<Headers*>(user);
  const size_t bytes = size * n;
  std::string line(data, bytes);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a 1xx): forget the previous one's
    *h = Headers();
    return bytes;
  }
  auto colon = line.find(':');
  if (colon == std::string::npos) return bytes;
  std::string name = Lower(Trim(line.substr(0, colon)));
  std::string value = Trim(line.substr(colon + 1));
  if (name == "content-md5")
    h->content_md5 = value;
  else if (name == "retry-after")
    h->retry_after = value;
  else if (name == "location")
    h->location = value;
  return bytes;
}

}  // namespace

std::string ContentMd5(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr) != 1) return "";
  std::string out(4 * ((len + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&out[0]), md, static_cast<int>(len));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

namespace {

// Failures that another attempt cannot fix (go-retryablehttp does not retry these either).
bool RetryableCurl(CURLcode rc) {
  switch (rc) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_NOT_BUILT_IN:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_FUNCTION_NOT_FOUND:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_LOGIN_DENIED:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_READ_ERROR:
    case CURLE_WRITE_ERROR:  // our body limit
      return false;
    default:
      return true;
  }
}

std::string Hint(CURLcode rc, const HttpTransportConfig& config) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
      return "check that the state server is running and that the address (host and port) is right";
    case CURLE_COULDNT_RESOLVE_HOST:
      return "check the host name in the address";
    case CURLE_COULDNT_RESOLVE_PROXY:
      return "check the proxy named by the https_proxy/http_proxy environment variables";
    case CURLE_OPERATION_TIMEDOUT:
      return "the server did not answer in time; check that it is running and reachable";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ISSUER_ERROR:
      return config.ca_file.empty()
                 ? "the server's certificate is not trusted by the system's CAs: set caFile to the PEM "
                   "bundle "
                   "of the CA that signed it (onboard always verifies TLS)"
                 : "the server's certificate does not verify against caFile " + config.ca_file +
                       " or does not name the host in the address: check caFile and the address (onboard "
                       "always verifies TLS)";
    case CURLE_SSL_CACERT_BADFILE:
      return "caFile " + config.ca_file + " cannot be read as a PEM CA bundle";
    case CURLE_SSL_CONNECT_ERROR:
      return "the TLS handshake failed; check that the server speaks https on this port";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return "the address must be an http:// or https:// URL";
    case CURLE_WRITE_ERROR:
      return "the server's answer is larger than " + std::to_string(kMaxBody >> 20) + " MiB";
    default:
      return "check that the address names a reachable state server";
  }
}

}  // namespace

bool RetryableStatus(long status) {
  return status == 429 || (status >= 500 && status <= 599 && status != 501);
}

double RetryWaitSeconds(const HttpTransportConfig& config, int retry, long status,
                        const std::string& retry_after) {
  const double cap = std::max(0.0, config.retry_wait_max);
  if ((status == 429 || status == 503) && !retry_after.empty()) {
    char* end = nullptr;
    long seconds = std::strtol(retry_after.c_str(), &end, 10);
    if (end != retry_after.c_str() && *end == '\0' && seconds >= 0)
      return std::min(static_cast<double>(seconds), cap);
  }
  double wait = std::max(0.0, config.retry_wait_min) * std::pow(2.0, std::min(retry, 30));
  return std::min(wait, cap);
}

HttpTransport::HttpTransport(HttpTransportConfig config) : config_(std::move(config)) {
  std::call_once(g_curl_init, [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    // CURLOPT_NOSIGNAL leaves SIGPIPE to the application: a peer closing a connection must not
    // kill the process.
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  });
  curl_ = curl_easy_init();
}

HttpTransport::~HttpTransport() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Result<HttpReply> HttpTransport::Send(const std::string& method, const std::string& url,
                                      const std::string* body, const std::string& what,
                                      const std::string& where) {
  CURL* h = static_cast<CURL*>(curl_);
  if (!h)
    return Result<HttpReply>::Error("cannot " + what + " at " + where +
                                    ": libcurl cannot start (out of memory?)");
  const std::string md5_header = body ? "Content-MD5: " + ContentMd5(*body) : std::string();
  for (int attempt = 0;; ++attempt) {
    curl_easy_reset(h);  // keeps the connection cache
    HttpReply reply;
    Sink sink{&reply};
    Headers headers;
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, config_.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, config_.stall_seconds);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "onboard/" ONBOARD_VERSION);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!config_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, config_.ca_file.c_str());
    if (!config_.username.empty() || !config_.password.empty()) {
      curl_easy_setopt(h, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
      curl_easy_setopt(h, CURLOPT_USERNAME, config_.username.c_str());
      curl_easy_setopt(h, CURLOPT_PASSWORD, config_.password.c_str());
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &headers);

    curl_slist* list = nullptr;
    list = curl_slist_append(list, "Expect:");
    if (body) {
      list = curl_slist_append(list, "Content-Type: application/json");
      list = curl_slist_append(list, md5_header.c_str());
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    if (method == "GET" && !body) {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
      if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data());
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
      }
    }

    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(list);
    reply.attempts = attempt + 1;
    if (rc == CURLE_OK) {
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
      reply.content_md5 = headers.content_md5;
      reply.location = headers.location;
      if (!RetryableStatus(reply.status) || attempt >= config_.retry_max) return reply;
    } else if (sink.too_large || !RetryableCurl(rc) || attempt >= config_.retry_max) {
      std::string reason = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
      if (sink.too_large) reason = "the answer is too large";
      std::string tries = attempt > 0 ? " (" + std::to_string(attempt + 1) + " attempts)" : "";
      return Result<HttpReply>::Error("cannot " + what + " at " + where + ": " + reason + tries + "; " +
                                      Hint(sink.too_large ? CURLE_WRITE_ERROR : rc, config_));
    }
    double wait = RetryWaitSeconds(config_, attempt, rc == CURLE_OK ? reply.status : 0, headers.retry_after);
    std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  }
}

}  // namespace onboard
