// State JSON codec (DESIGN §4, schemas/state.schema.json), lineage UUIDs and LockInfo.
// The functions are declared in engine/state.h and defined here, in onboard_state, because
// they need OpenSSL's RNG and the engine stays free of I/O.
#include <fcntl.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <cstdio>
#include <random>
#include <set>
#include <string>

#include "engine/clock.h"
#include "engine/state.h"

namespace onboard {
namespace {

using nlohmann::json;

const char* OriginName(Origin o) { return o == Origin::kAdopted ? "adopted" : "created"; }

const char* JsonTypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

// Collects the first structural problem of a state document, with its JSON path.
class Decoder {
 public:
  explicit Decoder(const std::string& source) : source_(source) {}

  Status Fail(const std::string& path, const std::string& what) const {
    return Status::Error("state file " + source_ + ": " + path + ": " + what +
                         "; fix the file or restore it from its .backup copy");
  }

  // Fails on keys outside `allowed` (a newer or hand-edited file we cannot represent).
  Status CheckKeys(const json& obj, const std::string& path,
                   std::initializer_list<const char*> allowed) const {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool known = false;
      for (const char* k : allowed) known = known || it.key() == k;
      if (!known) return Fail(path + "." + it.key(), "unknown field");
    }
    return Status::Ok();
  }

  Status String(const json& obj, const std::string& path, const char* key, bool non_empty,
                std::string* out) const {
    auto it = obj.find(key);
    std::string p = path + "." + key;
    if (it == obj.end()) return Fail(p, "missing (a string is required)");
    if (!it->is_string()) return Fail(p, std::string("must be a string, got ") + JsonTypeName(*it));
    *out = it->get<std::string>();
    if (non_empty && out->empty()) return Fail(p, "must not be empty");
    return Status::Ok();
  }

  Status Integer(const json& obj, const std::string& path, const char* key, int64_t* out) const {
    auto it = obj.find(key);
    std::string p = path + "." + key;
    if (it == obj.end()) return Fail(p, "missing (an integer is required)");
    if (!it->is_number_integer())
      return Fail(p, std::string("must be an integer, got ") + JsonTypeName(*it));
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return Fail(p, "is too large");
    *out = it->get<int64_t>();
    return Status::Ok();
  }

  Status Object(const json& obj, const std::string& path, const char* key, json* out) const {
    auto it = obj.find(key);
    std::string p = path + "." + key;
    if (it == obj.end()) return Fail(p, "missing (an object is required)");
    if (!it->is_object()) return Fail(p, std::string("must be an object, got ") + JsonTypeName(*it));
    if (steal_)
      *out = std::move(const_cast<json&>(*it));  // the caller gave up the document (DecodeState(json&&))
    else
      *out = *it;
    return Status::Ok();
  }

  Status Intent(const json& j, const std::string& path, onboard::Intent* out) const {
    if (!j.is_object()) return Fail(path, std::string("must be an object, got ") + JsonTypeName(j));
    if (Status s = CheckKeys(j, path, {"action", "run_id", "started"}); !s) return s;
    if (Status s = String(j, path, "action", true, &out->action); !s) return s;
    if (out->action != "create" && out->action != "update" && out->action != "replace" &&
        out->action != "delete")
      return Fail(path + ".action", "must be create, update, replace or delete, got \"" +
                                        out->action + "\"");
    if (Status s = String(j, path, "run_id", false, &out->run_id); !s) return s;
    std::string started;
    if (Status s = String(j, path, "started", true, &started); !s) return s;
    if (!ParseTime(started, &out->started))
      return Fail(path + ".started",
                  "\"" + started + "\" is not an RFC 3339 UTC time like 2026-11-26T03:22:27Z");
    return Status::Ok();
  }

