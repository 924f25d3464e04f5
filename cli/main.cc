// onboard: a thin main and one table of subcommands (ninja's kTools, Bloaty's main.cc).
// Flags are parsed here; the work is done by the engine, the providers and the state backends.
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/apply.h"
#include "engine/manifest.h"
#include "engine/run.h"
#include "providers/registry.h"
#include "state/backends.h"
#include "state/lock.h"

namespace onboard {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Flags shared by the subcommands.
struct Flags {
  std::vector<std::string> files;
  std::string state_path;
  std::string backend;
  std::vector<std::string> backend_config;
  std::string kubeconfig;
  std::string context;
  int parallelism = 10;
  bool auto_approve = false;
  bool json = false;
  bool no_color = false;
  bool refresh = true;
  std::string out;
  bool detailed_exitcode = false;
  std::vector<std::string> targets;
  bool destroy = false;
  int lock_timeout = 0;
  std::string rollback = "workload";
  bool dry_run = false;
  std::string ssh_key;
  bool accept_new_host_keys = false;
  bool insecure_ignore_host_keys = false;
  int ssh_connect_timeout = 10;
  bool strict_checks = false;
  bool force_conflicts = false;
  bool force = false;  // state push: overwrite another lineage or a newer serial
  std::vector<std::string> args;  // positional arguments of the subcommand
};

constexpr int kExitOk = 0, kExitError = 1, kExitChanges = 2;

std::string HomeDir() {
  if (const char* h = std::getenv("HOME"); h && *h) return h;
  if (struct passwd* pw = getpwuid(getuid())) return pw->pw_dir;
  return "";
}

std::string LocalUser() {
  if (struct passwd* pw = getpwuid(getuid())) return pw->pw_name;
  if (const char* u = std::getenv("USER")) return u;
  return "root";
}

bool IsDir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void Err(const std::string& msg) { std::cerr << "Error: " << msg << "\n"; }

// Where the local state lives by default: beside the (first) manifests given.
std::string DefaultStatePath(const Flags& f) {
  if (!f.state_path.empty()) return f.state_path;
  std::string first = f.files.empty() ? "." : f.files.front();
  std::string dir = first;
  if (!IsDir(first)) {
    auto slash = first.find_last_of('/');
    dir = slash == std::string::npos ? "." : first.substr(0, slash == 0 ? 1 : slash);
  }
  return dir + "/onboard.state.json";
}

// ---------------------------------------------------------------------------------------------
// Terminal output: dry-run actions, warnings, progress.
class ConsoleReporter : public Reporter, public ProgressSink {
 public:
  explicit ConsoleReporter(bool color) : color_(color) {}
  void Action(const std::string& target, const std::string& what) override {
    std::lock_guard<std::mutex> l(mu_);
    std::cout << "  [" << target << "] " << what << "\n";
  }
  void File(const std::string& target, const std::string& path, const std::string& body) override {
    std::lock_guard<std::mutex> l(mu_);
    std::cout << "  [" << target << "] file " << path << ":\n";
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) std::cout << "      | " << line << "\n";
  }
  void Warn(const std::string& message) override {
    std::lock_guard<std::mutex> l(mu_);
    std::cerr << Paint("33", "Warning: ") << message << "\n";
  }
  void Started(const Change& c, int done, int total) override {
    std::cout << "[" << done << "/" << total << "] " << c.address.ToString() << ": " << Doing(c.action)
              << "...\n";
    std::cout.flush();
  }
  void Finished(const Change& c, const Status& s, int writes, int done, int total) override {
    std::cout << "[" << done << "/" << total << "] " << c.address.ToString() << ": "
              << (s.ok() ? Paint("32", Done(c.action)) + (writes == 0 && c.action != onboard::Action::kRead
                                                                 ? " (already right, nothing written)"
                                                                 : "")
                         : Paint("31", "FAILED: ") + s.message())
              << "\n";
    std::cout.flush();
  }
  void RolledBack(const Change& c, const Status& s) override {
    std::cout << "    rollback " << c.address.ToString() << ": "
              << (s.ok() ? Paint("33", "restored") : Paint("31", "FAILED: ") + s.message()) << "\n";
  }

