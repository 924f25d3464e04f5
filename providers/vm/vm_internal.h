// Internal helpers of the VM provider (not part of its public API).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/provider.h"
#include "providers/ssh/session.h"

namespace onboard::vm::internal {

constexpr const char* kTokenFile = "istio-token";
constexpr const char* kBackupDir = ".onboard-backup";
constexpr const char* kTempPrefix = ".onboard-new.";
constexpr const char* kHashLabel = "onboard.dev/config-hash";
constexpr const char* kPrevSuffix = "-onboard-prev";
// docker inspect template: id|running|image|config-hash label.
constexpr const char* kInspectTemplate =
    "{{.Id}}|{{.State.Running}}|{{.Config.Image}}|{{index .Config.Labels \"onboard.dev/config-hash\"}}";

// "user@host:port", for messages and reporter targets.
std::string EndpointName(const ssh::Endpoint& ep);
// "sh -c '<script>'": scripts run under a POSIX shell whatever the login shell is.
std::string ShCommand(const std::string& script);
// The short VM name of a workload key "<ns>/<name>" -> "<name>".
std::string VmName(const std::string& workload);

// Files refresh/check section: prints "dir 0|1" then "file NAME SHA MODE" per present file.
std::string FilesStatusScript(const std::string& dir, const std::vector<std::string>& names);
struct FileStatus {
  bool present = false;
  std::string sha256;
  std::string mode;  // "0644"
};
struct FilesStatus {
  bool dir_exists = false;
  bool dir_created = false;
  std::map<std::string, FileStatus> files;
};
FilesStatus ParseFilesStatus(const std::string& out);

// Hosts refresh section: prints "hosts 0|1" then "H <line>" per line of the managed block.
std::string HostsStatusScript(const std::string& hosts_file, const std::string& workload);
std::string HostsBegin(const std::string& workload);
std::string HostsEnd(const std::string& workload);
// Lines after the "H "/"O " prefix, joined with '\n' (each line ending with '\n').
std::string CollectPrefixed(const std::string& out, const std::string& prefix);
// Parses a managed block's "IP name name" lines -> {ip: [names]}.
nlohmann::json ParseHostsEntries(const std::string& block);

// Container section: prints "C id|running|image|hash", "container absent", "docker missing",
// or "E <line>" lines for a docker error.
std::string ContainerStatusScript(const std::string& docker, const std::string& name);
struct ContainerStatus {
  bool docker_missing = false;
  bool exists = false;
  std::string id, image, config_hash;
  bool running = false;
  std::string error;  // docker inspect failed for another reason
};
ContainerStatus ParseContainerStatus(const std::string& out);

std::vector<std::string> SplitLines(const std::string& s);
std::string Trim(const std::string& s);

// Runs a script under sh on the VM; transport errors name the host.
Result<ssh::ExecResult> RunScript(ssh::Session& s, const std::string& script,
                                  const std::string& stdin_data = "");
// "<what> on <user@host:port> failed (exit N): <stderr>".
std::string ExecFailure(const ssh::Endpoint& ep, const std::string& what, const ssh::ExecResult& r);

// The state record a step returns: address/workload from the change, desired attributes.
ResourceState MakeState(const StepRequest& req, const nlohmann::json& attributes,
                        nlohmann::json observed);
// The attributes a step acts on: desired, else (delete) the prior record's.
const nlohmann::json& StepAttributes(const StepRequest& req);
std::string StepWorkload(const StepRequest& req);
std::string StepAddress(const StepRequest& req);
bool IsDelete(const StepRequest& req);
// The attributes a rollback step restores: the inverse change's `after`, else desired, else prior.
nlohmann::json RollbackAttributes(const StepRequest& req);

}  // namespace onboard::vm::internal
