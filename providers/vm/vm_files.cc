// files.<ns>/<name> and hosts.<ns>/<name>: the proxy's config dir and the hosts file block.
#include <set>

#include "providers/vm/vm_internal.h"
#include "providers/vm/vm_provider.h"

namespace onboard::vm {

using internal::EndpointName;
using ssh::ShellQuote;

namespace {

std::string Str(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

// Files a running container bind-mounts as single files: rewritten in place (same inode).
bool InPlace(const std::string& name) { return name != "sidecar.env"; }

std::string DefaultMode(const std::string& name) {
  return name == internal::kTokenFile ? "0640" : "0644";
}

nlohmann::json ObservedFiles(const internal::FilesStatus& st) {
  nlohmann::json files = nlohmann::json::object();
  for (const auto& [name, f] : st.files) files[name] = {{"sha256", f.sha256}, {"mode", f.mode}};
  return {{"files", files}};
}

std::vector<std::string> FileNames(const nlohmann::json& attrs) {
  std::vector<std::string> names;
  if (attrs.contains("files") && attrs["files"].is_object())
    for (auto it = attrs["files"].begin(); it != attrs["files"].end(); ++it) names.push_back(it.key());
  return names;
}

// Refuses what would be unsafe even quoted: a relative dir, "..", or a file name with a slash.
Status CheckDir(const std::string& dir, const std::vector<std::string>& names) {
  if (dir.empty() || dir[0] != '/')
    return Status::Error("attributes.dir \"" + dir + "\" is not an absolute path");
  if (dir == "/") return Status::Error("attributes.dir must not be /");
  if (dir.find("/../") != std::string::npos || (dir.size() >= 3 && dir.substr(dir.size() - 3) == "/.."))
    return Status::Error("attributes.dir \"" + dir + "\" contains ..");
  for (const auto& n : names)
    if (n.empty() || n.find('/') != std::string::npos || n == "." || n == "..")
      return Status::Error("attributes.files has an invalid file name \"" + n + "\"");
  return Status::Ok();
}

}  // namespace

Result<StepResult> VmProvider::ApplyFiles(const StepRequest& req) {
  const auto& attrs = internal::StepAttributes(req);
  auto ep = EndpointOf(attrs);
  if (!ep.ok()) return Result<StepResult>(ep.status());
  const std::string dir = Str(attrs, "dir");
  std::vector<std::string> names = FileNames(attrs);
  if (Status s = CheckDir(dir, names); !s.ok()) return Result<StepResult>(s);
  const std::string target = EndpointName(*ep);
  const std::string workload = internal::StepWorkload(req);

  if (internal::IsDelete(req)) {
    std::string script = "d=" + ShellQuote(dir) + "\nn=0\nfor f in";
    for (const auto& n : names) script += " " + ShellQuote(n);
    script +=
        "; do if [ -e \"$d/$f\" ]; then rm -f -- \"$d/$f\" || exit 1; n=$((n + 1)); fi; done\n"
        "rm -rf -- \"$d/" +
        std::string(internal::kBackupDir) +
        "\"\n"
        "if [ -d \"$d\" ]; then rmdir -- \"$d\" 2>/dev/null || true; fi\n"
        "echo \"removed $n\"\n";
    if (req.dry_run) {
      if (req.reporter) req.reporter->Action(target, internal::ShCommand(script));
      return StepResult{};
    }
    auto session = SessionFor(*ep);
    if (!session.ok())
      return Result<StepResult>::Error("cannot connect to " + target + ": " + session.error());
    auto r = internal::RunScript(**session, script);
    if (!r.ok()) return Result<StepResult>(r.status());
    if (!r->ok())
      return Result<StepResult>::Error(internal::ExecFailure(*ep, "removing the files in " + dir, *r));
    StepResult res;
    for (const auto& line : internal::SplitLines(r->out))
      if (line.rfind("removed ", 0) == 0) res.writes = std::atoi(line.c_str() + 8);
    return res;
  }

  // Desired content and mode of each file.
  struct Want {
    std::string name, mode;
    std::optional<std::string> content;  // nullopt: the token, not minted in this run
  };
  std::vector<Want> wants;
  const auto& payload = req.desired->payload;
  std::optional<std::string> token =
      req.secrets ? req.secrets->Get(workload, "token") : std::optional<std::string>();
  for (const auto& n : names) {
    Want w;
    w.name = n;
    w.mode = detail::NormalizeMode(attrs["files"][n].contains("mode") ? attrs["files"][n]["mode"]
                                                                      : nlohmann::json());
    if (w.mode.empty()) w.mode = DefaultMode(n);
    if (n == internal::kTokenFile) {
      w.content = token;
    } else {
      if (!payload.contains("contents") || !payload["contents"].contains(n) ||
          !payload["contents"][n].is_string())
        return Result<StepResult>::Error("payload.contents has no \"" + n +
                                         "\": the desired files resource is incomplete "
                                         "(were the mesh facts read?)");
      w.content = payload["contents"][n].get<std::string>();
    }
    wants.push_back(std::move(w));
  }

  const std::string backup_dir = dir + "/" + internal::kBackupDir;
  if (req.dry_run) {
    if (req.reporter) {
      req.reporter->Action(target, internal::ShCommand("mkdir -p -m 0755 " + ShellQuote(dir)));
      for (const auto& w : wants) {
        std::string path = dir + "/" + w.name;
        std::string tmp = dir + "/" + internal::kTempPrefix + w.name;
        if (w.content) {
          std::string body = w.name == internal::kTokenFile
                                 ? "<redacted: " + std::to_string(w.content->size()) + " bytes>"
                                 : *w.content;
          req.reporter->File(target, path, body);
        }
        req.reporter->Action(target, "sftp write " + tmp + " (mode " + w.mode + ")");
        std::string cmd = "cp -p " + ShellQuote(path) + " " +
                          ShellQuote(backup_dir + "/" + w.name) + " (if present); ";
        cmd += InPlace(w.name) ? "cat " + ShellQuote(tmp) + " > " + ShellQuote(path) +
                                     " && rm -f " + ShellQuote(tmp)
                               : "mv -f " + ShellQuote(tmp) + " " + ShellQuote(path);
        cmd += " && chmod " + w.mode + " " + ShellQuote(path);
        req.reporter->Action(target, cmd + (w.content ? "" : " (only if the token changed)"));
      }
    }
    nlohmann::json files = nlohmann::json::object();
    for (const auto& w : wants) {
      files[w.name] = {{"mode", w.mode}};
      if (w.content) files[w.name]["sha256"] = detail::Sha256Hex(*w.content);
    }
    StepResult res;
    res.state = internal::MakeState(req, attrs, {{"files", files}});
    return res;
  }

  auto session = SessionFor(*ep);
  if (!session.ok())
    return Result<StepResult>::Error("cannot connect to " + target + ": " + session.error());
  ssh::Session& s = **session;

  // Check (and create the dir when absent) in one exec.
  std::string check = "d=" + ShellQuote(dir) +
                      "\nif [ ! -d \"$d\" ]; then mkdir -p -m 0755 -- \"$d\" || exit 1; "
                      "echo 'dir created'; fi\n" +
                      internal::FilesStatusScript(dir, names);
  auto r = internal::RunScript(s, check);
  if (!r.ok()) return Result<StepResult>(r.status());
  if (!r->ok())
    return Result<StepResult>::Error(
        internal::ExecFailure(*ep, "creating/checking the config dir " + dir, *r) +
        " (the SSH user needs write access to it or its parent)");
  internal::FilesStatus current = internal::ParseFilesStatus(r->out);

  struct FileAction {
    const Want* want;
    bool write;
  };
  std::vector<FileAction> actions;
  for (const auto& w : wants) {
    auto it = current.files.find(w.name);
    bool present = it != current.files.end();
    if (!w.content) {  // the token, not minted in this run
      std::string prior_sha;
      if (req.prior && req.prior->observed.contains("files") &&
          req.prior->observed["files"].contains(w.name))
        prior_sha = Str(req.prior->observed["files"][w.name], "sha256");
      if (!present)
        return Result<StepResult>::Error(
            w.name + " is missing on " + target + " in " + dir +
            " and no token was minted in this run: the token step (token." + workload +
            ") must run before the files step; run apply for the whole workload");
      if (!prior_sha.empty() && prior_sha != it->second.sha256)
        return Result<StepResult>::Error(
            w.name + " on " + target + " in " + dir +
            " differs from the token onboard wrote (changed on the VM) and no token was minted "
            "in this run: the token step (token." + workload + ") must run to write a fresh one");
      if (it->second.mode != w.mode) actions.push_back({&w, false});
      continue;
    }
    if (!present || it->second.sha256 != detail::Sha256Hex(*w.content))
      actions.push_back({&w, true});
    else if (it->second.mode != w.mode)
      actions.push_back({&w, false});
  }

  StepResult res;
  if (actions.empty()) {
    res.state = internal::MakeState(req, attrs, ObservedFiles(current));
    return res;
  }

  // Remember what is replaced, once per run, before touching anything.
  RunRecord rec;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = records_.find(RecordKey(workload, ResourceType::kFiles));
    if (it != records_.end()) rec = it->second;
  }
  rec.endpoint = *ep;
  rec.dir = dir;
  rec.dir_created = rec.dir_created || current.dir_created;
  std::set<std::string> recorded;
  for (const auto& b : rec.files) recorded.insert(b.name);

