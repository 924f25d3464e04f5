#include "tests/sandbox/vm/vm_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace onboard::sandbox {
namespace {

using Clock = std::chrono::steady_clock;

Status MakeDirs(const std::string& path, mode_t mode = 0755) {
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    const std::string cur = path.substr(0, next);
    if (!cur.empty() && mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      return Status::Error("cannot create directory " + cur + ": " + std::strerror(errno));
    }
    pos = next + 1;
  }
  return Status::Ok();
}

Status WriteText(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Status::Error("cannot write " + path + ": " + std::strerror(errno));
  out << text;
  out.close();
  if (!out) return Status::Error("cannot write " + path);
  if (chmod(path.c_str(), mode) != 0) return Status::Error("cannot chmod " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

Result<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Result<std::string>::Error("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& text, size_t n = 600) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// Starts argv with stdin from /dev/null and stdout+stderr appended to log_path, default signal
// dispositions and an empty signal mask (callers may block signals for sigwait). With
// die_with_parent the child gets SIGTERM when the calling thread ends, so that a test process
// killed by a timeout leaves no sshd behind.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path, bool die_with_parent) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const char* out = log_path.empty() ? "/dev/null" : log_path.c_str();
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Result<pid_t>::Error("cannot start " + argv[0] + ": fork: " + std::strerror(errno));
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    if (die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(127);
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT}) signal(sig, SIG_DFL);
    int in = open("/dev/null", O_RDONLY);
    int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || fd < 0) _exit(126);
    dup2(in, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

Status RunTool(const std::vector<std::string>& argv, const std::string& log_path) {
  Result<pid_t> pid = Spawn(argv, log_path, true);
  if (!pid.ok()) return pid.status();
  int status = 0;
  while (waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    return Status::Error("cannot run " + argv[0] + " (is it installed and on PATH?)");
  }
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  Result<std::string> log = ReadText(log_path);
  return Status::Error("`" + cmd + "` failed (status " + std::to_string(status) + "): " +
                       (log.ok() ? Tail(*log) : std::string("no output")));
}

Status GenerateKey(const std::string& path, const std::string& comment, const std::string& log) {
  unlink(path.c_str());
  unlink((path + ".pub").c_str());
  return RunTool({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path}, log);
}

Result<int> FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Result<int>::Error(std::string("socket: ") + std::strerror(errno));
  struct sockaddr_in a;
  std::memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    int err = errno;
    close(fd);
    return Result<int>::Error(std::string("cannot find a free port on 127.0.0.1: ") + std::strerror(err));
  }
  close(fd);
  return static_cast<int>(ntohs(a.sin_port));
}

// True when 127.0.0.1:port answers with an SSH banner.
bool SshBanner(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_in a;
  std::memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 2000) > 0) {
      char buf[8] = {0};
      ssize_t n = read(fd, buf, 4);
      ok = n == 4 && std::memcmp(buf, "SSH-", 4) == 0;
    }
  }
  close(fd);
  return ok;
}

// pid and all its descendants (by walking /proc parent links).
std::vector<pid_t> ProcessTree(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> links;  // (pid, ppid)
  if (DIR* d = opendir("/proc")) {
    while (struct dirent* e = readdir(d)) {
      char* end = nullptr;
      long pid = std::strtol(e->d_name, &end, 10);
      if (!end || *end != '\0' || pid <= 0) continue;
      std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      size_t close_paren = line.rfind(')');
      if (close_paren == std::string::npos) continue;
      std::istringstream rest(line.substr(close_paren + 2));
      std::string state;
      long ppid = 0;
      rest >> state >> ppid;
      links.emplace_back(static_cast<pid_t>(pid), static_cast<pid_t>(ppid));
    }
    closedir(d);
  }
  std::vector<pid_t> tree = {root};
  for (size_t i = 0; i < tree.size(); ++i) {
    for (const auto& [pid, ppid] : links) {
      if (ppid == tree[i]) tree.push_back(pid);
    }
  }
  return tree;
}

bool Reaped(pid_t pid, int wait_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string CurrentUser() {
  if (struct passwd* pw = getpwuid(geteuid())) return pw->pw_name;
  const char* u = std::getenv("USER");
  return u ? u : "root";
}

}  // namespace

