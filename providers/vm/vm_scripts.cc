// The remote POSIX sh snippets the VM provider runs, and the parsers of their output.
#include <openssl/evp.h>

#include <cstdio>
#include <sstream>

#include "providers/vm/vm_internal.h"
#include "providers/vm/vm_provider.h"

namespace onboard::vm {
namespace detail {

std::string HostsBlock(const std::string& workload, const nlohmann::json& entries) {
  std::string block = internal::HostsBegin(workload) + "\n";
  if (entries.is_object()) {
    for (auto it = entries.begin(); it != entries.end(); ++it) {
      std::string line = it.key();
      if (it.value().is_array()) {
        for (const auto& n : it.value())
          if (n.is_string()) line += " " + n.get<std::string>();
      } else if (it.value().is_string()) {
        line += " " + it.value().get<std::string>();
      }
      block += line + "\n";
    }
  }
  block += internal::HostsEnd(workload) + "\n";
  return block;
}

std::string NormalizeMode(const nlohmann::json& mode) {
  std::string m;
  if (mode.is_string()) {
    m = mode.get<std::string>();
  } else if (mode.is_number_integer()) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%o", mode.get<int>());
    m = buf;
  } else {
    return "";
  }
  if (m.empty() || m.size() > 4) return "";
  for (char c : m)
    if (c < '0' || c > '7') return "";
  while (m.size() < 4) m = "0" + m;
  return m;
}

std::vector<std::string> RunArgv(const std::string& docker, const nlohmann::json& argv,
                                 const std::string& config_hash) {
  std::vector<std::string> out{docker};
  bool inserted = false;
  if (argv.is_array()) {
    for (const auto& a : argv) {
      std::string s = a.is_string() ? a.get<std::string>() : a.dump();
      out.push_back(s);
      if (!inserted && s == "run") {
        out.push_back("--label");
        out.push_back(std::string(internal::kHashLabel) + "=" + config_hash);
        inserted = true;
      }
    }
  }
  return out;
}

}  // namespace detail

namespace internal {

using ssh::ShellQuote;

std::string EndpointName(const ssh::Endpoint& ep) {
  return ep.user + "@" + ep.host + ":" + std::to_string(ep.port);
}

std::string ShCommand(const std::string& script) { return "sh -c " + ShellQuote(script); }

std::string VmName(const std::string& workload) {
  auto slash = workload.find('/');
  return slash == std::string::npos ? workload : workload.substr(slash + 1);
}

std::vector<std::string> SplitLines(const std::string& s) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(s);
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string FilesStatusScript(const std::string& dir, const std::vector<std::string>& names) {
  std::string s = "d=" + ShellQuote(dir) + "\n";
  s += "if [ -d \"$d\" ]; then echo 'dir 1'; else echo 'dir 0'; fi\n";
  s += "for f in";
  for (const auto& n : names) s += " " + ShellQuote(n);
  s += "; do\n"
       "  p=\"$d/$f\"\n"
       "  if [ -f \"$p\" ]; then\n"
       "    s=$(sha256sum < \"$p\" 2>/dev/null | cut -d' ' -f1)\n"
       "    m=$(stat -c %a \"$p\" 2>/dev/null)\n"
       "    echo \"file $f ${s:-unreadable} ${m:-unknown}\"\n"
       "  fi\n"
       "done\n";
  return s;
}

FilesStatus ParseFilesStatus(const std::string& out) {
  FilesStatus st;
  for (const auto& line : SplitLines(out)) {
    if (line == "dir 1") st.dir_exists = true;
    if (line == "dir created") st.dir_created = true;
    if (line.rfind("file ", 0) == 0) {
      std::istringstream in(line.substr(5));
      std::string name, sha, mode;
      in >> name >> sha >> mode;
      FileStatus f;
      f.present = true;
      f.sha256 = sha;
      f.mode = detail::NormalizeMode(mode);
      if (f.mode.empty()) f.mode = mode;
      st.files[name] = f;
    }
  }
  return st;
}

std::string HostsBegin(const std::string& workload) { return "# BEGIN onboard " + workload; }
std::string HostsEnd(const std::string& workload) { return "# END onboard " + workload; }

std::string HostsStatusScript(const std::string& hosts_file, const std::string& workload) {
  std::string s = "f=" + ShellQuote(hosts_file) + "; b=" + ShellQuote(HostsBegin(workload)) +
                  "; e=" + ShellQuote(HostsEnd(workload)) + "\n";
  s += "if [ -f \"$f\" ]; then echo 'hosts 1'; "
       "awk -v b=\"$b\" -v e=\"$e\" '$0 == b { s = 1 } s { print \"H \" $0 } s && $0 == e { s = 0 }' "
       "\"$f\"; else echo 'hosts 0'; fi\n";
  return s;
}

std::string CollectPrefixed(const std::string& out, const std::string& prefix) {
  std::string block;
  for (const auto& line : SplitLines(out))
    if (line.compare(0, prefix.size(), prefix) == 0) block += line.substr(prefix.size()) + "\n";
  return block;
}

nlohmann::json ParseHostsEntries(const std::string& block) {
  nlohmann::json entries = nlohmann::json::object();
  for (const auto& line : SplitLines(block)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string ip, name;
    if (!(in >> ip)) continue;
    nlohmann::json names = entries.contains(ip) ? entries[ip] : nlohmann::json::array();
    while (in >> name) names.push_back(name);
    entries[ip] = names;
  }
  return entries;
}

std::string ContainerStatusScript(const std::string& docker, const std::string& name) {
  std::string s = "dk=" + ShellQuote(docker) + "; n=" + ShellQuote(name) + "\n";
  s += "if ! command -v \"$dk\" >/dev/null 2>&1; then echo 'docker missing'\n"
       "elif o=$(\"$dk\" inspect --type container -f " +
       ShellQuote(kInspectTemplate) +
       " \"$n\" 2>&1); then echo \"C $o\"\n"
       "else case $o in *'No such'*) echo 'container absent' ;; "
       "*) printf '%s\\n' \"$o\" | sed 's/^/E /' ;; esac; fi\n";
  return s;
}

ContainerStatus ParseContainerStatus(const std::string& out) {
  ContainerStatus st;
  for (const auto& line : SplitLines(out)) {
    if (line == "docker missing") st.docker_missing = true;
    if (line.rfind("C ", 0) == 0) {
      std::vector<std::string> parts;
      std::string rest = line.substr(2);
      size_t pos = 0;
      while (true) {
        size_t bar = rest.find('|', pos);
        if (bar == std::string::npos) {
          parts.push_back(rest.substr(pos));
          break;
        }
        parts.push_back(rest.substr(pos, bar - pos));
        pos = bar + 1;
      }
      if (parts.size() >= 4) {
        st.exists = true;
        st.id = parts[0];
        st.running = parts[1] == "true";
        st.image = parts[2];
        st.config_hash = parts[3] == "<no value>" ? "" : parts[3];
      } else {
        st.error += "unexpected docker inspect output: " + rest + "\n";
      }
    }
    if (line.rfind("E ", 0) == 0) st.error += line.substr(2) + "\n";
  }
  while (!st.error.empty() && st.error.back() == '\n') st.error.pop_back();
  return st;
}

}  // namespace internal
}  // namespace onboard::vm
