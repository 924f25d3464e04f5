// container.<ns>/<name>: the proxy container, replaced only when its config hash changes.
#include <chrono>
#include <sstream>
#include <thread>

#include "providers/vm/vm_internal.h"
#include "providers/vm/vm_provider.h"

namespace onboard::vm {

using internal::EndpointName;
using ssh::ShellJoin;
using ssh::ShellQuote;

namespace {

std::string Str(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

std::string Seconds(double s) {
  std::ostringstream out;
  out << s << "s";
  return out.str();
}

nlohmann::json ObservedContainer(const internal::ContainerStatus& st) {
  return {{"id", st.id}, {"running", st.running}, {"config_hash", st.config_hash}, {"image", st.image}};
}

// Puts the previous container back: removes <name>, renames <name>-onboard-prev to <name>, starts it.
std::string RestoreScript(const std::string& docker, const std::string& name) {
  std::string prev = name + internal::kPrevSuffix;
  std::string s = "dk=" + ShellQuote(docker) + "; n=" + ShellQuote(name) + "; p=" + ShellQuote(prev) + "\n";
  s += "\"$dk\" rm --force \"$n\" >/dev/null 2>&1\n"
       "if \"$dk\" inspect --type container -f '{{.Id}}' \"$p\" >/dev/null 2>&1; then\n"
       "  \"$dk\" rename \"$p\" \"$n\" && \"$dk\" start \"$n\" >/dev/null && echo restored\n"
       "else echo 'no previous'; fi\n";
  return s;
}

}  // namespace

Result<StepResult> VmProvider::ApplyContainer(const StepRequest& req) {
  const auto& attrs = internal::StepAttributes(req);
  auto ep = EndpointOf(attrs);
  if (!ep.ok()) return Result<StepResult>(ep.status());
  const std::string docker = Str(attrs, "docker").empty() ? "docker" : Str(attrs, "docker");
  const std::string name = Str(attrs, "name");
  if (name.empty()) return Result<StepResult>::Error("attributes.name (the container name) is empty");
  const std::string prev = name + internal::kPrevSuffix;
  const std::string target = EndpointName(*ep);
  const std::string workload = internal::StepWorkload(req);
  const std::string hash = Str(attrs, "config_hash");
  const std::string image = Str(attrs, "image");
  auto report = [&](const std::string& cmd) {
    if (req.reporter) req.reporter->Action(target, cmd);
  };

  if (internal::IsDelete(req)) {
    std::string script = "dk=" + ShellQuote(docker) + "; n=" + ShellQuote(name) + "; p=" +
                         ShellQuote(prev) + "; w=0\n" +
                         "for c in \"$n\" \"$p\"; do\n"
                         "  if \"$dk\" inspect --type container -f '{{.Id}}' \"$c\" >/dev/null 2>&1; then\n"
                         "    \"$dk\" rm --force \"$c\" >/dev/null || exit 1; w=$((w + 1))\n"
                         "  fi\n"
                         "done\necho \"removed $w\"\n";
    if (req.dry_run) {
      report(ShellJoin({docker, "rm", "--force", name}));
      return StepResult{};
    }
    auto session = SessionFor(*ep);
    if (!session.ok())
      return Result<StepResult>::Error("cannot connect to " + target + ": " + session.error());
    auto r = internal::RunScript(**session, script);
    if (!r.ok()) return Result<StepResult>(r.status());
    if (!r->ok())
      return Result<StepResult>::Error(
          internal::ExecFailure(*ep, "docker rm --force " + name, *r));
    StepResult res;
    for (const auto& line : internal::SplitLines(r->out))
      if (line.rfind("removed ", 0) == 0) res.writes = std::atoi(line.c_str() + 8);
    return res;
  }

  const nlohmann::json& argv = req.desired->payload.contains("argv") ? req.desired->payload["argv"]
                                                                      : nlohmann::json();
  if (!argv.is_array() || argv.empty() || argv[0] != "run")
    return Result<StepResult>::Error("payload.argv must be the docker run arguments starting with "
                                     "\"run\" (the desired container resource is incomplete)");
  std::vector<std::string> run = detail::RunArgv(docker, argv, hash);
  std::string stop_cmd = ShellJoin({docker, "stop", "-t", std::to_string(options_.container_stop_timeout_seconds), name});
  std::string rename_cmd = ShellJoin({docker, "rename", name, prev});
  if (req.dry_run) {
    report(ShellJoin({docker, "inspect", "-f", internal::kInspectTemplate, name}));
    report(ShellJoin({docker, "rm", "--force", prev}) + " (a leftover previous container, if any)");
    report(stop_cmd + " && " + rename_cmd + " (if " + name + " exists)");
    report(ShellJoin(run));
    report(ShellJoin({docker, "inspect", "--type", "container", "-f",
                      "{{.State.Running}}|{{.State.Restarting}}|{{.RestartCount}}", name}) + " (after " +
           Seconds(options_.container_grace_seconds) + ")");
    StepResult res;
    res.state = internal::MakeState(
        req, attrs, {{"id", ""}, {"running", true}, {"config_hash", hash}, {"image", image}});
    return res;
  }

  auto session = SessionFor(*ep);
  if (!session.ok())
    return Result<StepResult>::Error("cannot connect to " + target + ": " + session.error());
  ssh::Session& s = **session;
  auto inspect = [&](const std::string& which) -> Result<internal::ContainerStatus> {
    auto r = internal::RunScript(s, internal::ContainerStatusScript(docker, which));
    if (!r.ok()) return Result<internal::ContainerStatus>(r.status());
    if (!r->ok())
      return Result<internal::ContainerStatus>::Error(
          internal::ExecFailure(*ep, "docker inspect " + which, *r));
    auto st = internal::ParseContainerStatus(r->out);
    if (st.docker_missing)
      return Result<internal::ContainerStatus>::Error(
          "the docker command '" + docker + "' is not found on " + target +
          ": install Docker there or set vm.docker to its path");
    if (!st.error.empty())
      return Result<internal::ContainerStatus>::Error(
          "docker inspect " + which + " on " + target + " failed: " + st.error +
          " (is the SSH user in the docker group?)");
    return st;
  };
  auto cur = inspect(name);
  if (!cur.ok()) return Result<StepResult>(cur.status());
  bool same = cur->exists && cur->config_hash == hash && (image.empty() || cur->image == image);
  StepResult res;
  if (same && cur->running) {
    res.state = internal::MakeState(req, attrs, ObservedContainer(*cur));
    return res;
  }
  auto grace = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(
        static_cast<int64_t>(options_.container_grace_seconds * 1000)));
  };
  auto logs_of = [&](const std::string& which) {
    auto r = internal::RunScript(s, ShellJoin({docker, "logs", "--tail", "20", which}) + " 2>&1");
    return r.ok() ? internal::Trim(r->out) : std::string();
  };
  if (same && !cur->running) {
    // Right configuration, stopped: start it again.
    auto r = internal::RunScript(s, ShellJoin({docker, "start", name}));
    if (!r.ok()) return Result<StepResult>(r.status());
    if (r->ok()) {
      grace();
      auto after = inspect(name);
      if (!after.ok()) return Result<StepResult>(after.status());
      if (after->running) {
        res.writes = 1;
        res.state = internal::MakeState(req, attrs, ObservedContainer(*after));
        return res;
      }
    }
    // It does not stay up: replace it below.
  }

