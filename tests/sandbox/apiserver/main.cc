// onboard-test-apiserver: the in-memory HTTPS Kubernetes API server of the tests (DESIGN.md §8).
//
//   onboard-test-apiserver --dir DIR [--port N (0 = free port)] [--bind 127.0.0.1] [--no-seed]
//                          [--token TOKEN] [--schemas DIR] [--token-lifetime-cap SECONDS]
//
// Writes DIR/ca.pem, DIR/token (0600), DIR/kubeconfig (0600), DIR/pid, DIR/port and, last,
// DIR/ready; logs each request as a JSON line to DIR/requests.log; exits 0 on SIGTERM/SIGINT.
#include <cstdio>
#include <string>

#include "tests/sandbox/apiserver/server.h"
#include "tests/sandbox/serve.h"

namespace {

constexpr const char* kProgram = "onboard-test-apiserver";

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: onboard-test-apiserver --dir DIR [--port N (0 = pick a free one)] [--bind 127.0.0.1]\n"
               "                              [--no-seed] [--token TOKEN] [--schemas DIR]\n"
               "                              [--token-lifetime-cap SECONDS]\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace onboard::sandbox;
  ServerOptions options;
  options.schemas_dir = std::string(ONBOARD_SOURCE_DIR) + "/../shared/reference/istio-crds";
  auto token = [&](FlagValue& v) {
    if (!v.Text(&options.token)) return false;
    if (options.token.empty() || options.token.find_first_of(" \t\r\n") != std::string::npos)
      return v.Fail("--token must be non-empty and without whitespace");
    return true;
  };
  auto lifetime_cap = [&](FlagValue& v) { return v.Integer(1, 1LL << 32, &options.token_lifetime_cap); };
  const int rc = ReadFlags(kProgram, Usage, argc, argv,
                           ServerFlags(&options, {SwitchFlag("--no-seed", &options.seed, false),
                                                  {"--token", token},
                                                  TextFlag("--schemas", &options.schemas_dir),
                                                  {"--token-lifetime-cap", lifetime_cap}}));
  if (rc >= 0) return rc;
  if (!PrepareDir(kProgram, Usage, &options.dir)) return 2;
  options.schemas_dir = AbsolutePath(options.schemas_dir);
  return RunServer<ApiServer>(kProgram, options);
}
