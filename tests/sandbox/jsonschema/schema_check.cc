// onboard-schema-check SCHEMA FILE...: exit 0 when every FILE ("-" = standard input) is JSON that
// the draft-07 SCHEMA accepts; otherwise 1, printing each file's errors with their JSON paths.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

namespace {

bool Parse(const std::string& path, nlohmann::json* out) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) {
      std::cerr << path << ": cannot read\n";
      return false;
    }
    ss << in.rdbuf();
  }
  *out = nlohmann::json::parse(ss.str(), nullptr, false);
  if (out->is_discarded()) {
    std::cerr << path << ": not JSON\n";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: onboard-schema-check SCHEMA FILE...\n";
    return 2;
  }
  nlohmann::json schema_doc;
  if (!Parse(argv[1], &schema_doc)) return 2;
  valijson::Schema schema;
  try {
    valijson::SchemaParser parser;
    valijson::adapters::NlohmannJsonAdapter adapter(schema_doc);
    parser.populateSchema(adapter, schema);
  } catch (const std::exception& e) {
    std::cerr << argv[1] << ": not a usable schema: " << e.what() << "\n";
    return 2;
  }
  int rc = 0;
  for (int i = 2; i < argc; ++i) {
    nlohmann::json doc;
    if (!Parse(argv[i], &doc)) {
      rc = 1;
      continue;
    }
    valijson::Validator validator;
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter target(doc);
    if (validator.validate(schema, target, &results)) continue;
    rc = 1;
    valijson::ValidationResults::Error e;
    while (results.popError(e)) {
      std::string where;
      for (const auto& p : e.context) where += p;
      std::cerr << argv[i] << ": " << where << ": " << e.description << "\n";
    }
  }
  return rc;
}