  for (const auto& t : actions) {
    if (!t.write) continue;
    std::string tmp = dir + "/" + internal::kTempPrefix + t.want->name;
    Status ws = s.WriteFile(tmp, *t.want->content, std::stoi(t.want->mode, nullptr, 8));
    if (!ws.ok())
      return Result<StepResult>::Error("writing " + tmp + " on " + target + " failed: " +
                                       ws.message());
  }
  std::string script = "set -e\numask 077\nd=" + ShellQuote(dir) + "\nb=\"$d/" +
                       internal::kBackupDir + "\"\nmkdir -p -- \"$b\"\nchmod 0700 \"$b\"\n";
  std::vector<FileBackup> new_backups;
  for (const auto& t : actions) {
    const std::string& n = t.want->name;
    std::string qn = ShellQuote(n);
    if (!recorded.count(n)) {
      auto it = current.files.find(n);
      FileBackup fb;
      fb.name = n;
      fb.existed = it != current.files.end();
      fb.mode = fb.existed ? it->second.mode : "";
      if (fb.existed) script += "cp -p -- \"$d\"/" + qn + " \"$b\"/" + qn + "\n";
      new_backups.push_back(fb);
    }
    std::string tmp = "\"$d\"/" + ShellQuote(std::string(internal::kTempPrefix) + n);
    if (t.write) {
      if (InPlace(n))
        script += "cat " + tmp + " > \"$d\"/" + qn + "\nrm -f -- " + tmp + "\n";
      else
        script += "mv -f -- " + tmp + " \"$d\"/" + qn + "\n";
    }
    script += "chmod " + t.want->mode + " \"$d\"/" + qn + "\n";
  }
  script += "set +e\n" + internal::FilesStatusScript(dir, names);
  auto w = internal::RunScript(s, script);
  // Record the backups even on failure: a rollback must see what may have changed.
  for (auto& fb : new_backups) rec.files.push_back(fb);
  {
    std::lock_guard<std::mutex> l(mu_);
    records_[RecordKey(workload, ResourceType::kFiles)] = rec;
  }
  if (!w.ok()) return Result<StepResult>(w.status());
  if (!w->ok())
    return Result<StepResult>::Error(internal::ExecFailure(*ep, "writing the files in " + dir, *w));
  internal::FilesStatus after = internal::ParseFilesStatus(w->out);
  for (const auto& t : actions) {
    auto it = after.files.find(t.want->name);
    if (it == after.files.end() || it->second.mode != t.want->mode ||
        (t.write && it->second.sha256 != detail::Sha256Hex(*t.want->content)))
      return Result<StepResult>::Error("after writing " + dir + "/" + t.want->name + " on " +
                                       target + " its content or mode is not what was written: "
                                       "is something else managing that directory?");
  }
  res.writes = static_cast<int>(actions.size());
  res.state = internal::MakeState(req, attrs, ObservedFiles(after));
  return res;
}

Result<StepResult> VmProvider::RollbackFiles(const StepRequest& req) {
  const std::string workload = internal::StepWorkload(req);
  std::optional<RunRecord> found = RecordOf(req, ResourceType::kFiles);
  if (!found) return Unchanged(req);  // this run changed nothing here
  const RunRecord& rec = *found;
  const std::string target = EndpointName(rec.endpoint);
  std::string script = "set -e\numask 077\nd=" + ShellQuote(rec.dir) + "\nb=\"$d/" +
                       internal::kBackupDir + "\"\n";
  std::vector<std::string> names;
  for (auto it = rec.files.rbegin(); it != rec.files.rend(); ++it) {
    std::string qn = ShellQuote(it->name);
    names.push_back(it->name);
    if (it->existed) {
      // In place: the running container keeps seeing the same inode.
      script += "cat \"$b\"/" + qn + " > \"$d\"/" + qn + "\nchmod " + it->mode + " \"$d\"/" + qn + "\n";
    } else {
      script += "rm -f -- \"$d\"/" + qn + "\n";
    }
  }
  script += "rm -rf -- \"$b\"\n";
  script += "rm -f -- \"$d\"/" + ShellQuote(std::string(internal::kTempPrefix)) + "*\n";
  if (rec.dir_created) script += "rmdir -- \"$d\" 2>/dev/null || true\n";
  script += "set +e\n" + internal::FilesStatusScript(rec.dir, names);
  if (req.dry_run) {
    if (req.reporter) req.reporter->Action(target, internal::ShCommand(script));
    StepResult res;
    if (req.prior) res.state = *req.prior;
    return res;
  }
  auto session = SessionFor(rec.endpoint);
  if (!session.ok())
    return Result<StepResult>::Error("cannot connect to " + target + " to restore " + rec.dir +
                                     ": " + session.error() + "; the previous files are in " +
                                     rec.dir + "/" + internal::kBackupDir);
  auto r = internal::RunScript(**session, script);
  if (!r.ok()) return Result<StepResult>(r.status());
  if (!r->ok())
    return Result<StepResult>::Error(internal::ExecFailure(
        rec.endpoint, "restoring the files in " + rec.dir + " from " + internal::kBackupDir, *r));
  {
    std::lock_guard<std::mutex> l(mu_);
    records_.erase(RecordKey(workload, ResourceType::kFiles));
  }
  StepResult res;
  res.writes = static_cast<int>(rec.files.size());
  // The record now describes what is back on the VM: nothing when the run had created it all.
  internal::FilesStatus after = internal::ParseFilesStatus(r->out);
  bool any_before = false;
  for (const auto& fb : rec.files) any_before = any_before || fb.existed;
  if (any_before || !after.files.empty()) {
    nlohmann::json attrs = internal::RollbackAttributes(req);
    nlohmann::json observed = ObservedFiles(after);
    if (req.prior && req.prior->observed.contains("files")) {
      // Files this run did not touch keep their recorded facts.
      for (auto it = req.prior->observed["files"].begin(); it != req.prior->observed["files"].end(); ++it)
        if (!observed["files"].contains(it.key())) observed["files"][it.key()] = it.value();
    }
    res.state = internal::MakeState(req, attrs, observed);
  }
  return res;
}

namespace {

// Rewrites the managed block of a hosts file in place (cat > file keeps the inode: /etc/hosts is
// bind-mounted in containers). Prints the old block as "O <line>", then unchanged/written.
// Exit 77: the SSH user cannot write the file and has no passwordless sudo.
std::string HostsScript(const std::string& hosts_file, const std::string& workload, bool write) {
  std::string s = "f=" + ShellQuote(hosts_file) + "; b=" + ShellQuote(internal::HostsBegin(workload)) +
                  "; e=" + ShellQuote(internal::HostsEnd(workload)) + "; mode=" +
                  (write ? "write" : "delete") + "\n";
  s += R"SH(t=$(mktemp "${TMPDIR:-/tmp}/onboard-hosts.XXXXXX") || { echo "cannot create a temp file" >&2; exit 70; }
trap 'rm -f "$t" "$t.blk"' EXIT
cat > "$t.blk" || exit 70
src="$f"; [ -e "$f" ] || src=/dev/null
awk -v b="$b" -v e="$e" '$0 == b { s = 1 } s { print "O " $0 } s && $0 == e { s = 0 }' "$src" || exit 71
awk -v b="$b" -v e="$e" -v blk="$t.blk" -v mode="$mode" '
function emit(  l) { if (mode == "write") { while ((getline l < blk) > 0) print l; close(blk) } done = 1 }
$0 == b { if (!done) emit(); s = 1; next }
s { if ($0 == e) s = 0; next }
{ print }
END { if (!done) emit() }' "$src" > "$t" || exit 71
if [ -e "$f" ] && cmp -s "$t" "$f"; then echo unchanged; exit 0; fi
if [ ! -e "$f" ] && [ ! -s "$t" ]; then echo unchanged; exit 0; fi
if { [ -e "$f" ] && [ -w "$f" ]; } || { [ ! -e "$f" ] && [ -w "$(dirname "$f")" ]; }; then
  cat "$t" > "$f" || exit 71
  echo written
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo -n sh -c 'cat "$1" > "$2"' sh "$t" "$f" || exit 71
  echo written-sudo
else
  exit 77
fi
)SH";
  return s;
}

}  // namespace