 private:
  static const char* Doing(onboard::Action a) {
    switch (a) {
      case onboard::Action::kCreate: return "creating";
      case onboard::Action::kUpdate: return "updating";
      case onboard::Action::kReplace: return "replacing";
      case onboard::Action::kDelete: return "destroying";
      case onboard::Action::kRead: return "checking";
      default: return "visiting";
    }
  }
  static const char* Done(onboard::Action a) {
    switch (a) {
      case onboard::Action::kCreate: return "created";
      case onboard::Action::kUpdate: return "updated";
      case onboard::Action::kReplace: return "replaced";
      case onboard::Action::kDelete: return "destroyed";
      case onboard::Action::kRead: return "ok";
      default: return "unchanged";
    }
  }
  std::string Paint(const char* code, const std::string& s) const {
    return color_ ? std::string("\x1b[") + code + "m" + s + "\x1b[0m" : s;
  }
  bool color_;
  std::mutex mu_;
};

// ---------------------------------------------------------------------------------------------
// A workspace: manifests loaded, state store opened (and locked when asked).
struct Workspace {
  Model model;
  std::unique_ptr<StateStore> store;
  std::optional<State> state;
  std::string lock_id;
  std::vector<std::unique_ptr<Provider>> providers;
  std::unique_ptr<ConsoleReporter> console;
  SystemClock clock;

  ~Workspace() {
    if (store && !lock_id.empty()) {
      Status s = store->Unlock(lock_id);
      if (!s.ok()) Err("releasing the state lock: " + s.message());
    }
  }
  std::vector<Provider*> provider_list() const {
    std::vector<Provider*> out;
    for (const auto& p : providers) out.push_back(p.get());
    return out;
  }
};

bool UseColor(const Flags& f) { return !f.no_color && !f.json && isatty(STDOUT_FILENO); }

// Loads manifests; prints every diagnostic on failure.
bool LoadModel(const Flags& f, Model* out) {
  LoadOptions lo;
  lo.home = HomeDir();
  lo.local_user = LocalUser();
  std::vector<std::string> paths = f.files.empty() ? std::vector<std::string>{"."} : f.files;
  LoadResult r = LoadManifests(paths, lo);
  if (!r.ok()) {
    for (const auto& d : r.diagnostics) std::cerr << d.ToString() << "\n";
    std::cerr << "Error: " << r.diagnostics.size() << " problem" << (r.diagnostics.size() == 1 ? "" : "s")
              << " in the manifests; nothing was planned or changed.\n";
    return false;
  }
  if (r.model->workloads.empty()) {
    std::cerr << "Warning: no workloads found in ";
    for (const auto& p : paths) std::cerr << p << " ";
    std::cerr << "(looked for *.yaml and *.yml)\n";
  }
  *out = std::move(*r.model);
  return true;
}

// Opens the workspace. lock_op non-empty: takes the state lock for that operation.
bool Open(const Flags& f, const std::string& lock_op, Workspace* ws, bool need_providers) {
  if (!LoadModel(f, &ws->model)) return false;
  BackendFlags bf;
  bf.type = f.backend;
  bf.config = f.backend_config;
  bf.default_path = DefaultStatePath(f);
  bf.state_path_given = !f.state_path.empty();
  bf.kubeconfig = f.kubeconfig;
  bf.context = f.context;
  auto store = OpenStateStore(ws->model.backend, ws->model.cluster, ws->model.fleet_name, bf);
  if (!store.ok()) {
    Err(store.error());
    return false;
  }
  ws->store = std::move(*store);
  if (!lock_op.empty()) {
    LockInfo info = NewLockInfo(lock_op, ws->store->Describe(), ws->clock.Now());
    Status s = ws->store->Lock(info, f.lock_timeout);
    if (!s.ok()) {
      Err(s.message());
      return false;
    }
    ws->lock_id = info.id;
  }
  auto st = ws->store->Read();
  if (!st.ok()) {
    Err(st.error());
    return false;
  }
  ws->state = std::move(*st);
  ws->console = std::make_unique<ConsoleReporter>(UseColor(f));
  if (need_providers) {
    ProviderSettings ps;
    ps.kubeconfig = f.kubeconfig;
    ps.context = f.context;
    ps.force_conflicts = f.force_conflicts;
    ps.host_keys.accept_new = f.accept_new_host_keys;
    ps.host_keys.insecure_ignore = f.insecure_ignore_host_keys;
    ps.ssh_key = f.ssh_key;
    ps.ssh_connect_timeout_seconds = f.ssh_connect_timeout;
    ps.strict_checks = f.strict_checks;
    ps.reporter = ws->console.get();
    if (const char* g = std::getenv("ONBOARD_CONTAINER_GRACE_SECONDS")) ps.container_grace_seconds = std::atof(g);
    ws->providers = MakeProviders(ps);
    for (auto& p : ws->providers) {
      Status s = p->Configure(ws->model);
      if (!s.ok()) {
        Err(p->Name() + ": " + s.message());
        return false;
      }
    }
  }
  return true;
}

