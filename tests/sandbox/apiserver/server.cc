#include "tests/sandbox/apiserver/server.h"

#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/sandbox/apiserver/tls.h"
#include "tests/sandbox/serve.h"

namespace onboard::sandbox {
namespace {

using nlohmann::json;

constexpr const char* kDefaultAudience = "https://kubernetes.default.svc.cluster.local";

std::string TimeRfc3339(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string NowRfc3339() { return TimeRfc3339(std::time(nullptr)); }

std::string NowPrecise() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::string base = TimeRfc3339(secs);
  char frac[8];
  std::snprintf(frac, sizeof(frac), ".%03lld", static_cast<long long>(ms % 1000));
  return base.substr(0, base.size() - 1) + frac + "Z";
}

std::string ReasonFor(int code) {
  switch (code) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 409: return "Conflict";
    case 410: return "Expired";
    case 415: return "UnsupportedMediaType";
    case 422: return "Invalid";
    case 429: return "TooManyRequests";
    case 500: return "InternalError";
    case 503: return "ServiceUnavailable";
    case 504: return "Timeout";
    default: return code >= 500 ? "InternalError" : "";
  }
}

json StatusJson(int code, const std::string& reason, const std::string& message,
                json details = nullptr) {
  json s = {{"kind", "Status"},
            {"apiVersion", "v1"},
            {"metadata", json::object()},
            {"status", "Failure"},
            {"message", message},
            {"reason", reason},
            {"code", code}};
  if (!details.is_null() && !details.empty()) s["details"] = details;
  return s;
}

std::string GroupVersion(const ResourceType& t) {
  return t.group.empty() ? t.version : t.group + "/" + t.version;
}

// "configmaps" or "workloadentries.networking.istio.io", as the real server names resources.
std::string Qualified(const ResourceType& t) {
  return t.group.empty() ? t.resource : t.resource + "." + t.group;
}

std::string QualifiedKind(const ResourceType& t) {
  return t.group.empty() ? t.kind : t.kind + "." + t.group;
}

json Details(const ResourceType& t, const std::string& name) {
  json d = {{"name", name}, {"kind", t.resource}};
  if (!t.group.empty()) d["group"] = t.group;
  return d;
}

std::string MediaType(const httplib::Request& req) {
  std::string ct = req.get_header_value("Content-Type");
  auto semi = ct.find(';');
  if (semi != std::string::npos) ct = ct.substr(0, semi);
  while (!ct.empty() && ct.back() == ' ') ct.pop_back();
  return ct;
}

// RFC 7386 JSON merge patch.
json MergePatch(json target, const json& patch) {
  if (!patch.is_object()) return patch;
  if (!target.is_object()) target = json::object();
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.value().is_null()) {
      target.erase(it.key());
    } else {
      target[it.key()] = MergePatch(target.contains(it.key()) ? target[it.key()] : json(nullptr),
                                    it.value());
    }
  }
  return target;
}

// Server-side apply, simplified: maps merge recursively, everything else (scalars, lists) is
// replaced by the applied value.
json DeepMerge(json target, const json& applied) {
  if (!applied.is_object() || !target.is_object()) return applied;
  for (auto it = applied.begin(); it != applied.end(); ++it) {
    if (it.value().is_null()) {
      target.erase(it.key());
    } else if (target.contains(it.key())) {
      target[it.key()] = DeepMerge(target[it.key()], it.value());
    } else {
      target[it.key()] = it.value();
    }
  }
  return target;
}

// The managedFields "FieldsV1" set of the fields present in `obj` (maps recurse, leaves are {}).
json FieldsV1(const json& obj, bool top = true) {
  json out = json::object();
  if (!obj.is_object()) return out;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (top && (it.key() == "apiVersion" || it.key() == "kind")) continue;
    if (top && it.key() == "metadata") {
      json md = json::object();
      for (const char* k : {"labels", "annotations"}) {
        if (it.value().contains(k) && it.value()[k].is_object()) {
          md[std::string("f:") + k] = FieldsV1(it.value()[k], false);
        }
      }
      if (!md.empty()) out["f:metadata"] = md;
      continue;
    }
    out["f:" + it.key()] = it.value().is_object() ? FieldsV1(it.value(), false) : json::object();
  }
  return out;
}

// Server-side apply field removal: a field this manager applied before (`old_fields`) but no
// longer applies (`new_fields`) is removed from `obj`, unless another manager (`others`, their
// FieldsV1 at the same level) also owns it.
void PruneUnapplied(json& obj, const json& old_fields, const json& new_fields,
                    const std::vector<const json*>& others) {
  if (!obj.is_object() || !old_fields.is_object()) return;
  for (auto it = old_fields.begin(); it != old_fields.end(); ++it) {
    const std::string& fk = it.key();
    if (fk.rfind("f:", 0) != 0) continue;
    std::string key = fk.substr(2);
    if (!obj.contains(key)) continue;
    std::vector<const json*> sub_others;
    for (const json* o : others) {
      if (o->is_object() && o->contains(fk)) sub_others.push_back(&(*o)[fk]);
    }
    bool still_applied = new_fields.is_object() && new_fields.contains(fk);
    if (!still_applied && sub_others.empty()) {
      obj.erase(key);
    } else if (obj[key].is_object()) {
      static const json kNone = json::object();
      PruneUnapplied(obj[key], it.value(), still_applied ? new_fields[fk] : kNone, sub_others);
    }
  }
}

// Paths (plain keys) of the leaves of a FieldsV1 set.
void CollectLeaves(const json& fields, std::vector<std::string> prefix,
                   std::vector<std::vector<std::string>>* out) {
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    if (it.key().rfind("f:", 0) != 0) continue;
    std::vector<std::string> path = prefix;
    path.push_back(it.key().substr(2));
    if (it.value().is_object() && !it.value().empty()) {
      CollectLeaves(it.value(), path, out);
    } else {
      out->push_back(path);
    }
  }
}

const json* ValueAt(const json& obj, const std::vector<std::string>& path) {
  const json* cur = &obj;
  for (const auto& k : path) {
    if (!cur->is_object() || !cur->contains(k)) return nullptr;
    cur = &(*cur)[k];
  }
  return cur;
}

bool FieldsContain(const json& fields, const std::vector<std::string>& path) {
  const json* cur = &fields;
  for (const auto& k : path) {
    if (!cur->is_object() || !cur->contains("f:" + k)) return false;
    cur = &(*cur)["f:" + k];
  }
  return true;
}

void EraseFieldPath(json* fields, const std::vector<std::string>& path) {
  json* cur = fields;
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    if (!cur->is_object() || !cur->contains("f:" + path[i])) return;
    cur = &(*cur)["f:" + path[i]];
  }
  if (cur->is_object()) cur->erase("f:" + path.back());
}

