// libFuzzer target for the manifest loader: any bytes must load without a crash, hang or leak,
// and the result must keep the loader's promises.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const onboard::LoadOptions opts{"/home/fuzz", "fuzz"};
  onboard::LoadResult r = onboard::LoadManifestText(text, "fuzz.yaml", opts);

  // A model comes exactly when there is nothing to report.
  if (r.model.has_value() != r.diagnostics.empty()) __builtin_trap();
  for (const onboard::Diagnostic& d : r.diagnostics) {
    if (d.where.file != "fuzz.yaml" || d.message.empty()) __builtin_trap();
    if (d.where.line < 0 || d.where.column < 0) __builtin_trap();
    (void)d.ToString();
  }
  if (r.model) {
    const onboard::Model& m = *r.model;
    for (size_t i = 1; i < m.workloads.size(); ++i) {
      if (!(m.workloads[i - 1].Key() < m.workloads[i].Key())) __builtin_trap();  // sorted, unique
    }
    for (const onboard::Workload& w : m.workloads) {
      if (w.name.empty() || w.ns.empty() || w.address.empty() || w.ssh.host.empty()) __builtin_trap();
      if (w.ssh.port < 1 || w.ssh.port > 65535) __builtin_trap();
      if (w.proxy.config_dir.empty() || w.proxy.config_dir[0] != '/') __builtin_trap();
      if (w.token.renew_before_seconds >= w.token.duration_seconds) __builtin_trap();
    }
    if (m.digest.size() != 64) __builtin_trap();
  }
  return 0;
}