  Status Resource(const json& j, const std::string& path, ResourceState* out) const {
    if (!j.is_object()) return Fail(path, std::string("must be an object, got ") + JsonTypeName(j));
    if (Status s = CheckKeys(j, path, {"address", "type", "name", "workload", "origin",
                                       "attributes", "observed", "intent"});
        !s)
      return s;
    std::string address, type, name, origin;
    if (Status s = String(j, path, "address", true, &address); !s) return s;
    Result<Address> parsed = Address::Parse(address);
    if (!parsed) return Fail(path + ".address", parsed.error());
    if (IsCheck(parsed->type))
      return Fail(path + ".address", "\"" + address + "\" is a read-only check; checks are never "
                                     "recorded in state");
    if (Status s = String(j, path, "type", true, &type); !s) return s;
    if (type != TypeName(parsed->type))
      return Fail(path + ".type", "\"" + type + "\" does not match the address \"" + address +
                                      "\" (type " + TypeName(parsed->type) + ")");
    if (Status s = String(j, path, "name", true, &name); !s) return s;
    if (name != parsed->name)
      return Fail(path + ".name", "\"" + name + "\" does not match the address \"" + address +
                                      "\" (name " + parsed->name + ")");
    out->address = *parsed;
    if (Status s = String(j, path, "workload", false, &out->workload); !s) return s;
    if (Status s = String(j, path, "origin", true, &origin); !s) return s;
    if (origin == "created") {
      out->origin = Origin::kCreated;
    } else if (origin == "adopted") {
      out->origin = Origin::kAdopted;
    } else {
      return Fail(path + ".origin", "must be \"created\" or \"adopted\", got \"" + origin + "\"");
    }
    if (Status s = Object(j, path, "attributes", &out->attributes); !s) return s;
    if (Status s = Object(j, path, "observed", &out->observed); !s) return s;
    auto it = j.find("intent");
    if (it != j.end()) {
      onboard::Intent intent;
      if (Status s = Intent(*it, path + ".intent", &intent); !s) return s;
      out->intent = intent;
    }
    return Status::Ok();
  }

  Result<State> Decode(const json& j) const {
    if (!j.is_object())
      return Fail("$", std::string("a state file must be a JSON object, got ") + JsonTypeName(j));
    // The version first: a newer file may be shaped differently in every other respect.
    auto v = j.find("format_version");
    if (v == j.end()) return Fail("$.format_version", "missing; this is not an onboard state file");
    if (!v->is_number_integer())
      return Fail("$.format_version", std::string("must be an integer, got ") + JsonTypeName(*v));
    if (v->is_number_unsigned() ? v->get<uint64_t>() > static_cast<uint64_t>(kStateFormatVersion)
                                : v->get<int64_t>() > kStateFormatVersion) {
      return Status::Error("state file " + source_ + " was written by a newer onboard (format_version " +
                           v->dump() + "); this onboard reads format_version " +
                           std::to_string(kStateFormatVersion) + ": upgrade onboard");
    }
    if (v->get<int64_t>() < 1)
      return Fail("$.format_version", "unsupported value " + v->dump() +
                                          " (this onboard reads format_version " +
                                          std::to_string(kStateFormatVersion) + ")");
    if (Status s = CheckKeys(j, "$", {"format_version", "lineage", "serial", "resources"}); !s)
      return s;
    State st;
    st.format_version = v->get<int>();
    if (Status s = String(j, "$", "lineage", true, &st.lineage); !s) return s;
    if (Status s = Integer(j, "$", "serial", &st.serial); !s) return s;
    if (st.serial < 0) return Fail("$.serial", "must not be negative, got " + std::to_string(st.serial));
    auto res = j.find("resources");
    if (res == j.end()) return Fail("$.resources", "missing (an array is required)");
    if (!res->is_array())
      return Fail("$.resources", std::string("must be an array, got ") + JsonTypeName(*res));
    for (size_t i = 0; i < res->size(); ++i) {
      std::string path = "$.resources[" + std::to_string(i) + "]";
      ResourceState rs;
      if (Status s = Resource((*res)[i], path, &rs); !s) return s;
      std::string key = rs.address.ToString();
      if (st.resources.count(key))
        return Fail(path + ".address", "\"" + key + "\" appears more than once");
      st.resources.emplace(key, std::move(rs));
    }
    return st;
  }