Result<StepResult> VmProvider::ApplyHosts(const StepRequest& req) {
  const auto& attrs = internal::StepAttributes(req);
  auto ep = EndpointOf(attrs);
  if (!ep.ok()) return Result<StepResult>(ep.status());
  std::string hosts_file = Str(attrs, "hosts_file").empty() ? "/etc/hosts" : Str(attrs, "hosts_file");
  if (hosts_file[0] != '/')
    return Result<StepResult>::Error("attributes.hosts_file \"" + hosts_file +
                                     "\" is not an absolute path");
  const std::string workload = internal::StepWorkload(req);
  const std::string target = EndpointName(*ep);
  bool del = internal::IsDelete(req);
  std::string block = del ? "" : detail::HostsBlock(workload, attrs.contains("entries") ? attrs["entries"]
                                                                             : nlohmann::json());
  std::string script = HostsScript(hosts_file, workload, !del);
  if (req.dry_run) {
    if (req.reporter) {
      if (!del) req.reporter->File(target, hosts_file + " (managed block)", block);
      req.reporter->Action(target, internal::ShCommand(script) + (del ? "" : " < block"));
    }
    StepResult res;
    if (!del) res.state = internal::MakeState(req, attrs, {{"sha256", detail::Sha256Hex(block)}});
    return res;
  }
  auto session = SessionFor(*ep);
  if (!session.ok())
    return Result<StepResult>::Error("cannot connect to " + target + ": " + session.error());
  auto r = internal::RunScript(**session, script, block);
  if (!r.ok()) return Result<StepResult>(r.status());
  if (r->exit_status == 77)
    return Result<StepResult>::Error("cannot write " + hosts_file + " on " + ep->host + " as " +
                                     ep->user + ": grant write access or passwordless sudo for " +
                                     ep->user + " (sudo -n) on " + ep->host);
  if (!r->ok())
    return Result<StepResult>::Error(internal::ExecFailure(*ep, "updating " + hosts_file, *r));
  bool written = false;
  for (const auto& line : internal::SplitLines(r->out))
    if (line == "written" || line == "written-sudo") written = true;
  StepResult res;
  res.writes = written ? 1 : 0;
  if (written) {
    std::lock_guard<std::mutex> l(mu_);
    auto key = RecordKey(workload, ResourceType::kHosts);
    if (!records_.count(key)) {  // the first change of the run holds the original block
      RunRecord rec;
      rec.endpoint = *ep;
      rec.hosts_file = hosts_file;
      rec.hosts_recorded = true;
      rec.hosts_prev_block = internal::CollectPrefixed(r->out, "O ");
      records_[key] = rec;
    }
  }
  if (!del) res.state = internal::MakeState(req, attrs, {{"sha256", detail::Sha256Hex(block)}});
  return res;
}

