// onboard-sandbox-vms --dir DIR --count N [--docker FILE]
// Starts N sandbox VMs (sshd on 127.0.0.1), writes DIR/vms.json and DIR/ready, and runs until
// SIGTERM or SIGINT, then stops every sshd.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>

#include "tests/sandbox/vm/vm_harness.h"

namespace {

int Usage(const char* argv0, const std::string& error) {
  if (!error.empty()) std::cerr << argv0 << ": " << error << "\n";
  std::cerr << "usage: " << argv0 << " --dir DIR --count N [--docker FILE]\n"
            << "  Starts N sshd 'VMs' on 127.0.0.1, writes DIR/vms.json and DIR/ready,\n"
            << "  and stays in the foreground until SIGTERM/SIGINT.\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  onboard::sandbox::HarnessOptions options;
  options.count = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](std::string* out) {
      size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        *out = arg.substr(eq + 1);
        return true;
      }
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    std::string name = arg.substr(0, arg.find('='));
    if (name == "-h" || name == "--help") {
      Usage(argv[0], "");
      return 0;
    }
    if (name == "--dir" || name == "--count" || name == "--docker") {
      if (!value(&v)) return Usage(argv[0], name + " needs a value");
      if (name == "--dir") options.dir = v;
      if (name == "--docker") options.docker_script = v;
      if (name == "--count") {
        char* end = nullptr;
        long n = std::strtol(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || n < 1 || n > 200) {
          return Usage(argv[0], "--count must be a number in 1..200, got '" + v + "'");
        }
        options.count = static_cast<int>(n);
      }
    } else {
      return Usage(argv[0], "unknown argument '" + arg + "'");
    }
  }
  if (options.dir.empty()) return Usage(argv[0], "--dir is required");
  if (options.count == 0) return Usage(argv[0], "--count is required");

  // Block the stop signals before starting anything, then wait for them synchronously.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGHUP);
  sigprocmask(SIG_BLOCK, &stop, nullptr);

  auto harness = onboard::sandbox::VmHarness::Start(options);
  if (!harness.ok()) {
    std::cerr << harness.error() << "\n";
    return 1;
  }
  auto& h = *harness.value();
  const std::string json = h.dir() + "/vms.json";
  onboard::Status st = onboard::sandbox::WriteVmsJson(h, json);
  if (!st.ok()) {
    std::cerr << st.message() << "\n";
    return 1;
  }
  for (const auto& vm : h.vms()) {
    std::cout << vm.name << " " << vm.user << "@" << vm.host << ":" << vm.port << " root=" << vm.root_dir
              << " pid=" << vm.pid << "\n";
  }
  std::cout << "client key: " << h.client_key() << "\nknown_hosts: " << h.known_hosts() << "\n"
            << "wrote " << json << "; stop with SIGTERM or Ctrl-C" << std::endl;
  {
    std::ofstream ready(h.dir() + "/ready");
    ready << getpid() << "\n";
  }
  int sig = 0;
  sigwait(&stop, &sig);
  std::cout << "signal " << sig << ": stopping " << h.vms().size() << " VM(s)" << std::endl;
  unlink((h.dir() + "/ready").c_str());
  harness = onboard::Status::Error("stopped");  // runs ~VmHarness
  return 0;
}