Result<std::vector<Address>> ParseTargets(const Flags& f) {
  std::vector<Address> out;
  for (const auto& t : f.targets) {
    auto a = Address::Parse(t);
    if (!a.ok()) return Result<std::vector<Address>>(a.status());
    out.push_back(*a);
  }
  return out;
}

Result<PlanOutputs> Plan(const Flags& f, Workspace& ws, bool destroy, bool refresh) {
  auto targets = ParseTargets(f);
  if (!targets.ok()) return Result<PlanOutputs>(targets.status());
  PlanInputs in;
  in.model = &ws.model;
  in.state = ws.state ? &*ws.state : nullptr;
  in.providers = ws.provider_list();
  in.clock = &ws.clock;
  in.refresh = refresh;
  in.destroy = destroy;
  in.targets = *targets;
  return MakePlan(in);
}

// Writes a file atomically with mode 0600 (plan files).
Status WritePrivateFile(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* fp = nullptr;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) fp = fdopen(fd, "w");
  if (!fp) return Status::Error("cannot write " + path + ": " + std::strerror(errno));
  bool ok = std::fwrite(data.data(), 1, data.size(), fp) == data.size();
  ok = std::fflush(fp) == 0 && fsync(fileno(fp)) == 0 && ok;
  std::fclose(fp);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::Error("cannot write " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

Result<onboard::Plan> ReadPlanFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Result<onboard::Plan>::Error("cannot read plan file " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded())
    return Result<onboard::Plan>::Error("plan file " + path + " is not JSON; make a new one with onboard plan --out");
  return PlanFromJson(j, path);
}

void PrintPlan(const Flags& f, const onboard::Plan& plan) {
  if (f.json)
    std::cout << PlanToJson(plan).dump(2) << "\n";
  else
    std::cout << RenderPlanText(plan, RenderOptions{UseColor(f)});
}

