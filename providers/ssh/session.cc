// libssh2 implementation of Session: TCP connect with a timeout, handshake, host key check,
// public-key authentication, exec over a channel and file transfer over SFTP.
#include "providers/ssh/session.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "engine/encoding.h"
#include "providers/ssh/known_hosts.h"

namespace onboard::ssh {
namespace {

using Clock = std::chrono::steady_clock;

// The keepalive interval in seconds; libssh2 uses at least 2.
int AliveInterval(const Endpoint& ep) {
  int v = ep.alive_interval_seconds > 0 ? ep.alive_interval_seconds : 10;
  return v < 2 ? 2 : v;
}

std::once_flag g_init_once;
int g_init_rc = 0;

Status InitLibssh2() {
  std::call_once(g_init_once, [] { g_init_rc = libssh2_init(0); });
  if (g_init_rc != 0) return Status::Error("libssh2_init failed (" + std::to_string(g_init_rc) + ")");
  return Status::Ok();
}

std::string LibsshError(LIBSSH2_SESSION* s) {
  char* msg = nullptr;
  int len = 0;
  int rc = libssh2_session_last_error(s, &msg, &len, 0);
  std::string text = msg && len > 0 ? std::string(msg, len) : "no detail";
  return text + " (libssh2 error " + std::to_string(rc) + ")";
}

bool IsConnectionError(int rc) {
  return rc == LIBSSH2_ERROR_SOCKET_SEND || rc == LIBSSH2_ERROR_SOCKET_RECV ||
         rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_SOCKET_TIMEOUT ||
         rc == LIBSSH2_ERROR_TIMEOUT || rc == LIBSSH2_ERROR_BANNER_RECV ||
         rc == LIBSSH2_ERROR_BANNER_SEND || rc == LIBSSH2_ERROR_KEX_FAILURE ||
         rc == LIBSSH2_ERROR_DECRYPT || rc == LIBSSH2_ERROR_PROTO;
}

// The first word of a command line, for error messages (the rest may carry values that are not
// for logs).
std::string CommandLabel(const std::string& command) {
  std::string first = command.substr(0, command.find_first_of(" \t\n"));
  if (first.size() > 40) first = first.substr(0, 40) + "...";
  return first;
}

int SignalNumber(const std::string& name) {
  static const struct { const char* name; int number; } kSignals[] = {
      {"ABRT", SIGABRT}, {"ALRM", SIGALRM}, {"FPE", SIGFPE},   {"HUP", SIGHUP},
      {"ILL", SIGILL},   {"INT", SIGINT},   {"KILL", SIGKILL}, {"PIPE", SIGPIPE},
      {"QUIT", SIGQUIT}, {"SEGV", SIGSEGV}, {"TERM", SIGTERM}, {"USR1", SIGUSR1},
      {"USR2", SIGUSR2}, {"BUS", SIGBUS},   {"SYS", SIGSYS},   {"TRAP", SIGTRAP}};
  for (const auto& s : kSignals) {
    if (name == s.name) return s.number;
  }
  return 0;
}

std::string SftpErrorText(unsigned long code) {
  switch (code) {
    case LIBSSH2_FX_NO_SUCH_FILE: return "no such file";
    case LIBSSH2_FX_PERMISSION_DENIED: return "permission denied";
    case LIBSSH2_FX_NO_SUCH_PATH: return "no such path";
    case LIBSSH2_FX_FILE_ALREADY_EXISTS: return "file already exists";
    case LIBSSH2_FX_WRITE_PROTECT: return "write protected";
    case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM: return "no space left on the file system";
    case LIBSSH2_FX_QUOTA_EXCEEDED: return "quota exceeded";
    case LIBSSH2_FX_NOT_A_DIRECTORY: return "a path component is not a directory";
    case LIBSSH2_FX_INVALID_FILENAME: return "invalid file name";
    case LIBSSH2_FX_LINK_LOOP: return "too many symbolic links";
    case LIBSSH2_FX_FAILURE: return "failure (is it a directory?)";
    case LIBSSH2_FX_EOF: return "end of file";
    default: return "SFTP status " + std::to_string(code);
  }
}

// Key type of a private key file (reads the OpenSSH or PEM header), or of its .pub file.
std::string PrivateKeyType(const std::string& path) {
  std::ifstream pub(path + ".pub");
  std::string word;
  if (pub && (pub >> word)) return word;
  std::ifstream in(path);
  if (!in) return "";
  std::string line;
  std::getline(in, line);
  if (line.find("BEGIN RSA PRIVATE KEY") != std::string::npos) return "ssh-rsa";
  if (line.find("BEGIN EC PRIVATE KEY") != std::string::npos) return "ecdsa";
  if (line.find("BEGIN DSA PRIVATE KEY") != std::string::npos) return "ssh-dss";
  if (line.find("BEGIN OPENSSH PRIVATE KEY") == std::string::npos) return "";
  std::string body, l;
  while (std::getline(in, l) && l.find("-----END") == std::string::npos) body += l;
  auto decoded = Base64Decode(body);
  if (!decoded.ok()) return "";
  const std::string& raw = *decoded;
  // "openssh-key-v1\0", string cipher, string kdf, string kdfoptions, uint32 n, string pubkey.
  const std::string magic("openssh-key-v1\0", 15);
  if (raw.compare(0, magic.size(), magic) != 0) return "";
  size_t pos = magic.size();
  auto read_u32 = [&](uint32_t* v) {
    if (pos + 4 > raw.size()) return false;
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data() + pos);
    *v = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    pos += 4;
    return true;
  };
  uint32_t len = 0;
  for (int i = 0; i < 3; ++i) {
    if (!read_u32(&len) || pos + len > raw.size()) return "";
    pos += len;
  }
  uint32_t count = 0;
  if (!read_u32(&count) || !read_u32(&len) || pos + len > raw.size()) return "";
  return KeyBlobType(raw.substr(pos, len));
}

std::string HomeDir() {
  const char* home = std::getenv("HOME");
  if (home && *home) return home;
  if (struct passwd* pw = getpwuid(getuid())) return pw->pw_dir;
  return "";
}

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

const char kRsaAdvice[] =
    "libssh2 1.10 signs RSA keys only with SHA-1 (ssh-rsa), which OpenSSH >= 8.8 refuses: use an "
    "ed25519 or ECDSA key (ssh-keygen -t ed25519) and add its .pub to the VM's authorized_keys";

// Opens a TCP connection with a deadline. The socket is left non-blocking (libssh2 then applies
// its own timeout to every wait).
Result<int> TcpConnect(const Endpoint& ep, const std::string& who) {
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* list = nullptr;
  int gai = getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &list);
  if (gai != 0) {
    return Result<int>::Error(who + ": cannot resolve host '" + ep.host + "': " + gai_strerror(gai) +
                              " (check the VM's address in the manifest)");
  }
  const int timeout_ms = (ep.connect_timeout_seconds > 0 ? ep.connect_timeout_seconds : 10) * 1000;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string last_error = "no address";
  bool timed_out = false;
  for (struct addrinfo* ai = list; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
          timed_out = true;
          break;
        }
        struct pollfd p = {fd, POLLOUT, 0};
        int n = poll(&p, 1, static_cast<int>(left));
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {
          timed_out = true;
          break;
        }
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
        break;
      }
      if (timed_out) {
        close(fd);
        last_error = "timed out";
        break;
      }
    }
    if (rc != 0) {
      last_error = std::strerror(errno);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // else ~40 ms per exec (Nagle)
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    int idle = 30, interval = 10, count = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    unsigned user_timeout_ms = 60000;  // unacknowledged data for this long: the peer is gone
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    freeaddrinfo(list);
    return fd;
  }
  freeaddrinfo(list);
  if (timed_out) {
    return Result<int>::Error(who + ": TCP connect timed out after " + std::to_string(timeout_ms / 1000) +
                              " s (is the VM up, and port " + std::to_string(ep.port) +
                              " reachable through firewalls?)");
  }
  return Result<int>::Error(who + ": cannot connect: " + last_error + " (is sshd running on " + ep.host +
                            " and listening on port " + std::to_string(ep.port) + "?)");
}