Result<std::unique_ptr<VmHarness>> VmHarness::Start(const HarnessOptions& options) {
  using R = Result<std::unique_ptr<VmHarness>>;
  if (options.dir.empty()) return R::Error("VM harness: no directory given (HarnessOptions.dir)");
  if (options.count < 1 || options.count > 200) {
    return R::Error("VM harness: count " + std::to_string(options.count) + " is out of range 1..200");
  }
  if (access(options.sshd_path.c_str(), X_OK) != 0) {
    return R::Error("VM harness: " + options.sshd_path + " is not executable (install openssh-server)");
  }
  Status st = MakeDirs(options.dir);
  if (!st.ok()) return R::Error("VM harness: " + st.message());
  char real[PATH_MAX];
  if (!realpath(options.dir.c_str(), real)) {
    return R::Error("VM harness: cannot resolve " + options.dir + ": " + std::strerror(errno));
  }
  std::unique_ptr<VmHarness> h(new VmHarness());
  h->options_ = options;
  h->dir_ = real;
  if (geteuid() == 0) {
    // sshd's privilege separation directory.
    st = MakeDirs("/run/sshd", 0755);
    if (!st.ok()) return R::Error("VM harness: " + st.message());
  }
  const std::string log = h->dir_ + "/keygen.log";
  h->client_key_ = h->dir_ + "/client_key";
  st = GenerateKey(h->client_key_, "onboard-sandbox-client", log);
  if (!st.ok()) return R::Error("VM harness: generating the client key: " + st.message());
  Result<std::string> pub = ReadText(h->client_key_ + ".pub");
  if (!pub.ok()) return R::Error("VM harness: " + pub.error());
  h->authorized_keys_ = h->dir_ + "/authorized_keys";
  st = WriteText(h->authorized_keys_, *pub, 0600);
  if (!st.ok()) return R::Error("VM harness: " + st.message());

  std::string docker;
  if (!options.docker_script.empty()) {
    Result<std::string> d = ReadText(options.docker_script);
    if (!d.ok()) return R::Error("VM harness: docker stand-in: " + d.error());
    docker = *d;
  }
  const std::string user = CurrentUser();
  for (int i = 0; i < options.count; ++i) {
    VmInfo vm;
    vm.name = "vm" + std::to_string(i + 1);
    vm.host = "127.0.0.1";
    vm.user = user;
    vm.dir = h->dir_ + "/" + vm.name;
    vm.root_dir = vm.dir + "/root";
    vm.config_dir = vm.root_dir + "/etc/istio-proxy";
    vm.hosts_file = vm.root_dir + "/etc/hosts";
    vm.tools_dir = vm.dir + "/tools";
    vm.log_file = vm.dir + "/sshd.log";
    vm.home_dir = vm.dir + "/home";
    for (const std::string& d : {vm.tools_dir, vm.root_dir + "/etc", vm.home_dir}) {
      st = MakeDirs(d);
      if (!st.ok()) return R::Error("VM harness: " + vm.name + ": " + st.message());
    }
    st = WriteText(vm.hosts_file, "127.0.0.1 localhost\n", 0644);
    if (!st.ok()) return R::Error("VM harness: " + vm.name + ": " + st.message());
    if (!docker.empty()) {
      st = WriteText(vm.tools_dir + "/docker", docker, 0755);
      if (!st.ok()) return R::Error("VM harness: " + vm.name + ": " + st.message());
    }
    const std::string host_key = vm.dir + "/ssh_host_ed25519_key";
    st = GenerateKey(host_key, vm.name, log);
    if (!st.ok()) return R::Error("VM harness: " + vm.name + ": generating the host key: " + st.message());
    vm.host_key_pub = host_key + ".pub";
    h->vms_.push_back(vm);
  }
  for (int i = 0; i < options.count; ++i) {
    st = h->StartSshd(i, true);
    if (!st.ok()) return R::Error("VM harness: " + st.message());
  }
  std::string known;
  for (const VmInfo& vm : h->vms_) {
    Result<std::string> key = ReadText(vm.host_key_pub);
    if (!key.ok()) return R::Error("VM harness: " + key.error());
    std::istringstream fields(*key);
    std::string type, b64;
    fields >> type >> b64;
    known += "[" + vm.host + "]:" + std::to_string(vm.port) + " " + type + " " + b64 + "\n";
  }
  h->known_hosts_ = h->dir_ + "/known_hosts";
  st = WriteText(h->known_hosts_, known, 0644);
  if (!st.ok()) return R::Error("VM harness: " + st.message());
  return R(std::move(h));
}

