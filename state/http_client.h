// The libcurl transport of the http state backend (state/http.cc): one HTTP exchange with
// Terraform's retry policy (go-retryablehttp's defaults, which Terraform's http backend uses):
// connection errors, 429 and 5xx other than 501 are retried up to retry_max times, waiting
// retry_wait_min * 2^attempt seconds, at most retry_wait_max (a Retry-After of a 429 or 503,
// in seconds, is used instead, also at most retry_wait_max). TLS is always verified; TLS
// verification failures, bad URLs and refused credentials are never retried.
//
// Credentials go to libcurl only (CURLOPT_USERNAME/PASSWORD); no message built here contains
// them or an Authorization header. Not thread-safe: one transport per store.
#pragma once

#include <string>

#include "engine/status.h"

namespace onboard {

struct HttpTransportConfig {
  std::string username;  // basic auth when username or password is set
  std::string password;
  std::string ca_file;  // PEM bundle that verifies https servers ("" = the system's CAs)
  int retry_max = 2;
  double retry_wait_min = 1;   // seconds
  double retry_wait_max = 30;  // seconds
  long connect_timeout_ms = 15000;
  long stall_seconds = 60;  // a transfer slower than 1 byte/s for this long is abandoned
};

struct HttpReply {
  long status = 0;
  std::string body;
  std::string content_md5;  // the Content-MD5 header, "" when absent
  std::string location;     // the Location header of a redirect
  int attempts = 0;         // requests sent (1 + retries)
};

class HttpTransport {
 public:
  explicit HttpTransport(HttpTransportConfig config);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Sends `method url` with `body` (nullptr: none; a body goes out as application/json with its
  // Content-MD5, as Terraform sends it). Any HTTP answer is a reply, including a retryable status
  // still returned after the last retry (reply.attempts says how many were made). Errors are
  // transport failures: "cannot <what> at <where>: <curl's reason> ...; <what to check>".
  // `where` is the address as messages show it (state/http.cc strips credentials and query).
  Result<HttpReply> Send(const std::string& method, const std::string& url, const std::string* body,
                         const std::string& what, const std::string& where);

  const HttpTransportConfig& config() const { return config_; }

 private:
  HttpTransportConfig config_;
  void* curl_ = nullptr;  // CURL*, kept for connection reuse
};

// Retry policy, exposed for tests: the wait before retry number `retry` (0-based) in seconds,
// given the Retry-After header value ("" when absent) of a 429 or 503 answer.
double RetryWaitSeconds(const HttpTransportConfig& config, int retry, long status,
                        const std::string& retry_after);
// True for the statuses Terraform's client retries: 429 and 5xx except 501.
bool RetryableStatus(long status);
// The Content-MD5 header value of `data` (base64 of its MD5), as Terraform sends and checks it.
std::string ContentMd5(const std::string& data);

}  // namespace onboard