std::string Base64Std(const std::string& data) {
  static const char* kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  for (; i + 2 < data.size(); i += 3) {
    unsigned v = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (data.size() - i == 1) {
    unsigned v = p[i] << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (data.size() - i == 2) {
    unsigned v = (p[i] << 16) | (p[i + 1] << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Kubernetes label selector (equality and existence forms): "a=b,c!=d,e,!f,g==h".
bool MatchesLabelSelector(const json& labels, const std::string& selector, std::string* error) {
  if (Trim(selector).empty()) return true;
  for (const std::string& raw : Split(selector, ',')) {
    std::string term = Trim(raw);
    if (term.empty()) continue;
    auto get = [&](const std::string& k, std::string* v) {
      if (!labels.is_object() || !labels.contains(k) || !labels[k].is_string()) return false;
      *v = labels[k].get<std::string>();
      return true;
    };
    std::string value;
    size_t pos;
    if ((pos = term.find("!=")) != std::string::npos) {
      std::string k = Trim(term.substr(0, pos)), v = Trim(term.substr(pos + 2));
      if (get(k, &value) && value == v) return false;
    } else if ((pos = term.find("==")) != std::string::npos) {
      std::string k = Trim(term.substr(0, pos)), v = Trim(term.substr(pos + 2));
      if (!get(k, &value) || value != v) return false;
    } else if ((pos = term.find('=')) != std::string::npos) {
      std::string k = Trim(term.substr(0, pos)), v = Trim(term.substr(pos + 1));
      if (!get(k, &value) || value != v) return false;
    } else if (term[0] == '!') {
      if (get(Trim(term.substr(1)), &value)) return false;
    } else if (term.find(' ') != std::string::npos || term.find('(') != std::string::npos) {
      *error = "unable to parse requirement \"" + term +
               "\": the onboard test API server supports only =, ==, != and existence selectors";
      return false;
    } else {
      if (!get(term, &value)) return false;
    }
  }
  return true;
}

bool IsDns1123Subdomain(const std::string& s) {
  static const std::regex kRe("[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*");
  return !s.empty() && s.size() <= 253 && std::regex_match(s, kRe);
}

bool IsDns1123Label(const std::string& s) {
  static const std::regex kRe("[a-z0-9]([-a-z0-9]*[a-z0-9])?");
  return !s.empty() && s.size() <= 63 && std::regex_match(s, kRe);
}

// Removes what must not take part in "did this write change anything" comparisons.
json Comparable(json obj) {
  if (obj.contains("metadata") && obj["metadata"].is_object()) {
    obj["metadata"].erase("resourceVersion");
    if (obj["metadata"].contains("managedFields") && obj["metadata"]["managedFields"].is_array()) {
      for (auto& e : obj["metadata"]["managedFields"]) e.erase("time");
    }
  }
  obj.erase("apiVersion");
  return obj;
}

json WithoutMetaAndStatus(json obj) {
  obj.erase("metadata");
  obj.erase("status");
  obj.erase("apiVersion");
  obj.erase("kind");
  return obj;
}

std::string VerbOf(const httplib::Request& req) {
  const std::string& p = req.path;
  if (p == "/version") return "version";
  if (p == "/api" || p == "/apis" || p.rfind("/openapi", 0) == 0) return "discovery";
  auto segs = Split(p, '/');
  // "", "api", "v1", ... or "", "apis", group, version, ...
  size_t base = (segs.size() > 1 && segs[1] == "api") ? 3 : 4;
  if (segs.size() <= base) return "discovery";
  size_t rest = segs.size() - base;
  bool namespaced = segs[base] == "namespaces" && rest >= 3;
  size_t name_index = namespaced ? base + 3 : base + 1;
  bool has_name = segs.size() > name_index && !segs[name_index].empty();
  bool has_sub = segs.size() > name_index + 1;
  const std::string& m = req.method;
  if (m == "GET") {
    if (req.has_param("watch") && req.get_param_value("watch") == "true") return "watch";
    return has_name ? "get" : "list";
  }
  if (m == "POST") return has_sub ? "create-" + segs[name_index + 1] : "create";
  if (m == "PUT") return "update";
  if (m == "PATCH") return MediaType(req) == "application/apply-patch+yaml" ? "apply" : "patch";
  if (m == "DELETE") return has_name ? "delete" : "deletecollection";
  return m;
}

bool WriteFile(const std::string& path, const std::string& content, mode_t mode,
               std::string* error) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) {
    *error = "cannot write " + tmp + ": " + std::strerror(errno) + " (check that --dir is writable)";
    return false;
  }
  ::chmod(tmp.c_str(), mode);
  bool ok = std::fwrite(content.data(), 1, content.size(), f) == content.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot write " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

std::vector<ResourceType> BuiltinTypes() {
  std::vector<ResourceType> t;
  t.push_back({"", "v1", "namespaces", "Namespace", "namespace", false, false, {"ns"}, ""});
  t.push_back({"", "v1", "configmaps", "ConfigMap", "configmap", true, false, {"cm"}, ""});
  t.push_back({"", "v1", "secrets", "Secret", "secret", true, false, {}, ""});
  t.push_back({"", "v1", "serviceaccounts", "ServiceAccount", "serviceaccount", true, false, {"sa"}, ""});
  for (const char* v : {"v1", "v1beta1"}) {
    t.push_back({"networking.istio.io", v, "workloadentries", "WorkloadEntry", "workloadentry", true,
                 true, {"we"}, "workloadentry.crd.yaml"});
    t.push_back({"networking.istio.io", v, "sidecars", "Sidecar", "sidecar", true, true, {},
                 "sidecar.crd.yaml"});
  }
  t.push_back({"install.tetrate.io", "v1alpha1", "controlplanes", "ControlPlane", "controlplane", true,
               true, {"cp"}, ""});
  t.push_back({"coordination.k8s.io", "v1", "leases", "Lease", "lease", true, false, {}, ""});
  return t;
}

}  // namespace

ApiServer::ApiServer(ServerOptions options) : options_(std::move(options)), types_(BuiltinTypes()) {}

ApiServer::~ApiServer() {
  if (log_file_ != nullptr) std::fclose(log_file_);
}

const ResourceType* ApiServer::FindType(const std::string& group, const std::string& version,
                                        const std::string& resource) const {
  for (const auto& t : types_) {
    if (t.group == group && t.version == version && t.resource == resource) return &t;
  }
  return nullptr;
}

std::string ApiServer::Key(const ResourceType& t, const std::string& ns, const std::string& name) {
  // Versions of one group share storage (CRD conversion strategy None).
  return t.group + "/" + t.resource + "/" + ns + "/" + name;
}

std::string ApiServer::NextResourceVersion() { return std::to_string(++resource_version_); }

bool ApiServer::LoadSchemas(std::string* error) {
  for (const auto& t : types_) {
    if (t.schema_file.empty()) continue;
    std::string key = t.schema_file + "@" + t.version;
    if (schemas_.count(key)) continue;
    CrdSchema schema;
    if (!CrdSchema::Load(options_.schemas_dir + "/" + t.schema_file, t.version, &schema, error)) {
      return false;
    }
    schemas_.emplace(key, std::move(schema));
  }
  return true;
}

bool ApiServer::Start(std::string* error) {
  if (!LoadSchemas(error)) return false;
  KeyAndCert ca, leaf;
  if (!GenerateCa("onboard-sandbox-apiserver-ca", &ca, error) ||
      !GenerateServerCert(ca, "onboard-test-apiserver", {"localhost", "kubernetes.default.svc"},
                          {"127.0.0.1"}, &leaf, error)) {
    return false;
  }
  ca_pem_ = ca.cert_pem;
  jwt_key_ = RandomBytes(32);
  std::string token = options_.token.empty() ? RandomHex(24) : options_.token;
  tokens_.insert(token);

  server_ = std::make_unique<httplib::SSLServer>(leaf.cert.get(), leaf.key.get());
  if (!server_->is_valid()) {
    *error = "cannot set up the TLS server context (OpenSSL)";
    return false;
  }
  RouteEveryPath(
      *server_, [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); },
      /*with_options=*/false);
  server_->set_logger(
      [this](const httplib::Request& req, const httplib::Response& res) { LogRequest(req, res); });
  ReplyToExceptions(*server_, [](httplib::Response& res, const std::string& what) {
    res.status = 500;
    res.set_content(StatusJson(500, "InternalError", "test API server error: " + what).dump(),
                    "application/json");
  });
  server_->set_payload_max_length(16 * 1024 * 1024);

  bound_port_ = BindServer(*server_, options_.bind, options_.port,
                           "port in use? pass --port 0 to pick a free one", error);
  if (bound_port_ == 0) return false;

  if (options_.seed) Seed();

  const std::string& d = options_.dir;
  std::string log_path = d + "/requests.log";
  log_file_ = std::fopen(log_path.c_str(), "w");
  if (log_file_ == nullptr) {
    *error = "cannot open " + log_path + ": " + std::strerror(errno);
    return false;
  }
  std::string host = options_.bind == "0.0.0.0" ? "127.0.0.1" : options_.bind;
  std::string kubeconfig =
      "apiVersion: v1\n"
      "kind: Config\n"
      "clusters:\n"
      "- name: sandbox\n"
      "  cluster:\n"
      "    server: https://" + host + ":" + std::to_string(bound_port_) + "\n"
      "    certificate-authority: " + d + "/ca.pem\n"
      "users:\n"
      "- name: sandbox\n"
      "  user:\n"
      "    token: " + token + "\n"
      "contexts:\n"
      "- name: sandbox\n"
      "  context:\n"
      "    cluster: sandbox\n"
      "    user: sandbox\n"
      "    namespace: default\n"
      "current-context: sandbox\n";
  if (!WriteFile(d + "/ca.pem", ca_pem_, 0644, error) ||
      !WriteFile(d + "/token", token, 0600, error) ||
      !WriteFile(d + "/kubeconfig", kubeconfig, 0600, error) ||
      !WriteFile(d + "/pid", std::to_string(::getpid()) + "\n", 0644, error) ||
      !WriteFile(d + "/port", std::to_string(bound_port_) + "\n", 0644, error)) {
    return false;
  }
  return true;
}

void ApiServer::Serve() {
  ListenAndWriteReady(*server_, "onboard-test-apiserver", [this](std::string* error) {
    return WriteFile(options_.dir + "/ready", "ok\n", 0644, error);
  });
}

void ApiServer::Stop() {
  if (server_) server_->stop();
}

void ApiServer::LogRequest(const httplib::Request& req, const httplib::Response& res) {
  if (req.path.rfind("/__admin", 0) == 0) return;
  auto q = req.target.find('?');
  json entry = {{"time", NowPrecise()},
                {"method", req.method},
                {"path", req.path},
                {"query", q == std::string::npos ? "" : req.target.substr(q + 1)},
                {"status", res.status},
                {"verb", VerbOf(req)},
                {"contentType", req.get_header_value("Content-Type")},
                {"userAgent", req.get_header_value("User-Agent")}};
  std::lock_guard<std::mutex> lock(mu_);
  log_.push_back(entry);
  if (log_file_ != nullptr) {
    std::string line = entry.dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), log_file_);
    std::fflush(log_file_);
  }
}