bool Approve(const Flags& f, const std::string& what) {
  if (f.auto_approve) return true;
  if (!isatty(STDIN_FILENO)) {
    Err(what + " needs approval and there is no terminal to ask on: run it with --auto-approve");
    return false;
  }
  std::cout << "\nDo you want to " << what << "?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ";
  std::cout.flush();
  std::string answer;
  std::getline(std::cin, answer);
  if (answer != "yes") {
    std::cout << "\n" << what << " cancelled.\n";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Subcommands.

int CmdValidate(const Flags& f) {
  Model m;
  if (!LoadModel(f, &m)) return kExitError;
  if (f.json) {
    std::cout << json{{"valid", true}, {"workloads", m.workloads.size()}, {"files", m.files}}.dump(2) << "\n";
  } else {
    std::cout << "The manifests are valid: " << m.workloads.size() << " workload"
              << (m.workloads.size() == 1 ? "" : "s") << " in " << m.files.size() << " file"
              << (m.files.size() == 1 ? "" : "s") << ".\n";
  }
  return kExitOk;
}

int CmdPlan(const Flags& f) {
  Workspace ws;
  if (!Open(f, "plan", &ws, f.refresh)) return kExitError;
  auto out = Plan(f, ws, f.destroy, f.refresh);
  if (!out.ok()) {
    Err(out.error());
    return kExitError;
  }
  PrintPlan(f, out->plan);
  if (!f.out.empty()) {
    Status s = WritePrivateFile(f.out, PlanToJson(out->plan).dump(2) + "\n");
    if (!s.ok()) {
      Err(s.message());
      return kExitError;
    }
    if (!f.json) std::cout << "\nSaved the plan to " << f.out << ": apply exactly it with onboard apply " << f.out << "\n";
  }
  if (f.detailed_exitcode && out->plan.HasChanges()) return kExitChanges;
  return kExitOk;
}

int RunApply(const Flags& f, bool destroy) {
  const std::string op = destroy ? "destroy" : "apply";
  Workspace ws;
  if (!Open(f, f.dry_run ? "" : op, &ws, true)) return kExitError;
  std::optional<onboard::Plan> saved;
  if (!destroy && !f.args.empty()) {
    auto p = ReadPlanFile(f.args.front());
    if (!p.ok()) {
      Err(p.error());
      return kExitError;
    }
    saved = std::move(*p);
  }
  bool refresh = saved ? saved->refreshed : f.refresh;
  auto out = Plan(f, ws, saved ? saved->destroy : destroy, refresh);
  if (!out.ok()) {
    Err(out.error());
    return kExitError;
  }
  onboard::Plan& plan = out->plan;
  if (saved) {
    Status s = CheckSavedPlan(*saved, plan, ws.state ? ws.state->lineage : "",
                              ws.state ? ws.state->serial : 0, ws.model.digest);
    if (!s.ok()) {
      Err("refusing to apply " + f.args.front() + ": " + s.message());
      return kExitError;
    }
  }
  PrintPlan(f, plan);
  if (!plan.HasChanges()) return kExitOk;
  if (!saved && !f.dry_run && !Approve(f, destroy ? "destroy these resources" : "perform these actions"))
    return kExitError;
  if (!ws.state) {
    State fresh;
    fresh.lineage = NewLineage();
    ws.state = fresh;
  }
  ApplyOptions ao;
  ao.parallelism = f.parallelism;
  ao.rollback = f.rollback != "none";
  ao.dry_run = f.dry_run;
  ao.run_id = ws.lock_id;
  if (f.dry_run) std::cout << "\nDry run: every remote action and generated file follows; nothing is executed.\n";
  std::cout << "\n";
  ApplyReport rep = Apply(plan, out->desired, &*ws.state, ws.store.get(), ws.provider_list(), ws.console.get(),
                          ws.console.get(), ws.clock, ao);
  std::cout << "\n";
  if (f.dry_run) {
    std::cout << "Dry run complete: nothing was changed.\n";
    return kExitOk;
  }
  if (rep.ok()) {
    std::cout << (destroy ? "Destroy" : "Apply") << " complete! " << rep.Summary() << ".\n";
    return kExitOk;
  }
  std::cout << (destroy ? "Destroy" : "Apply") << " failed: " << rep.Summary() << ".\n";
  for (const auto& e : rep.errors) std::cerr << "Error: " << e << "\n";
  if (!rep.rolled_back_addresses.empty()) {
    std::cout << "Rolled back:";
    for (const auto& a : rep.rolled_back_addresses) std::cout << " " << a;
    std::cout << "\n";
  }
  if (!rep.failed_workloads.empty()) {
    std::cout << "Workloads not onboarded:";
    for (const auto& w : rep.failed_workloads) std::cout << " " << w;
    std::cout << "\nFix the cause and run onboard apply again: it continues from what is recorded.\n";
  }
  return kExitError;
}

int CmdApply(const Flags& f) { return RunApply(f, false); }
int CmdDestroy(const Flags& f) { return RunApply(f, true); }

int CmdShow(const Flags& f) {
  if (!f.args.empty()) {
    auto p = ReadPlanFile(f.args.front());
    if (!p.ok()) {
      Err(p.error());
      return kExitError;
    }
    PrintPlan(f, *p);
    return kExitOk;
  }
  Workspace ws;
  if (!Open(f, "", &ws, false)) return kExitError;
  if (!ws.state) {
    std::cout << "No state: nothing has been applied yet (" << ws.store->Describe() << ").\n";
    return kExitOk;
  }
  if (f.json) {
    std::cout << EncodeState(*ws.state).dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "State " << ws.store->Describe() << " (lineage " << ws.state->lineage << ", serial "
            << ws.state->serial << "):\n";
  for (const auto& [addr, rs] : ws.state->resources) {
    std::cout << "  " << addr << (rs.origin == Origin::kAdopted ? " (adopted)" : "")
              << (rs.intent ? " (interrupted during " + rs.intent->action + ")" : "") << "\n";
  }
  return kExitOk;
}

int CmdGraph(const Flags& f) {
  Workspace ws;
  if (!Open(f, "", &ws, false)) return kExitError;
  auto out = Plan(f, ws, f.destroy, false);
  if (!out.ok()) {
    Err(out.error());
    return kExitError;
  }
  std::cout << BuildGraph(out->plan.changes, f.destroy).ToDot(f.destroy ? "onboard destroy" : "onboard");
  return kExitOk;
}

// Reads a whole file, or standard input for "-".
Result<std::string> ReadInput(const std::string& path) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) return Result<std::string>::Error("cannot read " + path + ": " + std::strerror(errno));
    ss << in.rdbuf();
  }
  return ss.str();
}

