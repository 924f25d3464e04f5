// Sandbox "VMs" for tests and the demo: one real OpenSSH sshd per VM on 127.0.0.1 (own port),
// generated ed25519 host keys, one ed25519 client key, a known_hosts file listing every VM.
// A VM's "root" paths (/etc/hosts, /etc/istio-proxy) live under DIR/vmN/root/, and DIR/vmN/tools/
// is first on the PATH of every command run over SSH (the `docker` stand-in goes there).
// Works as root and as an ordinary user (sshd then logs in only that user).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/status.h"

namespace onboard::sandbox {

struct VmInfo {
  std::string name;         // "vm1" .. "vmN" (vms()[i] is "vm" + (i+1))
  std::string host;         // "127.0.0.1"
  int port = 0;
  std::string user;         // the user running the harness
  std::string root_dir;     // DIR/vmN/root: stands for "/" of the VM
  std::string config_dir;   // DIR/vmN/root/etc/istio-proxy (not created: onboard creates it)
  std::string hosts_file;   // DIR/vmN/root/etc/hosts, seeded with "127.0.0.1 localhost"
  std::string tools_dir;    // DIR/vmN/tools, first on PATH (tools/docker when docker_script given)
  std::string dir;          // DIR/vmN
  std::string log_file;     // DIR/vmN/sshd.log (sshd -e output)
  std::string home_dir;     // DIR/vmN/home: $HOME of SSH sessions (keeps the real ~/.bashrc out)
  std::string host_key_pub; // DIR/vmN/ssh_host_ed25519_key.pub
  pid_t pid = -1;           // sshd listener; -1 while killed
};

struct HarnessOptions {
  std::string dir;            // created if absent; must be an absolute or relative writable path
  int count = 1;
  std::string docker_script;  // optional: copied to every VM as tools/docker (mode 0755)
  std::string sshd_path = "/usr/sbin/sshd";
  int start_timeout_seconds = 10;
  // sshd gets SIGTERM when the thread that called Start()/Restart() ends (PR_SET_PDEATHSIG), so a
  // test killed by a timeout leaves no sshd behind. Call Start from a thread that outlives the
  // harness (the test's main thread), or set this to false.
  bool stop_with_thread = true;
};

class VmHarness {
 public:
  static Result<std::unique_ptr<VmHarness>> Start(const HarnessOptions& options);
  ~VmHarness();  // stops every sshd (SIGTERM, then SIGKILL) and its session processes, and waits
  VmHarness(const VmHarness&) = delete;
  VmHarness& operator=(const VmHarness&) = delete;

  const std::vector<VmInfo>& vms() const { return vms_; }
  std::string dir() const { return dir_; }
  std::string client_key() const { return client_key_; }    // private key path (.pub next to it)
  std::string known_hosts() const { return known_hosts_; }  // "[127.0.0.1]:PORT ssh-ed25519 ..." lines

  // Kills VM i (0-based index into vms()) hard: its sshd and every session process under it, so
  // open connections drop at once. Restart(i) starts it again on the same port with the same host key.
  Status Kill(int i);
  Status Restart(int i);
  // Freezes VM i (SIGSTOP to its sshd and session processes): connections stay open but nothing
  // answers, like a hung VM or a dropped network. Resume(i) continues them.
  Status Pause(int i);
  Status Resume(int i);
  bool Running(int i) const;

 private:
  VmHarness() = default;
  Status StartSshd(int i, bool pick_port);
  void Stop(int i, bool graceful);

  std::string dir_;
  std::string client_key_;
  std::string known_hosts_;
  std::string authorized_keys_;
  HarnessOptions options_;
  std::vector<VmInfo> vms_;
};

// Writes a JSON description of the harness (VMs, client key, known_hosts) to `path`.
Status WriteVmsJson(const VmHarness& harness, const std::string& path);

}  // namespace onboard::sandbox