 bool steal_ = false;

 private:
  std::string source_;
};

}  // namespace

json EncodeState(const State& s) {
  json resources = json::array();
  // std::map iterates in key order, and keys are the addresses: the array is sorted by address.
  for (const auto& [key, rs] : s.resources) {
    json r = {
        {"address", rs.address.ToString()},
        {"type", TypeName(rs.address.type)},
        {"name", rs.address.name},
        {"workload", rs.workload},
        {"origin", OriginName(rs.origin)},
        {"attributes", rs.attributes.is_null() ? json::object() : rs.attributes},
        {"observed", rs.observed.is_null() ? json::object() : rs.observed},
    };
    if (rs.intent) {
      r["intent"] = {{"action", rs.intent->action},
                     {"run_id", rs.intent->run_id},
                     {"started", FormatTime(rs.intent->started)}};
    }
    resources.push_back(std::move(r));
  }
  return json{{"format_version", s.format_version},
              {"lineage", s.lineage},
              {"serial", s.serial},
              {"resources", std::move(resources)}};
}

Result<State> DecodeState(const nlohmann::json& j, const std::string& source) {
  try {
    return Decoder(source).Decode(j);
  } catch (const std::exception& e) {  // defensive: nothing above should throw
    return Result<State>::Error("state file " + source + ": " + e.what());
  }
}

Result<State> DecodeState(nlohmann::json&& j, const std::string& source) {
  try {
    Decoder d(source);
    d.steal_ = true;  // move attributes/observed out of the parsed document instead of copying
    return d.Decode(j);
  } catch (const std::exception& e) {
    return Result<State>::Error("state file " + source + ": " + e.what());
  }
}

std::string NewLineage() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) {
    // OpenSSL's RNG failing is exceptional; the kernel's is the next best source.
    bool filled = false;
    int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      filled = ::read(fd, b, sizeof b) == static_cast<ssize_t>(sizeof b);
      ::close(fd);
    }
    if (!filled) {
      std::random_device rd;
      for (auto& c : b) c = static_cast<unsigned char>(rd());
    }
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

// Terraform's lock-info field names (so http backends interoperate) plus onboard's Host and Pid.
nlohmann::json LockInfo::ToJson() const {
  return json{{"ID", id},           {"Operation", operation},
              {"Info", ""},         {"Who", who},
              {"Version", version}, {"Created", FormatTime(created)},
              {"Path", path},       {"Host", host},
              {"Pid", pid}};
}

namespace {

std::string StringField(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

LockInfo LockInfo::FromJson(const nlohmann::json& j) {
  LockInfo info;
  if (!j.is_object()) return info;
  info.id = StringField(j, "ID");
  info.operation = StringField(j, "Operation");
  info.who = StringField(j, "Who");
  info.version = StringField(j, "Version");
  info.path = StringField(j, "Path");
  info.host = StringField(j, "Host");
  if (info.host.empty()) {
    auto at = info.who.rfind('@');
    if (at != std::string::npos) info.host = info.who.substr(at + 1);
  }
  auto pid = j.find("Pid");
  if (pid != j.end() && pid->is_number_integer()) info.pid = pid->get<int>();
  int64_t created = 0;
  // ParseTime also takes Terraform's fractional seconds and offsets.
  if (ParseTime(StringField(j, "Created"), &created)) info.created = created;
  return info;
}

std::string LockInfo::Describe() const {
  return "state is locked by " + (who.empty() ? std::string("an unknown user") : who) + " pid " +
         std::to_string(pid) + " since " + FormatTime(created) + " for " +
         (operation.empty() ? std::string("an unknown operation") : operation) + " (lock ID " +
         id + ")";
}

}  // namespace onboard
