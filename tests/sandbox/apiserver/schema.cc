#include "tests/sandbox/apiserver/schema.h"

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <regex>
#include <sstream>

namespace onboard::sandbox {
namespace {

using nlohmann::json;

json ScalarToJson(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted: always a string
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  static const std::regex kInt("[-+]?[0-9]+");
  static const std::regex kFloat("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  if (std::regex_match(s, kInt)) {
    try {
      if (s[0] == '-') return std::stoll(s);
      return std::stoull(s[0] == '+' ? s.substr(1) : s);
    } catch (...) {
      return s;
    }
  }
  if (std::regex_match(s, kFloat)) {
    try {
      return std::stod(s);
    } catch (...) {
      return s;
    }
  }
  return s;
}

json NodeToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return ScalarToJson(node);
    case YAML::NodeType::Sequence: {
      json arr = json::array();
      for (const auto& item : node) arr.push_back(NodeToJson(item));
      return arr;
    }
    case YAML::NodeType::Map: {
      json obj = json::object();
      for (const auto& kv : node) obj[kv.first.as<std::string>()] = NodeToJson(kv.second);
      return obj;
    }
  }
  return nullptr;
}

// Removes what valijson must not see (Kubernetes extensions, formats it would enforce
// differently) and returns a draft-4 compatible copy.
json Sanitize(const json& schema) {
  if (schema.is_array()) {
    json out = json::array();
    for (const auto& item : schema) out.push_back(Sanitize(item));
    return out;
  }
  if (!schema.is_object()) return schema;
  json out = json::object();
  for (auto it = schema.begin(); it != schema.end(); ++it) {
    const std::string& key = it.key();
    if (key.rfind("x-kubernetes-", 0) == 0 || key == "format" || key == "description" ||
        key == "nullable" || key == "default" || key == "example") {
      continue;
    }
    if (key == "properties" || key == "patternProperties" || key == "definitions") {
      json props = json::object();
      for (auto p = it.value().begin(); p != it.value().end(); ++p) props[p.key()] = Sanitize(p.value());
      out[key] = props;
    } else {
      out[key] = Sanitize(it.value());
    }
  }
  return out;
}

std::string JoinPath(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

bool PreservesUnknown(const json& schema) {
  auto it = schema.find("x-kubernetes-preserve-unknown-fields");
  return it != schema.end() && it->is_boolean() && it->get<bool>();
}

void FindUnknownFields(const json& value, const json& schema, const std::string& path,
                       std::vector<Cause>* causes) {
  if (!schema.is_object()) return;
  if (value.is_object()) {
    auto props = schema.find("properties");
    auto additional = schema.find("additionalProperties");
    bool preserve = PreservesUnknown(schema);
    for (auto it = value.begin(); it != value.end(); ++it) {
      std::string child = JoinPath(path, it.key());
      if (props != schema.end() && props->contains(it.key())) {
        FindUnknownFields(it.value(), (*props)[it.key()], child, causes);
      } else if (additional != schema.end() && additional->is_object()) {
        FindUnknownFields(it.value(), *additional, child, causes);
      } else if (preserve || (additional != schema.end() && additional->is_boolean() &&
                              additional->get<bool>())) {
        continue;
      } else if (props != schema.end() || additional != schema.end()) {
        causes->push_back({"FieldValueInvalid", child,
                           "unknown field \"" + child + "\" (not declared in the CRD schema)"});
      }
    }
  } else if (value.is_array()) {
    auto items = schema.find("items");
    if (items == schema.end()) return;
    for (size_t i = 0; i < value.size(); ++i) {
      FindUnknownFields(value[i], *items, path + "[" + std::to_string(i) + "]", causes);
    }
  }
}

std::string ContextToField(const std::vector<std::string>& context) {
  std::string out;
  for (const auto& part : context) {
    if (part == "<root>") continue;
    std::string key = part;
    if (key.size() >= 2 && key.front() == '[' && key.back() == ']') key = key.substr(1, key.size() - 2);
    if (!key.empty() && key.front() == '"' && key.back() == '"' && key.size() >= 2) {
      key = key.substr(1, key.size() - 2);
    }
    bool numeric = !key.empty() && key.find_first_not_of("0123456789") == std::string::npos;
    if (numeric) {
      out += "[" + key + "]";
    } else {
      out = JoinPath(out, key);
    }
  }
  return out;
}

}  // namespace

bool ParseYamlOrJson(const std::string& text, nlohmann::json* out, std::string* error) {
  try {
    YAML::Node node = YAML::Load(text);
    *out = NodeToJson(node);
    return true;
  } catch (const YAML::Exception& e) {
    *error = "line " + std::to_string(e.mark.line + 1) + ", column " +
             std::to_string(e.mark.column + 1) + ": " + e.msg;
    return false;
  }
}

CrdSchema::CrdSchema() = default;
CrdSchema::~CrdSchema() = default;
CrdSchema::CrdSchema(CrdSchema&&) noexcept = default;
CrdSchema& CrdSchema::operator=(CrdSchema&&) noexcept = default;

