// CRD structural-schema validation: valijson for the JSON-Schema keywords, a small table of
// evaluators for the CEL rules (x-kubernetes-validations) Istio's WorkloadEntry and Sidecar use.
// valijson reports schema problems by exception; they are caught here and never leave this file.
// VALIJSON_USE_EXCEPTIONS=1 is set for the whole project (CMakeLists.txt): valijson is header-only
// and every translation unit must see the same setting.

#include "engine/crd_schema.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <functional>
#include <limits>
#include <regex>

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace onboard {
namespace {

std::string MarkOf(const YAML::Node& node, const std::string& where) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return where;
  return where + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

bool AllOf(const std::string& s, size_t from, const char* set) {
  if (from >= s.size()) return false;
  return s.find_first_not_of(set, from) == std::string::npos;
}

// A plain (unquoted, untagged) scalar, resolved by the YAML 1.2 core schema.
nlohmann::json PlainScalar(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;

  size_t start = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  const bool negative = s[0] == '-';
  if (AllOf(s, start, "0123456789")) {
    errno = 0;
    if (negative) {
      long long v = std::strtoll(s.c_str(), nullptr, 10);
      if (errno == 0) return v;
    } else {
      unsigned long long v = std::strtoull(s.c_str() + start, nullptr, 10);
      if (errno == 0) {
        if (v <= static_cast<unsigned long long>(std::numeric_limits<long long>::max())) {
          return static_cast<long long>(v);
        }
        return v;
      }
    }
    return std::strtod(s.c_str(), nullptr);  // out of 64-bit range: keep it as a number
  }
  if (s.size() > 2 && s[0] == '0' && s[1] == 'x' && AllOf(s, 2, "0123456789abcdefABCDEF")) {
    errno = 0;
    unsigned long long v = std::strtoull(s.c_str() + 2, nullptr, 16);
    if (errno == 0) return v;
  }
  if (s.size() > 2 && s[0] == '0' && s[1] == 'o' && AllOf(s, 2, "01234567")) {
    errno = 0;
    unsigned long long v = std::strtoull(s.c_str() + 2, nullptr, 8);
    if (errno == 0) return v;
  }
  const std::string rest = s.substr(start);
  if (rest == ".inf" || rest == ".Inf" || rest == ".INF") {
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") return std::numeric_limits<double>::quiet_NaN();
  // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
  {
    size_t i = start;
    size_t int_digits = 0, frac_digits = 0;
    while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i, ++int_digits;
    bool ok = true;
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i, ++frac_digits;
    }
    if (int_digits == 0 && frac_digits == 0) ok = false;
    if (ok && i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      ++i;
      if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
      size_t exp_digits = 0;
      while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exp_digits;
      if (exp_digits == 0) ok = false;
    }
    if (ok && i == s.size()) return std::strtod(s.c_str(), nullptr);
  }
  return s;
}

Result<nlohmann::json> Convert(const YAML::Node& node, const std::string& where) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nlohmann::json(nullptr);
    case YAML::NodeType::Scalar: {
      const std::string& tag = node.Tag();
      const std::string& text = node.Scalar();
      if (tag == "!" || tag == "tag:yaml.org,2002:str") return nlohmann::json(text);
      if (tag == "?" || tag.empty()) return PlainScalar(text);
      nlohmann::json v = PlainScalar(text);
      if (tag == "tag:yaml.org,2002:int" && !v.is_number_integer()) {
        return Result<nlohmann::json>::Error(MarkOf(node, where) + ": \"" + text +
                                             "\" is tagged !!int but is not an integer");
      }
      if (tag == "tag:yaml.org,2002:float" && !v.is_number()) {
        return Result<nlohmann::json>::Error(MarkOf(node, where) + ": \"" + text +
                                             "\" is tagged !!float but is not a number");
      }
      if (tag == "tag:yaml.org,2002:bool" && !v.is_boolean()) {
        return Result<nlohmann::json>::Error(MarkOf(node, where) + ": \"" + text +
                                             "\" is tagged !!bool but is not true/false");
      }
      if (tag == "tag:yaml.org,2002:null" && !v.is_null()) {
        return Result<nlohmann::json>::Error(MarkOf(node, where) + ": \"" + text +
                                             "\" is tagged !!null but is not null");
      }
      return v;  // other (custom) tags: resolved like a plain scalar
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& item : node) {
        auto v = Convert(item, where);
        if (!v.ok()) return v;
        arr.push_back(std::move(v.value()));
      }
      return arr;
    }
    case YAML::NodeType::Map: {
      nlohmann::json obj = nlohmann::json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          return Result<nlohmann::json>::Error(MarkOf(kv.first, where) +
                                               ": a mapping key must be a scalar, not a "
                                               "sequence or mapping; JSON cannot hold it");
        }
        auto v = Convert(kv.second, where);
        if (!v.ok()) return v;
        obj[kv.first.Scalar()] = std::move(v.value());
      }
      return obj;
    }
  }
  return nlohmann::json(nullptr);
}

