#include "providers/kubernetes/kubeconfig.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

extern char** environ;

namespace onboard::k8s {
namespace {

std::string Quote(const std::string& s) { return "\"" + s + "\""; }

Result<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Result<std::string>::Error(std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool FileExists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

std::string DirName(const std::string& path) {
  auto pos = path.rfind('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string MakeAbsolute(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char buf[4096];
  if (getcwd(buf, sizeof buf) == nullptr) return path;
  return std::string(buf) + "/" + path;
}

// Relative paths in a kubeconfig are relative to the file that holds them.
std::string ResolvePath(const std::string& path, const std::string& kubeconfig_file) {
  if (path.empty() || path[0] == '/') return path;
  if (path[0] == '~' && (path.size() == 1 || path[1] == '/')) {
    const char* home = std::getenv("HOME");
    if (home) return std::string(home) + path.substr(1);
  }
  return DirName(kubeconfig_file) + "/" + path;
}

// A named entry (cluster, user or context) and the file it came from.
struct Entry {
  YAML::Node node;
  std::string file;
};

struct Merged {
  std::vector<std::string> files;
  std::map<std::string, Entry> clusters, users, contexts;
  std::string current_context;
};

std::string Scalar(const YAML::Node& n, const std::string& key) {
  if (!n || !n.IsMap()) return "";
  YAML::Node v = n[key];
  if (!v || !v.IsScalar()) return "";
  return v.Scalar();
}

std::string Names(const std::map<std::string, Entry>& m) {
  std::string out;
  for (const auto& [k, v] : m) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out.empty() ? "(none)" : out;
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

Status MergeFile(const std::string& file, Merged* m) {
  auto text = ReadWholeFile(file);
  if (!text.ok()) {
    return Status::Error("kubeconfig " + file + ": cannot read: " + text.error() +
                         "; check --kubeconfig / $KUBECONFIG / spec.cluster.kubeconfig");
  }
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    return Status::Error("kubeconfig " + file + ":" + std::to_string(e.mark.line + 1) + ":" +
                         std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
  }
  m->files.push_back(file);
  if (!root || root.IsNull()) return Status::Ok();  // an empty file contributes nothing
  if (!root.IsMap()) return Status::Error("kubeconfig " + file + ": the document is not a mapping");
  for (const char* section : {"clusters", "users", "contexts"}) {
    YAML::Node list = root[section];
    if (!list || list.IsNull()) continue;
    if (!list.IsSequence()) {
      return Status::Error("kubeconfig " + file + ": field " + section + " must be a list");
    }
    auto& target = std::string(section) == "clusters" ? m->clusters
                   : std::string(section) == "users"  ? m->users
                                                      : m->contexts;
    for (std::size_t i = 0; i < list.size(); ++i) {
      std::string name = Scalar(list[i], "name");
      if (name.empty()) {
        return Status::Error("kubeconfig " + file + ": " + section + "[" + std::to_string(i) +
                             "].name is missing");
      }
      // kubectl: the first file to set a key wins.
      if (!target.count(name)) target[name] = Entry{list[i], file};
    }
  }
  if (m->current_context.empty()) m->current_context = Scalar(root, "current-context");
  return Status::Ok();
}

bool IsTrue(const YAML::Node& n, const std::string& key) {
  std::string v = Scalar(n, key);
  return v == "true" || v == "True" || v == "TRUE";
}

}  // namespace

std::string KubeConfig::Where() const {
  std::string file = user_file.empty() ? (files.empty() ? std::string("?") : files.front()) : user_file;
  return "kubeconfig " + (files.size() > 1 ? Join(files, ":") : file) + ", context " + Quote(context);
}

Result<KubeConfig> LoadKubeConfig(const KubeConfigOptions& options) {
  auto getenv = options.getenv;
  if (!getenv) {
    getenv = [](const std::string& name) -> std::optional<std::string> {
      const char* v = std::getenv(name.c_str());
      if (!v) return std::nullopt;
      return std::string(v);
    };
  }
  std::vector<std::string> files;
  std::string origin;
  if (!options.path.empty()) {
    std::string p = options.path;
    if (p[0] == '~' && (p.size() == 1 || p[1] == '/')) {
      auto home = getenv("HOME");
      if (home) p = *home + p.substr(1);
    }
    files.push_back(MakeAbsolute(p));
    if (!FileExists(files[0])) {
      return Result<KubeConfig>::Error("kubeconfig " + files[0] +
                                       ": file not found (given explicitly); check the path");
    }
  } else if (auto env = getenv("KUBECONFIG"); env && !env->empty()) {
    std::stringstream ss(*env);
    std::string part;
    std::vector<std::string> listed;
    while (std::getline(ss, part, ':')) {
      if (part.empty()) continue;
      listed.push_back(MakeAbsolute(part));
    }
    for (const auto& f : listed) {
      bool dup = false;
      for (const auto& g : files) dup = dup || g == f;
      if (!dup && FileExists(f)) files.push_back(f);  // kubectl skips missing files in the list
    }
    if (files.empty()) {
      return Result<KubeConfig>::Error("kubeconfig: none of the files in $KUBECONFIG exist (" + *env +
                                       "); set KUBECONFIG or pass --kubeconfig");
    }
  } else {
    auto home = getenv("HOME");
    std::string f = (home ? *home : std::string()) + "/.kube/config";
    if (!FileExists(f)) {
      return Result<KubeConfig>::Error("kubeconfig " + f +
                                       ": not found, and neither --kubeconfig, "
                                       "spec.cluster.kubeconfig nor $KUBECONFIG is set");
    }
    files.push_back(f);
  }

  Merged m;
  for (const auto& f : files) {
    Status s = MergeFile(f, &m);
    if (!s.ok()) return s;
  }
  std::string where_files = Join(m.files, ":");

  KubeConfig cfg;
  cfg.files = m.files;
  cfg.context = options.context.empty() ? m.current_context : options.context;
  if (cfg.context.empty()) {
    return Result<KubeConfig>::Error("kubeconfig " + where_files +
                                     ": no current-context is set; pass --context or set "
                                     "spec.cluster.context (contexts: " + Names(m.contexts) + ")");
  }
  auto cit = m.contexts.find(cfg.context);
  if (cit == m.contexts.end()) {
    return Result<KubeConfig>::Error("kubeconfig " + where_files + ": context " + Quote(cfg.context) +
                                     " not found (contexts: " + Names(m.contexts) +
                                     "); pass --context with one of them");
  }
  const Entry& ctx = cit->second;
  YAML::Node cnode = ctx.node["context"];
  std::string ctx_where = "kubeconfig " + ctx.file + ", context " + Quote(cfg.context);
  if (!cnode || !cnode.IsMap()) return Result<KubeConfig>::Error(ctx_where + ": field context is missing");
  cfg.ns = Scalar(cnode, "namespace");
  cfg.cluster_name = Scalar(cnode, "cluster");
  cfg.user_name = Scalar(cnode, "user");
  if (cfg.cluster_name.empty()) return Result<KubeConfig>::Error(ctx_where + ": field context.cluster is empty");

  // Cluster.
  auto clit = m.clusters.find(cfg.cluster_name);
  if (clit == m.clusters.end()) {
    return Result<KubeConfig>::Error(ctx_where + ": cluster " + Quote(cfg.cluster_name) +
                                     " (field context.cluster) is not defined (clusters: " +
                                     Names(m.clusters) + ")");
  }
  cfg.cluster_file = clit->second.file;
  std::string cl_where = "kubeconfig " + cfg.cluster_file + ", context " + Quote(cfg.context) +
                         ", cluster " + Quote(cfg.cluster_name);
  YAML::Node cl = clit->second.node["cluster"];
  if (!cl || !cl.IsMap()) return Result<KubeConfig>::Error(cl_where + ": field cluster is missing");
  cfg.server = Scalar(cl, "server");
  while (!cfg.server.empty() && cfg.server.back() == '/') cfg.server.pop_back();
  if (cfg.server.empty()) return Result<KubeConfig>::Error(cl_where + ": field cluster.server is empty");
  if (cfg.server.rfind("https://", 0) != 0 && cfg.server.rfind("http://", 0) != 0) {
    return Result<KubeConfig>::Error(cl_where + ": field cluster.server " + Quote(cfg.server) +
                                     " must start with https://");
  }
  cfg.tls_server_name = Scalar(cl, "tls-server-name");
  cfg.insecure = IsTrue(cl, "insecure-skip-tls-verify");
  std::string ca_data = Scalar(cl, "certificate-authority-data");
  std::string ca_file = Scalar(cl, "certificate-authority");
  if (!ca_data.empty()) {
    auto dec = Base64Decode(ca_data);
    if (!dec.ok()) {
      return Result<KubeConfig>::Error(cl_where + ": field cluster.certificate-authority-data: " + dec.error());
    }
    cfg.ca_pem = *dec;
    cfg.ca_source = "certificate-authority-data of cluster " + Quote(cfg.cluster_name) + " in " + cfg.cluster_file;
  } else if (!ca_file.empty()) {
    std::string path = ResolvePath(ca_file, cfg.cluster_file);
    auto body = ReadWholeFile(path);
    if (!body.ok()) {
      return Result<KubeConfig>::Error(cl_where + ": field cluster.certificate-authority " + path +
                                       ": cannot read: " + body.error());
    }
    cfg.ca_pem = *body;
    cfg.ca_source = "certificate-authority " + path + " of cluster " + Quote(cfg.cluster_name) + " in " +
                    cfg.cluster_file;
  } else {
    cfg.ca_source = "the system CA store (cluster " + Quote(cfg.cluster_name) + " in " + cfg.cluster_file +
                    " sets no certificate-authority)";
  }
  if (cfg.insecure && !cfg.ca_pem.empty()) {
    return Result<KubeConfig>::Error(cl_where +
                                     ": insecure-skip-tls-verify is set together with a certificate "
                                     "authority; remove one of them (as kubectl requires)");
  }

  // User (a context may have none: anonymous).
  if (!cfg.user_name.empty()) {
    auto uit = m.users.find(cfg.user_name);
    if (uit == m.users.end()) {
      return Result<KubeConfig>::Error(ctx_where + ": user " + Quote(cfg.user_name) +
                                       " (field context.user) is not defined (users: " + Names(m.users) + ")");
    }
    cfg.user_file = uit->second.file;
    std::string u_where = "kubeconfig " + cfg.user_file + ", context " + Quote(cfg.context) + ", user " +
                          Quote(cfg.user_name);
    YAML::Node u = uit->second.node["user"];
    if (u && !u.IsNull()) {
      if (!u.IsMap()) return Result<KubeConfig>::Error(u_where + ": field user must be a mapping");
      cfg.token = Scalar(u, "token");
      std::string tf = Scalar(u, "tokenFile");
      if (!tf.empty()) {
        cfg.token_file = ResolvePath(tf, cfg.user_file);
        if (!FileExists(cfg.token_file)) {
          return Result<KubeConfig>::Error(u_where + ": field user.tokenFile " + cfg.token_file +
                                           ": file not found");
        }
      }
      struct Pem {
        const char* data_key;
        const char* file_key;
        std::string* out;
      };
      for (const Pem& p : {Pem{"client-certificate-data", "client-certificate", &cfg.client_cert_pem},
                           Pem{"client-key-data", "client-key", &cfg.client_key_pem}}) {
        std::string data = Scalar(u, p.data_key);
        std::string file = Scalar(u, p.file_key);
        if (!data.empty()) {
          auto dec = Base64Decode(data);
          if (!dec.ok()) {
            return Result<KubeConfig>::Error(u_where + ": field user." + p.data_key + ": " + dec.error());
          }
          *p.out = *dec;
        } else if (!file.empty()) {
          std::string path = ResolvePath(file, cfg.user_file);
          auto body = ReadWholeFile(path);
          if (!body.ok()) {
            return Result<KubeConfig>::Error(u_where + ": field user." + p.file_key + " " + path +
                                             ": cannot read: " + body.error());
          }
          *p.out = *body;
        }
      }
      if (cfg.client_cert_pem.empty() != cfg.client_key_pem.empty()) {
        return Result<KubeConfig>::Error(u_where + ": field user." +
                                         (cfg.client_cert_pem.empty() ? "client-certificate" : "client-key") +
                                         " is missing; a client certificate needs both certificate and key");
      }
      if (u["auth-provider"] && !u["auth-provider"].IsNull()) {
        return Result<KubeConfig>::Error(u_where +
                                         ": field user.auth-provider is not supported (removed from "
                                         "kubectl too); use an exec credential plugin");
      }
      YAML::Node ex = u["exec"];
      if (ex && !ex.IsNull()) {
        if (!ex.IsMap()) return Result<KubeConfig>::Error(u_where + ": field user.exec must be a mapping");
        ExecPlugin e;
        e.api_version = Scalar(ex, "apiVersion");
        if (e.api_version != "client.authentication.k8s.io/v1" &&
            e.api_version != "client.authentication.k8s.io/v1beta1") {
          return Result<KubeConfig>::Error(
              u_where + ": field user.exec.apiVersion " + Quote(e.api_version) +
              " is not supported (use client.authentication.k8s.io/v1 or v1beta1)");
        }
        e.command = Scalar(ex, "command");
        if (e.command.empty()) return Result<KubeConfig>::Error(u_where + ": field user.exec.command is empty");
        // kubectl: a command with a path separator is relative to the kubeconfig file.
        if (e.command.find('/') != std::string::npos) e.command = ResolvePath(e.command, cfg.user_file);
        YAML::Node args = ex["args"];
        if (args && args.IsSequence()) {
          for (const auto& a : args) e.args.push_back(a.as<std::string>(""));
        }
        YAML::Node env = ex["env"];
        if (env && env.IsSequence()) {
          for (std::size_t i = 0; i < env.size(); ++i) {
            std::string name = Scalar(env[i], "name");
            if (name.empty()) {
              return Result<KubeConfig>::Error(u_where + ": field user.exec.env[" + std::to_string(i) +
                                               "].name is empty");
            }
            e.env.emplace_back(name, Scalar(env[i], "value"));
          }
        }
        e.interactive_mode = Scalar(ex, "interactiveMode");
        if (e.api_version == "client.authentication.k8s.io/v1" && e.interactive_mode.empty()) {
          return Result<KubeConfig>::Error(u_where +
                                           ": field user.exec.interactiveMode is required for "
                                           "client.authentication.k8s.io/v1 (Never, IfAvailable or Always)");
        }
        if (!e.interactive_mode.empty() && e.interactive_mode != "Never" &&
            e.interactive_mode != "IfAvailable" && e.interactive_mode != "Always") {
          return Result<KubeConfig>::Error(u_where + ": field user.exec.interactiveMode " +
                                           Quote(e.interactive_mode) + " must be Never, IfAvailable or Always");
        }
        if (e.interactive_mode == "Always") {
          return Result<KubeConfig>::Error(u_where +
                                           ": field user.exec.interactiveMode is Always, but onboard runs "
                                           "the plugin without a terminal; use Never or IfAvailable");
        }
        e.provide_cluster_info = IsTrue(ex, "provideClusterInfo");
        e.install_hint = Scalar(ex, "installHint");
        cfg.exec = e;
      }
    }
  }
  return cfg;
}

// ---- credentials ----

CredentialSource::CredentialSource(KubeConfig config, std::function<int64_t()> now)
    : config_(std::move(config)), now_(std::move(now)) {
  if (!now_) now_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
}

int CredentialSource::exec_runs() const {
  std::lock_guard<std::mutex> l(mu_);
  return exec_runs_;
}

bool CredentialSource::Invalidate() {
  std::lock_guard<std::mutex> l(mu_);
  cached_.reset();
  expires_at_ = 0;
  return config_.exec.has_value() || !config_.token_file.empty();
}

Result<Credentials> CredentialSource::Get() {
  std::lock_guard<std::mutex> l(mu_);
  Credentials c;
  c.cert_pem = config_.client_cert_pem;
  c.key_pem = config_.client_key_pem;
  c.token = config_.token;
  if (!config_.token_file.empty()) {
    auto body = ReadWholeFile(config_.token_file);
    if (!body.ok()) {
      return Result<Credentials>::Error(config_.Where() + ", user " + Quote(config_.user_name) +
                                        ": field user.tokenFile " + config_.token_file +
                                        ": cannot read: " + body.error());
    }
    std::string t = *body;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    c.token = t;
  }
  if (config_.exec) {
    if (!cached_ || (expires_at_ != 0 && now_() >= expires_at_)) {
      auto r = RunExec();
      if (!r.ok()) return r;
      cached_ = *r;
    }
    if (!cached_->token.empty()) c.token = cached_->token;
    if (!cached_->cert_pem.empty()) {
      c.cert_pem = cached_->cert_pem;
      c.key_pem = cached_->key_pem;
    }
  }
  return c;
}

// Runs the exec plugin (mu_ held). Never puts its stdout (the credential) into a message.
Result<Credentials> CredentialSource::RunExec() {
  const ExecPlugin& e = *config_.exec;
  std::string where = config_.Where() + ", user " + Quote(config_.user_name) + ": exec plugin " + Quote(e.command);
  ++exec_runs_;

  nlohmann::json info = {{"apiVersion", e.api_version},
                         {"kind", "ExecCredential"},
                         {"spec", {{"interactive", false}}}};
  if (e.provide_cluster_info) {
    nlohmann::json cluster = {{"server", config_.server}};
    if (!config_.tls_server_name.empty()) cluster["tls-server-name"] = config_.tls_server_name;
    if (config_.insecure) cluster["insecure-skip-tls-verify"] = true;
    if (!config_.ca_pem.empty()) cluster["certificate-authority-data"] = Base64Encode(config_.ca_pem);
    info["spec"]["cluster"] = cluster;
  }

  std::vector<std::string> env_strings;
  for (char** p = environ; p && *p; ++p) {
    std::string kv = *p;
    std::string key = kv.substr(0, kv.find('='));
    bool overridden = key == "KUBERNETES_EXEC_INFO";
    for (const auto& [k, v] : e.env) overridden = overridden || k == key;
    if (!overridden) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : e.env) env_strings.push_back(k + "=" + v);
  env_strings.push_back("KUBERNETES_EXEC_INFO=" + info.dump());
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings{e.command};
  for (const auto& a : e.args) argv_strings.push_back(a);
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int out_pipe[2], err_pipe[2], exec_pipe[2];
  if (pipe(out_pipe) != 0) return Result<Credentials>::Error(where + ": pipe: " + std::strerror(errno));
  if (pipe(err_pipe) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return Result<Credentials>::Error(where + ": pipe: " + std::strerror(errno));
  }
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    return Result<Credentials>::Error(where + ": pipe: " + std::strerror(errno));
  }
  pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], exec_pipe[0], exec_pipe[1]}) close(fd);
    return Result<Credentials>::Error(where + ": fork: " + std::strerror(errno));
  }
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    close(out_pipe[0]);
    close(err_pipe[0]);
    close(exec_pipe[0]);
    execvpe(argv[0], argv.data(), envp.data());
    int err = errno;
    ssize_t ignored = write(exec_pipe[1], &err, sizeof err);
    (void)ignored;
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  close(exec_pipe[1]);
  int exec_errno = 0;
  ssize_t n = read(exec_pipe[0], &exec_errno, sizeof exec_errno);
  close(exec_pipe[0]);

  std::string out, err;
  bool timed_out = false;
  if (n <= 0) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        timed_out = true;
        kill(pid, SIGKILL);
        break;
      }
      int r = poll(fds, 2, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) break;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[4096];
        ssize_t got = read(fds[i].fd, buf, sizeof buf);
        if (got > 0) {
          (i == 0 ? out : err).append(buf, static_cast<std::size_t>(got));
        } else if (got == 0 || errno != EINTR) {
          fds[i].fd = -1;
          --open_fds;
        }
      }
    }
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (n > 0) {
    std::string msg = where + ": cannot run it: " + std::strerror(exec_errno);
    if (!e.install_hint.empty()) msg += "; " + e.install_hint;
    return Result<Credentials>::Error(msg);
  }
  if (timed_out) return Result<Credentials>::Error(where + ": did not finish within 60s (killed)");
  while (!err.empty() && (err.back() == '\n' || err.back() == '\r')) err.pop_back();
  if (err.size() > 500) err = "..." + err.substr(err.size() - 500);
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    std::string msg = where + ": failed (" +
                      (WIFEXITED(wstatus) ? "exit code " + std::to_string(WEXITSTATUS(wstatus))
                                          : std::string("killed by a signal")) +
                      ")";
    if (!err.empty()) msg += ": " + err;
    return Result<Credentials>::Error(msg);
  }
  nlohmann::json cred = nlohmann::json::parse(out, nullptr, false);
  if (cred.is_discarded() || !cred.is_object()) {
    return Result<Credentials>::Error(where + ": its output is not an ExecCredential JSON object");
  }
  if (cred.value("kind", "") != "ExecCredential") {
    return Result<Credentials>::Error(where + ": its output has kind " + Quote(cred.value("kind", "")) +
                                      ", expected ExecCredential");
  }
  if (cred.value("apiVersion", "") != e.api_version) {
    return Result<Credentials>::Error(where + ": its output has apiVersion " + Quote(cred.value("apiVersion", "")) +
                                      ", but the kubeconfig asked for " + e.api_version);
  }
  const auto status = cred.find("status");
  if (status == cred.end() || !status->is_object()) {
    return Result<Credentials>::Error(where + ": its output has no status");
  }
  Credentials c;
  if (status->contains("token") && (*status)["token"].is_string()) c.token = (*status)["token"].get<std::string>();
  if (status->contains("clientCertificateData") && (*status)["clientCertificateData"].is_string())
    c.cert_pem = (*status)["clientCertificateData"].get<std::string>();
  if (status->contains("clientKeyData") && (*status)["clientKeyData"].is_string())
    c.key_pem = (*status)["clientKeyData"].get<std::string>();
  if (c.token.empty() && c.cert_pem.empty()) {
    return Result<Credentials>::Error(where + ": its output has neither status.token nor status.clientCertificateData");
  }
  if (c.cert_pem.empty() != c.key_pem.empty()) {
    return Result<Credentials>::Error(where + ": its output must set both status.clientCertificateData and "
                                      "status.clientKeyData");
  }
  expires_at_ = 0;
  if (status->contains("expirationTimestamp") && (*status)["expirationTimestamp"].is_string()) {
    int64_t t = 0;
    std::string ts = (*status)["expirationTimestamp"].get<std::string>();
    if (!ParseTime(ts, &t)) {
      return Result<Credentials>::Error(where + ": its output has an invalid status.expirationTimestamp " + Quote(ts));
    }
    expires_at_ = t;
  }
  return c;
}

// ---- helpers ----

namespace {

nlohmann::json NodeToJson(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& e : n) a.push_back(NodeToJson(e));
      return a;
    }
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>("")] = NodeToJson(kv.second);
      return o;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str") return s;  // quoted or !!str
      if (s == "~" || s == "null" || s == "Null" || s == "NULL" || s.empty()) return nullptr;
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
      if (!s.empty() && (std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '+')) {
        char* end = nullptr;
        errno = 0;
        long long iv = std::strtoll(s.c_str(), &end, 10);
        if (end && *end == '\0' && errno == 0) return iv;
        errno = 0;
        double dv = std::strtod(s.c_str(), &end);
        if (end && *end == '\0' && errno == 0 && s.find_first_of("xX") == std::string::npos) return dv;
      }
      return s;
    }
  }
  return nullptr;
}

}  // namespace

Result<nlohmann::json> YamlToJson(const std::string& text, const std::string& what) {
  try {
    YAML::Node n = YAML::Load(text);
    return NodeToJson(n);
  } catch (const YAML::Exception& e) {
    return Result<nlohmann::json>::Error(what + ":" + std::to_string(e.mark.line + 1) + ":" +
                                         std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
  }
}

}  // namespace onboard::k8s
