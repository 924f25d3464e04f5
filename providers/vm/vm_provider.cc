// VmProvider: connections, refresh (one exec per VM), dispatch, checks, Finish.
#include "providers/vm/vm_provider.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>
#include <thread>

#include "providers/vm/vm_internal.h"

namespace onboard::vm {

using internal::EndpointName;
using ssh::ShellJoin;
using ssh::ShellQuote;

namespace internal {

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

Result<ssh::ExecResult> RunScript(ssh::Session& s, const std::string& script,
                                  const std::string& stdin_data) {
  auto r = s.Exec(ShCommand(script), stdin_data);
  if (!r.ok())
    return Result<ssh::ExecResult>::Error("SSH exec on " + EndpointName(s.endpoint()) +
                                          " failed: " + r.error());
  return r;
}

std::string ExecFailure(const ssh::Endpoint& ep, const std::string& what,
                        const ssh::ExecResult& r) {
  std::string msg = what + " on " + EndpointName(ep) + " failed";
  if (!r.exit_signal.empty())
    msg += " (killed by signal " + r.exit_signal + ")";
  else
    msg += " (exit " + std::to_string(r.exit_status) + ")";
  std::string err = Trim(r.err);
  if (err.empty()) err = Trim(r.out);
  if (!err.empty()) msg += ": " + err;
  return msg;
}

const nlohmann::json& StepAttributes(const StepRequest& req) {
  static const nlohmann::json empty = nlohmann::json::object();
  if (req.desired) return req.desired->attributes;
  if (req.prior) return req.prior->attributes;
  if (req.change && req.change->before.is_object()) return req.change->before;
  return empty;
}

std::string StepWorkload(const StepRequest& req) {
  if (req.desired) return req.desired->workload;
  if (req.prior) return req.prior->workload;
  if (req.change) return req.change->workload;
  return "";
}

std::string StepAddress(const StepRequest& req) {
  if (req.change) return req.change->address.ToString();
  if (req.desired) return req.desired->address.ToString();
  if (req.prior) return req.prior->address.ToString();
  return "?";
}

bool IsDelete(const StepRequest& req) {
  return req.desired == nullptr || (req.change && req.change->action == Action::kDelete);
}

nlohmann::json RollbackAttributes(const StepRequest& req) {
  if (req.change && req.change->after.is_object() && !req.change->after.empty())
    return req.change->after;
  if (req.desired) return req.desired->attributes;
  if (req.prior) return req.prior->attributes;
  return nlohmann::json::object();
}

ResourceState MakeState(const StepRequest& req, const nlohmann::json& attributes,
                        nlohmann::json observed) {
  ResourceState st;
  if (req.change) {
    st.address = req.change->address;
  } else if (req.desired) {
    st.address = req.desired->address;
  } else if (req.prior) {
    st.address = req.prior->address;
  }
  st.workload = StepWorkload(req);
  st.attributes = attributes;
  st.observed = std::move(observed);
  st.origin = req.prior ? req.prior->origin : Origin::kCreated;
  return st;
}

}  // namespace internal

namespace {

// A JSON field as a string ("" when absent or not a string).
std::string Str(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

std::vector<int> Ports(const nlohmann::json& ports) {
  std::vector<int> out;
  if (!ports.is_array()) return out;
  for (const auto& p : ports) {
    if (p.is_number_integer()) out.push_back(p.get<int>());
    else if (p.is_object() && p.contains("number") && p["number"].is_number_integer())
      out.push_back(p["number"].get<int>());
    else if (p.is_object() && p.contains("port") && p["port"].is_number_integer())
      out.push_back(p["port"].get<int>());
  }
  return out;
}

std::string JoinPorts(const std::vector<int>& ports) {
  std::string s;
  for (int p : ports) s += (s.empty() ? "" : ", ") + std::to_string(p);
  return s;
}

// TCP connect from this host with a timeout. Ok when the port accepted the connection.
Status TcpProbe(const std::string& host, int port, int timeout_seconds) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) return Status::Error(std::string("cannot resolve: ") + gai_strerror(rc));
  std::string last = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    int c = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (c != 0 && errno == EINPROGRESS) {
      pollfd pfd{fd, POLLOUT, 0};
      int pr = poll(&pfd, 1, timeout_seconds * 1000);
      if (pr == 0) {
        last = "timed out after " + std::to_string(timeout_seconds) + "s";
        close(fd);
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      c = err == 0 ? 0 : -1;
      errno = err;
    }
    if (c == 0) {
      close(fd);
      freeaddrinfo(res);
      return Status::Ok();
    }
    last = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(res);
  return Status::Error(last);
}

}  // namespace

VmProvider::VmProvider(VmProviderOptions options) : options_(std::move(options)) {
  if (!options_.connector) pool_ = std::make_unique<ssh::ConnectionPool>();
}
VmProvider::~VmProvider() = default;

bool VmProvider::Handles(ResourceType t) const {
  switch (t) {
    case ResourceType::kFiles:
    case ResourceType::kHosts:
    case ResourceType::kContainer:
    case ResourceType::kCheckGateway:
    case ResourceType::kCheckInbound:
      return true;
    default:
      return false;
  }
}

Result<ssh::Endpoint> VmProvider::EndpointOf(const nlohmann::json& attributes) const {
  if (!attributes.is_object() || !attributes.contains("connection") ||
      !attributes["connection"].is_object())
    return Result<ssh::Endpoint>::Error(
        "attributes.connection is missing: the resource does not say how to reach its VM");
  const auto& c = attributes["connection"];
  ssh::Endpoint ep;
  ep.host = Str(c, "host");
  if (c.contains("port") && c["port"].is_number_integer()) ep.port = c["port"].get<int>();
  ep.user = Str(c, "user");
  ep.identity_file = Str(c, "identity_file");
  ep.known_hosts = Str(c, "known_hosts");
  if (!options_.identity_file_override.empty()) ep.identity_file = options_.identity_file_override;
  ep.connect_timeout_seconds = options_.connect_timeout_seconds;
  ep.host_keys = options_.host_keys;
  if (ep.host.empty())
    return Result<ssh::Endpoint>::Error("attributes.connection.host is empty: no VM to connect to");
  if (ep.port <= 0 || ep.port > 65535)
    return Result<ssh::Endpoint>::Error("attributes.connection.port " + std::to_string(ep.port) +
                                        " is not a TCP port");
  return ep;
}

Result<std::shared_ptr<ssh::Session>> VmProvider::SessionFor(const ssh::Endpoint& ep) {
  if (options_.connector) {
    auto r = options_.connector(ep);
    if (r.ok() && !r.value())
      return Result<std::shared_ptr<ssh::Session>>::Error("no SSH session for " + EndpointName(ep));
    return r;
  }
  return pool_->Get(ep);
}

std::optional<VmProvider::RunRecord> VmProvider::RecordOf(const StepRequest& req, ResourceType t) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = records_.find(RecordKey(internal::StepWorkload(req), t));
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

StepResult VmProvider::Unchanged(const StepRequest& req) {
  StepResult res;
  if (req.prior) res.state = *req.prior;
  return res;
}

std::string VmProvider::RecordKey(const std::string& workload, ResourceType t) const {
  return workload + "\n" + TypeName(t);
}

std::map<std::string, Result<Observation>> VmProvider::Refresh(
    const std::vector<RefreshItem>& items) {
  std::map<std::string, Result<Observation>> out;
  struct Pending {
    const RefreshItem* item;
    const nlohmann::json* attrs;
  };
  std::map<std::string, std::pair<ssh::Endpoint, std::vector<Pending>>> by_vm;
  for (const auto& item : items) {
    std::string addr = item.address.ToString();
    if (IsCheck(item.address.type) || !Handles(item.address.type)) {
      out.emplace(addr, Observation{});
      continue;
    }
    const nlohmann::json* attrs = item.desired   ? &item.desired->attributes
                                  : item.prior   ? &item.prior->attributes
                                                 : nullptr;
    if (!attrs) {
      out.emplace(addr, Result<Observation>::Error(addr + ": nothing to refresh (no desired "
                                                          "resource and no state record)"));
      continue;
    }
    auto ep = EndpointOf(*attrs);
    if (!ep.ok()) {
      out.emplace(addr, Result<Observation>::Error(addr + ": " + ep.error()));
      continue;
    }
    auto& slot = by_vm[EndpointName(*ep)];
    slot.first = *ep;
    slot.second.push_back({&item, attrs});
  }

  // One task per VM (one connection, one exec each), at most kRefreshParallelism VMs at once.
  using Group = std::pair<ssh::Endpoint, std::vector<Pending>>;
  auto refresh_vm = [&](const std::string& vm, Group& group, std::map<std::string, Result<Observation>>& res) {
    const ssh::Endpoint& ep = group.first;
    auto& pending = group.second;
    std::string script;
    for (size_t i = 0; i < pending.size(); ++i) {
      const auto& a = *pending[i].attrs;
      const RefreshItem& item = *pending[i].item;
      script += "echo '@@item " + std::to_string(i) + "'\n";
      switch (item.address.type) {
        case ResourceType::kFiles: {
          std::vector<std::string> names;
          if (a.contains("files") && a["files"].is_object())
            for (auto it = a["files"].begin(); it != a["files"].end(); ++it) names.push_back(it.key());
          script += internal::FilesStatusScript(Str(a, "dir"), names);
          break;
        }
        case ResourceType::kHosts:
          script += internal::HostsStatusScript(
              Str(a, "hosts_file").empty() ? "/etc/hosts" : Str(a, "hosts_file"), item.workload);
          break;
        case ResourceType::kContainer:
          script += internal::ContainerStatusScript(
              Str(a, "docker").empty() ? "docker" : Str(a, "docker"), Str(a, "name"));
          break;
        default:
          break;
      }
    }
    auto fail_all = [&](const std::string& why) {
      for (const auto& p : pending)
        res.emplace(p.item->address.ToString(),
                    Result<Observation>::Error(p.item->address.ToString() + ": " + why));
    };
    auto session = SessionFor(ep);
    if (!session.ok()) {
      fail_all("cannot connect to " + vm + ": " + session.error());
      return;
    }
    auto r = internal::RunScript(**session, script);
    if (!r.ok()) {
      fail_all(r.error());
      return;
    }
    if (!r->ok()) {
      fail_all(internal::ExecFailure(ep, "the refresh script", *r));
      return;
    }
    // Split the output per item.
    std::vector<std::string> sections(pending.size());
    int current = -1;
    for (const auto& line : internal::SplitLines(r->out)) {
      if (line.rfind("@@item ", 0) == 0) {
        current = std::atoi(line.c_str() + 7);
        if (current < 0 || current >= static_cast<int>(pending.size())) current = -1;
        continue;
      }
      if (current >= 0) sections[current] += line + "\n";
    }
    for (size_t i = 0; i < pending.size(); ++i) {
      const RefreshItem& item = *pending[i].item;
      const auto& a = *pending[i].attrs;
      std::string addr = item.address.ToString();
      Observation obs;
      switch (item.address.type) {
        case ResourceType::kFiles: {
          auto st = internal::ParseFilesStatus(sections[i]);
          nlohmann::json files = nlohmann::json::object();
          nlohmann::json attr_files = nlohmann::json::object();
          for (const auto& [name, f] : st.files) {
            files[name] = {{"sha256", f.sha256}, {"mode", f.mode}};
            attr_files[name] = {{"mode", f.mode}};
            if (name != internal::kTokenFile) attr_files[name]["sha256"] = f.sha256;
          }
          obs.exists = !st.files.empty();
          obs.attributes = {{"dir", Str(a, "dir")}, {"files", attr_files}};
          obs.observed = {{"files", files}};
          break;
        }
        case ResourceType::kHosts: {
          std::string block = internal::CollectPrefixed(sections[i], "H ");
          obs.exists = !block.empty();
          std::string hosts_file = Str(a, "hosts_file").empty() ? "/etc/hosts" : Str(a, "hosts_file");
          obs.attributes = {{"hosts_file", hosts_file},
                            {"entries", internal::ParseHostsEntries(block)}};
          if (obs.exists) obs.observed = {{"sha256", detail::Sha256Hex(block)}};
          break;
        }
        case ResourceType::kContainer: {
          auto st = internal::ParseContainerStatus(sections[i]);
          std::string docker = Str(a, "docker").empty() ? "docker" : Str(a, "docker");
          if (st.docker_missing) {
            res.emplace(addr, Result<Observation>::Error(
                                  addr + ": the docker command '" + docker + "' is not found on " +
                                  vm + ": install Docker there or set vm.docker to its path"));
            continue;
          }
          if (!st.error.empty()) {
            res.emplace(addr, Result<Observation>::Error(
                                  addr + ": docker inspect on " + vm + " failed: " + st.error +
                                  " (is the SSH user in the docker group?)"));
            continue;
          }
          obs.exists = st.exists;
          if (st.exists) {
            obs.attributes = {{"name", Str(a, "name")},
                              {"image", st.image},
                              {"docker", docker},
                              {"config_hash", st.config_hash}};
            obs.observed = {{"id", st.id},
                            {"running", st.running},
                            {"config_hash", st.config_hash},
                            {"image", st.image}};
          }
          break;
        }
        default:
          break;
      }
      res.emplace(addr, std::move(obs));
    }
    };
  std::vector<std::pair<const std::string*, Group*>> vms;
  for (auto& kv : by_vm) vms.push_back({&kv.first, &kv.second});
  std::mutex out_mu;
  std::atomic<size_t> next{0};
  auto worker = [&] {
    std::map<std::string, Result<Observation>> local;
    for (size_t k; (k = next++) < vms.size();) refresh_vm(*vms[k].first, *vms[k].second, local);
    std::lock_guard<std::mutex> l(out_mu);
    for (auto& kv : local) out.emplace(kv.first, std::move(kv.second));
  };
  constexpr size_t kRefreshParallelism = 10;
  std::vector<std::thread> pool;
  for (size_t t = 0; t < std::min(kRefreshParallelism, vms.size()); ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return out;
}

Result<StepResult> VmProvider::Apply(const StepRequest& req) {
  if (!req.change && !req.desired && !req.prior)
    return Result<StepResult>::Error("VM provider: empty step request");
  ResourceType t = req.change    ? req.change->address.type
                   : req.desired ? req.desired->address.type
                                 : req.prior->address.type;
  Result<StepResult> r = Result<StepResult>::Error("");
  switch (t) {
    case ResourceType::kFiles:
      r = req.rollback ? RollbackFiles(req) : ApplyFiles(req);
      break;
    case ResourceType::kHosts:
      r = req.rollback ? RollbackHosts(req) : ApplyHosts(req);
      break;
    case ResourceType::kContainer:
      r = req.rollback ? RollbackContainer(req) : ApplyContainer(req);
      break;
    case ResourceType::kCheckGateway:
      if (req.rollback) return StepResult{};
      r = ApplyCheckGateway(req);
      break;
    case ResourceType::kCheckInbound:
      if (req.rollback) return StepResult{};
      r = ApplyCheckInbound(req);
      break;
    default:
      return Result<StepResult>::Error(std::string("VM provider does not handle ") + TypeName(t) +
                                       " (" + internal::StepAddress(req) + ")");
  }
  if (!r.ok() && r.error().rfind(internal::StepAddress(req), 0) != 0)
    return Result<StepResult>::Error(internal::StepAddress(req) + ": " + r.error());
  return r;
}

Result<StepResult> VmProvider::ApplyCheckGateway(const StepRequest& req) {
  const auto& a = internal::StepAttributes(req);
  StepResult result;  // checks never keep state
  if (internal::IsDelete(req)) return result;
  auto ep = EndpointOf(a);
  if (!ep.ok()) return Result<StepResult>(ep.status());
  std::string gateway = a.contains("gateway") && a["gateway"].is_object() ? Str(a["gateway"], "address")
                                                                          : Str(a, "gateway");
  std::vector<int> ports = Ports(a.contains("ports") ? a["ports"] : nlohmann::json());
  if (ports.empty() && a.contains("gateway") && a["gateway"].is_object() &&
      a["gateway"].contains("ports"))
    ports = Ports(a["gateway"]["ports"]);
  if (gateway.empty() || ports.empty()) return result;  // same network: nothing to check
  int timeout = options_.port_check_timeout_seconds;
  // Portable probe: bash's /dev/tcp under timeout when bash exists; else nc -z; else busybox nc.
  std::string script = "g=" + ShellQuote(gateway) + "; t=" + std::to_string(timeout) + "\n";
  script +=
      "if command -v bash >/dev/null 2>&1; then m=bash\n"
      "elif command -v nc >/dev/null 2>&1; then m=nc\n"
      "elif command -v busybox >/dev/null 2>&1 && busybox nc --help >/dev/null 2>&1; then m=bbnc\n"
      "else echo 'nomethod'; exit 0; fi\n"
      "probe() {\n"
      "  case $m in\n"
      "    bash) if command -v timeout >/dev/null 2>&1; then\n"
      "            timeout \"$t\" bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$g\" \"$1\"\n"
      "          else bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$g\" \"$1\"; fi ;;\n"
      "    nc) nc -z -w \"$t\" \"$g\" \"$1\" ;;\n"
      "    bbnc) busybox nc -z -w \"$t\" \"$g\" \"$1\" ;;\n"
      "  esac\n"
      "}\n"
      "for p in";
  for (int p : ports) script += " " + std::to_string(p);
  script +=
      "; do ( if probe \"$p\" >/dev/null 2>&1 </dev/null; then echo \"open $p\"; "
      "else echo \"closed $p\"; fi ) & done\n"
      "wait\n";
  if (req.dry_run) {
    if (req.reporter)
      req.reporter->Action(EndpointName(*ep), "check TCP " + JoinPorts(ports) + " to the VM gateway " +
                                                 gateway + ": " + internal::ShCommand(script));
    return result;
  }
  auto session = SessionFor(*ep);
  if (!session.ok())
    return Result<StepResult>::Error("cannot connect to " + EndpointName(*ep) + ": " +
                                     session.error());
  auto r = internal::RunScript(**session, script);
  if (!r.ok()) return Result<StepResult>(r.status());
  if (!r->ok()) return Result<StepResult>::Error(internal::ExecFailure(*ep, "the gateway check", *r));
  std::set<int> open;
  bool nomethod = false;
  for (const auto& line : internal::SplitLines(r->out)) {
    if (line == "nomethod") nomethod = true;
    if (line.rfind("open ", 0) == 0) open.insert(std::atoi(line.c_str() + 5));
  }
  std::string who = ep->user + "@" + ep->host;
  std::string vm = internal::VmName(internal::StepWorkload(req));
  if (nomethod)
    return Result<StepResult>::Error("VM " + vm + " (" + who +
                                     ") has neither bash nor nc to test the VM gateway ports: "
                                     "install one of them (e.g. netcat-openbsd)");
  std::vector<int> closed;
  for (int p : ports)
    if (!open.count(p)) closed.push_back(p);
  if (!closed.empty())
    return Result<StepResult>::Error("VM " + vm + " (" + who + ") cannot reach the VM gateway " +
                                     gateway + " on TCP " + JoinPorts(closed) +
                                     ": open them in the firewall");
  return result;
}

Result<StepResult> VmProvider::ApplyCheckInbound(const StepRequest& req) {
  const auto& a = internal::StepAttributes(req);
  StepResult result;
  if (internal::IsDelete(req)) return result;
  std::string address = Str(a, "address");
  std::vector<int> ports = Ports(a.contains("ports") ? a["ports"] : nlohmann::json());
  if (address.empty() || ports.empty()) return result;
  if (req.dry_run) {
    if (req.reporter)
      req.reporter->Action("local", "check TCP " + JoinPorts(ports) + " to " + address +
                                        " from the onboard host");
    return result;
  }
  std::vector<int> closed;
  std::string detail;
  for (int p : ports) {
    Status s = TcpProbe(address, p, options_.port_check_timeout_seconds);
    if (!s.ok()) {
      closed.push_back(p);
      detail += (detail.empty() ? "" : "; ") + std::to_string(p) + ": " + s.message();
    }
  }
  if (closed.empty()) return result;
  std::string msg = "the onboard host cannot reach VM " + internal::VmName(internal::StepWorkload(req)) +
                    " at " + address + " on TCP " + JoinPorts(closed) + " (" + detail +
                    "): the cluster must reach the VM's Sidecar ingress ports; open them in the "
                    "VM's firewall";
  if (options_.strict_checks) return Result<StepResult>::Error(msg);
  if (req.reporter) req.reporter->Warn(internal::StepAddress(req) + ": " + msg);
  return result;
}

void VmProvider::Finish(const std::string& workload, bool succeeded) {
  (void)succeeded;  // rolled-back steps already cleared their records; drop what is left
  std::vector<RunRecord> done;
  {
    std::lock_guard<std::mutex> l(mu_);
    std::string prefix = workload + "\n";
    for (auto it = records_.begin(); it != records_.end();) {
      if (it->first.compare(0, prefix.size(), prefix) == 0) {
        done.push_back(it->second);
        it = records_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& rec : done) {
    std::string script;
    if (!rec.dir.empty() && !rec.files.empty())
      script += "rm -rf -- " + ShellQuote(rec.dir + "/" + internal::kBackupDir) + "\n";
    if (rec.container_replaced)
      script += ShellJoin({rec.docker, "rm", "--force", rec.container + internal::kPrevSuffix}) +
                " >/dev/null 2>&1 || true\n";
    if (script.empty()) continue;
    auto session = SessionFor(rec.endpoint);
    if (!session.ok()) continue;  // nothing more to do: a later run overwrites stale copies
    (void)internal::RunScript(**session, script);
  }
}

}  // namespace onboard::vm