// ---- CEL rules -------------------------------------------------------------------------------

std::string CollapseSpaces(const std::string& s) {
  std::string out;
  bool space = false;
  for (char ch : s) {
    if (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += ch;
  }
  return out;
}

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

using RuleFn = std::function<bool(const nlohmann::json& self)>;

const std::vector<std::pair<std::string, RuleFn>>& KnownRules() {
  static const std::vector<std::pair<std::string, RuleFn>> rules = {
      {"has(self.address) || has(self.network)",
       [](const nlohmann::json& self) {
         return self.is_object() && (self.contains("address") || self.contains("network"));
       }},
      {"(has(self.address) ? self.address : \"\").startsWith(\"unix://\") ? !has(self.ports) : true",
       [](const nlohmann::json& self) {
         if (!self.is_object()) return true;
         auto a = self.find("address");
         bool uds = a != self.end() && a->is_string() && StartsWith(a->get<std::string>(), "unix://");
         return !uds || !self.contains("ports");
       }},
      {"self.startsWith(\"unix://\") ? (self.substring(7, 8) == \"/\" || self.substring(7, 8) == "
       "\"@\") : true",
       [](const nlohmann::json& self) {
         if (!self.is_string()) return true;
         const std::string s = self.get<std::string>();
         if (!StartsWith(s, "unix://")) return true;
         return s.size() > 7 && (s[7] == '/' || s[7] == '@');
       }},
      {"self.startsWith(\"unix://\") ? !self.endsWith(\"/\") : true",
       [](const nlohmann::json& self) {
         if (!self.is_string()) return true;
         const std::string s = self.get<std::string>();
         return !StartsWith(s, "unix://") || s.empty() || s.back() != '/';
       }},
      {"0 < self && self <= 65535",
       [](const nlohmann::json& self) {
         if (self.is_number_unsigned()) return self.get<uint64_t>() > 0 && self.get<uint64_t>() <= 65535;
         if (self.is_number_integer()) return self.get<int64_t>() > 0 && self.get<int64_t>() <= 65535;
         return true;  // a type error, reported by the schema
       }},
      {"self.all(key, size(key) < 63 && key.matches(\"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$\"))",
       [](const nlohmann::json& self) {
         static const std::regex name("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$");
         if (!self.is_object()) return true;
         for (auto it = self.begin(); it != self.end(); ++it) {
           if (it.key().size() >= 63 || !std::regex_match(it.key(), name)) return false;
         }
         return true;
       }},
      {"!self.contains(\"*\")",
       [](const nlohmann::json& self) {
         return !self.is_string() || self.get<std::string>().find('*') == std::string::npos;
       }},
  };
  return rules;
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

void CheckRules(const nlohmann::json& schema, const nlohmann::json& value, const std::string& path,
                std::vector<std::string>* errors) {
  if (!schema.is_object()) return;
  auto rules = schema.find("x-kubernetes-validations");
  if (rules != schema.end() && rules->is_array()) {
    for (const auto& rule : *rules) {
      if (!rule.is_object() || !rule.contains("rule") || !rule["rule"].is_string()) continue;
      const std::string text = CollapseSpaces(rule["rule"].get<std::string>());
      for (const auto& [known, fn] : KnownRules()) {
        if (known != text) continue;
        if (!fn(value)) {
          std::string message = rule.value("message", std::string("failed rule: ") + text);
          errors->push_back((path.empty() ? "<root>" : path) + ": " + message);
        }
        break;
      }
    }
  }
  if (value.is_object()) {
    const nlohmann::json* props = nullptr;
    auto p = schema.find("properties");
    if (p != schema.end() && p->is_object()) props = &*p;
    auto ap = schema.find("additionalProperties");
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (props && props->contains(it.key())) {
        CheckRules((*props)[it.key()], it.value(), Join(path, it.key()), errors);
      } else if (ap != schema.end() && ap->is_object()) {
        CheckRules(*ap, it.value(), Join(path, it.key()), errors);
      }
    }
  } else if (value.is_array()) {
    auto items = schema.find("items");
    if (items != schema.end() && items->is_object()) {
      for (size_t i = 0; i < value.size(); ++i) {
        CheckRules(*items, value[i], path + "[" + std::to_string(i) + "]", errors);
      }
    }
  }
}

// valijson's context ["<root>", "[spec]", "[ports]", "[http]"] -> "spec.ports.http".
std::string ContextPath(const std::vector<std::string>& context) {
  std::string path;
  for (const std::string& part : context) {
    if (part == "<root>") continue;
    std::string name = part;
    if (name.size() >= 2 && name.front() == '[' && name.back() == ']') {
      name = name.substr(1, name.size() - 2);
    }
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
      path += "[" + name + "]";
    } else {
      path = Join(path, name);
    }
  }
  return path.empty() ? "<root>" : path;
}