// state push FILE: replaces the backend's state with FILE's, under the lock. Like Terraform, it
// refuses another lineage or an older serial unless --force; a forced push still gets a serial
// above the one it replaces, so that plans saved against the replaced state are refused.
int StatePush(const Flags& f, Workspace& ws, const std::string& path) {
  auto text = ReadInput(path);
  if (!text.ok()) {
    Err(text.error());
    return kExitError;
  }
  const std::string source = path == "-" ? "standard input" : path;
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) {
    Err(source + " is not JSON: give a state file written by onboard state pull");
    return kExitError;
  }
  auto pushed = DecodeState(std::move(j), source);
  if (!pushed.ok()) {
    Err(pushed.error());
    return kExitError;
  }
  if (ws.state) {
    const State& cur = *ws.state;
    if (cur.lineage != pushed->lineage && !f.force) {
      Err("refusing to push " + source + ": its lineage " + pushed->lineage + " is not the lineage " + cur.lineage +
          " of the state at " + ws.store->Describe() +
          " (it is the state of another fleet or of a fresh start); add --force to replace it anyway");
      return kExitError;
    }
    if (pushed->serial < cur.serial && !f.force) {
      Err("refusing to push " + source + ": its serial " + std::to_string(pushed->serial) + " is older than serial " +
          std::to_string(cur.serial) + " at " + ws.store->Describe() +
          " (someone applied since it was pulled); pull again, or add --force to go back to it");
      return kExitError;
    }
    if (EncodeState(*pushed) == EncodeState(cur)) {
      std::cout << "The state at " << ws.store->Describe() << " already is " << source << ": nothing pushed.\n";
      return kExitOk;
    }
    if (pushed->serial == cur.serial && cur.lineage == pushed->lineage && !f.force) {
      Err("refusing to push " + source + ": it has the same serial " + std::to_string(cur.serial) +
          " as the state at " + ws.store->Describe() + " but different content; add --force to replace it");
      return kExitError;
    }
    if (pushed->serial <= cur.serial) pushed->serial = cur.serial + 1;
  }
  Status s = f.force ? ws.store->Replace(*pushed) : ws.store->Write(*pushed);
  if (!s.ok()) {
    Err(s.message());
    return kExitError;
  }
  std::cout << "Pushed " << source << " to " << ws.store->Describe() << " (lineage " << pushed->lineage
            << ", serial " << pushed->serial << ", " << pushed->resources.size() << " resources).\n";
  return kExitOk;
}

