// known_hosts verification with libssh2_knownhost_*, one line at a time so that a line libssh2
// cannot parse (certificates, security-key types) does not hide the others.
#include "providers/ssh/known_hosts.h"

#include "engine/encoding.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace onboard::ssh {
namespace {

// Serialises appends to known_hosts files from the threads of one run.
std::mutex& KnownHostsFileMutex() {
  static std::mutex m;
  return m;
}

int KnownHostKeyBit(const std::string& blob_type) {
  if (blob_type == "ssh-ed25519") return LIBSSH2_KNOWNHOST_KEY_ED25519;
  if (blob_type == "ecdsa-sha2-nistp256") return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
  if (blob_type == "ecdsa-sha2-nistp384") return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
  if (blob_type == "ecdsa-sha2-nistp521") return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
  if (blob_type == "ssh-rsa") return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
  if (blob_type == "ssh-dss") return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
  return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
}

std::vector<std::string> SplitFields(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string f;
  while (in >> f) out.push_back(f);
  return out;
}

struct ParsedFile {
  bool exists = false;
  std::vector<std::string> lines;
  std::vector<int> unreadable;          // 1-based line numbers libssh2 could not parse
  std::vector<std::string> revoked;     // base64 keys of @revoked lines
};

// Appends `line` to `path`, creating the file (and its directory, when it is ~/.ssh) as needed.
Status AppendLine(const std::string& path, const std::string& line) {
  std::lock_guard<std::mutex> lock(KnownHostsFileMutex());
  std::string prefix;
  {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      in.seekg(0, std::ios::end);
      std::streamoff size = in.tellg();
      if (size > 0) {
        in.seekg(size - 1);
        char last = 0;
        in.get(last);
        if (last != '\n') prefix = "\n";
      }
    }
  }
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 && mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::Error("cannot create directory " + dir + " for known_hosts: " + std::strerror(errno));
    }
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::Error("cannot open known_hosts file " + path + " to add a key: " + std::strerror(errno));
  }
  std::string data = prefix + line + "\n";
  ssize_t n = write(fd, data.data(), data.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(data.size())) {
    return Status::Error("cannot append to known_hosts file " + path + ": " + std::strerror(err));
  }
  return Status::Ok();
}

}  // namespace


std::string KeyBlobType(const std::string& blob) {
  if (blob.size() < 4) return "";
  const auto* p = reinterpret_cast<const unsigned char*>(blob.data());
  uint32_t len = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
  if (len > blob.size() - 4 || len > 64) return "";
  return blob.substr(4, len);
}

std::string KeyTypeLabel(const std::string& t) {
  if (t == "ssh-ed25519") return "ED25519";
  if (t.rfind("ecdsa-", 0) == 0) return "ECDSA";
  if (t == "ssh-rsa") return "RSA";
  if (t == "ssh-dss") return "DSA";
  return t.empty() ? "UNKNOWN" : t;
}

std::string KeyscanType(const std::string& t) {
  if (t == "ssh-ed25519") return "ed25519";
  if (t.rfind("ecdsa-", 0) == 0) return "ecdsa";
  if (t == "ssh-rsa") return "rsa";
  if (t == "ssh-dss") return "dsa";
  return t;
}

std::string Sha256Fingerprint(const std::string& blob) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(blob.data()), blob.size(), digest);
  std::string b64 = Base64Encode(std::string(reinterpret_cast<char*>(digest), sizeof digest));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "SHA256:" + b64;
}

std::string KnownHostsName(const std::string& host, int port) {
  if (port == 22) return host;
  return "[" + host + "]:" + std::to_string(port);
}

std::string ExpandHome(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) {
    std::string home = DefaultKnownHostsPath();
    home = home.substr(0, home.size() - std::string("/.ssh/known_hosts").size());
    return home + path.substr(1);
  }
  return path;
}

std::string DefaultKnownHostsPath() {
  const char* home = std::getenv("HOME");
  std::string h = home && *home ? home : "";
  if (h.empty()) {
    if (struct passwd* pw = getpwuid(getuid())) h = pw->pw_dir;
  }
  return h + "/.ssh/known_hosts";
}