void CollectUnknown(const nlohmann::json& schema, const nlohmann::json& value,
                    const std::string& path, bool root, std::vector<std::string>* errors) {
  if (!schema.is_object()) return;
  if (schema.value("x-kubernetes-preserve-unknown-fields", false)) return;
  if (value.is_object()) {
    auto props = schema.find("properties");
    auto ap = schema.find("additionalProperties");
    const bool has_props = props != schema.end() && props->is_object();
    const bool open = ap != schema.end() && (ap->is_object() || (ap->is_boolean() && ap->get<bool>()));
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string child = Join(path, it.key());
      if (root && (it.key() == "apiVersion" || it.key() == "kind" || it.key() == "metadata")) {
        continue;  // ObjectMeta and the type fields are the API server's, not the CRD's
      }
      if (has_props && props->contains(it.key())) {
        CollectUnknown((*props)[it.key()], it.value(), child, false, errors);
      } else if (ap != schema.end() && ap->is_object()) {
        CollectUnknown(*ap, it.value(), child, false, errors);
      } else if (!open && (has_props || schema.value("type", "") == "object")) {
        errors->push_back(child + ": unknown field \"" + it.key() +
                          "\" (the API server would drop it): check its spelling against the CRD");
      }
    }
  } else if (value.is_array()) {
    auto items = schema.find("items");
    if (items != schema.end() && items->is_object()) {
      for (size_t i = 0; i < value.size(); ++i) {
        CollectUnknown(*items, value[i], path + "[" + std::to_string(i) + "]", false, errors);
      }
    }
  }
}

}  // namespace

std::vector<std::string> UnknownFields(const nlohmann::json& schema, const nlohmann::json& object) {
  std::vector<std::string> errors;
  CollectUnknown(schema, object, "", true, &errors);
  return errors;
}