class Libssh2Session final : public Session {
 public:
  Libssh2Session(Endpoint ep, int fd, LIBSSH2_SESSION* s) : ep_(std::move(ep)), fd_(fd), s_(s) {
    who_ = "ssh " + ep_.ToString();
    connects_ = 1;
  }
  ~Libssh2Session() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_) {
      libssh2_session_set_blocking(s_, 1);
      libssh2_session_set_timeout(s_, 2000);
      if (sftp_) libssh2_sftp_shutdown(sftp_);
      libssh2_session_disconnect(s_, "onboard done");
    }
    libssh2_session_free(s_);
    close(fd_);
  }

  const Endpoint& endpoint() const override { return ep_; }

  SessionStats stats() const override {
    SessionStats st;
    st.connects = connects_;
    st.execs = execs_;
    st.sftp_writes = sftp_writes_;
    return st;
  }

  Result<ExecResult> Exec(const std::string& command, const std::string& stdin_data) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++execs_;
    const std::string what = "running `" + CommandLabel(command) + "`";
    if (broken_) return Result<ExecResult>::Error(BrokenMessage(what));
    if (command.find('\0') != std::string::npos) {
      // A shell command line cannot carry a NUL byte; it would silently cut the command short.
      return Result<ExecResult>::Error(who_ + ": " + what + ": the command line contains a NUL byte; refusing to run it");
    }
    libssh2_session_set_blocking(s_, 1);
    LIBSSH2_CHANNEL* ch = libssh2_channel_open_session(s_);
    if (!ch) return Result<ExecResult>::Error(Fail(what + ": cannot open a channel"));
    struct ChannelFree {
      LIBSSH2_CHANNEL* ch;
      LIBSSH2_SESSION* s;
      const bool* broken;
      ~ChannelFree() {
        // On a lost connection, never wait for the peer's close (libssh2 frees what is left with
        // the session).
        libssh2_session_set_blocking(s, *broken ? 0 : 1);
        libssh2_channel_free(ch);
        libssh2_session_set_blocking(s, 1);
      }
    } free_channel{ch, s_, &broken_};
    int rc = libssh2_channel_exec(ch, command.c_str());
    if (rc != 0) return Result<ExecResult>::Error(Fail(what + ": the server refused to start it", rc));

    ExecResult result;
    libssh2_session_set_blocking(s_, 0);
    size_t sent = 0;
    bool eof_sent = false;
    std::vector<char> buf(32768);
    auto last_rx = Clock::now();
    auto last_keepalive = Clock::now();
    const int dead_after = AliveInterval(ep_) * (ep_.alive_count_max > 0 ? ep_.alive_count_max : 4);
    for (;;) {
      bool progress = false;
      if (sent < stdin_data.size()) {
        ssize_t n = libssh2_channel_write(ch, stdin_data.data() + sent, stdin_data.size() - sent);
        if (n > 0) {
          sent += static_cast<size_t>(n);
          progress = true;
        } else if (n != LIBSSH2_ERROR_EAGAIN && n < 0) {
          // The command may have exited without reading all of stdin: stop sending, keep reading.
          if (IsConnectionError(static_cast<int>(n)))
            return Result<ExecResult>::Error(Fail(what + ": sending stdin failed", static_cast<int>(n)));
          sent = stdin_data.size();
        }
      }
      if (sent >= stdin_data.size() && !eof_sent) {
        int e = libssh2_channel_send_eof(ch);
        if (e == 0) {
          eof_sent = true;
        } else if (e != LIBSSH2_ERROR_EAGAIN) {
          if (IsConnectionError(e)) return Result<ExecResult>::Error(Fail(what + ": sending EOF failed", e));
          eof_sent = true;
        }
      }
      for (int stream = 0; stream < 2; ++stream) {
        for (;;) {
          ssize_t n = libssh2_channel_read_ex(ch, stream, buf.data(), buf.size());
          if (n > 0) {
            (stream == 0 ? result.out : result.err).append(buf.data(), static_cast<size_t>(n));
            progress = true;
            continue;
          }
          if (n == 0 || n == LIBSSH2_ERROR_EAGAIN) break;
          return Result<ExecResult>::Error(Fail(what + ": reading its output failed", static_cast<int>(n)));
        }
      }
      if (libssh2_channel_eof(ch)) break;
      if (progress) {
        last_rx = Clock::now();
        continue;
      }
      // Nothing to do: wait for the socket, sending keepalives so a dead peer is noticed.
      auto now = Clock::now();
      if (now - last_keepalive >= std::chrono::milliseconds(500)) {
        int next = 0;
        libssh2_keepalive_send(s_, &next);  // sends only when the interval has passed
        last_keepalive = now;
      }
      if (now - last_rx >= std::chrono::seconds(dead_after)) {
        broken_ = true;
        broken_reason_ = "no answer from the server for " + std::to_string(dead_after) + " s";
        return Result<ExecResult>::Error(who_ + ": " + what + ": " + broken_reason_ +
                                         "; the connection is considered lost (the command may or may "
                                         "not have completed on the VM)");
      }
      int dirs = libssh2_session_block_directions(s_);
      short events = 0;
      if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND) events |= POLLIN;
      if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND) events |= POLLOUT;
      if (events == 0) events = POLLIN;
      struct pollfd p = {fd_, events, 0};
      int n = poll(&p, 1, 200);
      if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) last_rx = Clock::now();
    }
    libssh2_session_set_blocking(s_, 1);
    rc = libssh2_channel_close(ch);
    if (rc == 0) rc = libssh2_channel_wait_closed(ch);
    if (rc != 0 && IsConnectionError(rc)) {
      return Result<ExecResult>::Error(Fail(what + ": waiting for it to finish failed", rc));
    }
    result.exit_status = libssh2_channel_get_exit_status(ch);
    char* signal = nullptr;
    size_t signal_len = 0;
    if (libssh2_channel_get_exit_signal(ch, &signal, &signal_len, nullptr, nullptr, nullptr, nullptr) == 0 &&
        signal) {
      result.exit_signal.assign(signal, signal_len);
      libssh2_free(s_, signal);
    }
    if (!result.exit_signal.empty() && result.exit_status == 0) {
      // Killed by a signal: report it as the shell would (128 + n) so that no check on the status
      // alone mistakes it for success.
      int number = SignalNumber(result.exit_signal);
      result.exit_status = number ? 128 + number : 255;
    }
    return result;
  }

  Status WriteFile(const std::string& path, const std::string& data, int mode) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++sftp_writes_;
    const std::string what = "writing " + path + " over SFTP";
    if (broken_) return Status::Error(BrokenMessage(what));
    Status st = EnsureSftp(what);
    if (!st.ok()) return st;
    LIBSSH2_SFTP_HANDLE* h = libssh2_sftp_open_ex(
        sftp_, path.c_str(), static_cast<unsigned>(path.size()),
        LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_TRUNC, mode & 07777, LIBSSH2_SFTP_OPENFILE);
    if (!h) return Status::Error(SftpFail(what + ": cannot open it", path));
    // The mode first, so that content meant to be private is never readable with the old mode.
    // Only when it differs: a file the user may write but not chmod keeps working.
    LIBSSH2_SFTP_ATTRIBUTES current;
    std::memset(&current, 0, sizeof current);
    bool same_mode = libssh2_sftp_fstat(h, &current) == 0 && (current.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) &&
                     (current.permissions & 07777) == static_cast<unsigned long>(mode & 07777);
    LIBSSH2_SFTP_ATTRIBUTES attrs;
    std::memset(&attrs, 0, sizeof attrs);
    attrs.flags = LIBSSH2_SFTP_ATTR_PERMISSIONS;
    attrs.permissions = static_cast<unsigned long>(mode & 07777);
    if (!same_mode && libssh2_sftp_fsetstat(h, &attrs) != 0) {
      std::string msg = SftpFail(what + ": cannot set its mode to " + OctalMode(mode), path);
      libssh2_sftp_close_handle(h);
      return Status::Error(msg);
    }
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = libssh2_sftp_write(h, data.data() + off, data.size() - off);
      if (n <= 0) {
        std::string msg = SftpFail(what + ": write failed after " + std::to_string(off) + " bytes", path);
        libssh2_sftp_close_handle(h);
        return Status::Error(msg);
      }
      off += static_cast<size_t>(n);
    }
    if (libssh2_sftp_close_handle(h) != 0) return Status::Error(SftpFail(what + ": closing it failed", path));
    return Status::Ok();
  }

  Result<std::string> ReadFile(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string what = "reading " + path + " over SFTP";
    if (broken_) return Result<std::string>::Error(BrokenMessage(what));
    Status st = EnsureSftp(what);
    if (!st.ok()) return st;
    LIBSSH2_SFTP_HANDLE* h = libssh2_sftp_open_ex(sftp_, path.c_str(), static_cast<unsigned>(path.size()),
                                                  LIBSSH2_FXF_READ, 0, LIBSSH2_SFTP_OPENFILE);
    if (!h) return Result<std::string>::Error(SftpFail(what + ": cannot open it", path));
    std::string out;
    std::vector<char> buf(32768);
    for (;;) {
      ssize_t n = libssh2_sftp_read(h, buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) {
        std::string msg = SftpFail(what + ": read failed after " + std::to_string(out.size()) + " bytes", path);
        libssh2_sftp_close_handle(h);
        return Result<std::string>::Error(msg);
      }
      out.append(buf.data(), static_cast<size_t>(n));
    }
    libssh2_sftp_close_handle(h);
    return out;
  }

 private:
  static std::string OctalMode(int mode) {
    std::ostringstream o;
    o << "0" << std::oct << (mode & 07777);
    return o.str();
  }

  std::string BrokenMessage(const std::string& what) const {
    return who_ + ": " + what + ": the connection was lost earlier (" + broken_reason_ +
           "); reconnect (a new run) to continue";
  }

  // Formats a failure of the current libssh2 call; a failure of the connection itself marks the
  // session broken so that later calls fail at once.
  std::string Fail(const std::string& what, int rc = 0) {
    int last = libssh2_session_last_errno(s_);
    if (rc == 0) rc = last;
    std::string detail = LibsshError(s_);
    if (IsConnectionError(rc) || IsConnectionError(last)) {
      broken_ = true;
      broken_reason_ = detail;
      return who_ + ": " + what + ": connection lost: " + detail +
             " (the VM or its sshd went away; the command may or may not have completed)";
    }
    return who_ + ": " + what + ": " + detail;
  }

  std::string SftpFail(const std::string& what, const std::string& path) {
    int last = libssh2_session_last_errno(s_);
    if (last == LIBSSH2_ERROR_SFTP_PROTOCOL && sftp_) {
      unsigned long code = libssh2_sftp_last_error(sftp_);
      std::string hint;
      if (code == LIBSSH2_FX_NO_SUCH_FILE || code == LIBSSH2_FX_NO_SUCH_PATH)
        hint = " (does the parent directory of " + path + " exist?)";
      if (code == LIBSSH2_FX_PERMISSION_DENIED) hint = " (check the owner and mode of " + path + " and of its directory)";
      return who_ + ": " + what + ": " + SftpErrorText(code) + hint;
    }
    return Fail(what);
  }

  Status EnsureSftp(const std::string& what) {
    if (sftp_) return Status::Ok();
    libssh2_session_set_blocking(s_, 1);
    sftp_ = libssh2_sftp_init(s_);
    if (!sftp_) {
      return Status::Error(Fail(what + ": cannot start the SFTP subsystem (is `Subsystem sftp` enabled in the "
                                       "VM's sshd_config?)"));
    }
    return Status::Ok();
  }

  Endpoint ep_;
  std::string who_;
  int fd_;
  LIBSSH2_SESSION* s_;
  LIBSSH2_SFTP* sftp_ = nullptr;
  std::mutex mu_;
  bool broken_ = false;
  std::string broken_reason_;
  std::atomic<int> connects_{0};
  std::atomic<int> execs_{0};
  std::atomic<int> sftp_writes_{0};
};

