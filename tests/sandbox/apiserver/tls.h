// In-memory generation of the test API server's CA and serving certificate (OpenSSL EVP, EC P-256).
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

namespace onboard::sandbox {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

struct KeyAndCert {
  PkeyPtr key;
  X509Ptr cert;
  std::string cert_pem;
};

// A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign) valid for ten years.
// Returns false and fills *error on an OpenSSL failure.
bool GenerateCa(const std::string& common_name, KeyAndCert* out, std::string* error);

// A serving certificate signed by `ca` with the given DNS and IP subjectAltNames, valid for one year.
bool GenerateServerCert(const KeyAndCert& ca, const std::string& common_name,
                        const std::vector<std::string>& dns_names,
                        const std::vector<std::string>& ip_addresses, KeyAndCert* out,
                        std::string* error);

// Cryptographically random bytes (RAND_bytes); aborts the process if the RNG fails.
std::string RandomBytes(size_t n);
// Lower-case hex of `n` random bytes.
std::string RandomHex(size_t n);
// Lower-case hex of `bytes`.
std::string Hex(const std::string& bytes);
// RFC 4122 version-4 UUID string.
std::string RandomUuid();
// base64url without padding (RFC 4648 §5), as JWTs use.
std::string Base64Url(const std::string& data);
// HMAC-SHA256 of `data` with `key` (raw bytes).
std::string HmacSha256(const std::string& key, const std::string& data);

}  // namespace onboard::sandbox