Status VmHarness::StartSshd(int i, bool pick_port) {
  VmInfo& vm = vms_[i];
  const int attempts = pick_port ? 8 : 1;
  std::string last_error;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (pick_port) {
      Result<int> port = FreePort();
      if (!port.ok()) return Status::Error(vm.name + ": " + port.error());
      vm.port = *port;
    }
    std::ostringstream cfg;
    cfg << "# generated by the onboard VM harness for " << vm.name << "\n"
        << "ListenAddress " << vm.host << "\n"
        << "Port " << vm.port << "\n"
        << "HostKey " << vm.dir << "/ssh_host_ed25519_key\n"
        << "PidFile " << vm.dir << "/sshd.pid\n"
        << "AuthorizedKeysFile " << authorized_keys_ << "\n"
        << "StrictModes no\n"
        << "PubkeyAuthentication yes\n"
        << "PasswordAuthentication no\n"
        << "KbdInteractiveAuthentication no\n"
        << "PermitRootLogin prohibit-password\n"
        << "UsePAM no\n"
        << "UseDNS no\n"
        << "PrintMotd no\n"
        << "MaxStartups 100:30:200\n"
        << "MaxSessions 50\n"
        // VERBOSE logs one "Starting session" line per exec/sftp: benchmarks count round trips.
        << "LogLevel VERBOSE\n"
        << "Subsystem sftp internal-sftp\n"
        // HOME inside the VM dir: the login shell then reads no rc files of the real user (a slow
        // ~/.bashrc would cost every exec), and nothing the VM does touches the real home.
        << "SetEnv PATH=" << vm.tools_dir << ":/usr/bin:/bin:/usr/sbin:/sbin HOME=" << vm.home_dir << "\n"
        << "AllowUsers " << vm.user << "\n";
    const std::string cfg_path = vm.dir + "/sshd_config";
    Status st = WriteText(cfg_path, cfg.str(), 0644);
    if (!st.ok()) return Status::Error(vm.name + ": " + st.message());
    {
      std::ofstream mark(vm.log_file, std::ios::app);
      mark << "--- onboard VM harness: starting sshd on port " << vm.port << "\n";
    }
    Result<pid_t> pid = Spawn({options_.sshd_path, "-D", "-e", "-f", cfg_path}, vm.log_file, options_.stop_with_thread);
    if (!pid.ok()) return Status::Error(vm.name + ": " + pid.error());
    vm.pid = *pid;
    auto deadline = Clock::now() + std::chrono::seconds(options_.start_timeout_seconds);
    bool exited = false;
    while (Clock::now() < deadline) {
      int status = 0;
      if (waitpid(vm.pid, &status, WNOHANG) == vm.pid) {
        exited = true;
        break;
      }
      if (SshBanner(vm.port)) {
        int s2 = 0;
        if (waitpid(vm.pid, &s2, WNOHANG) == vm.pid) {  // someone else answered on that port
          exited = true;
          break;
        }
        return Status::Ok();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Result<std::string> log = ReadText(vm.log_file);
    std::string tail = log.ok() ? Tail(*log) : "";
    if (!exited) {
      Stop(i, false);
      return Status::Error(vm.name + ": sshd did not answer on 127.0.0.1:" + std::to_string(vm.port) + " within " +
                           std::to_string(options_.start_timeout_seconds) + " s; log " + vm.log_file + ": " + tail);
    }
    vm.pid = -1;
    last_error = vm.name + ": sshd exited at start (port " + std::to_string(vm.port) + "); log " + vm.log_file +
                 ": " + tail;
    bool port_taken = tail.find("Address already in use") != std::string::npos ||
                      tail.find("Cannot bind") != std::string::npos;
    if (!port_taken) break;
  }
  return Status::Error(last_error);
}

void VmHarness::Stop(int i, bool graceful) {
  VmInfo& vm = vms_[i];
  if (vm.pid <= 0) return;
  std::vector<pid_t> tree = ProcessTree(vm.pid);
  if (graceful) {
    for (pid_t p : tree) {
      kill(p, SIGTERM);
      kill(p, SIGCONT);  // in case it was paused
    }
    if (!Reaped(vm.pid, 2000)) kill(vm.pid, SIGKILL);
    Reaped(vm.pid, 2000);
    for (size_t k = 1; k < tree.size(); ++k) kill(tree[k], SIGKILL);  // session processes left over
  } else {
    // Stop everything first so nothing forks or re-parents while we kill.
    for (pid_t p : tree) kill(p, SIGSTOP);
    std::vector<pid_t> again = ProcessTree(vm.pid);
    for (pid_t p : again) {
      if (std::find(tree.begin(), tree.end(), p) == tree.end()) tree.push_back(p);
    }
    for (pid_t p : tree) kill(p, SIGKILL);
    Reaped(vm.pid, 5000);
  }
  vm.pid = -1;
}

Status VmHarness::Kill(int i) {
  if (i < 0 || i >= static_cast<int>(vms_.size())) {
    return Status::Error("VM harness: Kill(" + std::to_string(i) + "): no such VM (there are " +
                         std::to_string(vms_.size()) + ")");
  }
  if (vms_[i].pid <= 0) return Status::Error("VM harness: " + vms_[i].name + " is not running");
  Stop(i, false);
  return Status::Ok();
}

Status VmHarness::Restart(int i) {
  if (i < 0 || i >= static_cast<int>(vms_.size())) {
    return Status::Error("VM harness: Restart(" + std::to_string(i) + "): no such VM (there are " +
                         std::to_string(vms_.size()) + ")");
  }
  if (vms_[i].pid > 0) Stop(i, false);
  Status st = StartSshd(i, false);
  if (!st.ok()) return Status::Error("VM harness: restart: " + st.message());
  return Status::Ok();
}

Status VmHarness::Pause(int i) {
  if (!Running(i)) return Status::Error("VM harness: Pause(" + std::to_string(i) + "): VM not running");
  for (pid_t p : ProcessTree(vms_[i].pid)) kill(p, SIGSTOP);
  return Status::Ok();
}

Status VmHarness::Resume(int i) {
  if (!Running(i)) return Status::Error("VM harness: Resume(" + std::to_string(i) + "): VM not running");
  for (pid_t p : ProcessTree(vms_[i].pid)) kill(p, SIGCONT);
  return Status::Ok();
}

bool VmHarness::Running(int i) const {
  return i >= 0 && i < static_cast<int>(vms_.size()) && vms_[i].pid > 0;
}

VmHarness::~VmHarness() {
  for (size_t i = 0; i < vms_.size(); ++i) Stop(static_cast<int>(i), true);
}

Status WriteVmsJson(const VmHarness& harness, const std::string& path) {
  nlohmann::json vms = nlohmann::json::array();
  for (const VmInfo& vm : harness.vms()) {
    vms.push_back({{"name", vm.name},           {"host", vm.host},
                   {"port", vm.port},           {"user", vm.user},
                   {"root_dir", vm.root_dir},   {"config_dir", vm.config_dir},
                   {"hosts_file", vm.hosts_file}, {"tools_dir", vm.tools_dir},
                   {"dir", vm.dir},             {"log_file", vm.log_file},
                   {"home_dir", vm.home_dir},
                   {"pid", vm.pid}});
  }
  nlohmann::json doc = {{"dir", harness.dir()},
                        {"client_key", harness.client_key()},
                        {"known_hosts", harness.known_hosts()},
                        {"vms", vms}};
  const std::string tmp = path + ".tmp";
  Status st = WriteText(tmp, doc.dump(2) + "\n", 0644);
  if (!st.ok()) return st;
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::Error("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace onboard::sandbox
