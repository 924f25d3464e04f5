// The VM side of onboarding, over SSH (DESIGN §1.5–1.7, §4, §6): the proxy's config files,
// the egress names in the hosts file, the proxy container, and the two network checks.
//
// Resource contract: engine/desired.h. Every VM-side resource carries attributes.connection
// {host, port, user, identity_file, known_hosts}; items of one VM share one SSH session and
// Refresh reads all of a VM's items with one exec.
//
// Choices worth knowing:
// - Files under a running container (DESIGN §4): the token and the two CA files are bind-mounted
//   as single files, so they are rewritten IN PLACE (new content goes to a temp file over SFTP,
//   then `cat tmp > target` keeps the inode the container pinned). sidecar.env is replaced by
//   rename (docker reads it only when the container is created).
// - Backups: every file a run replaces is copied first to <dir>/.onboard-backup/<name> (0700 dir);
//   a rollback step restores them in place, Finish(workload, true) deletes them.
// - Container replacement: the old container is stopped and renamed <name>-onboard-prev, the new
//   one is started with the label onboard.dev/config-hash=<hash>, and must still be running after
//   the grace period. On failure the new one is removed and the old one renamed back and started.
//   The stopped previous container is kept until Finish(workload, ...) so that a rollback of the
//   workload can bring it back; Finish removes it.
// - check.gateway runs on the VM: bash's /dev/tcp under `timeout` when bash exists, else
//   `nc -z -w N`, else busybox nc; the ports are probed in parallel.
// - check.inbound connects from the onboard host (non-blocking connect + poll).
// - Dry run connects to nothing and executes nothing: every command and file that would be
//   run/written is reported (the token as "<redacted: N bytes>").
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/hash.h"
#include "engine/provider.h"
#include "providers/ssh/pool.h"
#include "providers/ssh/session.h"

namespace onboard::vm {

using Connector =
    std::function<Result<std::shared_ptr<ssh::Session>>(const ssh::Endpoint& endpoint)>;

struct VmProviderOptions {
  // How sessions are obtained. Empty: an ssh::ConnectionPool (one session per user@host:port).
  Connector connector;
  ssh::HostKeyPolicy host_keys;
  std::string identity_file_override;  // -k/--ssh-key: replaces connection.identity_file
  int connect_timeout_seconds = 10;
  bool strict_checks = false;          // check.inbound failures are errors, not warnings
  double container_grace_seconds = 2.0;  // the new container must still run after this long
  int container_stop_timeout_seconds = 10;  // docker stop -t for the container being replaced
  int port_check_timeout_seconds = 3;  // per port, check.gateway and check.inbound
};

class VmProvider : public Provider {
 public:
  explicit VmProvider(VmProviderOptions options = {});
  ~VmProvider() override;

  std::string Name() const override { return "vm"; }
  bool Handles(ResourceType t) const override;
  std::map<std::string, Result<Observation>> Refresh(const std::vector<RefreshItem>& items) override;
  Result<StepResult> Apply(const StepRequest& req) override;
  void Finish(const std::string& workload, bool succeeded) override;

  // The endpoint a resource's attributes.connection names (after the options' overrides).
  Result<ssh::Endpoint> EndpointOf(const nlohmann::json& attributes) const;

  // What this run changed for a workload, kept until Finish (for rollback). Public for tests.
  struct FileBackup {
    std::string name;
    bool existed = false;   // false: the run created it; rollback removes it
    std::string mode;       // "0644", mode before the run
  };
  struct RunRecord {
    ssh::Endpoint endpoint;
    std::string dir;                     // files: config dir
    bool dir_created = false;
    std::vector<FileBackup> files;       // in order of first replacement
    // container
    std::string docker;
    std::string container;
    bool container_replaced = false;     // "<name>-onboard-prev" holds the previous one
    bool container_created = false;      // no previous container existed
    // hosts
    std::string hosts_file;
    bool hosts_recorded = false;
    std::string hosts_prev_block;        // the managed block before the run ("" when none)
  };

 private:
  Result<std::shared_ptr<ssh::Session>> SessionFor(const ssh::Endpoint& ep);

  Result<StepResult> ApplyFiles(const StepRequest& req);
  Result<StepResult> ApplyHosts(const StepRequest& req);
  Result<StepResult> ApplyContainer(const StepRequest& req);
  Result<StepResult> ApplyCheckGateway(const StepRequest& req);
  Result<StepResult> ApplyCheckInbound(const StepRequest& req);
  Result<StepResult> RollbackFiles(const StepRequest& req);
  Result<StepResult> RollbackContainer(const StepRequest& req);
  Result<StepResult> RollbackHosts(const StepRequest& req);

  std::string RecordKey(const std::string& workload, ResourceType t) const;
  // What this run changed for the step's workload and resource type; nullopt when it changed
  // nothing there (rollback then leaves the recorded state as it was).
  std::optional<RunRecord> RecordOf(const StepRequest& req, ResourceType t);
  static StepResult Unchanged(const StepRequest& req);

  VmProviderOptions options_;
  std::mutex mu_;
  std::unique_ptr<ssh::ConnectionPool> pool_;  // when no connector is given
  std::map<std::string, RunRecord> records_;  // RecordKey -> what this run changed
};

// Helpers shared by the provider's files and by tests.
namespace detail {
using onboard::Sha256Hex;  // engine/hash.h
// "# BEGIN onboard <workload>" ... "# END onboard <workload>" with one "IP name..." line per entry.
std::string HostsBlock(const std::string& workload, const nlohmann::json& entries);
// "644" / "0644" / 420 -> "0644"; empty when not a mode.
std::string NormalizeMode(const nlohmann::json& mode);
// docker argv with "--label onboard.dev/config-hash=<hash>" inserted after "run".
std::vector<std::string> RunArgv(const std::string& docker, const nlohmann::json& argv,
                                 const std::string& config_hash);
}  // namespace detail

}  // namespace onboard::vm