// Public-key authentication: ssh-agent, then the identity file (or the default key files).
Status Authenticate(LIBSSH2_SESSION* s, const Endpoint& ep, const std::string& who) {
  const std::string& user = ep.user;
  char* methods = libssh2_userauth_list(s, user.c_str(), static_cast<unsigned>(user.size()));
  if (!methods) {
    if (libssh2_userauth_authenticated(s)) return Status::Ok();
    return Status::Error(who + ": cannot ask the server for its authentication methods: " + LibsshError(s));
  }
  if (std::string(methods).find("publickey") == std::string::npos) {
    return Status::Error(who + ": the server offers only '" + std::string(methods) +
                         "' authentication; onboard logs in with public keys only (enable "
                         "PubkeyAuthentication in the VM's sshd_config)");
  }
  std::vector<std::string> tried;
  bool rsa_refused = false;

  const char* agent_sock = std::getenv("SSH_AUTH_SOCK");
  if (agent_sock && *agent_sock) {
    LIBSSH2_AGENT* agent = libssh2_agent_init(s);
    if (agent && libssh2_agent_connect(agent) == 0) {
      int keys = 0;
      int rsa_keys = 0;
      if (libssh2_agent_list_identities(agent) == 0) {
        struct libssh2_agent_publickey* id = nullptr;
        struct libssh2_agent_publickey* prev = nullptr;
        while (libssh2_agent_get_identity(agent, &id, prev) == 0) {
          prev = id;
          ++keys;
          if (KeyBlobType(std::string(reinterpret_cast<const char*>(id->blob), id->blob_len)) == "ssh-rsa") {
            ++rsa_keys;
          }
          if (libssh2_agent_userauth(agent, user.c_str(), id) == 0) {
            libssh2_agent_disconnect(agent);
            libssh2_agent_free(agent);
            return Status::Ok();
          }
          int rc = libssh2_session_last_errno(s);
          if (IsConnectionError(rc)) {
            libssh2_agent_disconnect(agent);
            libssh2_agent_free(agent);
            return Status::Error(who + ": connection lost during authentication: " + LibsshError(s));
          }
        }
      }
      tried.push_back("ssh-agent (" + std::to_string(keys) + " key(s) refused" +
                      (rsa_keys ? ", " + std::to_string(rsa_keys) + " of them RSA" : std::string()) + ")");
      if (rsa_keys) rsa_refused = true;
      libssh2_agent_disconnect(agent);
    } else {
      tried.push_back("ssh-agent (cannot connect to SSH_AUTH_SOCK)");
    }
    if (agent) libssh2_agent_free(agent);
  }

  std::vector<std::string> files;
  if (!ep.identity_file.empty()) {
    const std::string identity = ExpandHome(ep.identity_file);
    if (!FileExists(identity)) {
      return Status::Error(who + ": identity file " + identity +
                           " does not exist (fix identity_file in the manifest)");
    }
    files.push_back(identity);
  } else {
    std::string home = HomeDir();
    for (const char* name : {"/.ssh/id_ed25519", "/.ssh/id_ecdsa"}) {
      if (FileExists(home + name)) files.push_back(home + name);
    }
  }
  const char* passphrase = std::getenv("ONBOARD_SSH_PASSPHRASE");
  for (const std::string& file : files) {
    std::string pub = file + ".pub";
    bool has_pub = FileExists(pub);
    int rc = libssh2_userauth_publickey_fromfile_ex(s, user.c_str(), static_cast<unsigned>(user.size()),
                                                    has_pub ? pub.c_str() : nullptr, file.c_str(),
                                                    passphrase);
    if (rc == 0) return Status::Ok();
    if (IsConnectionError(rc)) {
      return Status::Error(who + ": connection lost during authentication: " + LibsshError(s));
    }
    std::string type = PrivateKeyType(file);
    if (rc == LIBSSH2_ERROR_FILE) {
      tried.push_back(file + " (cannot read or decrypt the key" +
                      std::string(passphrase ? ": wrong ONBOARD_SSH_PASSPHRASE?" :
                                               "; if it has a passphrase, set ONBOARD_SSH_PASSPHRASE") +
                      ")");
    } else if (type == "ssh-rsa") {
      rsa_refused = true;
      tried.push_back(file + " (RSA key refused)");
    } else {
      tried.push_back(file + " (" + (type.empty() ? std::string("key") : KeyTypeLabel(type) + " key") +
                      " refused by the server)");
    }
  }
  std::string list;
  for (size_t i = 0; i < tried.size(); ++i) list += (i ? ", " : "") + tried[i];
  if (tried.empty()) {
    return Status::Error(who + ": authentication failed: no key to offer (no SSH_AUTH_SOCK agent, no "
                               "identity_file, no ~/.ssh/id_ed25519 or ~/.ssh/id_ecdsa)");
  }
  std::string msg = who + ": authentication as user '" + user + "' failed; tried: " + list + ".";
  if (rsa_refused) {
    msg += " " + std::string(kRsaAdvice) + ".";
  } else {
    msg += " Add the public key to ~" + user + "/.ssh/authorized_keys on the VM, or set identity_file to "
           "a key it accepts.";
  }
  return Status::Error(msg);
}

