// Validation of Kubernetes objects against a CustomResourceDefinition's structural schema
// (the Istio CRDs in reference/istio-crds/). Used by the bootstrap tests and by the test API
// server, which validates WorkloadEntry and Sidecar bodies as a real kube-apiserver would.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "engine/status.h"

namespace onboard {

// YAML -> JSON with YAML 1.2 core-schema scalars: a quoted scalar (or one tagged !!str) is
// always a string; a plain scalar becomes null (~, null, empty), a bool (true/false in any
// case style), an integer (decimal, 0x.., 0o..), a float (1.5, 1e3, .inf, .nan) or else a string.
// Errors (e.g. a non-scalar mapping key) name `where` and the line:column.
Result<nlohmann::json> YamlToJson(const YAML::Node& node, const std::string& where);

// Reads a CRD YAML file and returns spec.versions[name == version].schema.openAPIV3Schema.
Result<nlohmann::json> LoadCrdSchema(const std::string& crd_yaml_path, const std::string& version);

// Validates an object against an openAPIV3Schema: the JSON-Schema keywords (valijson) plus the
// Kubernetes CEL rules (x-kubernetes-validations) that onboard knows how to evaluate (Istio's
// WorkloadEntry rules: "Address is required", port range, port names, unix-socket addresses;
// Sidecar's no-wildcard rule). Other CEL rules are not evaluated. Each error is
// "<field path>: <message>", e.g. "spec.ports.http: port must be between 1-65535"; the object
// itself is "<root>". Empty: valid. A schema valijson cannot parse gives one "<schema>: ..." error.
std::vector<std::string> ValidateAgainstSchema(const nlohmann::json& schema,
                                               const nlohmann::json& object);

// Fields the schema does not declare (Kubernetes structural-schema pruning: an object with
// `properties` and no `additionalProperties` or x-kubernetes-preserve-unknown-fields), which a
// real API server silently drops (or rejects with fieldValidation=Strict). apiVersion, kind
// and metadata at the top are always allowed. One "<path>: unknown field ..." per field.
std::vector<std::string> UnknownFields(const nlohmann::json& schema, const nlohmann::json& object);

}  // namespace onboard
