// The onboard test Kubernetes API server: an in-memory, HTTPS, bearer-token API server that
// implements the subset of the Kubernetes API that onboard uses (DESIGN.md §8).
//
// Served (bearer token required, 401 Status otherwise):
//   /version, /api, /api/v1, /apis, /apis/G, /apis/G/V, /openapi/v3[/<gv>] (paths only, no schemas)
//   core v1: namespaces (cluster-scoped), configmaps, secrets, serviceaccounts,
//            serviceaccounts/NAME/token (TokenRequest, JWT-shaped HS256 token)
//            (a Secret whose data exceeds 1048576 decoded bytes is refused with 422, as a real one)
//   networking.istio.io v1 + v1beta1: workloadentries, sidecars (validated against the CRD schema)
//   install.tetrate.io v1alpha1: controlplanes;  coordination.k8s.io v1: leases
//   GET item/list (labelSelector, fieldSelector metadata.name/namespace), POST, PUT, DELETE
//   (DeleteOptions preconditions), PATCH merge / strategic(=merge) / json-patch / apply
//   (server-side apply: fieldManager required, deep merge, removal of fields no longer applied,
//   conflicts with other managers unless force=true, no-op applies keep resourceVersion).
//   Not implemented: watch, deletecollection, status subresources (405/404).
// Admin (no auth, same listener):
//   POST   /__admin/faults  {method?, path_regex, status, count, delay_ms, retry_after?} (or an array)
//          the next `count` requests whose method matches and whose path matches path_regex
//          (regex_search) wait delay_ms and then get `status` as a Status (status 0 = only slow)
//   GET    /__admin/faults, DELETE /__admin/faults
//   GET    /__admin/requests (the request log as a JSON array), POST /__admin/reset-log
//   POST   /__admin/revoke-token [{token}] (that token, or every accepted token, stops working)
//   POST   /__admin/tokens {token} (accept another bearer token)
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "tests/sandbox/apiserver/schema.h"

namespace httplib {
class SSLServer;
struct Request;
struct Response;
}  // namespace httplib

namespace onboard::sandbox {

struct ServerOptions {
  std::string dir;                 // where ca.pem, token, kubeconfig, port, ready, pid, requests.log go
  int port = 0;                    // 0 = pick a free port
  std::string bind = "127.0.0.1";
  bool seed = true;
  std::string token;               // empty = random
  std::string schemas_dir;         // folder with workloadentry.crd.yaml and sidecar.crd.yaml
  long long token_lifetime_cap = 0;  // 0 = no cap on TokenRequest expirationSeconds
};

// One served resource of one group/version.
struct ResourceType {
  std::string group;      // "" for core
  std::string version;
  std::string resource;   // plural, e.g. "configmaps"
  std::string kind;
  std::string singular;
  bool namespaced = true;
  bool crd = false;       // custom resource: list items carry apiVersion/kind
  std::vector<std::string> short_names;
  std::string schema_file;  // CRD file name under --schemas, validated on writes ("" = none)
};

struct Fault {
  std::string method;  // "" = any
  std::string path_regex;
  std::regex path;
  int status = 0;      // 0 = no error, only delay
  int count = 1;
  int delay_ms = 0;
  int retry_after = -1;
};

class ApiServer {
 public:
  explicit ApiServer(ServerOptions options);
  ~ApiServer();

  // Generates TLS material, binds, writes DIR/{ca.pem,token,kubeconfig,port,pid,ready}.
  // Returns false and fills *error on failure.
  bool Start(std::string* error);
  // Serves until Stop() is called (from another thread).
  void Serve();
  void Stop();

 private:
  struct HttpResult {
    int code = 200;
    nlohmann::json body;
    std::map<std::string, std::string> headers;
  };

  void Handle(const httplib::Request& req, httplib::Response& res);
  void HandleAdmin(const httplib::Request& req, httplib::Response& res);
  HttpResult Dispatch(const httplib::Request& req);
  HttpResult HandleResource(const httplib::Request& req, const ResourceType& type,
                            const std::string& ns, const std::string& name,
                            const std::string& subresource, bool all_namespaces);
  void LogRequest(const httplib::Request& req, const httplib::Response& res);

  // Store operations; callers hold mu_.
  HttpResult Get(const ResourceType& t, const std::string& ns, const std::string& name);
  HttpResult List(const httplib::Request& req, const ResourceType& t, const std::string& ns,
                  bool all_namespaces);
  HttpResult Create(const httplib::Request& req, const ResourceType& t, const std::string& ns,
                    nlohmann::json body);
  HttpResult Update(const httplib::Request& req, const ResourceType& t, const std::string& ns,
                    const std::string& name, nlohmann::json body);
  HttpResult Patch(const httplib::Request& req, const ResourceType& t, const std::string& ns,
                   const std::string& name);
  HttpResult Delete(const httplib::Request& req, const ResourceType& t, const std::string& ns,
                    const std::string& name);
  HttpResult CreateToken(const httplib::Request& req, const std::string& ns,
                         const std::string& name);
  // Validates and stores `obj` (the complete new object). `existing` is null on create.
  HttpResult Commit(const httplib::Request& req, const ResourceType& t, const std::string& ns,
                    const std::string& name, nlohmann::json obj, const nlohmann::json* existing,
                    const std::string& manager, const std::string& operation,
                    const nlohmann::json& applied_fields);
  std::vector<Cause> ValidateObject(const ResourceType& t, const nlohmann::json& obj);
  nlohmann::json Present(const ResourceType& t, nlohmann::json obj) const;

  void Seed();
  bool LoadSchemas(std::string* error);
  const ResourceType* FindType(const std::string& group, const std::string& version,
                               const std::string& resource) const;
  static std::string Key(const ResourceType& t, const std::string& ns, const std::string& name);
  std::string NextResourceVersion();

  nlohmann::json DiscoveryApiVersions() const;
  nlohmann::json DiscoveryGroupList() const;
  nlohmann::json OpenApiV3Root() const;
  nlohmann::json OpenApiV3GroupVersion(const std::string& gv_path) const;
  nlohmann::json DiscoveryResourceList(const std::string& group, const std::string& version) const;

  ServerOptions options_;
  std::unique_ptr<httplib::SSLServer> server_;
  int bound_port_ = 0;
  std::string ca_pem_;
  std::string jwt_key_;

  std::vector<ResourceType> types_;
  std::map<std::string, CrdSchema> schemas_;  // "<file>@<version>"

  std::mutex mu_;  // guards everything below
  std::map<std::string, nlohmann::json> objects_;
  uint64_t resource_version_ = 1000;
  std::set<std::string> tokens_;
  std::vector<Fault> faults_;
  std::vector<nlohmann::json> log_;
  FILE* log_file_ = nullptr;
};

}  // namespace onboard::sandbox