void ApiServer::HandleAdmin(const httplib::Request& req, httplib::Response& res) {
  auto reply = [&](int code, const json& body) {
    res.status = code;
    res.set_content(body.dump(), "application/json");
  };
  json body;
  if (!req.body.empty()) {
    body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) {
      reply(400, StatusJson(400, "BadRequest", "admin request body is not valid JSON"));
      return;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& p = req.path;
  const std::string& m = req.method;
  if (p == "/__admin/faults" && m == "POST") {
    json list = body.is_array() ? body : json::array({body});
    std::vector<Fault> added;
    for (const auto& f : list) {
      if (!f.is_object()) {
        reply(400, StatusJson(400, "BadRequest", "a fault must be a JSON object"));
        return;
      }
      Fault fault;
      fault.method = f.value("method", "");
      fault.path_regex = f.value("path_regex", ".*");
      try {
        fault.path = std::regex(fault.path_regex);
      } catch (const std::regex_error& e) {
        reply(400, StatusJson(400, "BadRequest",
                              "fault path_regex \"" + fault.path_regex + "\" is invalid: " + e.what()));
        return;
      }
      fault.status = f.value("status", 0);
      fault.count = f.value("count", 1);
      fault.delay_ms = f.value("delay_ms", 0);
      fault.retry_after = f.value("retry_after", -1);
      if (fault.count <= 0 || (fault.status == 0 && fault.delay_ms <= 0)) {
        reply(400, StatusJson(400, "BadRequest",
                              "a fault needs count >= 1 and a status or a delay_ms > 0"));
        return;
      }
      added.push_back(fault);
    }
    faults_.insert(faults_.end(), added.begin(), added.end());
    reply(200, {{"faults", faults_.size()}});
  } else if (p == "/__admin/faults" && m == "DELETE") {
    faults_.clear();
    reply(200, {{"faults", 0}});
  } else if (p == "/__admin/faults" && m == "GET") {
    json out = json::array();
    for (const auto& f : faults_) {
      out.push_back({{"method", f.method}, {"path_regex", f.path_regex}, {"status", f.status},
                     {"count", f.count}, {"delay_ms", f.delay_ms}, {"retry_after", f.retry_after}});
    }
    reply(200, out);
  } else if (p == "/__admin/requests" && m == "GET") {
    reply(200, json(log_));
  } else if (p == "/__admin/reset-log" && m == "POST") {
    log_.clear();
    if (log_file_ != nullptr) {
      log_file_ = std::freopen(nullptr, "w", log_file_);
    }
    reply(200, {{"requests", 0}});
  } else if (p == "/__admin/revoke-token" && m == "POST") {
    if (body.is_object() && body.contains("token")) {
      size_t n = tokens_.erase(body.value("token", ""));
      reply(200, {{"revoked", n}});
    } else {
      size_t n = tokens_.size();
      tokens_.clear();
      reply(200, {{"revoked", n}});
    }
  } else if (p == "/__admin/tokens" && m == "POST") {
    if (!body.is_object() || !body.contains("token") || !body["token"].is_string() ||
        body["token"].get<std::string>().empty()) {
      reply(400, StatusJson(400, "BadRequest", "POST /__admin/tokens needs a body {\"token\": \"...\"}"));
      return;
    }
    tokens_.insert(body["token"].get<std::string>());
    reply(200, {{"tokens", tokens_.size()}});
  } else {
    reply(404, StatusJson(404, "NotFound", "no admin endpoint " + m + " " + p));
  }
}

void ApiServer::Handle(const httplib::Request& req, httplib::Response& res) {
  if (req.path.rfind("/__admin/", 0) == 0) {
    HandleAdmin(req, res);
    return;
  }
  // Faults first: they simulate a misbehaving server or proxy in front of it.
  Fault fault;
  bool faulted = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = faults_.begin(); it != faults_.end(); ++it) {
      if ((it->method.empty() || it->method == req.method) && std::regex_search(req.path, it->path)) {
        fault = *it;
        faulted = true;
        if (--it->count <= 0) faults_.erase(it);
        break;
      }
    }
  }
  if (faulted) {
    if (fault.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(fault.delay_ms));
    if (fault.status != 0) {
      std::string reason = ReasonFor(fault.status);
      json details = json::object();
      if (fault.retry_after >= 0) {
        res.set_header("Retry-After", std::to_string(fault.retry_after));
        details["retryAfterSeconds"] = fault.retry_after;
      }
      json status = StatusJson(fault.status, reason.empty() ? "Unknown" : reason,
                               "injected fault: " + std::to_string(fault.status) + " for " +
                                   req.method + " " + req.path,
                               details);
      res.status = fault.status;
      res.set_content(status.dump(), "application/json");
      return;
    }
  }
  {
    std::string auth = req.get_header_value("Authorization");
    bool ok = false;
    if (auth.rfind("Bearer ", 0) == 0) {
      std::lock_guard<std::mutex> lock(mu_);
      ok = tokens_.count(Trim(auth.substr(7))) > 0;
    }
    if (!ok) {
      res.status = 401;
      res.set_content(StatusJson(401, "Unauthorized", "Unauthorized").dump(), "application/json");
      return;
    }
  }
  HttpResult result = Dispatch(req);
  res.status = result.code;
  for (const auto& h : result.headers) res.set_header(h.first, h.second);
  res.set_content(result.body.dump(), "application/json");
}

json ApiServer::DiscoveryApiVersions() const {
  return {{"kind", "APIVersions"},
          {"versions", {"v1"}},
          {"serverAddressByClientCIDRs",
           {{{"clientCIDR", "0.0.0.0/0"},
             {"serverAddress", options_.bind + ":" + std::to_string(bound_port_)}}}}};
}