bool CrdSchema::Load(const std::string& path, const std::string& version, CrdSchema* out,
                     std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot read CRD file " + path + " (pass --schemas DIR pointing at the istio-crds folder)";
    return false;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  json crd;
  std::string parse_error;
  if (!ParseYamlOrJson(buf.str(), &crd, &parse_error)) {
    *error = path + ": " + parse_error;
    return false;
  }
  const json* found = nullptr;
  if (crd.contains("spec") && crd["spec"].contains("versions") && crd["spec"]["versions"].is_array()) {
    for (const auto& v : crd["spec"]["versions"]) {
      if (v.value("name", "") == version && v.contains("schema") &&
          v["schema"].contains("openAPIV3Schema")) {
        found = &v["schema"]["openAPIV3Schema"];
      }
    }
  }
  if (found == nullptr) {
    *error = path + ": no spec.versions[name=" + version + "].schema.openAPIV3Schema in this CRD";
    return false;
  }
  CrdSchema result;
  result.raw_ = *found;
  try {
    json sanitized = Sanitize(*found);
    result.compiled_ = std::make_unique<valijson::Schema>();
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft4);
    valijson::adapters::NlohmannJsonAdapter adapter(sanitized);
    parser.populateSchema(adapter, *result.compiled_);
  } catch (const std::exception& e) {
    *error = path + ": version " + version + ": schema not usable by valijson: " + e.what();
    return false;
  }
  *out = std::move(result);
  return true;
}

std::vector<Cause> CrdSchema::Validate(const nlohmann::json& object) const {
  std::vector<Cause> causes;
  // apiVersion, kind and metadata are validated by the server itself, not by the CRD schema.
  json body = object;
  body.erase("apiVersion");
  body.erase("kind");
  body.erase("metadata");
  FindUnknownFields(body, raw_, "", &causes);
  if (!compiled_) return causes;
  valijson::Validator validator(valijson::Validator::kStrongTypes);
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(body);
  try {
    validator.validate(*compiled_, target, &results);
  } catch (const std::exception& e) {
    causes.push_back({"InternalError", "", std::string("schema validation failed: ") + e.what()});
    return causes;
  }
  std::vector<valijson::ValidationResults::Error> errors(results.begin(), results.end());
  // Keep only the most specific errors: drop one whose path is a strict prefix of another's.
  for (size_t i = 0; i < errors.size(); ++i) {
    bool has_deeper = false;
    for (size_t j = 0; j < errors.size() && !has_deeper; ++j) {
      if (i == j || errors[j].context.size() <= errors[i].context.size()) continue;
      has_deeper = std::equal(errors[i].context.begin(), errors[i].context.end(),
                              errors[j].context.begin());
    }
    if (has_deeper) continue;
    std::string field = ContextToField(errors[i].context);
    bool duplicate = false;
    for (const auto& c : causes) duplicate |= (c.field == field && c.message == errors[i].description);
    if (!duplicate) causes.push_back({"FieldValueInvalid", field, errors[i].description});
  }
  return causes;
}

std::vector<Cause> WorkloadEntryRules(const nlohmann::json& object) {
  std::vector<Cause> causes;
  if (!object.contains("spec") || !object["spec"].is_object()) {
    causes.push_back({"FieldValueRequired", "spec", "Required value: spec is required"});
    return causes;
  }
  const json& spec = object["spec"];
  bool has_address = spec.contains("address") && !spec["address"].is_null();
  bool has_network = spec.contains("network") && !spec["network"].is_null();
  if (!has_address && !has_network) {
    causes.push_back({"FieldValueInvalid", "spec", "Invalid value: \"object\": Address is required"});
  }
  std::string address = has_address && spec["address"].is_string() ? spec["address"].get<std::string>() : "";
  bool uds = address.rfind("unix://", 0) == 0;
  if (uds) {
    if (address.size() < 8 || (address[7] != '/' && address[7] != '@')) {
      causes.push_back({"FieldValueInvalid", "spec.address",
                        "Invalid value: \"string\": UDS must be an absolute path or abstract socket"});
    }
    if (address.back() == '/') {
      causes.push_back({"FieldValueInvalid", "spec.address", "Invalid value: \"string\": UDS may not be a dir"});
    }
    if (spec.contains("ports")) {
      causes.push_back({"FieldValueInvalid", "spec", "Invalid value: \"object\": UDS may not include ports"});
    }
  }
  if (spec.contains("ports") && spec["ports"].is_object()) {
    static const std::regex kPortName("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$");
    for (auto it = spec["ports"].begin(); it != spec["ports"].end(); ++it) {
      if (it.key().size() >= 63 || !std::regex_match(it.key(), kPortName)) {
        causes.push_back({"FieldValueInvalid", "spec.ports",
                          "Invalid value: \"object\": port name must be valid (\"" + it.key() + "\")"});
      }
      if (it.value().is_number_integer()) {
        long long port = it.value().get<long long>();
        if (port <= 0 || port > 65535) {
          causes.push_back({"FieldValueInvalid", "spec.ports." + it.key(),
                            "Invalid value: \"integer\": port must be between 1-65535"});
        }
      }
    }
  }
  return causes;
}

}  // namespace onboard::sandbox
