// YAML->JSON conversion and CRD openAPIV3Schema validation for the test API server.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace valijson {
class Schema;
}

namespace onboard::sandbox {

// Parses a YAML (or JSON, which is YAML) document into JSON. Quoted scalars stay strings; plain
// scalars follow the YAML 1.2 core schema (null, booleans, integers, floats, else string).
// Returns false and fills *error (with line/column) on a syntax error.
bool ParseYamlOrJson(const std::string& text, nlohmann::json* out, std::string* error);

// One validation failure, in the shape of a Kubernetes StatusCause.
struct Cause {
  std::string reason;   // FieldValueInvalid, FieldValueRequired, FieldValueNotSupported...
  std::string field;    // e.g. "spec.ports.http"
  std::string message;  // human-readable
};

// The openAPIV3Schema of one version of a CustomResourceDefinition, compiled for valijson.
class CrdSchema {
 public:
  CrdSchema();
  ~CrdSchema();
  CrdSchema(CrdSchema&&) noexcept;
  CrdSchema& operator=(CrdSchema&&) noexcept;

  // Loads `path` (a CRD YAML) and picks spec.versions[name == version].schema.openAPIV3Schema.
  static bool Load(const std::string& path, const std::string& version, CrdSchema* out,
                   std::string* error);

  // Validates a whole object (apiVersion/kind/metadata are not checked here): unknown fields
  // (where the schema does not preserve them), types and constraints. Empty when valid.
  std::vector<Cause> Validate(const nlohmann::json& object) const;

  const nlohmann::json& raw() const { return raw_; }

 private:
  nlohmann::json raw_;
  std::unique_ptr<valijson::Schema> compiled_;
};

// The x-kubernetes-validations (CEL) rules of the WorkloadEntry CRD, implemented by hand:
// address or network required, ports 1-65535, valid port names, UDS rules.
std::vector<Cause> WorkloadEntryRules(const nlohmann::json& object);

}  // namespace onboard::sandbox