json ApiServer::DiscoveryGroupList() const {
  json groups = json::array();
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> versions;
  for (const auto& t : types_) {
    if (t.group.empty()) continue;
    if (!versions.count(t.group)) order.push_back(t.group);
    auto& v = versions[t.group];
    if (std::find(v.begin(), v.end(), t.version) == v.end()) v.push_back(t.version);
  }
  for (const auto& g : order) {
    json vs = json::array();
    for (const auto& v : versions[g]) vs.push_back({{"groupVersion", g + "/" + v}, {"version", v}});
    groups.push_back({{"name", g}, {"versions", vs}, {"preferredVersion", vs[0]}});
  }
  return {{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", groups}};
}

json ApiServer::DiscoveryResourceList(const std::string& group, const std::string& version) const {
  json resources = json::array();
  for (const auto& t : types_) {
    if (t.group != group || t.version != version) continue;
    // No watch/deletecollection: this server does not implement them.
    json verbs = json({"create", "delete", "get", "list", "patch", "update"});
    json r = {{"name", t.resource},
              {"singularName", t.singular},
              {"namespaced", t.namespaced},
              {"kind", t.kind},
              {"verbs", verbs}};
    if (!t.short_names.empty()) r["shortNames"] = t.short_names;
    if (t.crd) r["categories"] = json::array({"all"});
    resources.push_back(r);
    if (t.resource == "serviceaccounts") {
      resources.push_back({{"name", "serviceaccounts/token"},
                           {"singularName", ""},
                           {"namespaced", true},
                           {"group", "authentication.k8s.io"},
                           {"version", "v1"},
                           {"kind", "TokenRequest"},
                           {"verbs", {"create"}}});
    }
  }
  if (resources.empty()) return nullptr;
  return {{"kind", "APIResourceList"},
          {"apiVersion", "v1"},
          {"groupVersion", group.empty() ? version : group + "/" + version},
          {"resources", resources}};
}

json ApiServer::OpenApiV3Root() const {
  json paths = json::object();
  for (const auto& t : types_) {
    std::string gv = t.group.empty() ? "api/" + t.version : "apis/" + t.group + "/" + t.version;
    // The hash only has to change when the document does; ours is fixed per server run.
    paths[gv] = {{"serverRelativeURL", "/openapi/v3/" + gv + "?hash=" + std::to_string(bound_port_)}};
  }
  return {{"paths", paths}};
}

// A minimal OpenAPI v3 document for one group/version: the paths with their operations and
// parameters (enough for clients such as kubectl to see that PATCH supports fieldValidation and
// so rely on the server's validation), without component schemas.
json ApiServer::OpenApiV3GroupVersion(const std::string& gv_path) const {
  json paths = json::object();
  bool found = false;
  auto param = [](const char* name) {
    return json{{"name", name}, {"in", "query"}, {"schema", {{"type", "string"}, {"uniqueItems", true}}}};
  };
  for (const auto& t : types_) {
    std::string gv = t.group.empty() ? "api/" + t.version : "apis/" + t.group + "/" + t.version;
    if (gv != gv_path) continue;
    found = true;
    json gvk = {{"group", t.group}, {"version", t.version}, {"kind", t.kind}};
    std::string collection = "/" + gv + (t.namespaced ? "/namespaces/{namespace}/" : "/") + t.resource;
    std::string item = collection + "/{name}";
    json write_params = json::array({param("dryRun"), param("fieldManager"), param("fieldValidation")});
    json patch_params = write_params;
    patch_params.push_back(param("force"));
    auto op = [&](const std::string& id, const std::string& action, const json& params) {
      return json{{"operationId", id + t.kind},
                  {"parameters", params},
                  {"responses", {{"200", {{"description", "OK"}}}}},
                  {"x-kubernetes-action", action},
                  {"x-kubernetes-group-version-kind", gvk}};
    };
    paths[collection] = {{"get", op("list", "list", json::array({param("labelSelector"), param("fieldSelector")}))},
                         {"post", op("create", "post", write_params)}};
    paths[item] = {{"get", op("read", "get", json::array())},
                   {"put", op("replace", "put", write_params)},
                   {"patch", op("patch", "patch", patch_params)},
                   {"delete", op("delete", "delete", json::array({param("dryRun")}))}};
  }
  if (!found) return nullptr;
  return {{"openapi", "3.0.0"},
          {"info", {{"title", "Kubernetes"}, {"version", "v1.30.0"}}},
          {"paths", paths},
          {"components", {{"schemas", json::object()}}}};
}

ApiServer::HttpResult ApiServer::Dispatch(const httplib::Request& req) {
  const std::string& p = req.path;
  auto not_found = [&]() {
    return HttpResult{404, StatusJson(404, "NotFound", "the server could not find the requested resource",
                                      {{"causes", {{{"reason", "UnexpectedServerResponse"},
                                                    {"message", "404 page not found: " + p}}}}}),
                      {}};
  };
  if (req.method == "GET") {
    if (p == "/version") {
      return {200,
              {{"major", "1"},
               {"minor", "30"},
               {"gitVersion", "v1.30.0"},
               {"gitCommit", "onboard-test-apiserver"},
               {"gitTreeState", "clean"},
               {"buildDate", "2026-01-01T00:00:00Z"},
               {"goVersion", "go1.22.0"},
               {"compiler", "gc"},
               {"platform", "linux/amd64"}},
              {}};
    }
    if (p == "/api" || p == "/api/") return {200, DiscoveryApiVersions(), {}};
    if (p == "/openapi/v3" || p == "/openapi/v3/") return {200, OpenApiV3Root(), {}};
    if (p.rfind("/openapi/v3/", 0) == 0) {
      json doc = OpenApiV3GroupVersion(p.substr(std::string("/openapi/v3/").size()));
      if (doc.is_null()) return not_found();
      return {200, doc, {}};
    }
    if (p == "/apis" || p == "/apis/") return {200, DiscoveryGroupList(), {}};
  }
  auto segs = Split(p, '/');
  if (segs.size() < 2 || !segs[0].empty()) return not_found();
  segs.erase(segs.begin());
  if (!segs.empty() && segs.back().empty()) segs.pop_back();
  std::string group, version;
  size_t base;
  if (segs.size() >= 2 && segs[0] == "api") {
    version = segs[1];
    base = 2;
  } else if (segs.size() >= 2 && segs[0] == "apis") {
    group = segs[1];
    if (segs.size() == 2) {
      if (req.method != "GET") return not_found();
      json list = DiscoveryGroupList();
      for (const auto& g : list["groups"]) {
        if (g["name"] == group) {
          json out = g;
          out["kind"] = "APIGroup";
          out["apiVersion"] = "v1";
          return {200, out, {}};
        }
      }
      return not_found();
    }
    version = segs[2];
    base = 3;
  } else {
    return not_found();
  }
  std::vector<std::string> rest(segs.begin() + static_cast<long>(base), segs.end());
  if (rest.empty()) {
    if (req.method != "GET") return not_found();
    json list = DiscoveryResourceList(group, version);
    if (list.is_null()) return not_found();
    return {200, list, {}};
  }
  std::string ns, resource, name, sub;
  bool all_namespaces = false;
  if (rest[0] == "namespaces" && rest.size() >= 3) {
    ns = rest[1];
    resource = rest[2];
    if (rest.size() >= 4) name = rest[3];
    if (rest.size() >= 5) sub = rest[4];
    if (rest.size() > 5) return not_found();
  } else {
    resource = rest[0];
    if (rest.size() >= 2) name = rest[1];
    if (rest.size() >= 3) sub = rest[2];
    if (rest.size() > 3) return not_found();
  }
  const ResourceType* type = FindType(group, version, resource);
  if (type == nullptr) return not_found();
  if (type->namespaced && ns.empty()) {
    if (!name.empty() || req.method != "GET") return not_found();
    all_namespaces = true;
  }
  if (!type->namespaced && !ns.empty()) return not_found();
  std::lock_guard<std::mutex> lock(mu_);
  return HandleResource(req, *type, ns, name, sub, all_namespaces);
}

ApiServer::HttpResult ApiServer::HandleResource(const httplib::Request& req, const ResourceType& t,
                                                const std::string& ns, const std::string& name,
                                                const std::string& sub, bool all_namespaces) {
  auto method_not_allowed = [&](const std::string& what) {
    return HttpResult{405, StatusJson(405, "MethodNotAllowed",
                                      what + " is not supported by the onboard test API server"),
                      {}};
  };
  if (!sub.empty()) {
    if (t.resource == "serviceaccounts" && sub == "token") {
      if (req.method != "POST") return method_not_allowed(req.method + " serviceaccounts/token");
      return CreateToken(req, ns, name);
    }
    return {404, StatusJson(404, "NotFound", "the server could not find the requested resource"), {}};
  }
  auto parse_body = [&](json* out) -> bool {
    std::string error;
    std::string media = MediaType(req);
    if (media == "application/yaml" || media == "application/apply-patch+yaml") {
      if (!ParseYamlOrJson(req.body, out, &error)) return false;
    } else {
      *out = json::parse(req.body, nullptr, false);
      if (out->is_discarded()) return false;
    }
    return out->is_object();
  };
  auto bad_body = [&]() {
    return HttpResult{400, StatusJson(400, "BadRequest",
                                      "the body of the " + req.method + " request to " + req.path +
                                          " is not a JSON (or YAML) object"),
                      {}};
  };
  if (req.method == "GET") {
    if (name.empty()) {
      if (req.has_param("watch") &&
          (req.get_param_value("watch") == "true" || req.get_param_value("watch") == "1")) {
        return method_not_allowed("watch");
      }
      return List(req, t, ns, all_namespaces);
    }
    return Get(t, ns, name);
  }
  if (req.method == "POST") {
    if (!name.empty()) return method_not_allowed("POST to a named " + t.resource);
    json body;
    if (!parse_body(&body)) return bad_body();
    return Create(req, t, ns, std::move(body));
  }
  if (req.method == "PUT") {
    if (name.empty()) return method_not_allowed("PUT to a collection");
    json body;
    if (!parse_body(&body)) return bad_body();
    return Update(req, t, ns, name, std::move(body));
  }
  if (req.method == "PATCH") {
    if (name.empty()) return method_not_allowed("PATCH to a collection");
    return Patch(req, t, ns, name);
  }
  if (req.method == "DELETE") {
    if (name.empty()) return method_not_allowed("deletecollection");
    return Delete(req, t, ns, name);
  }
  return method_not_allowed(req.method);
}

json ApiServer::Present(const ResourceType& t, json obj) const {
  obj["apiVersion"] = GroupVersion(t);
  obj["kind"] = t.kind;
  return obj;
}

ApiServer::HttpResult ApiServer::Get(const ResourceType& t, const std::string& ns,
                                     const std::string& name) {
  auto it = objects_.find(Key(t, ns, name));
  if (it == objects_.end()) {
    return {404, StatusJson(404, "NotFound", Qualified(t) + " \"" + name + "\" not found", Details(t, name)), {}};
  }
  return {200, Present(t, it->second), {}};
}

ApiServer::HttpResult ApiServer::List(const httplib::Request& req, const ResourceType& t,
                                      const std::string& ns, bool all_namespaces) {
  std::string selector = req.has_param("labelSelector") ? req.get_param_value("labelSelector") : "";
  std::string field_selector = req.has_param("fieldSelector") ? req.get_param_value("fieldSelector") : "";
  std::string want_name, want_ns;
  for (const auto& term : Split(field_selector, ',')) {
    std::string s = Trim(term);
    if (s.empty()) continue;
    auto eq = s.find('=');
    std::string k = eq == std::string::npos ? s : Trim(s.substr(0, eq));
    std::string v = eq == std::string::npos ? "" : Trim(s.substr(s[eq + 1] == '=' ? eq + 2 : eq + 1));
    if (k == "metadata.name") {
      want_name = v;
    } else if (k == "metadata.namespace") {
      want_ns = v;
    } else {
      return {400, StatusJson(400, "BadRequest",
                              "field label not supported: " + k +
                                  " (the onboard test API server supports metadata.name and metadata.namespace)"),
              {}};
    }
  }
  std::string prefix = t.group + "/" + t.resource + "/" + (all_namespaces ? "" : ns + "/");
  json items = json::array();
  for (auto it = objects_.lower_bound(prefix); it != objects_.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    const json& obj = it->second;
    const json& md = obj["metadata"];
    if (!want_name.empty() && md.value("name", "") != want_name) continue;
    if (!want_ns.empty() && md.value("namespace", "") != want_ns) continue;
    std::string error;
    bool match = MatchesLabelSelector(md.contains("labels") ? md["labels"] : json::object(), selector, &error);
    if (!error.empty()) return {400, StatusJson(400, "BadRequest", error), {}};
    if (!match) continue;
    json item = obj;
    if (t.crd) {
      item = Present(t, item);
    } else {
      item.erase("apiVersion");
      item.erase("kind");
    }
    items.push_back(item);
  }
  return {200,
          {{"kind", t.kind + "List"},
           {"apiVersion", GroupVersion(t)},
           {"metadata", {{"resourceVersion", std::to_string(resource_version_)}}},
           {"items", items}},
          {}};
}

std::vector<Cause> ApiServer::ValidateObject(const ResourceType& t, const json& obj) {
  std::vector<Cause> causes;
  const json& md = obj["metadata"];
  std::string name = md.value("name", "");
  bool name_ok = t.resource == "namespaces" ? IsDns1123Label(name) : IsDns1123Subdomain(name);
  if (!name_ok) {
    causes.push_back({"FieldValueInvalid", "metadata.name",
                      "Invalid value: \"" + name + "\": a lowercase RFC 1123 " +
                          (t.resource == "namespaces" ? "label" : "subdomain") +
                          " must consist of lower case alphanumeric characters, '-' or '.', and must "
                          "start and end with an alphanumeric character"});
  }
  for (const char* k : {"labels", "annotations"}) {
    if (md.contains(k)) {
      if (!md[k].is_object()) {
        causes.push_back({"FieldValueInvalid", std::string("metadata.") + k, "Invalid value: must be a map of strings"});
        continue;
      }
      for (auto it = md[k].begin(); it != md[k].end(); ++it) {
        if (!it.value().is_string()) {
          causes.push_back({"FieldValueInvalid", std::string("metadata.") + k + "." + it.key(),
                            "Invalid value: must be a string"});
        }
      }
    }
  }
  if (t.resource == "configmaps" || t.resource == "secrets") {
    for (const char* k : {"data", "binaryData", "stringData"}) {
      if (!obj.contains(k)) continue;
      if (!obj[k].is_object()) {
        causes.push_back({"FieldValueInvalid", k, "Invalid value: must be a map of strings"});
        continue;
      }
      for (auto it = obj[k].begin(); it != obj[k].end(); ++it) {
        if (!it.value().is_string()) {
          causes.push_back({"FieldValueInvalid", std::string(k) + "." + it.key(),
                            "Invalid value: must be a string"});
        }
      }
    }
  }
  if (t.resource == "secrets" && obj.contains("data") && obj["data"].is_object()) {
    // As the real server: the decoded values of a Secret's data total at most 1 MiB.
    constexpr size_t kMaxSecretSize = 1048576;
    size_t total = 0;
    for (auto it = obj["data"].begin(); it != obj["data"].end(); ++it) {
      if (!it.value().is_string()) continue;
      const std::string& b64 = it.value().get_ref<const std::string&>();
      size_t pad = 0;
      while (pad < 2 && pad < b64.size() && b64[b64.size() - 1 - pad] == '=') ++pad;
      size_t chars = b64.size() - pad;  // 4 characters carry 3 bytes; a tail of 2 or 3 carries 1 or 2
      total += chars / 4 * 3 + (chars % 4 == 0 ? 0 : chars % 4 - 1);
    }
    if (total > kMaxSecretSize) {
      causes.push_back({"FieldValueTooLong", "data",
                        "Too long: must have at most " + std::to_string(kMaxSecretSize) + " bytes"});
    }
  }
  if (!t.schema_file.empty()) {
    auto it = schemas_.find(t.schema_file + "@" + t.version);
    if (it != schemas_.end()) {
      for (auto& c : it->second.Validate(obj)) causes.push_back(c);
    }
    if (t.resource == "workloadentries") {
      for (auto& c : WorkloadEntryRules(obj)) causes.push_back(c);
    }
  }
  return causes;
}

ApiServer::HttpResult ApiServer::Commit(const httplib::Request& req, const ResourceType& t,
                                        const std::string& ns, const std::string& name, json obj,
                                        const json* existing, const std::string& manager,
                                        const std::string& operation, const json& applied_fields) {
  obj["apiVersion"] = GroupVersion(t);
  obj["kind"] = t.kind;
  if (!obj.contains("metadata") || !obj["metadata"].is_object()) obj["metadata"] = json::object();
  json& md = obj["metadata"];
  md["name"] = name;
  if (t.namespaced) {
    md["namespace"] = ns;
  } else {
    md.erase("namespace");
  }
  for (const char* k : {"uid", "creationTimestamp", "generation", "resourceVersion", "managedFields",
                        "deletionTimestamp", "selfLink"}) {
    md.erase(k);
  }
  if (existing != nullptr) {
    const json& old_md = (*existing)["metadata"];
    for (const char* k : {"uid", "creationTimestamp", "generation", "resourceVersion", "managedFields"}) {
      if (old_md.contains(k)) md[k] = old_md[k];
    }
  } else {
    md["uid"] = RandomUuid();
    md["creationTimestamp"] = NowRfc3339();
    md["generation"] = 1;
  }
  if (t.resource == "namespaces") {
    if (!md.contains("labels") || !md["labels"].is_object()) md["labels"] = json::object();
    md["labels"]["kubernetes.io/metadata.name"] = name;
    obj["spec"] = {{"finalizers", {"kubernetes"}}};
    obj["status"] = {{"phase", "Active"}};
  }
  if (t.resource == "secrets") {
    if (obj.contains("stringData") && obj["stringData"].is_object()) {
      if (!obj.contains("data") || !obj["data"].is_object()) obj["data"] = json::object();
      for (auto it = obj["stringData"].begin(); it != obj["stringData"].end(); ++it) {
        if (it.value().is_string()) obj["data"][it.key()] = Base64Std(it.value().get<std::string>());
      }
      obj.erase("stringData");
    }
    if (!obj.contains("type")) obj["type"] = "Opaque";
  }
  std::vector<Cause> causes = ValidateObject(t, obj);
  if (!causes.empty()) {
    json jcauses = json::array();
    std::string joined;
    for (const auto& c : causes) {
      jcauses.push_back({{"reason", c.reason}, {"message", c.message}, {"field", c.field}});
      joined += (joined.empty() ? "" : ", ") + (c.field.empty() ? c.message : c.field + ": " + c.message);
    }
    if (causes.size() > 1) joined = "[" + joined + "]";
    json details = {{"name", name}, {"kind", t.kind}, {"causes", jcauses}};
    if (!t.group.empty()) details["group"] = t.group;
    return {422,
            StatusJson(422, "Invalid", QualifiedKind(t) + " \"" + name + "\" is invalid: " + joined, details),
            {}};
  }
  // managedFields: one entry per (manager, operation).
  json entry = {{"manager", manager},
                {"operation", operation},
                {"apiVersion", GroupVersion(t)},
                {"time", NowRfc3339()},
                {"fieldsType", "FieldsV1"},
                {"fieldsV1", FieldsV1(applied_fields)}};
  json managed = md.contains("managedFields") && md["managedFields"].is_array() ? md["managedFields"] : json::array();
  bool replaced = false;
  for (auto& e : managed) {
    if (e.value("manager", "") == manager && e.value("operation", "") == operation) {
      // Apply replaces the manager's field set; updates accumulate into it.
      if (operation != "Apply" && e.contains("fieldsV1")) {
        entry["fieldsV1"] = DeepMerge(e["fieldsV1"], entry["fieldsV1"]);
      }
      e = entry;
      replaced = true;
    }
  }
  if (!replaced) managed.push_back(entry);
  md["managedFields"] = managed;

  bool dry_run = req.has_param("dryRun");
  if (existing != nullptr) {
    if (Comparable(obj) == Comparable(*existing)) return {200, Present(t, *existing), {}};
    if (WithoutMetaAndStatus(obj) != WithoutMetaAndStatus(*existing)) {
      md["generation"] = (*existing)["metadata"].value("generation", 1) + 1;
    }
  }
  if (dry_run) {
    if (existing == nullptr) md.erase("resourceVersion");
    return {existing == nullptr ? 201 : 200, Present(t, obj), {}};
  }
  md["resourceVersion"] = NextResourceVersion();
  objects_[Key(t, ns, name)] = obj;
  return {existing == nullptr ? 201 : 200, Present(t, obj), {}};
}

namespace {

std::string ManagerOf(const httplib::Request& req, const std::string& fallback) {
  if (req.has_param("fieldManager") && !req.get_param_value("fieldManager").empty()) {
    return req.get_param_value("fieldManager");
  }
  std::string ua = req.get_header_value("User-Agent");
  auto slash = ua.find('/');
  if (slash != std::string::npos) ua = ua.substr(0, slash);
  return ua.empty() ? fallback : ua;
}

}  // namespace

ApiServer::HttpResult ApiServer::Create(const httplib::Request& req, const ResourceType& t,
                                        const std::string& ns, json body) {
  if (body.contains("kind") && body["kind"] != t.kind) {
    return {400, StatusJson(400, "BadRequest",
                            "the kind of the body (" + body["kind"].dump() + ") does not match the URL's resource " +
                                Qualified(t) + " (kind " + t.kind + ")"),
            {}};
  }
  if (!body.contains("metadata") || !body["metadata"].is_object()) body["metadata"] = json::object();
  json& md = body["metadata"];
  std::string name = md.value("name", "");
  if (name.empty() && md.contains("generateName") && md["generateName"].is_string()) {
    static const char* kAlnum = "bcdfghjklmnpqrstvwxz2456789";
    std::string suffix;
    for (unsigned char c : RandomBytes(5)) suffix += kAlnum[c % 27];
    name = md["generateName"].get<std::string>() + suffix;
  }
  if (name.empty()) {
    json details = {{"kind", t.kind},
                    {"causes", {{{"reason", "FieldValueRequired"},
                                 {"message", "Required value: name or generateName is required"},
                                 {"field", "metadata.name"}}}}};
    return {422, StatusJson(422, "Invalid", QualifiedKind(t) + " \"\" is invalid: metadata.name: Required value: name or generateName is required", details), {}};
  }
  if (t.namespaced) {
    if (md.contains("namespace") && md["namespace"].is_string() && !md["namespace"].get<std::string>().empty() &&
        md["namespace"] != ns) {
      return {400, StatusJson(400, "BadRequest",
                              "the namespace of the provided object (" + md["namespace"].get<std::string>() +
                                  ") does not match the namespace sent on the request (" + ns + ")"),
              {}};
    }
    if (!objects_.count("/namespaces//" + ns)) {
      return {404, StatusJson(404, "NotFound", "namespaces \"" + ns + "\" not found",
                              {{"name", ns}, {"kind", "namespaces"}}),
              {}};
    }
  }
  if (objects_.count(Key(t, ns, name))) {
    return {409, StatusJson(409, "AlreadyExists", Qualified(t) + " \"" + name + "\" already exists",
                            Details(t, name)),
            {}};
  }
  json fields = body;
  return Commit(req, t, ns, name, std::move(body), nullptr, ManagerOf(req, "unknown"), "Update", fields);
}

namespace {

// Preconditions in a body's metadata (PUT/patch) or DeleteOptions: 409 Conflict on mismatch.
bool CheckPreconditions(const json& existing, const std::string& uid, const std::string& rv,
                        const std::string& qualified, const std::string& name, json* status) {
  const json& md = existing["metadata"];
  std::string cur_uid = md.value("uid", ""), cur_rv = md.value("resourceVersion", "");
  std::string message;
  if (!uid.empty() && uid != cur_uid) {
    message = "Precondition failed: UID in precondition: " + uid + ", UID in object meta: " + cur_uid;
  } else if (!rv.empty() && rv != cur_rv) {
    message = "the object has been modified; please apply your changes to the latest version and try again";
  }
  if (message.empty()) return true;
  std::string kind = qualified.substr(0, qualified.find('.'));
  json details = {{"name", name}, {"kind", kind}};
  if (qualified.find('.') != std::string::npos) details["group"] = qualified.substr(qualified.find('.') + 1);
  *status = StatusJson(409, "Conflict",
                       "Operation cannot be fulfilled on " + qualified + " \"" + name + "\": " + message, details);
  return false;
}

std::string MetaString(const json& obj, const char* key) {
  if (!obj.is_object() || !obj.contains("metadata") || !obj["metadata"].is_object()) return "";
  const json& md = obj["metadata"];
  return md.contains(key) && md[key].is_string() ? md[key].get<std::string>() : "";
}

}  // namespace

ApiServer::HttpResult ApiServer::Update(const httplib::Request& req, const ResourceType& t,
                                        const std::string& ns, const std::string& name, json body) {
  std::string body_name = MetaString(body, "name");
  if (!body_name.empty() && body_name != name) {
    return {400, StatusJson(400, "BadRequest",
                            "the name of the object (" + body_name + ") does not match the name on the URL (" + name + ")"),
            {}};
  }
  std::string body_ns = MetaString(body, "namespace");
  if (t.namespaced && !body_ns.empty() && body_ns != ns) {
    return {400, StatusJson(400, "BadRequest",
                            "the namespace of the provided object (" + body_ns +
                                ") does not match the namespace sent on the request (" + ns + ")"),
            {}};
  }
  auto it = objects_.find(Key(t, ns, name));
  if (it == objects_.end()) {
    return {404, StatusJson(404, "NotFound", Qualified(t) + " \"" + name + "\" not found", Details(t, name)), {}};
  }
  json conflict;
  if (!CheckPreconditions(it->second, MetaString(body, "uid"), MetaString(body, "resourceVersion"),
                          Qualified(t), name, &conflict)) {
    return {409, conflict, {}};
  }
  json existing = it->second;
  json fields = body;
  return Commit(req, t, ns, name, std::move(body), &existing, ManagerOf(req, "unknown"), "Update", fields);
}

ApiServer::HttpResult ApiServer::Patch(const httplib::Request& req, const ResourceType& t,
                                       const std::string& ns, const std::string& name) {
  std::string media = MediaType(req);
  auto it = objects_.find(Key(t, ns, name));
  bool exists = it != objects_.end();
  auto not_found = [&]() {
    return HttpResult{404, StatusJson(404, "NotFound", Qualified(t) + " \"" + name + "\" not found", Details(t, name)), {}};
  };
  if (media == "application/merge-patch+json" || media == "application/strategic-merge-patch+json" ||
      media == "application/json-patch+json") {
    json patch = json::parse(req.body, nullptr, false);
    if (patch.is_discarded()) {
      return {400, StatusJson(400, "BadRequest", "the " + media + " body of PATCH " + req.path + " is not valid JSON"), {}};
    }
    if (!exists) return not_found();
    json existing = it->second;
    json updated;
    if (media == "application/json-patch+json") {
      if (!patch.is_array()) {
        return {400, StatusJson(400, "BadRequest", "a json-patch body must be a JSON array of operations"), {}};
      }
      try {
        updated = existing.patch(patch);
      } catch (const std::exception& e) {
        return {422, StatusJson(422, "Invalid", std::string("the json-patch could not be applied: ") + e.what()), {}};
      }
    } else {
      if (!patch.is_object()) {
        return {400, StatusJson(400, "BadRequest", "a merge-patch body must be a JSON object"), {}};
      }
      json conflict;
      if (!CheckPreconditions(existing, MetaString(patch, "uid"), MetaString(patch, "resourceVersion"),
                              Qualified(t), name, &conflict)) {
        return {409, conflict, {}};
      }
      updated = MergePatch(existing, patch);
    }
    return Commit(req, t, ns, name, std::move(updated), &existing, ManagerOf(req, "unknown"), "Update",
                  media == "application/json-patch+json" ? json::object() : patch);
  }
  if (media != "application/apply-patch+yaml") {
    return {415, StatusJson(415, "UnsupportedMediaType",
                            "the media type \"" + media + "\" is not supported for PATCH; use application/merge-patch+json, "
                            "application/strategic-merge-patch+json, application/json-patch+json or application/apply-patch+yaml"),
            {}};
  }
  std::string manager = req.has_param("fieldManager") ? req.get_param_value("fieldManager") : "";
  if (manager.empty()) {
    json details = {{"name", ""}, {"group", "meta.k8s.io"}, {"kind", "PatchOptions"},
                    {"causes", {{{"reason", "FieldValueRequired"},
                                 {"message", "Required value: is required for apply patch"},
                                 {"field", "fieldManager"}}}}};
    return {422, StatusJson(422, "Invalid",
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                            details),
            {}};
  }
  json applied;
  std::string error;
  if (!ParseYamlOrJson(req.body, &applied, &error) || !applied.is_object()) {
    return {400, StatusJson(400, "BadRequest",
                            "the apply body of PATCH " + req.path + " is not a YAML/JSON object" +
                                (error.empty() ? "" : ": " + error)),
            {}};
  }
  if (!applied.contains("apiVersion") || !applied.contains("kind")) {
    return {400, StatusJson(400, "BadRequest", "apply patch body needs apiVersion and kind"), {}};
  }
  if (applied["kind"] != t.kind || applied["apiVersion"] != GroupVersion(t)) {
    return {400, StatusJson(400, "BadRequest",
                            "apply body is " + applied["apiVersion"].dump() + " " + applied["kind"].dump() +
                                " but the URL is for " + GroupVersion(t) + " " + t.kind),
            {}};
  }
  std::string body_name = MetaString(applied, "name");
  if (body_name != name) {
    return {400, StatusJson(400, "BadRequest",
                            "the name of the object (" + body_name + ") does not match the name on the URL (" + name + ")"),
            {}};
  }
  std::string body_ns = MetaString(applied, "namespace");
  if (t.namespaced && !body_ns.empty() && body_ns != ns) {
    return {400, StatusJson(400, "BadRequest",
                            "the namespace of the provided object (" + body_ns +
                                ") does not match the namespace sent on the request (" + ns + ")"),
            {}};
  }
  if (!exists) {
    if (t.namespaced && !objects_.count("/namespaces//" + ns)) {
      return {404, StatusJson(404, "NotFound", "namespaces \"" + ns + "\" not found",
                              {{"name", ns}, {"kind", "namespaces"}}),
              {}};
    }
    if (!MetaString(applied, "resourceVersion").empty()) {
      return {409, StatusJson(409, "Conflict", "Operation cannot be fulfilled on " + Qualified(t) + " \"" + name +
                                                   "\": the object has been modified; please apply your changes to the latest version and try again",
                              Details(t, name)),
              {}};
    }
    json fields = applied;
    return Commit(req, t, ns, name, std::move(applied), nullptr, manager, "Apply", fields);
  }
  json existing = it->second;
  json conflict;
  if (!CheckPreconditions(existing, MetaString(applied, "uid"), MetaString(applied, "resourceVersion"),
                          Qualified(t), name, &conflict)) {
    return {409, conflict, {}};
  }
  json to_merge = applied;
  if (to_merge.contains("metadata") && to_merge["metadata"].is_object()) {
    for (const char* k : {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"}) {
      to_merge["metadata"].erase(k);
    }
  }
  json merged = DeepMerge(existing, to_merge);
  // Fields this manager applied last time but not now are removed (unless someone else owns them).
  const json& old_managed = existing["metadata"].contains("managedFields") ? existing["metadata"]["managedFields"] : json::array();
  json old_fields = json::object();
  std::vector<const json*> others;
  for (const auto& e : old_managed) {
    if (!e.contains("fieldsV1")) continue;
    if (e.value("manager", "") == manager && e.value("operation", "") == "Apply") {
      old_fields = e["fieldsV1"];
    } else {
      others.push_back(&e["fieldsV1"]);
    }
  }
  json new_fields = FieldsV1(applied);
  // Conflicts: a field this apply changes that another manager owns. With force=true the
  // field changes hands instead (it is removed from the other managers' sets).
  std::vector<std::vector<std::string>> leaves;
  CollectLeaves(new_fields, {}, &leaves);
  bool force = req.has_param("force") && req.get_param_value("force") == "true";
  json base = existing;
  json conflicts = json::array();
  std::string conflict_text;
  for (const auto& path : leaves) {
    const json* current = ValueAt(existing, path);
    const json* wanted = ValueAt(to_merge, path);
    if (current == nullptr || wanted == nullptr || *current == *wanted) continue;
    for (auto& e : base["metadata"]["managedFields"]) {
      if (e.value("manager", "") == manager && e.value("operation", "") == "Apply") continue;
      if (!e.contains("fieldsV1") || !FieldsContain(e["fieldsV1"], path)) continue;
      if (force) {
        EraseFieldPath(&e["fieldsV1"], path);
        continue;
      }
      std::string field;
      for (const auto& k : path) field += "." + k;
      std::string owner = e.value("manager", "");
      conflicts.push_back({{"reason", "FieldManagerConflict"},
                           {"message", "conflict with \"" + owner + "\" using " + e.value("apiVersion", "")},
                           {"field", field}});
      conflict_text += "\n- conflict with \"" + owner + "\" using " + e.value("apiVersion", "") + ": " + field;
    }
  }
  if (!conflicts.empty()) {
    json details = Details(t, name);
    details["causes"] = conflicts;
    return {409, StatusJson(409, "Conflict",
                            "Apply failed with " + std::to_string(conflicts.size()) + " conflict" +
                                (conflicts.size() > 1 ? "s" : "") + ":" + conflict_text +
                                "\n(re-apply with force=true to take ownership of these fields)",
                            details),
            {}};
  }
  PruneUnapplied(merged, old_fields, new_fields, others);
  return Commit(req, t, ns, name, std::move(merged), &base, manager, "Apply", applied);
}

ApiServer::HttpResult ApiServer::Delete(const httplib::Request& req, const ResourceType& t,
                                        const std::string& ns, const std::string& name) {
  auto it = objects_.find(Key(t, ns, name));
  if (it == objects_.end()) {
    return {404, StatusJson(404, "NotFound", Qualified(t) + " \"" + name + "\" not found", Details(t, name)), {}};
  }
  std::string uid, rv;
  if (!req.body.empty()) {
    json opts = json::parse(req.body, nullptr, false);
    if (opts.is_discarded() || !opts.is_object()) {
      return {400, StatusJson(400, "BadRequest", "the DeleteOptions body of DELETE " + req.path + " is not a JSON object"), {}};
    }
    if (opts.contains("preconditions") && opts["preconditions"].is_object()) {
      const json& pre = opts["preconditions"];
      if (pre.contains("uid") && pre["uid"].is_string()) uid = pre["uid"].get<std::string>();
      if (pre.contains("resourceVersion") && pre["resourceVersion"].is_string()) {
        rv = pre["resourceVersion"].get<std::string>();
      }
    }
  }
  json conflict;
  if (!CheckPreconditions(it->second, uid, "", Qualified(t), name, &conflict)) return {409, conflict, {}};
  if (!rv.empty() && rv != it->second["metadata"].value("resourceVersion", "")) {
    conflict = StatusJson(409, "Conflict",
                          "Operation cannot be fulfilled on " + Qualified(t) + " \"" + name +
                              "\": Precondition failed: ResourceVersion in precondition: " + rv +
                              ", ResourceVersion in object meta: " + it->second["metadata"].value("resourceVersion", ""),
                          Details(t, name));
    return {409, conflict, {}};
  }
  json obj = it->second;
  if (req.has_param("dryRun")) return {200, Present(t, obj), {}};
  objects_.erase(it);
  std::string new_rv = NextResourceVersion();
  if (t.resource == "namespaces") {
    // Namespace finalization happens at once here: everything inside goes with it.
    for (auto o = objects_.begin(); o != objects_.end();) {
      const json& md = o->second["metadata"];
      if (md.value("namespace", "") == name) {
        o = objects_.erase(o);
      } else {
        ++o;
      }
    }
    obj["metadata"]["deletionTimestamp"] = NowRfc3339();
    obj["metadata"]["resourceVersion"] = new_rv;
    obj["status"]["phase"] = "Terminating";
    return {200, Present(t, obj), {}};
  }
  json details = Details(t, name);
  details["uid"] = obj["metadata"].value("uid", "");
  return {200,
          {{"kind", "Status"}, {"apiVersion", "v1"}, {"metadata", json::object()}, {"status", "Success"},
           {"details", details}},
          {}};
}

ApiServer::HttpResult ApiServer::CreateToken(const httplib::Request& req, const std::string& ns,
                                             const std::string& name) {
  const ResourceType* sa_type = FindType("", "v1", "serviceaccounts");
  auto it = objects_.find(Key(*sa_type, ns, name));
  if (it == objects_.end()) {
    return {404, StatusJson(404, "NotFound", "serviceaccounts \"" + name + "\" not found",
                            {{"name", name}, {"kind", "serviceaccounts"}}),
            {}};
  }
  json body = req.body.empty() ? json::object() : json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    return {400, StatusJson(400, "BadRequest", "the TokenRequest body is not a JSON object"), {}};
  }
  json spec = body.contains("spec") && body["spec"].is_object() ? body["spec"] : json::object();
  long long expiration = 3600;
  if (spec.contains("expirationSeconds")) {
    if (!spec["expirationSeconds"].is_number_integer()) {
      return {400, StatusJson(400, "BadRequest", "spec.expirationSeconds must be an integer"), {}};
    }
    expiration = spec["expirationSeconds"].get<long long>();
  }
  auto invalid = [&](const std::string& field, const std::string& message) {
    json details = {{"name", name}, {"group", "authentication.k8s.io"}, {"kind", "TokenRequest"},
                    {"causes", {{{"reason", "FieldValueInvalid"}, {"message", message}, {"field", field}}}}};
    return HttpResult{422, StatusJson(422, "Invalid",
                                      "TokenRequest.authentication.k8s.io \"" + name + "\" is invalid: " + field + ": " + message,
                                      details),
                      {}};
  };
  if (expiration < 600) {
    return invalid("spec.expirationSeconds",
                   "Invalid value: " + std::to_string(expiration) + ": may not specify a duration less than 10 minutes");
  }
  if (expiration > (1LL << 32)) {
    return invalid("spec.expirationSeconds",
                   "Invalid value: " + std::to_string(expiration) + ": may not specify a duration larger than 2^32 seconds");
  }
  if (options_.token_lifetime_cap > 0 && expiration > options_.token_lifetime_cap) {
    expiration = options_.token_lifetime_cap;
  }
  json audiences = spec.contains("audiences") && spec["audiences"].is_array() && !spec["audiences"].empty()
                       ? spec["audiences"]
                       : json::array({kDefaultAudience});
  for (const auto& a : audiences) {
    if (!a.is_string() || a.get<std::string>().empty()) {
      return invalid("spec.audiences", "Invalid value: audiences must be non-empty strings");
    }
  }
  std::time_t now = std::time(nullptr);
  std::time_t exp = now + static_cast<std::time_t>(expiration);
  json header = {{"alg", "HS256"}, {"typ", "JWT"}, {"kid", "onboard-sandbox"}};
  json payload = {{"iss", kDefaultAudience},
                  {"sub", "system:serviceaccount:" + ns + ":" + name},
                  {"aud", audiences},
                  {"exp", static_cast<long long>(exp)},
                  {"iat", static_cast<long long>(now)},
                  {"nbf", static_cast<long long>(now)},
                  {"jti", RandomUuid()},
                  {"kubernetes.io",
                   {{"namespace", ns},
                    {"serviceaccount", {{"name", name}, {"uid", it->second["metadata"].value("uid", "")}}}}}};
  std::string signing_input = Base64Url(header.dump()) + "." + Base64Url(payload.dump());
  std::string jwt = signing_input + "." + Base64Url(HmacSha256(jwt_key_, signing_input));
  spec["audiences"] = audiences;
  spec["expirationSeconds"] = expiration;
  if (!spec.contains("boundObjectRef")) spec["boundObjectRef"] = nullptr;
  json out = {{"kind", "TokenRequest"},
              {"apiVersion", "authentication.k8s.io/v1"},
              {"metadata", {{"name", name}, {"namespace", ns}, {"creationTimestamp", nullptr}}},
              {"spec", spec},
              {"status", {{"token", jwt}, {"expirationTimestamp", TimeRfc3339(exp)}}}};
  return {201, out, {}};
}

}  // namespace onboard::sandbox