Result<nlohmann::json> YamlToJson(const YAML::Node& node, const std::string& where) {
  return Convert(node, where);
}

Result<nlohmann::json> LoadCrdSchema(const std::string& crd_yaml_path, const std::string& version) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAllFromFile(crd_yaml_path);
  } catch (const YAML::BadFile&) {
    return Result<nlohmann::json>::Error(crd_yaml_path +
                                         ": cannot read the CRD file; check the path exists");
  } catch (const YAML::Exception& e) {
    return Result<nlohmann::json>::Error(crd_yaml_path + ":" + std::to_string(e.mark.line + 1) +
                                         ":" + std::to_string(e.mark.column + 1) +
                                         ": invalid YAML: " + e.msg);
  }
  for (const YAML::Node& doc : docs) {
    auto json = YamlToJson(doc, crd_yaml_path);
    if (!json.ok()) return json;
    const nlohmann::json& crd = json.value();
    if (!crd.is_object() || crd.value("kind", "") != "CustomResourceDefinition") continue;
    const nlohmann::json* versions = nullptr;
    if (crd.contains("spec") && crd["spec"].is_object() && crd["spec"].contains("versions")) {
      versions = &crd["spec"]["versions"];
    }
    if (versions == nullptr || !versions->is_array()) {
      return Result<nlohmann::json>::Error(crd_yaml_path +
                                           ": the CRD has no spec.versions list; is it "
                                           "apiextensions.k8s.io/v1?");
    }
    std::string names;
    for (const auto& v : *versions) {
      if (!v.is_object()) continue;
      const std::string name = v.value("name", "");
      names += (names.empty() ? "" : ", ") + name;
      if (name != version) continue;
      if (v.contains("schema") && v["schema"].is_object() &&
          v["schema"].contains("openAPIV3Schema") && v["schema"]["openAPIV3Schema"].is_object()) {
        return v["schema"]["openAPIV3Schema"];
      }
      return Result<nlohmann::json>::Error(crd_yaml_path + ": version " + version +
                                           " has no schema.openAPIV3Schema");
    }
    return Result<nlohmann::json>::Error(crd_yaml_path + ": the CRD has no version \"" + version +
                                         "\" (it has: " + names + ")");
  }
  return Result<nlohmann::json>::Error(crd_yaml_path +
                                       ": no CustomResourceDefinition document in the file");
}

std::vector<std::string> ValidateAgainstSchema(const nlohmann::json& schema,
                                               const nlohmann::json& object) {
  std::vector<std::string> errors;
  valijson::Schema compiled;
  try {
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft4);
    valijson::adapters::NlohmannJsonAdapter schema_adapter(schema);
    parser.populateSchema(schema_adapter, compiled);
  } catch (const std::exception& e) {
    errors.push_back(std::string("<schema>: the schema cannot be used for validation: ") + e.what());
    return errors;
  }
  valijson::Validator validator(valijson::Validator::kStrongTypes);
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter object_adapter(object);
  bool ok = false;
  try {
    ok = validator.validate(compiled, object_adapter, &results);
  } catch (const std::exception& e) {
    errors.push_back(std::string("<root>: validation failed: ") + e.what());
    return errors;
  }
  if (!ok) {
    // valijson also reports each enclosing property ("Failed to validate against schema
    // associated with property name 'x'", "... additional properties schema"); keep the
    // specific errors, unless only those exist.
    std::vector<std::string> generic;
    valijson::ValidationResults::Error error;
    while (results.popError(error)) {
      std::string line = ContextPath(error.context) + ": " + error.description;
      if (StartsWith(error.description, "Failed to validate")) {
        generic.push_back(line);
      } else {
        errors.push_back(line);
      }
    }
    if (errors.empty()) errors = generic;
  }
  CheckRules(schema, object, "", &errors);
  return errors;
}

}  // namespace onboard
