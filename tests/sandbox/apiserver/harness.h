// Tests against onboard-test-apiserver, started with ServerProcess (tests/sandbox/server_process.h): its
// URL, and its admin endpoints (no auth, see server.h) called with libcurl over HTTPS verified with its CA.
#pragma once

#include <curl/curl.h>
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "tests/sandbox/server_process.h"

namespace onboard::sandbox {

inline std::string ApiServerUrl(const ServerProcess& server) {
  return "https://127.0.0.1:" + std::to_string(server.port());
}

// `method` `path` with `body` (a POST without one sends {}); the answer parsed (discarded when it is not
// JSON). A request that gets no answer fails the test.
inline nlohmann::json ApiServerAdmin(const ServerProcess& server, const std::string& method,
                                     const std::string& path, const nlohmann::json& body = nullptr) {
  CURL* h = curl_easy_init();
  std::string url = ApiServerUrl(server) + path, out,
              data = body.is_null() ? (method == "POST" ? "{}" : "") : body.dump();
  std::string ca = server.dir() + "/ca.pem";
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_CAINFO, ca.c_str());
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_slist* hdr = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  if (!data.empty()) curl_easy_setopt(h, CURLOPT_POSTFIELDS, data.c_str());
  curl_easy_setopt(
      h, CURLOPT_WRITEFUNCTION, +[](char* d, size_t size, size_t n, void* user) {
        static_cast<std::string*>(user)->append(d, size * n);
        return size * n;
      });
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
  CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  EXPECT_EQ(rc, CURLE_OK) << curl_easy_strerror(rc);
  return nlohmann::json::parse(out, nullptr, false);
}

}  // namespace onboard::sandbox
