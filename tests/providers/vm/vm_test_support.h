// Test support for the VM provider: a local ssh::Session fake (runs commands through /bin/sh on
// this machine), a recording Reporter, and builders for the VM-side resources.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/provider.h"
#include "providers/ssh/session.h"
#include "providers/vm/vm_provider.h"

namespace onboard::vm::testing {

// Runs every command locally with /bin/sh -c; files are written like SFTP would (truncate in place).
class LocalSession : public ssh::Session {
 public:
  explicit LocalSession(ssh::Endpoint ep) : ep_(std::move(ep)) {}
  const ssh::Endpoint& endpoint() const override { return ep_; }

  Result<ssh::ExecResult> Exec(const std::string& command, const std::string& stdin_data) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.execs++;
      commands_.push_back(command);
    }
    int in[2], out[2], err[2];
    if (pipe(in) != 0 || pipe(out) != 0 || pipe(err) != 0)
      return Result<ssh::ExecResult>::Error(std::string("pipe: ") + std::strerror(errno));
    pid_t pid = fork();
    if (pid < 0) return Result<ssh::ExecResult>::Error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      close(in[0]); close(in[1]); close(out[0]); close(out[1]); close(err[0]); close(err[1]);
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    signal(SIGPIPE, SIG_IGN);
    ssh::ExecResult r;
    size_t written = 0;
    int in_fd = in[1];
    if (stdin_data.empty()) {
      close(in_fd);
      in_fd = -1;
    }
    bool out_open = true, err_open = true;
    while (out_open || err_open || in_fd >= 0) {
      pollfd fds[3];
      int n = 0;
      int oi = -1, ei = -1, ii = -1;
      if (out_open) { fds[n] = {out[0], POLLIN, 0}; oi = n++; }
      if (err_open) { fds[n] = {err[0], POLLIN, 0}; ei = n++; }
      if (in_fd >= 0) { fds[n] = {in_fd, POLLOUT, 0}; ii = n++; }
      if (poll(fds, n, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      char buf[8192];
      if (oi >= 0 && fds[oi].revents) {
        ssize_t k = read(out[0], buf, sizeof buf);
        if (k <= 0) out_open = false; else r.out.append(buf, k);
      }
      if (ei >= 0 && fds[ei].revents) {
        ssize_t k = read(err[0], buf, sizeof buf);
        if (k <= 0) err_open = false; else r.err.append(buf, k);
      }
      if (ii >= 0 && fds[ii].revents) {
        ssize_t k = write(in_fd, stdin_data.data() + written, stdin_data.size() - written);
        if (k <= 0) { close(in_fd); in_fd = -1; }
        else {
          written += k;
          if (written == stdin_data.size()) { close(in_fd); in_fd = -1; }
        }
      }
    }
    close(out[0]);
    close(err[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status)) r.exit_status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) r.exit_signal = std::to_string(WTERMSIG(status));
    return r;
  }

  Status WriteFile(const std::string& path, const std::string& data, int mode) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.sftp_writes++;
    }
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return Status::Error("open " + path + ": " + std::strerror(errno));
    size_t off = 0;
    while (off < data.size()) {
      ssize_t k = write(fd, data.data() + off, data.size() - off);
      if (k <= 0) { close(fd); return Status::Error("write " + path + ": " + std::strerror(errno)); }
      off += k;
    }
    fchmod(fd, mode);
    close(fd);
    return Status::Ok();
  }

  Result<std::string> ReadFile(const std::string& path) override {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Result<std::string>::Error("cannot read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  ssh::SessionStats stats() const override {
    std::lock_guard<std::mutex> l(mu_);
    return stats_;
  }
  std::vector<std::string> commands() const {
    std::lock_guard<std::mutex> l(mu_);
    return commands_;
  }

 private:
  ssh::Endpoint ep_;
  mutable std::mutex mu_;
  ssh::SessionStats stats_;
  std::vector<std::string> commands_;
};

class RecordingReporter : public Reporter {
 public:
  void Action(const std::string& target, const std::string& what) override {
    std::lock_guard<std::mutex> l(mu_);
    actions.push_back(target + ": " + what);
  }
  void File(const std::string& target, const std::string& path, const std::string& body) override {
    std::lock_guard<std::mutex> l(mu_);
    files.push_back(target + ": " + path + "\n" + body);
  }
  void Warn(const std::string& message) override {
    std::lock_guard<std::mutex> l(mu_);
    warnings.push_back(message);
  }
  std::string All() const {
    std::string s;
    for (const auto& a : actions) s += a + "\n";
    for (const auto& f : files) s += f + "\n";
    for (const auto& w : warnings) s += w + "\n";
    return s;
  }
  std::vector<std::string> actions, files, warnings;

 private:
  std::mutex mu_;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteAll(const std::string& path, const std::string& text, mode_t mode = 0644) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  chmod(path.c_str(), mode);
}

inline bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