int CmdState(const Flags& f) {
  if (f.args.empty()) {
    Err("onboard state needs a subcommand: list, show ADDRESS..., rm ADDRESS..., pull, push FILE");
    return kExitError;
  }
  const std::string sub = f.args.front();
  std::vector<std::string> rest(f.args.begin() + 1, f.args.end());
  if (sub != "list" && sub != "show" && sub != "rm" && sub != "pull" && sub != "push") {
    Err("unknown state subcommand \"" + sub + "\": use list, show ADDRESS..., rm ADDRESS..., pull or push FILE");
    return kExitError;
  }
  if (sub == "push" && rest.size() != 1) {
    Err("onboard state push needs exactly one state file (or - for standard input)");
    return kExitError;
  }
  const bool writes = sub == "rm" || sub == "push";
  Workspace ws;
  if (!Open(f, writes ? "state " + sub : "", &ws, false)) return kExitError;
  if (sub == "push") return StatePush(f, ws, rest.front());
  if (!ws.state) {
    if (sub == "list") return kExitOk;
    Err("no state at " + ws.store->Describe());
    return kExitError;
  }
  if (sub == "pull") {
    std::cout << EncodeState(*ws.state).dump(2) << "\n";
    return kExitOk;
  }
  if (sub == "list") {
    for (const auto& [addr, rs] : ws.state->resources) std::cout << addr << "\n";
    return kExitOk;
  }
  if (rest.empty()) {
    Err("onboard state " + sub + " needs at least one resource address (see onboard state list)");
    return kExitError;
  }
  for (const auto& a : rest)
    if (!ws.state->Find(a)) {
      Err("no resource " + a + " in the state (see onboard state list)");
      return kExitError;
    }
  if (sub == "show") {
    State one;
    one.lineage = ws.state->lineage;
    for (const auto& a : rest) one.resources[a] = *ws.state->Find(a);
    std::cout << EncodeState(one)["resources"].dump(2) << "\n";
    return kExitOk;
  }
  for (const auto& a : rest) ws.state->resources.erase(a);
  ws.state->serial++;
  Status s = ws.store->Write(*ws.state);
  if (!s.ok()) {
    Err(s.message());
    return kExitError;
  }
  std::cout << "Removed " << rest.size() << " resource" << (rest.size() == 1 ? "" : "s")
            << " from the state; onboard no longer manages " << (rest.size() == 1 ? "it" : "them")
            << " (nothing was changed in the cluster or on the VMs).\n";
  return kExitOk;
}

int CmdForceUnlock(const Flags& f) {
  if (f.args.size() != 1) {
    Err("onboard force-unlock needs exactly one lock ID (shown in the lock error message)");
    return kExitError;
  }
  Workspace ws;
  if (!Open(f, "", &ws, false)) return kExitError;
  auto holder = ws.store->Holder();
  if (holder.ok() && *holder) std::cout << "Clearing the lock: " << (*holder)->Describe() << "\n";
  Status s = ws.store->ForceUnlock(f.args.front());
  if (!s.ok()) {
    Err(s.message());
    return kExitError;
  }
  std::cout << "The state lock was released. Run onboard plan to see what an interrupted run left to do.\n";
  return kExitOk;
}

int CmdVersion(const Flags& f) {
  std::cout << "onboard " << ONBOARD_VERSION << "\n";
  for (const auto& e : ProviderTable()) std::cout << "  provider " << e.name << ": " << e.handles << "\n";
  return kExitOk;
}

// ---------------------------------------------------------------------------------------------
// The subcommand table.
enum FlagSet : unsigned {
  kManifests = 1,    // -f, --state, --backend
  kCluster = 2,      // --kubeconfig, --context
  kPlanning = 4,     // --refresh, --target, --json, --no-color, --lock-timeout
  kApplying = 8,     // --parallelism, --auto-approve, --rollback, --dry-run, ssh flags
  kPlanOnly = 16,    // --out, --detailed-exitcode, --destroy
  kPositional = 32,  // ARGS...
  kJson = 64,
  kSsh = 128,        // -k, host key policy, connect timeout
  kForce = 256,      // --force (state push)
};

struct Command {
  const char* name;
  const char* help;
  unsigned flags;
  int (*run)(const Flags&);
};

const Command kCommands[] = {
    {"validate", "Check the manifests (schema and semantics); every problem at once", kManifests | kJson,
     CmdValidate},
    {"plan", "Show what apply would change, reading the world first", kManifests | kCluster | kPlanning | kPlanOnly | kSsh,
     CmdPlan},
    {"apply", "Make the fleet match the manifests (or apply a saved plan FILE)",
     kManifests | kCluster | kPlanning | kApplying | kSsh | kPositional, CmdApply},
    {"destroy", "Take away everything onboard created", kManifests | kCluster | kPlanning | kApplying | kSsh, CmdDestroy},
    {"show", "Show a saved plan FILE, or the state", kManifests | kCluster | kPositional | kJson | kPlanning, CmdShow},
    {"graph", "Print the dependency graph of the steps as Graphviz DOT", kManifests | kPlanOnly | kPlanning,
     CmdGraph},
    {"state", "Inspect, edit or move the state: list | show ADDRESS... | rm ADDRESS... | pull | push FILE",
     kManifests | kCluster | kPositional | kPlanning | kForce, CmdState},
    {"force-unlock", "Release a state lock left by a run that died: force-unlock ID", kManifests | kCluster | kPositional,
     CmdForceUnlock},
    {"version", "Print the version and the providers", 0, CmdVersion},
};

