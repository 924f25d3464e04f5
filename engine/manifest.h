// The manifest loader: Fleet documents (onboard.dev/v1alpha1) and tctl-style Istio
// WorkloadEntry + Sidecar documents -> one Model (engine/model.h).
//
// Loading never throws and never stops at the first mistake: every problem found in every
// input is returned as a Diagnostic naming file:line:column, the field path and what to do.
// Validation is the JSON Schema schemas/fleet.schema.json (compiled into the library) plus
// semantic checks (names, addresses, paths, ports, durations, uniqueness, label rules).
//
// Rules worth knowing (details in examples/README.md):
//   - A directory contributes its own *.yaml / *.yml files, sorted, not recursively (like
//     `kubectl apply -f DIR`); files whose name starts with "." are skipped.
//   - The same file named twice (directly and through its directory) is read once.
//   - Documents of other kinds (Service, Deployment, ...) are ignored; unknown kinds in the
//     onboard.dev group are errors.
//   - tctl-style documents use the cluster and the defaults of the (first) Fleet document.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/model.h"

namespace onboard {

struct Diagnostic {
  SourceRef where;
  std::string field;    // "spec.workloads[0].address"; "" when the problem is the whole file
  std::string message;  // what is wrong and what to do
  // "examples/fleet.yaml:12:7: spec.workloads[0].address: not an IP address (...what to do)"
  std::string ToString() const;
};

struct LoadOptions {
  std::string home;        // "~" expands to this; empty: a "~" path is an error
  std::string local_user;  // default ssh user
};

struct LoadResult {
  std::optional<Model> model;            // set only when there are no diagnostics
  std::vector<Diagnostic> diagnostics;   // sorted by file, line, column
  bool ok() const { return model.has_value() && diagnostics.empty(); }
};

// paths: files and directories (a directory contributes its *.yaml/*.yml, sorted, not
// recursive). Model::files lists the files read, sorted; Model::digest covers their bytes.
LoadResult LoadManifests(const std::vector<std::string>& paths, const LoadOptions& opts);

// One document stream from memory (tests, fuzzing). `filename` is used in diagnostics,
// Model::files and the digest.
LoadResult LoadManifestText(const std::string& text, const std::string& filename,
                            const LoadOptions& opts);

// Several in-memory files (name, text) loaded together as LoadManifests would load them.
LoadResult LoadManifestTexts(const std::vector<std::pair<std::string, std::string>>& files,
                             const LoadOptions& opts);

// The JSON Schema the loader validates with (the text of schemas/fleet.schema.json).
const std::string& FleetSchemaText();

// Hex sha256 over each (path, bytes) in order: for each file, the path, a NUL byte, the
// decimal byte count, a NUL byte, then the bytes. This is Model::digest.
std::string ManifestDigest(const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace onboard