Result<StepResult> VmProvider::RollbackHosts(const StepRequest& req) {
  const std::string workload = internal::StepWorkload(req);
  std::optional<RunRecord> found = RecordOf(req, ResourceType::kHosts);
  if (!found) return Unchanged(req);  // this run changed nothing here
  const RunRecord& rec = *found;
  const std::string target = EndpointName(rec.endpoint);
  bool had = !rec.hosts_prev_block.empty();
  std::string script = HostsScript(rec.hosts_file, workload, had);
  if (req.dry_run) {
    if (req.reporter) req.reporter->Action(target, internal::ShCommand(script) + " < previous block");
    StepResult res;
    if (req.prior) res.state = *req.prior;
    return res;
  }
  auto session = SessionFor(rec.endpoint);
  if (!session.ok())
    return Result<StepResult>::Error("cannot connect to " + target + " to restore " +
                                     rec.hosts_file + ": " + session.error());
  auto r = internal::RunScript(**session, script, rec.hosts_prev_block);
  if (!r.ok()) return Result<StepResult>(r.status());
  if (!r->ok())
    return Result<StepResult>::Error(
        internal::ExecFailure(rec.endpoint, "restoring the block in " + rec.hosts_file, *r));
  {
    std::lock_guard<std::mutex> l(mu_);
    records_.erase(RecordKey(workload, ResourceType::kHosts));
  }
  StepResult res;
  res.writes = 1;
  if (had)  // the block as it was before the run
    res.state = internal::MakeState(req, internal::RollbackAttributes(req),
                                    {{"sha256", detail::Sha256Hex(rec.hosts_prev_block)}});
  return res;
}

}  // namespace onboard::vm
