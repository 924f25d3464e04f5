#include "tests/sandbox/apiserver/tls.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>

namespace onboard::sandbox {
namespace {

std::string OpensslError(const std::string& what) {
  unsigned long code = ERR_get_error();
  char buf[256] = {0};
  if (code != 0) ERR_error_string_n(code, buf, sizeof(buf));
  return what + " failed" + (code != 0 ? std::string(": ") + buf : std::string());
}

PkeyPtr NewEcKey(std::string* error) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) *error = OpensslError("EVP_EC_gen(P-256)");
  return PkeyPtr(key);
}

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value,
                  std::string* error) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) {
    *error = OpensslError("building X.509 extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
    return false;
  }
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  if (!ok) *error = OpensslError("X509_add_ext");
  return ok;
}

// Fills the fields common to the CA and the leaf: version, random serial, validity, subject, key.
X509Ptr NewCert(EVP_PKEY* key, const std::string& common_name, long days, std::string* error) {
  X509Ptr cert(X509_new());
  if (!cert) {
    *error = OpensslError("X509_new");
    return nullptr;
  }
  X509_set_version(cert.get(), 2);
  std::string serial_bytes = RandomBytes(16);
  serial_bytes[0] = static_cast<char>(serial_bytes[0] & 0x7f);
  BIGNUM* bn = BN_bin2bn(reinterpret_cast<const unsigned char*>(serial_bytes.data()),
                         static_cast<int>(serial_bytes.size()), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("onboard sandbox"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  if (X509_set_pubkey(cert.get(), key) != 1) {
    *error = OpensslError("X509_set_pubkey");
    return nullptr;
  }
  return cert;
}

std::string CertPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  return pem;
}

}  // namespace

bool GenerateCa(const std::string& common_name, KeyAndCert* out, std::string* error) {
  PkeyPtr key = NewEcKey(error);
  if (!key) return false;
  X509Ptr cert = NewCert(key.get(), common_name, 3650, error);
  if (!cert) return false;
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  if (!AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE", error) ||
      !AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature",
                    error) ||
      !AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash", error)) {
    return false;
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    *error = OpensslError("X509_sign (CA)");
    return false;
  }
  out->cert_pem = CertPem(cert.get());
  out->key = std::move(key);
  out->cert = std::move(cert);
  return true;
}

bool GenerateServerCert(const KeyAndCert& ca, const std::string& common_name,
                        const std::vector<std::string>& dns_names,
                        const std::vector<std::string>& ip_addresses, KeyAndCert* out,
                        std::string* error) {
  PkeyPtr key = NewEcKey(error);
  if (!key) return false;
  X509Ptr cert = NewCert(key.get(), common_name, 365, error);
  if (!cert) return false;
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get()));
  std::string san;
  for (const auto& d : dns_names) san += (san.empty() ? "" : ",") + std::string("DNS:") + d;
  for (const auto& ip : ip_addresses) san += (san.empty() ? "" : ",") + std::string("IP:") + ip;
  if (!AddExtension(cert.get(), ca.cert.get(), NID_basic_constraints, "critical,CA:FALSE", error) ||
      !AddExtension(cert.get(), ca.cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment",
                    error) ||
      !AddExtension(cert.get(), ca.cert.get(), NID_ext_key_usage, "serverAuth", error) ||
      !AddExtension(cert.get(), ca.cert.get(), NID_authority_key_identifier, "keyid:always", error) ||
      (!san.empty() && !AddExtension(cert.get(), ca.cert.get(), NID_subject_alt_name, san, error))) {
    return false;
  }
  if (X509_sign(cert.get(), ca.key.get(), EVP_sha256()) == 0) {
    *error = OpensslError("X509_sign (server)");
    return false;
  }
  out->cert_pem = CertPem(cert.get());
  out->key = std::move(key);
  out->cert = std::move(cert);
  return true;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&out[0]), static_cast<int>(n)) != 1) {
    std::fprintf(stderr, "onboard-test-apiserver: RAND_bytes failed; cannot generate secrets\n");
    std::abort();
  }
  return out;
}

std::string RandomHex(size_t n) { return Hex(RandomBytes(n)); }

std::string Hex(const std::string& bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::string RandomUuid() {
  std::string b = RandomBytes(16);
  b[6] = static_cast<char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<char>((b[8] & 0x3f) | 0x80);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    unsigned char c = static_cast<unsigned char>(b[i]);
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::string Base64Url(const std::string& data) {
  static const char* kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  for (; i + 2 < data.size(); i += 3) {
    unsigned v = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (data.size() - i == 1) {
    unsigned v = p[i] << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (data.size() - i == 2) {
    unsigned v = (p[i] << 16) | (p[i + 1] << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

std::string HmacSha256(const std::string& key, const std::string& data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}

}  // namespace onboard::sandbox