// Prefers the host key types known_hosts files usually hold (ssh-keyscan -t ed25519 writes
// ed25519). Only names this libssh2 supports are passed: libssh2 1.10 copies overlapping memory
// when it has to drop unsupported names from a preference list.
void SetHostKeyPreference(LIBSSH2_SESSION* s) {
  const char** algs = nullptr;
  int n = libssh2_session_supported_algs(s, LIBSSH2_METHOD_HOSTKEY, &algs);
  if (n <= 0 || !algs) return;
  std::vector<std::string> supported(algs, algs + n);
  libssh2_free(s, algs);
  std::string pref;
  for (const char* want : {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                           "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"}) {
    if (std::find(supported.begin(), supported.end(), want) != supported.end()) {
      pref += (pref.empty() ? "" : ",") + std::string(want);
    }
  }
  if (!pref.empty()) libssh2_session_method_pref(s, LIBSSH2_METHOD_HOSTKEY, pref.c_str());
}

}  // namespace

Result<std::unique_ptr<Session>> Connect(const Endpoint& endpoint) {
  using R = Result<std::unique_ptr<Session>>;
  Endpoint ep = endpoint;
  if (ep.user.empty()) {
    if (struct passwd* pw = getpwuid(getuid())) ep.user = pw->pw_name;
  }
  const std::string who = "ssh " + ep.ToString();
  if (ep.host.empty()) return R::Error(who + ": no host given");
  if (ep.port <= 0 || ep.port > 65535) return R::Error(who + ": port " + std::to_string(ep.port) + " is out of range");
  Status init = InitLibssh2();
  if (!init.ok()) return R::Error(who + ": " + init.message());

  Result<int> fd = TcpConnect(ep, who);
  if (!fd.ok()) return fd.status();

  LIBSSH2_SESSION* s = libssh2_session_init();
  if (!s) {
    close(*fd);
    return R::Error(who + ": cannot create a libssh2 session (out of memory)");
  }
  struct Guard {
    LIBSSH2_SESSION* s;
    int fd;
    ~Guard() {
      if (s) {
        libssh2_session_free(s);
        close(fd);
      }
    }
  } guard{s, *fd};
  const int timeout_s = ep.connect_timeout_seconds > 0 ? ep.connect_timeout_seconds : 10;
  libssh2_session_set_blocking(s, 1);
  libssh2_session_set_timeout(s, timeout_s * 1000L);
  SetHostKeyPreference(s);
  int rc = libssh2_session_handshake(s, *fd);
  if (rc != 0) {
    if (rc == LIBSSH2_ERROR_TIMEOUT || rc == LIBSSH2_ERROR_SOCKET_TIMEOUT) {
      return R::Error(who + ": SSH handshake timed out after " + std::to_string(timeout_s) +
                      " s (the port accepts connections but no SSH server answers: is it sshd?)");
    }
    return R::Error(who + ": SSH handshake failed: " + LibsshError(s) + " (is port " +
                    std::to_string(ep.port) + " an SSH server?)");
  }
  libssh2_keepalive_config(s, 1, static_cast<unsigned>(AliveInterval(ep)));
  Status hk = VerifyHostKey(s, ep);
  if (!hk.ok()) return hk;
  Status auth = Authenticate(s, ep, who);
  if (!auth.ok()) return auth;
  // From here each wait on the network is bounded by this (the running time of commands is not).
  libssh2_session_set_timeout(s, std::max(timeout_s, 30) * 1000L);
  auto session = std::make_unique<Libssh2Session>(ep, *fd, s);
  guard.s = nullptr;
  return std::unique_ptr<Session>(std::move(session));
}

}  // namespace onboard::ssh