  // Replace: keep the old one stopped under <name>-onboard-prev until the new one runs.
  RunRecord rec;
  bool have_record = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = records_.find(RecordKey(workload, ResourceType::kContainer));
    if (it != records_.end()) {
      rec = it->second;
      have_record = true;
    }
  }
  std::string prepare = "dk=" + ShellQuote(docker) + "; n=" + ShellQuote(name) + "; p=" + ShellQuote(prev) + "\n";
  if (!(have_record && rec.container_replaced)) {
    // A previous container left by an earlier, interrupted run is stale.
    prepare += "\"$dk\" rm --force \"$p\" >/dev/null 2>&1\n";
  }
  if (cur->exists) {
    if (have_record) {
      // This run already replaced or created it: the container in the way is ours (the
      // original, if any, is kept as prev).
      prepare += "\"$dk\" rm --force \"$n\" >/dev/null || exit 1\n";
    } else {
      prepare += "\"$dk\" stop -t " + std::to_string(options_.container_stop_timeout_seconds) +
                 " \"$n\" >/dev/null || exit 1\n\"$dk\" rename \"$n\" \"$p\" || { \"$dk\" start \"$n\" >/dev/null 2>&1; exit 1; }\n";
    }
  }
  prepare += "exit 0\n";
  auto pr = internal::RunScript(s, prepare);
  if (!pr.ok()) return Result<StepResult>(pr.status());
  if (!pr->ok())
    return Result<StepResult>::Error(internal::ExecFailure(
        *ep, "stopping and renaming the old container " + name + " to " + prev, *pr));
  if (!have_record) {
    rec.endpoint = *ep;
    rec.docker = docker;
    rec.container = name;
    rec.container_replaced = cur->exists;
    rec.container_created = !cur->exists;
    std::lock_guard<std::mutex> l(mu_);
    records_[RecordKey(workload, ResourceType::kContainer)] = rec;
  }
  bool has_prev = rec.container_replaced;
  auto restore = [&]() -> std::string {
    if (!has_prev) {
      (void)internal::RunScript(s, ShellJoin({docker, "rm", "--force", name}) + " >/dev/null 2>&1");
      std::lock_guard<std::mutex> l(mu_);
      records_.erase(RecordKey(workload, ResourceType::kContainer));
      return "the new container was removed";
    }
    auto rr = internal::RunScript(s, RestoreScript(docker, name));
    std::lock_guard<std::mutex> l(mu_);
    records_.erase(RecordKey(workload, ResourceType::kContainer));
    if (rr.ok() && rr->ok() && rr->out.find("restored") != std::string::npos)
      return "the previous container was restored and started";
    return "restoring the previous container failed" +
           (rr.ok() ? ": " + internal::Trim(rr->err) : ": " + rr.error()) +
           "; it may still be there as " + prev;
  };

  auto rr = internal::RunScript(s, ShellJoin(run));
  if (!rr.ok()) {
    std::string what = restore();
    return Result<StepResult>::Error("docker run on " + target + " failed: " + rr.error() + "; " + what);
  }
  if (!rr->ok()) {
    std::string err = internal::Trim(rr->err);
    std::string what = restore();
    return Result<StepResult>::Error("docker run of " + name + " (" + image + ") on " + target +
                                     " failed (exit " + std::to_string(rr->exit_status) + "): " +
                                     err + "; " + what);
  }
  grace();
  // Still up, and not crash-looping under the restart policy (Running is briefly true again
  // after each automatic restart, so the restart count matters too).
  auto health = internal::RunScript(
      s, ShellJoin({docker, "inspect", "--type", "container", "-f",
                    "{{.State.Running}}|{{.State.Restarting}}|{{.RestartCount}}", name}));
  bool healthy = health.ok() && health->ok() && internal::Trim(health->out) == "true|false|0";
  auto after = inspect(name);
  if (!after.ok() || !after->running || !healthy) {
    std::string logs = logs_of(name);
    std::string what = restore();
    std::string why = !after.ok() ? after.error()
                                  : "the new container " + name + " exited within " +
                                        Seconds(options_.container_grace_seconds) +
                                        " (or is restarting)";
    return Result<StepResult>::Error(why + " on " + target + (logs.empty() ? "" : "; its log:\n" + logs + "\n") +
                                     "; " + what);
  }
  res.writes = 1;
  res.state = internal::MakeState(req, attrs, ObservedContainer(*after));
  return res;
}

