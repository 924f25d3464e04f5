// Benchmark: `onboard plan --refresh=false` on a generated fleet of N workloads (default 10,000,
// ~70,000 resources) with a matching state: no changes, then 1% changed. Prints wall time and
// the onboard process's peak RSS, and the in-process cost of diff + graph building at several
// sizes (to show it grows linearly in nodes + edges).
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/desired.h"
#include "engine/manifest.h"
#include "engine/plan.h"
#include "engine/state.h"
#include "state/local.h"

extern char** environ;

namespace onboard {
namespace {

using Clock = std::chrono::steady_clock;

std::string FleetYaml(int n, int changed) {
  std::ostringstream y;
  y << "apiVersion: onboard.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench}\nspec:\n"
       "  cluster: {name: bench, meshExpansion: {controlPlane: controlplane},\n"
       "            vmGateway: {address: 10.255.0.1}}\n"
       "  defaults:\n    ssh: {user: istio-proxy}\n    proxy: {imageHub: docker.io/tetrate, tag: 1.8.6}\n"
       "  workloads:\n";
  for (int i = 0; i < n; ++i) {
    int a = i / 250, b = i % 250 + 1;
    y << "    - name: vm-" << i << "\n      namespace: ns-" << i % 20 << "\n      address: 10." << a / 250 << "."
      << a % 250 << "." << b << "\n      network: vm-net\n      serviceAccount: sa-" << i % 7
      << "\n      labels: {app: app-" << i % 50 << ", version: " << (i < changed ? "v2" : "v1")
      << "}\n      ports: {http: 9080}\n"
         "      sidecar:\n        ingress: [{port: {number: 9080, protocol: HTTP, name: http}, "
         "defaultEndpoint: \"127.0.0.1:9080\"}]\n        egress: [{bind: 127.0.0.2, hosts: [\"./*\"]}]\n"
         "      hosts: {\"127.0.0.2\": [reviews.ns.svc]}\n";
  }
  return y.str();
}

MeshFacts Facts(const Model& m) {
  MeshFacts f;
  f.mesh_config = {{"defaultConfig", {{"discoveryAddress", "istiod.istio-system.svc:15012"}}},
                   {"trustDomain", "cluster.local"}};
  for (const auto& w : m.workloads) f.root_certs[w.ns] = "ROOT";
  f.kube_ca = "KUBE";
  return f;
}

struct RunResult {
  double seconds;
  long max_rss_kib;
  int exit_code;
};

RunResult RunOnboard(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(ONBOARD_BINARY));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  auto t0 = Clock::now();
  pid_t pid;
  if (posix_spawn(&pid, ONBOARD_BINARY, &fa, nullptr, argv.data(), environ) != 0) {
    perror("posix_spawn");
    std::exit(1);
  }
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  posix_spawn_file_actions_destroy(&fa);
  return {s, ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

int Main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 10000;
  char tmpl[] = "/tmp/onboard-bench-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string manifest = dir + "/fleet.yaml", state_path = dir + "/onboard.state.json";
  std::ofstream(manifest) << FleetYaml(n, 0);

  // A state as a full apply of this fleet would leave it.
  LoadOptions lo{"/root", "bench"};
  auto loaded = LoadManifests({manifest}, lo);
  if (!loaded.ok()) {
    std::cerr << "bench manifest does not load: " << loaded.diagnostics.front().ToString() << "\n";
    return 1;
  }
  MeshFacts facts = Facts(*loaded.model);
  auto desired = BuildDesired(*loaded.model, &facts);
  State st;
  st.lineage = NewLineage();
  st.serial = 1;
  for (const auto& r : desired) {
    if (IsCheck(r.address.type)) continue;
    ResourceState rs;
    rs.address = r.address;
    rs.workload = r.workload;
    rs.attributes = r.attributes;
    if (r.address.type == ResourceType::kToken)
      rs.observed = {{"sha256", std::string(64, 'a')}, {"expires_at", 4102444800}, {"issued_at", 1700000000}};
    st.resources[r.address.ToString()] = std::move(rs);
  }
  {
    auto bytes = LocalStateStore::Serialize(st);  // exactly as onboard writes it
    std::ofstream(state_path) << *bytes;
  }
  chmod(state_path.c_str(), 0600);
  struct stat sb {};
  stat(state_path.c_str(), &sb);
  std::printf("fleet: %d workloads, %zu resources in state (%.1f MiB), %zu desired (checks included)\n", n,
              st.resources.size(), sb.st_size / 1048576.0, desired.size());

  std::vector<std::string> args = {"plan", "--refresh=false", "--detailed-exitcode", "--no-color",
                                   "-f", manifest, "--state", state_path};
  for (int rep = 0; rep < 3; ++rep) {
    RunResult r = RunOnboard(args);
    std::printf("no-change plan   : %.3f s wall, %.1f MiB peak RSS, exit %d (0 = no changes)\n", r.seconds,
                r.max_rss_kib / 1024.0, r.exit_code);
  }
  std::ofstream(manifest) << FleetYaml(n, n / 100);
  for (int rep = 0; rep < 3; ++rep) {
    RunResult r = RunOnboard(args);
    std::printf("1%%-changed plan  : %.3f s wall, %.1f MiB peak RSS, exit %d (2 = changes)\n", r.seconds,
                r.max_rss_kib / 1024.0, r.exit_code);
  }

  // Diff + graph building in process at growing sizes: time per (node + edge) stays flat if linear.
  std::printf("\nin-process diff + graph (no changes):\n");
  for (int size : {1000, 2500, 5000, 10000}) {
    if (size > n) break;
    std::vector<Resource> sub;
    State sst;
    sst.lineage = st.lineage;
    std::string cut = "ns-";
    int kept = 0;
    for (const auto& r : desired) {
      // keep the first `size` workloads by index: names vm-<i>
      auto pos = r.workload.find("/vm-");
      if (!r.workload.empty() && std::atoi(r.workload.c_str() + pos + 4) >= size) continue;
      sub.push_back(r);
      if (const auto* rs = st.Find(r.address.ToString())) sst.resources[r.address.ToString()] = *rs;
      ++kept;
    }
    FakeClock clock(1800000000);
    auto t0 = Clock::now();
    auto plan = Diff(sub, &sst, clock, {});
    auto t1 = Clock::now();
    Dag g = BuildGraph(plan->changes, false);
    auto order = g.TopologicalOrder();
    auto t2 = Clock::now();
    double diff_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    double graph_ms = std::chrono::duration<double, std::milli>(t2 - t1).count();
    size_t ne = g.size() + g.edge_count();
    std::printf("  %5d workloads: %6zu nodes + %6zu edges; diff %7.1f ms, graph+topo %6.1f ms (%.0f ns per node+edge)\n",
                size, g.size(), g.edge_count(), diff_ms, graph_ms, graph_ms * 1e6 / ne);
  }
  if (std::getenv("ONBOARD_BENCH_KEEP")) {
    std::printf("kept %s\n", dir.c_str());
  } else {
    std::string cmd = "rm -rf " + dir;
    (void)std::system(cmd.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace onboard

int main(int argc, char** argv) { return onboard::Main(argc, argv); }