inline std::string ModeOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", st.st_mode & 07777);
  return buf;
}

inline ino_t InodeOf(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

inline std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* d = mkdtemp(buf.data());
  return d ? std::string(d) : std::string();
}

inline int Sh(const std::string& cmd) { return std::system(cmd.c_str()); }

inline std::string StandinPath() {
  return std::string(ONBOARD_SOURCE_DIR) + "/tests/sandbox/docker/docker-standin";
}

// A `docker` wrapper script that runs the stand-in with its state in state_dir; with an empty
// state_dir, in docker-state/ beside wherever the wrapper is installed (one per sandbox VM).
inline std::string MakeDockerWrapper(const std::string& path, const std::string& state_dir) {
  std::string state = state_dir.empty() ? std::string("\"$(cd \"$(dirname \"$0\")\" && pwd)/docker-state\"")
                                        : ssh::ShellQuote(state_dir);
  WriteAll(path,
           "#!/bin/sh\nDOCKER_STANDIN_DIR=" + state + " exec " + ssh::ShellQuote(StandinPath()) +
               " \"$@\"\n",
           0755);
  return path;
}

constexpr const char* kWorkload = "bookinfo/ratings-vm";

inline nlohmann::json LocalConnection() {
  return {{"host", "127.0.0.1"}, {"port", 22}, {"user", "tester"}, {"identity_file", ""},
          {"known_hosts", ""}};
}

struct FileSet {
  std::string env = "POD_NAME=ratings-vm\nPOD_NAMESPACE=bookinfo\nCA_ADDR=istiod.istio-system.svc:15012\n";
  std::string ca = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n";
  std::string k8s = "-----BEGIN CERTIFICATE-----\nMIIBk8s\n-----END CERTIFICATE-----\n";
};

inline Resource FilesResource(const nlohmann::json& connection, const std::string& dir,
                              const FileSet& f) {
  Resource r;
  r.address = {ResourceType::kFiles, kWorkload};
  r.workload = kWorkload;
  r.attributes = {
      {"connection", connection},
      {"dir", dir},
      {"files",
       {{"sidecar.env", {{"mode", "0644"}, {"sha256", detail::Sha256Hex(f.env)}}},
        {"istio-ca.pem", {{"mode", "0644"}, {"sha256", detail::Sha256Hex(f.ca)}}},
        {"k8s-ca.pem", {{"mode", "0644"}, {"sha256", detail::Sha256Hex(f.k8s)}}},
        {"istio-token", {{"mode", "0640"}}}}}};
  r.payload = {{"contents", {{"sidecar.env", f.env}, {"istio-ca.pem", f.ca}, {"k8s-ca.pem", f.k8s}}}};
  return r;
}

inline Resource HostsResource(const nlohmann::json& connection, const std::string& hosts_file,
                              const nlohmann::json& entries) {
  Resource r;
  r.address = {ResourceType::kHosts, kWorkload};
  r.workload = kWorkload;
  r.attributes = {{"connection", connection}, {"hosts_file", hosts_file}, {"entries", entries}};
  return r;
}

inline nlohmann::json ProxyArgv(const std::string& dir, const std::string& image,
                                const std::string& name = "istio-proxy") {
  return {"run", "-d", "--name", name, "--restart", "unless-stopped", "--network", "host",
          "-v", dir + "/istio-ca.pem:/var/run/secrets/istio/root-cert.pem",
          "-v", dir + "/istio-token:/var/run/secrets/tokens/istio-token",
          "-v", dir + "/k8s-ca.pem:/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
          "--env-file", dir + "/sidecar.env", image, "proxy", "sidecar", "--serviceCluster",
          "ratings.bookinfo", "--concurrency", "2", "--proxyLogLevel", "warning",
          "--trust-domain", "cluster.local"};
}

inline Resource ContainerResource(const nlohmann::json& connection, const std::string& docker,
                                  const std::string& dir, const std::string& image,
                                  const std::string& hash, const std::string& name = "istio-proxy") {
  Resource r;
  r.address = {ResourceType::kContainer, kWorkload};
  r.workload = kWorkload;
  r.attributes = {{"connection", connection}, {"name", name}, {"image", image},
                  {"docker", docker}, {"config_hash", hash}};
  r.payload = {{"argv", ProxyArgv(dir, image, name)}};
  return r;
}

// One step: holds the Change and the request together.
struct Step {
  Change change;
  StepRequest req;
  Step(const Resource* desired, Action action, const ResourceState* prior = nullptr,
       SecretBag* secrets = nullptr, Reporter* reporter = nullptr) {
    change.address = desired ? desired->address : prior->address;
    change.workload = desired ? desired->workload : prior->workload;
    change.action = action;
    req.change = &change;
    req.desired = action == Action::kDelete ? nullptr : desired;
    req.prior = prior;
    req.secrets = secrets;
    req.reporter = reporter;
  }
  Step(const Step&) = delete;
};

}  // namespace onboard::vm::testing