Status VerifyHostKey(LIBSSH2_SESSION* session, const Endpoint& ep) {
  const std::string who = "ssh " + ep.ToString();
  size_t key_len = 0;
  int key_kind = 0;
  const char* key = libssh2_session_hostkey(session, &key_len, &key_kind);
  if (!key || key_len == 0) {
    return Status::Error(who + ": the server presented no host key; cannot verify it");
  }
  const std::string blob(key, key_len);
  const std::string type = KeyBlobType(blob);
  const std::string label = KeyTypeLabel(type);
  const std::string fp = Sha256Fingerprint(blob);
  if (ep.host_keys.insecure_ignore) return Status::Ok();

  const std::string path = ep.known_hosts.empty() ? DefaultKnownHostsPath() : ExpandHome(ep.known_hosts);
  const std::string name = KnownHostsName(ep.host, ep.port);
  const std::string hostport = ep.host + ":" + std::to_string(ep.port);

  ParsedFile file;
  LIBSSH2_KNOWNHOSTS* hosts = libssh2_knownhost_init(session);
  if (!hosts) return Status::Error(who + ": out of memory reading known_hosts");
  struct Free {
    LIBSSH2_KNOWNHOSTS* h;
    ~Free() { libssh2_knownhost_free(h); }
  } free_hosts{hosts};
  {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      file.exists = true;
      std::string line;
      int number = 0;
      while (std::getline(in, line)) {
        ++number;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        file.lines.push_back(line);
        std::vector<std::string> f = SplitFields(line);
        if (f.empty() || f[0][0] == '#') continue;
        if (f[0] == "@revoked") {
          if (f.size() >= 4) file.revoked.push_back(f[3]);
          continue;
        }
        if (f[0][0] == '@') continue;  // @cert-authority: certificates are not supported
        if (libssh2_knownhost_readline(hosts, line.c_str(), line.size(),
                                       LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0) {
          file.unreadable.push_back(number);
        }
      }
    }
  }
  std::string unreadable_note;
  if (!file.unreadable.empty()) {
    unreadable_note = " (note: " + std::to_string(file.unreadable.size()) + " line(s) of " + path +
                      " could not be read and were skipped, first at line " +
                      std::to_string(file.unreadable.front()) + ")";
  }

  const std::string key_b64 = Base64Encode(blob);
  for (const std::string& r : file.revoked) {
    if (r == key_b64) {
      return Status::Error(who + ": host key of " + hostport + " (" + label + " " + fp +
                           ") is marked @revoked in " + path +
                           "; refusing to connect. Only --insecure-ignore-host-keys goes past it.");
    }
  }

  struct libssh2_knownhost* known = nullptr;
  // Look up exactly the name OpenSSH uses ("host" for port 22, "[host]:port" otherwise; hashed
  // entries hash that same name). libssh2's own port handling would also fall back to a plain
  // "host" entry for other ports, which OpenSSH does not do.
  int rc = libssh2_knownhost_checkp(
      hosts, name.c_str(), -1, key, key_len,
      LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | KnownHostKeyBit(type), &known);
  switch (rc) {
    case LIBSSH2_KNOWNHOST_CHECK_MATCH:
      return Status::Ok();
    case LIBSSH2_KNOWNHOST_CHECK_MISMATCH: {
      std::string old_fp = "(unknown)";
      std::string old_label = label;
      std::string where = path;
      if (known && known->key) {
        std::string old_blob;
        if (auto decoded = Base64Decode(known->key); decoded.ok() && !decoded->empty()) {
          old_blob = std::move(*decoded);
          old_fp = Sha256Fingerprint(old_blob);
          old_label = KeyTypeLabel(KeyBlobType(old_blob));
        }
        for (size_t i = 0; i < file.lines.size(); ++i) {
          if (file.lines[i].find(known->key) != std::string::npos) {
            where = path + " line " + std::to_string(i + 1);
            break;
          }
        }
      }
      return Status::Error(
          who + ": host key of " + hostport + " has CHANGED: " + where + " has " + old_label + " " +
          old_fp + ", the server presented " + label + " " + fp +
          ". Someone may be intercepting the connection, or the VM was re-installed. If the change is "
          "expected, remove the old entry (ssh-keygen -R '" + name + "' -f " + path +
          ") and trust the new key (ssh-keyscan -p " + std::to_string(ep.port) + " -t " +
          KeyscanType(type) + " " + ep.host + " >> " + path +
          "); --accept-new-host-keys never replaces a changed key, only --insecure-ignore-host-keys "
          "goes past it.");
    }
    case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
      break;
    default:
      return Status::Error(who + ": cannot check the host key of " + hostport + " against " + path +
                           " (libssh2 known-host check failed for key type " + label + ")" +
                           unreadable_note);
  }

  if (!ep.host_keys.accept_new) {
    return Status::Error(who + ": host key of " + hostport + " is not known (" + label + " " + fp +
                         "); to trust it run: ssh-keyscan -p " + std::to_string(ep.port) + " -t " +
                         KeyscanType(type) + " " + ep.host + " >> " + path +
                         " (or pass --accept-new-host-keys)" +
                         (file.exists ? "" : "; " + path + " does not exist yet") + unreadable_note);
  }
  Status appended = AppendLine(path, name + " " + type + " " + key_b64);
  if (!appended.ok()) return Status::Error(who + ": " + appended.message());
  return Status::Ok();
}

}  // namespace onboard::ssh
