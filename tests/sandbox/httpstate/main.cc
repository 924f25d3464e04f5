// onboard-test-httpstate: see server.h for the options, the protocol and the admin endpoints.
// Exits 0 on SIGTERM/SIGINT.
#include <cstdio>
#include <string>

#include "tests/sandbox/httpstate/server.h"
#include "tests/sandbox/serve.h"

namespace {

constexpr const char* kProgram = "onboard-test-httpstate";

void Usage(FILE* out) {
  std::fprintf(
      out,
      "usage: onboard-test-httpstate --dir DIR [--port N (0 = a free one)] [--bind 127.0.0.1] [--tls]\n"
      "                              [--username USER --password PASSWORD]\n"
      "                              [--lock-conflict-status 423|409] [--persist DIR]\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace onboard::sandbox;
  HttpStateOptions options;
  auto conflict_status = [&](FlagValue& v) {
    if (!v.Integer(409, 423, &options.conflict_status)) return false;
    if (options.conflict_status != 409 && options.conflict_status != 423)
      return v.Fail("--lock-conflict-status must be 423 or 409");
    return true;
  };
  const int rc = ReadFlags(kProgram, Usage, argc, argv,
                           ServerFlags(&options, {SwitchFlag("--tls", &options.tls, true),
                                                  TextFlag("--username", &options.username),
                                                  TextFlag("--password", &options.password),
                                                  {"--lock-conflict-status", conflict_status},
                                                  TextFlag("--persist", &options.persist_dir)}));
  if (rc >= 0) return rc;
  if (!PrepareDir(kProgram, Usage, &options.dir)) return 2;
  return RunServer<HttpStateServer>(kProgram, options);
}