void AddFlags(CLI::App* sub, unsigned set, Flags* f) {
  if (set & kManifests) {
    sub->add_option("-f,--file", f->files, "Manifest file or directory (repeatable; default: .)")
        ->allow_extra_args(false);  // -f A B: B is an argument, not a second manifest
    sub->add_option("--state", f->state_path, "Local state file (default: onboard.state.json beside the manifests)");
    sub->add_option("--backend", f->backend, "State backend: local, kubernetes or http (default: the Fleet's spec.backend, else local)")
        ->check(CLI::IsMember({"local", "kubernetes", "http"}));
    sub->add_option("--backend-config", f->backend_config,
                    "KEY=VALUE setting of the state backend, over the Fleet's spec.backend (repeatable)")
        ->allow_extra_args(false);
  }
  if (set & kCluster) {
    sub->add_option("--kubeconfig", f->kubeconfig, "kubeconfig file (default: the manifest's, $KUBECONFIG, ~/.kube/config)");
    sub->add_option("--context", f->context, "kubeconfig context (default: the manifest's, then current-context)");
  }
  if (set & kPlanning) {
    sub->add_option("--refresh", f->refresh, "Read the real world before planning (default true)");
    sub->add_option("--target", f->targets, "Only this resource address and what it needs (repeatable)")
        ->allow_extra_args(false);
    sub->add_flag("--no-color", f->no_color, "No colors in the output");
    sub->add_option("--lock-timeout", f->lock_timeout, "Seconds to wait for the state lock (default 0)");
  }
  if ((set & kPlanning) || (set & kJson)) sub->add_flag("--json", f->json, "Machine-readable JSON output");
  if (set & kPlanOnly) {
    sub->add_option("--out", f->out, "Save the plan to FILE (mode 0600) for onboard apply FILE");
    sub->add_flag("--detailed-exitcode", f->detailed_exitcode, "Exit 0: no changes, 1: error, 2: changes");
    sub->add_flag("--destroy", f->destroy, "Plan the destruction of everything onboard manages");
  }
  if (set & kApplying) {
    sub->add_option("--parallelism", f->parallelism, "Steps run at once (default 10)")->check(CLI::Range(1, 1000));
    sub->add_flag("--auto-approve", f->auto_approve, "Do not ask for confirmation");
    sub->add_option("--rollback", f->rollback, "On a failed step: undo that workload's steps (workload) or not (none)")
        ->check(CLI::IsMember({"workload", "none"}));
    sub->add_flag("--dry-run", f->dry_run, "Print every remote command and generated file; execute nothing");
    sub->add_flag("--force-conflicts", f->force_conflicts, "Take over fields another manager owns (server-side apply force)");
  }
  if (set & kSsh) {
    sub->add_option("-k,--ssh-key", f->ssh_key, "SSH identity file for every VM");
    sub->add_flag("--accept-new-host-keys", f->accept_new_host_keys, "Trust and record unknown SSH host keys");
    sub->add_flag("--insecure-ignore-host-keys", f->insecure_ignore_host_keys,
                  "INSECURE: do not verify SSH host keys at all");
    sub->add_option("--ssh-connect-timeout", f->ssh_connect_timeout, "Seconds (default 10)");
    sub->add_flag("--strict-checks", f->strict_checks, "Unreachable inbound ports are errors, not warnings");
  }
  if (set & kForce)
    sub->add_flag("--force", f->force, "state push: replace a state of another lineage or a newer serial");
  if (set & kPositional) sub->add_option("args", f->args, "Arguments");
}

}  // namespace
}  // namespace onboard

int main(int argc, char** argv) {
  using namespace onboard;
  CLI::App app{"onboard: declarative onboarding of VMs into an Istio / TSB mesh"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("onboard ") + ONBOARD_VERSION);
  Flags flags;
  std::vector<std::pair<CLI::App*, const Command*>> subs;
  for (const auto& c : kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    AddFlags(sub, c.flags, &flags);
    subs.emplace_back(sub, &c);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 1;
  }
  for (const auto& [sub, cmd] : subs)
    if (sub->parsed()) return cmd->run(flags);
  return 1;
}