Result<StepResult> VmProvider::RollbackContainer(const StepRequest& req) {
  const std::string workload = internal::StepWorkload(req);
  std::optional<RunRecord> found = RecordOf(req, ResourceType::kContainer);
  if (!found) return Unchanged(req);  // this run changed nothing here
  const RunRecord& rec = *found;
  const std::string target = EndpointName(rec.endpoint);
  std::string script = rec.container_replaced
                           ? RestoreScript(rec.docker, rec.container)
                           : ShellJoin({rec.docker, "rm", "--force", rec.container}) + " >/dev/null && echo removed";
  if (req.dry_run) {
    if (req.reporter) req.reporter->Action(target, internal::ShCommand(script));
    StepResult res;
    if (req.prior) res.state = *req.prior;
    return res;
  }
  auto session = SessionFor(rec.endpoint);
  if (!session.ok())
    return Result<StepResult>::Error("cannot connect to " + target + " to restore container " +
                                     rec.container + ": " + session.error());
  auto r = internal::RunScript(**session, script);
  if (!r.ok()) return Result<StepResult>(r.status());
  if (!r->ok())
    return Result<StepResult>::Error(
        internal::ExecFailure(rec.endpoint, "restoring the previous container " + rec.container, *r));
  {
    std::lock_guard<std::mutex> l(mu_);
    records_.erase(RecordKey(workload, ResourceType::kContainer));
  }
  StepResult res;
  res.writes = 1;
  if (rec.container_replaced && r->out.find("no previous") != std::string::npos) {
    if (req.reporter)
      req.reporter->Warn(internal::StepAddress(req) + ": the previous container " + rec.container +
                         internal::kPrevSuffix + " on " + target +
                         " is gone; nothing to restore");
  }
  // The record describes what runs now: the restored container, or nothing.
  auto st = internal::RunScript(**session, internal::ContainerStatusScript(rec.docker, rec.container));
  if (st.ok() && st->ok()) {
    auto cs = internal::ParseContainerStatus(st->out);
    if (cs.exists)
      res.state = internal::MakeState(req, internal::RollbackAttributes(req), ObservedContainer(cs));
  } else if (req.prior && rec.container_replaced) {
    res.state = *req.prior;
  }
  return res;
}

}  // namespace onboard::vm
