// The manifest loader (see manifest.h). Three stages, all collecting diagnostics:
//   1. YAML -> JSON with a location table (JSON path -> line:column of key and value).
//   2. JSON Schema validation (valijson, schemas/fleet.schema.json); error contexts are mapped
//      back to the YAML nodes through the location table.
//   3. Semantic checks while building the Model (names, addresses, paths, durations, merging of
//      defaults, Sidecar matching, uniqueness).
// No exception leaves this file: yaml-cpp, valijson and nlohmann exceptions are caught here.
#include "engine/manifest.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <unordered_map>
#include <utility>

#include <openssl/evp.h>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>
#include <yaml-cpp/anchor.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include "engine/clock.h"

namespace onboard {

std::string SourceRef::ToString() const {
  if (line <= 0) return file;
  if (column <= 0) return file + ":" + std::to_string(line);
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string Diagnostic::ToString() const {
  std::string out = where.ToString();
  out += ": ";
  if (!field.empty()) out += field + ": ";
  out += message;
  return out;
}

namespace {

using json = nlohmann::json;

constexpr size_t kMaxFileBytes = 16u << 20;  // a manifest larger than this is a mistake
constexpr int kMaxDepth = 64;                // nesting deeper than this is a mistake
constexpr size_t kMaxNodes = 8000000;        // after alias expansion ("billion laughs"); ~100k workloads
constexpr int64_t kMinTokenSeconds = 600;    // TokenRequest's minimum expirationSeconds

// ---------------------------------------------------------------------------------------------
// Paths and locations

struct Pos {
  int line = 0;    // 1-based, 0 unknown
  int column = 0;  // 1-based
};

Pos FromMark(const YAML::Mark& m) {
  if (m.is_null() || m.line < 0 || m.column < 0) return {};
  return {m.line + 1, m.column + 1};
}

struct Seg {
  bool is_index = false;
  std::string key;
  size_t index = 0;
};
using Path = std::vector<Seg>;

Path Child(const Path& p, const std::string& key) {
  Path c = p;
  c.push_back(Seg{false, key, 0});
  return c;
}
Path Child(const Path& p, size_t i) {
  Path c = p;
  c.push_back(Seg{true, "", i});
  return c;
}

bool PlainKey(const std::string& k) {
  if (k.empty()) return false;
  for (char ch : k) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-')) return false;
  }
  return true;
}

// "spec.workloads[0].ports.http", metadata.annotations["sidecar-bootstrap.istio.io/ssh-host"]
std::string FieldString(const Path& p) {
  std::string out;
  for (const Seg& s : p) {
    if (s.is_index) {
      out += "[" + std::to_string(s.index) + "]";
    } else if (PlainKey(s.key)) {
      if (!out.empty()) out += ".";
      out += s.key;
    } else {
      out += "[" + json(s.key).dump() + "]";
    }
  }
  return out;
}

// The same text valijson builds for its error context: "[spec][workloads][0]".
std::string LookupKey(const Path& p) {
  std::string out;
  for (const Seg& s : p) out += "[" + (s.is_index ? std::to_string(s.index) : s.key) + "]";
  return out;
}

struct Loc {
  Pos key;    // the mapping key that names the value (unknown for list items and the root)
  Pos value;  // the value itself
};

// One YAML document converted to JSON.
struct Doc {
  std::string file;
  json value;
  std::unordered_map<std::string, Loc> locs;  // LookupKey(path) -> location
  Pos start;
};

// ---------------------------------------------------------------------------------------------
// Diagnostics

struct Entry {
  Diagnostic diag;
  bool from_schema = false;
};

class Sink {
 public:
  void At(const Doc& d, const Path& p, const std::string& msg, bool at_key = false) {
    Add(d.file, Locate(d, p, at_key), FieldString(p), msg, false);
  }
  void Schema(const Doc& d, const Path& p, const std::string& msg, bool at_key) {
    Add(d.file, Locate(d, p, at_key), FieldString(p), msg, true);
  }
  void Add(const std::string& file, Pos pos, const std::string& field, const std::string& msg,
           bool from_schema = false) {
    Entry e;
    e.diag.where.file = file;
    e.diag.where.line = pos.line;
    e.diag.where.column = pos.column;
    e.diag.field = field;
    e.diag.message = msg;
    e.from_schema = from_schema;
    entries_.push_back(std::move(e));
  }
  static Pos Locate(const Doc& d, const Path& p, bool at_key) {
    Path q = p;
    while (true) {
      auto it = d.locs.find(LookupKey(q));
      if (it != d.locs.end()) {
        if (at_key && q.size() == p.size() && it->second.key.line > 0) return it->second.key;
        if (it->second.value.line > 0) return it->second.value;
        if (it->second.key.line > 0) return it->second.key;
      }
      if (q.empty()) return d.start;
      q.pop_back();
    }
  }
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }

  // Schema findings on a field that a semantic check also reported are dropped (the semantic
  // message says more); the rest is sorted by file, line, column.
  std::vector<Diagnostic> Finish() {
    std::set<std::pair<std::string, std::string>> semantic;
    for (const Entry& e : entries_) {
      if (!e.from_schema) semantic.insert({e.diag.where.file, e.diag.field});
    }
    std::vector<Diagnostic> out;
    std::set<std::string> seen;
    for (Entry& e : entries_) {
      if (e.from_schema && semantic.count({e.diag.where.file, e.diag.field})) continue;
      std::string text = e.diag.ToString();
      if (!seen.insert(text).second) continue;
      out.push_back(std::move(e.diag));
    }
    std::stable_sort(out.begin(), out.end(), [](const Diagnostic& a, const Diagnostic& b) {
      if (a.where.file != b.where.file) return a.where.file < b.where.file;
      if (a.where.line != b.where.line) return a.where.line < b.where.line;
      return a.where.column < b.where.column;
    });
    return out;
  }

 private:
  std::vector<Entry> entries_;
};

// ---------------------------------------------------------------------------------------------
// Stage 1: YAML -> JSON

bool MatchAll(const std::string& s, size_t from, bool (*pred)(char)) {
  if (from >= s.size()) return false;
  for (size_t i = from; i < s.size(); ++i) {
    if (!pred(s[i])) return false;
  }
  return true;
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsOctal(char c) { return c >= '0' && c <= '7'; }
bool IsHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

std::optional<json> ResolveInt(const std::string& s) {
  int base = 10;
  size_t from = 0;
  bool neg = false;
  if (s.rfind("0x", 0) == 0) {
    if (!MatchAll(s, 2, IsHex)) return std::nullopt;
    base = 16;
    from = 2;
  } else if (s.rfind("0o", 0) == 0) {
    if (!MatchAll(s, 2, IsOctal)) return std::nullopt;
    base = 8;
    from = 2;
  } else {
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
      neg = s[0] == '-';
      from = 1;
    }
    if (!MatchAll(s, from, IsDigit)) return std::nullopt;
  }
  errno = 0;
  char* end = nullptr;
  std::string digits = s.substr(from);
  unsigned long long v = std::strtoull(digits.c_str(), &end, base);
  if (errno == ERANGE || v > static_cast<unsigned long long>(INT64_MAX)) {
    // Too large for an integer: keep the value as a number so the schema can say so.
    return json(std::strtod(s.c_str(), nullptr));
  }
  int64_t i = static_cast<int64_t>(v);
  return json(neg ? -i : i);
}

std::optional<json> ResolveFloat(const std::string& s) {
  if (s == ".inf" || s == ".Inf" || s == ".INF" || s == "+.inf" || s == "+.Inf" || s == "+.INF") {
    return json(std::numeric_limits<double>::infinity());
  }
  if (s == "-.inf" || s == "-.Inf" || s == "-.INF") {
    return json(-std::numeric_limits<double>::infinity());
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") return json(std::numeric_limits<double>::quiet_NaN());
  // [-+]? ( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  size_t digits = 0;
  while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exp = 0;
    while (i < s.size() && IsDigit(s[i])) ++i, ++exp;
    if (exp == 0) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  return json(std::strtod(s.c_str(), nullptr));
}

// Builds JSON documents, with the location of every key and value, straight from yaml-cpp's
// parser events. (yaml-cpp's YAML::LoadAll can loop forever on some malformed input, returning
// empty documents without advancing; driving the parser ourselves lets us notice and stop.)
class DocBuilder : public YAML::EventHandler {
 public:
  DocBuilder(const std::string& file, Sink& sink) : file_(file), sink_(sink) {}

  std::vector<Doc>& docs() { return docs_; }
  // Whether the last document held nothing (no value, or null).
  bool last_empty() const { return last_empty_; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    cur_ = Doc();
    cur_.file = file_;
    cur_.start = FromMark(mark);
    cur_.locs[""] = Loc{{}, cur_.start};
    stack_.clear();
    anchors_.clear();
    nodes_ = 0;
    have_root_ = false;
    aborted_ = false;
  }
  void OnDocumentEnd() override {
    last_empty_ = !aborted_ && (!have_root_ || cur_.value.is_null());
    if (!aborted_ && have_root_ && !cur_.value.is_null()) docs_.push_back(std::move(cur_));
    cur_ = Doc();
  }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (aborted_) return;
    if (ExpectingKey()) {
      Report(FromMark(mark), Top().path, "empty mapping key; give the key a name");
      Top().skip_value = true;
      Top().expecting_key = false;
      return;
    }
    Leaf(json(nullptr), FromMark(mark), anchor, 1);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (aborted_) return;
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) {
      Report(FromMark(mark), CurrentPath(), "alias refers to an anchor that is not complete yet (a node cannot "
                                             "contain itself); remove the alias");
      aborted_ = true;
      return;
    }
    if (ExpectingKey()) {
      if (!it->second.first.is_string()) {
        Report(FromMark(mark), Top().path, "a mapping key must be a plain string; rewrite the key");
        Top().skip_value = true;
        Top().expecting_key = false;
        return;
      }
      Key(it->second.first.get<std::string>(), FromMark(mark));
      return;
    }
    Leaf(it->second.first, FromMark(mark), 0, it->second.second);
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    if (aborted_) return;
    if (ExpectingKey()) {
      if (anchor != YAML::NullAnchor) anchors_[anchor] = {json(value), 1};
      Key(value, FromMark(mark));
      return;
    }
    Leaf(ResolveScalar(tag, value), FromMark(mark), anchor, 1);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    if (!aborted_) Open(false, FromMark(mark), anchor);
  }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    if (!aborted_) Open(true, FromMark(mark), anchor);
  }
  void OnSequenceEnd() override {
    if (!aborted_) Close();
  }
  void OnMapEnd() override {
    if (!aborted_) Close();
  }

 private:
  struct Frame {
    bool is_map = false;
    bool discard = false;        // a complex key, or a value whose key was rejected
    bool expecting_key = true;   // maps: the next event is a key
    bool skip_value = false;     // maps: drop the next value (its key was rejected)
    std::string key;             // maps: the key of the value being read
    Path path;
    Pos pos;
    YAML::anchor_t anchor = 0;
    size_t nodes_at_start = 0;
    json value;
  };

  Frame& Top() { return stack_.back(); }
  bool ExpectingKey() const {
    return !stack_.empty() && stack_.back().is_map && stack_.back().expecting_key && !stack_.back().discard;
  }
  bool Discarding() const {
    if (stack_.empty()) return false;
    const Frame& t = stack_.back();
    return t.discard || (t.is_map && t.skip_value);
  }
  Path CurrentPath() const {
    if (stack_.empty()) return {};
    const Frame& t = stack_.back();
    if (t.is_map) return Child(t.path, t.key);
    return Child(t.path, t.value.size());
  }
  void Report(Pos pos, const Path& path, const std::string& msg) {
    sink_.Add(file_, pos, FieldString(path), msg);
  }
  bool Count(size_t n) {
    nodes_ += n;
    if (nodes_ <= kMaxNodes) return true;
    Report(cur_.start, {}, "document too large: more than " + std::to_string(kMaxNodes) +
                               " values after expanding aliases; split it or remove alias chains");
    aborted_ = true;
    return false;
  }

  void Key(const std::string& name, Pos pos) {
    Frame& t = Top();
    t.expecting_key = false;
    Path child = Child(t.path, name);
    if (t.value.contains(name)) {
      Pos first = cur_.locs[LookupKey(child)].key;
      Report(pos, child, "duplicate key (first at line " + std::to_string(first.line) + "); keep one of them");
      t.skip_value = true;
      return;
    }
    t.key = name;
    cur_.locs[LookupKey(child)].key = pos;
  }

  // A complete value (scalar, null, alias copy, or closed container) for the current position.
  void Leaf(json v, Pos pos, YAML::anchor_t anchor, size_t count) {
    if (!Count(count)) return;
    if (Discarding()) {
      Consumed();
      return;
    }
    if (stack_.empty()) SetRoot(pos);
    Path path = CurrentPath();
    Loc& loc = cur_.locs[LookupKey(path)];
    // yaml-cpp marks an empty value at the next token; the key's position is the useful one.
    loc.value = v.is_null() && loc.key.line > 0 ? loc.key : pos;
    if (anchor != YAML::NullAnchor) anchors_[anchor] = {v, count};
    Attach(std::move(v));
  }

  // A document's position is its first node's (after any "---" line).
  void SetRoot(Pos pos) {
    if (pos.line <= 0) return;
    cur_.start = pos;
    cur_.locs[""] = Loc{{}, pos};
  }

  void Attach(json v) {
    if (stack_.empty()) {
      cur_.value = std::move(v);
      have_root_ = true;
      return;
    }
    Frame& t = Top();
    if (t.is_map) {
      t.value[t.key] = std::move(v);
      t.expecting_key = true;
    } else {
      t.value.push_back(std::move(v));
    }
  }

  // The parent consumed a value without keeping it.
  void Consumed() {
    if (stack_.empty()) return;
    Frame& t = Top();
    if (t.is_map && !t.discard) {
      t.skip_value = false;
      t.expecting_key = true;
    }
  }

  void Open(bool is_map, Pos pos, YAML::anchor_t anchor) {
    if (!Count(1)) return;
    if (stack_.size() >= static_cast<size_t>(kMaxDepth)) {
      Report(pos, CurrentPath(), "nested more than " + std::to_string(kMaxDepth) + " levels deep; flatten it");
      aborted_ = true;
      return;
    }
    Frame f;
    f.is_map = is_map;
    f.pos = pos;
    f.anchor = anchor;
    f.nodes_at_start = nodes_;
    f.value = is_map ? json::object() : json::array();
    if (ExpectingKey()) {
      Report(pos, Top().path, "a mapping key must be a plain string, not a list or mapping; rewrite the key");
      Top().expecting_key = false;
      Top().skip_value = true;
      f.discard = true;
      f.key = "\x01complex-key";  // marks this frame as a key, not a value
    } else if (Discarding()) {
      f.discard = true;
    } else {
      if (stack_.empty()) SetRoot(pos);
      f.path = CurrentPath();
      cur_.locs[LookupKey(f.path)].value = pos;
    }
    stack_.push_back(std::move(f));
  }

  void Close() {
    if (stack_.empty()) return;
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    if (f.discard) {
      // A rejected key is followed by its value, which the parent now skips; a discarded value
      // finishes the parent's pair.
      if (f.key != "\x01complex-key") Consumed();
      return;
    }
    size_t count = nodes_ - f.nodes_at_start + 1;
    if (f.anchor != YAML::NullAnchor) anchors_[f.anchor] = {f.value, count};
    Attach(std::move(f.value));
  }

  static json ResolveScalar(const std::string& tag, const std::string& s);

  std::string file_;
  Sink& sink_;
  std::vector<Doc> docs_;
  Doc cur_;
  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, std::pair<json, size_t>> anchors_;
  size_t nodes_ = 0;
  bool have_root_ = false;
  bool aborted_ = false;
  bool last_empty_ = false;
};

json DocBuilder::ResolveScalar(const std::string& tag, const std::string& s) {
  if (tag == "!" || tag == "tag:yaml.org,2002:str") return json(s);
  bool plain = tag == "?" || tag.empty();
  if (plain || tag == "tag:yaml.org,2002:null") {
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return json(nullptr);
  }
  if (plain || tag == "tag:yaml.org,2002:bool") {
    if (s == "true" || s == "True" || s == "TRUE") return json(true);
    if (s == "false" || s == "False" || s == "FALSE") return json(false);
  }
  if (plain || tag == "tag:yaml.org,2002:int") {
    if (auto v = ResolveInt(s)) return *v;
  }
  if (plain || tag == "tag:yaml.org,2002:float") {
    if (auto v = ResolveFloat(s)) return *v;
  }
  return json(s);
}

constexpr size_t kMaxDocuments = 10000;

// Parse a YAML stream into documents; a syntax error is one diagnostic with its line.
std::vector<Doc> ParseYaml(const std::string& file, const std::string& text, Sink& sink) {
  DocBuilder builder(file, sink);
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    size_t docs = 0;
    size_t empty = 0;
    while (parser.HandleNextDocument(builder)) {
      if (builder.last_empty()) {
        // An empty document is fine ("---" alone); endless empty documents mean the parser is
        // stuck on bad input.
        if (++empty > 1000) {
          sink.Add(file, {}, "", "YAML syntax error: the parser cannot make sense of this file (it keeps "
                                 "finding empty documents); check indentation and quoting");
          return {};
        }
        continue;
      }
      if (++docs > kMaxDocuments) {
        sink.Add(file, {}, "", "more than " + std::to_string(kMaxDocuments) + " documents in one file; split it");
        return {};
      }
    }
  } catch (const YAML::Exception& e) {
    sink.Add(file, FromMark(e.mark), "", "YAML syntax error: " + e.msg + "; fix the YAML at this position");
    return {};
  } catch (const std::exception& e) {
    sink.Add(file, {}, "", std::string("cannot parse YAML: ") + e.what());
    return {};
  }
  return std::move(builder.docs());
}

std::vector<Doc> ParseFile(const std::string& file, const std::string& text, Sink& sink) {
  if (text.size() > kMaxFileBytes) {
    sink.Add(file, {}, "", "file is larger than 16 MiB; a manifest this big is a mistake — check the path");
    return {};
  }
  return ParseYaml(file, text, sink);
}

// ---------------------------------------------------------------------------------------------
// Stage 2: JSON Schema

class Schemas {
 public:
  Schemas() {
    try {
      root_ = json::parse(FleetSchemaText());
      for (const char* name : {"Fleet", "WorkloadEntry", "Sidecar"}) {
        json wrapper = {{"definitions", root_["definitions"]},
                        {"$ref", std::string("#/definitions/") + name}};
        wrappers_.push_back(wrapper);
        auto schema = std::make_unique<valijson::Schema>();
        valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
        valijson::adapters::NlohmannJsonAdapter adapter(wrappers_.back());
        parser.populateSchema(adapter, *schema);
        schemas_[name] = std::move(schema);
      }
    } catch (const std::exception& e) {
      error_ = std::string("the built-in schema schemas/fleet.schema.json is broken: ") + e.what();
    }
  }
  const std::string& error() const { return error_; }
  const valijson::Schema* Get(const std::string& name) const {
    auto it = schemas_.find(name);
    return it == schemas_.end() ? nullptr : it->second.get();
  }
  // The subschema describing the value at `path` of a document validated against `def`.
  const json* At(const std::string& def, const Path& path) const {
    const json* node = Resolve(Def(def));
    for (const Seg& s : path) {
      if (!node || !node->is_object()) return nullptr;
      if (s.is_index) {
        auto it = node->find("items");
        node = it == node->end() ? nullptr : Resolve(&*it);
        continue;
      }
      const json* next = nullptr;
      auto props = node->find("properties");
      if (props != node->end() && props->is_object() && props->contains(s.key)) {
        next = &(*props)[s.key];
      } else {
        auto add = node->find("additionalProperties");
        if (add != node->end() && add->is_object()) next = &*add;
      }
      node = Resolve(next);
    }
    return node;
  }

 private:
  const json* Def(const std::string& name) const {
    auto defs = root_.find("definitions");
    if (defs == root_.end() || !defs->contains(name)) return nullptr;
    return &(*defs)[name];
  }
  const json* Resolve(const json* node) const {
    for (int i = 0; node && i < 8; ++i) {
      if (!node->is_object()) return node;
      auto ref = node->find("$ref");
      if (ref == node->end() || !ref->is_string()) return node;
      std::string r = ref->get<std::string>();
      const std::string prefix = "#/definitions/";
      if (r.rfind(prefix, 0) != 0) return nullptr;
      node = Def(r.substr(prefix.size()));
    }
    return node;
  }

  json root_;
  std::vector<json> wrappers_;
  std::map<std::string, std::unique_ptr<valijson::Schema>> schemas_;
  std::string error_;
};

const Schemas& GetSchemas() {
  static const Schemas* schemas = new Schemas();  // never destroyed: safe at exit
  return *schemas;
}

std::string Describe(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "nothing (null)";
    case json::value_t::boolean: return std::string("a boolean (") + (v.get<bool>() ? "true" : "false") + ")";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer (" + v.dump() + ")";
    case json::value_t::number_float: return "a number (" + v.dump() + ")";
    case json::value_t::string: {
      std::string s = v.get<std::string>();
      if (s.size() > 40) s = s.substr(0, 40) + "...";
      return "a string (" + json(s).dump() + ")";
    }
    case json::value_t::array: return "a list";
    case json::value_t::object: return "a mapping";
    default: return "a value";
  }
}

std::string TypeWord(const std::string& t) {
  if (t == "string") return "a string";
  if (t == "integer") return "an integer";
  if (t == "number") return "a number";
  if (t == "boolean") return "true or false";
  if (t == "object") return "a mapping";
  if (t == "array") return "a list";
  return t;
}

std::string Join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

// The text between the last pair of single quotes in s.
std::string LastQuoted(const std::string& s) {
  size_t end = s.rfind('\'');
  if (end == std::string::npos || end == 0) return "";
  size_t begin = s.rfind('\'', end - 1);
  if (begin == std::string::npos) return "";
  return s.substr(begin + 1, end - begin - 1);
}

void ReportSchemaError(const Schemas& schemas, const std::string& def, const Doc& doc,
                       const valijson::ValidationResults::Error& e, Sink& sink) {
  const std::string& d = e.description;
  static const char* const kWrappers[] = {
      "Failed to validate against schema associated with property name",
      "Failed to validate item #",
      "Failed to validate against additional properties schema",
      "Failed to validate against child schema",
      "Failed to validate against schema associated with pattern",
      "Failed to validate against a conditional schema",
      "Failed to validate against any",
      "Failed to validate against exactly one",
      "Failed to validate against dependent schema",
  };
  for (const char* w : kWrappers) {
    if (d.rfind(w, 0) == 0) return;
  }
  // valijson context: "<root>", "[spec]", "[workloads]", "[0]", ... -> our Path.
  Path path;
  const json* cur = &doc.value;
  for (size_t i = 0; i < e.context.size(); ++i) {
    const std::string& c = e.context[i];
    if (i == 0 && c == "<root>") continue;
    if (c.size() < 2 || c.front() != '[' || c.back() != ']') continue;
    std::string seg = c.substr(1, c.size() - 2);
    if (cur && cur->is_array()) {
      size_t idx = 0;
      bool ok = !seg.empty() && MatchAll(seg, 0, IsDigit);
      if (ok) idx = std::strtoull(seg.c_str(), nullptr, 10);
      path = Child(path, idx);
      cur = ok && idx < cur->size() ? &(*cur)[idx] : nullptr;
    } else {
      path = Child(path, seg);
      cur = cur && cur->is_object() && cur->contains(seg) ? &(*cur)[seg] : nullptr;
    }
  }
  const json* schema = schemas.At(def, path);
  std::string hint;
  if (schema && schema->is_object() && schema->contains("description") &&
      (*schema)["description"].is_string()) {
    hint = (*schema)["description"].get<std::string>();
  }
  auto with_hint = [&](std::string msg) {
    if (!hint.empty()) msg += " (" + hint + ")";
    return msg;
  };

  if (d.rfind("Missing required property", 0) == 0) {
    std::string name = LastQuoted(d);
    Path child = Child(path, name);
    const json* cs = schemas.At(def, child);
    std::string chint;
    if (cs && cs->is_object() && cs->contains("description") && (*cs)["description"].is_string()) {
      chint = " (" + (*cs)["description"].get<std::string>() + ")";
    }
    sink.Schema(doc, child, "required field is missing; add it" + chint, false);
    return;
  }
  if (d.rfind("Object contains a property that could not be validated", 0) == 0) {
    std::string name = LastQuoted(d);
    std::vector<std::string> allowed;
    if (schema && schema->is_object() && schema->contains("properties") &&
        (*schema)["properties"].is_object()) {
      for (auto it = (*schema)["properties"].begin(); it != (*schema)["properties"].end(); ++it) {
        allowed.push_back(it.key());
      }
    }
    std::string msg = "unknown field; remove it or fix its spelling";
    if (!allowed.empty()) msg += " (allowed here: " + Join(allowed, ", ") + ")";
    sink.Schema(doc, Child(path, name), msg, true);
    return;
  }
  if (d.rfind("Value type not permitted", 0) == 0) {
    std::string want = "another type";
    if (schema && schema->is_object() && schema->contains("type") && (*schema)["type"].is_string()) {
      want = TypeWord((*schema)["type"].get<std::string>());
    }
    std::string msg = "expected " + want + ", found " + (cur ? Describe(*cur) : std::string("another type"));
    if (cur && want == "a string" && (cur->is_number() || cur->is_boolean())) {
      msg += "; put the value in quotes";
    } else if (cur && cur->is_string() && (want == "an integer" || want == "a number")) {
      msg += "; write the number without quotes";
    } else if (cur && cur->is_null()) {
      msg += "; give it a value or remove the key";
    }
    sink.Schema(doc, path, with_hint(msg), false);
    return;
  }
  if (d.rfind("Failed to match against any enum values", 0) == 0) {
    std::vector<std::string> options;
    if (schema && schema->is_object() && schema->contains("enum") && (*schema)["enum"].is_array()) {
      for (const json& o : (*schema)["enum"]) options.push_back(o.is_string() ? o.get<std::string>() : o.dump());
    }
    sink.Schema(doc, path,
                (cur ? Describe(*cur) : std::string("this value")) + " is not allowed; use one of: " +
                    Join(options, ", "),
                false);
    return;
  }
  if (d.rfind("Failed to match expected value set by 'const'", 0) == 0) {
    std::string want;
    if (schema && schema->is_object() && schema->contains("const")) {
      const json& c = (*schema)["const"];
      want = c.is_string() ? c.get<std::string>() : c.dump();
    }
    sink.Schema(doc, path,
                (cur ? Describe(*cur) : std::string("this value")) + " is not allowed; it must be " + want,
                false);
    return;
  }
  if (d.rfind("Expected number", 0) == 0) {
    std::string bound = d.substr(std::string("Expected number ").size());
    if (!bound.empty() && bound.back() == '.') bound.pop_back();
    sink.Schema(doc, path, with_hint("must be " + bound), false);
    return;
  }
  sink.Schema(doc, path, with_hint(d), false);
}

void ValidateSchema(const std::string& def, const Doc& doc, Sink& sink) {
  const Schemas& schemas = GetSchemas();
  if (!schemas.error().empty()) {
    sink.Add(doc.file, doc.start, "", schemas.error());
    return;
  }
  const valijson::Schema* schema = schemas.Get(def);
  if (!schema) return;
  try {
    valijson::Validator validator;
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter target(doc.value);
    if (validator.validate(*schema, target, &results)) return;
    valijson::ValidationResults::Error err;
    while (results.popError(err)) ReportSchemaError(schemas, def, doc, err, sink);
  } catch (const std::exception& e) {
    sink.Add(doc.file, doc.start, "", std::string("schema validation failed: ") + e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Value checks (pure functions)

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || IsDigit(c); }
bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

bool IsDns1123Label(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  if (!IsLowerAlnum(s.front()) || !IsLowerAlnum(s.back())) return false;
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') return false;
  }
  return true;
}

bool IsDns1123Subdomain(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string label = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!IsDns1123Label(label)) return false;
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

bool IsIPv4(const std::string& s) {
  in_addr a{};
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}
bool IsIPv6(const std::string& s) {
  in6_addr a{};
  return inet_pton(AF_INET6, s.c_str(), &a) == 1;
}
bool IsIP(const std::string& s) {
  return s.find('\0') == std::string::npos && (IsIPv4(s) || IsIPv6(s));
}

// An RFC 1123 host name: letters, digits, '-', dot-separated labels; the last label is not all
// digits (so "10.0.0.300" is a bad IP, not a name).
bool IsHostName(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  std::string last;
  while (true) {
    size_t dot = s.find('.', start);
    std::string label = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty() || label.size() > 63) return false;
    if (!IsAlnum(label.front()) || !IsAlnum(label.back())) return false;
    for (char c : label) {
      if (!IsAlnum(c) && c != '-') return false;
    }
    last = label;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return !MatchAll(last, 0, IsDigit);
}

bool IsHostOrIP(const std::string& s) { return IsIP(s) || IsHostName(s); }

const char* kRemotePathRule =
    "use an absolute path of the characters A-Z a-z 0-9 . _ - / without \"..\"";

// A path on the VM: it reaches a remote shell, so only a safe alphabet is allowed.
std::string RemotePathProblem(const std::string& s) {
  if (s.empty()) return "empty path";
  if (s[0] != '/') return "not an absolute path";
  for (char c : s) {
    if (!(IsAlnum(c) || c == '.' || c == '_' || c == '-' || c == '/')) {
      std::string shown = (c >= 0x20 && c < 0x7f) ? std::string(1, c) : "\\x" + [c] {
        char buf[3];
        snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(c));
        return std::string(buf);
      }();
      return "contains the character '" + shown + "'";
    }
  }
  size_t start = 0;
  while (start <= s.size()) {
    size_t slash = s.find('/', start);
    std::string part = s.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") return "contains \"..\"";
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return "";
}

bool IsLabelName(const std::string& s) {  // the part after an optional "prefix/"
  if (s.empty() || s.size() > 63) return false;
  if (!IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  for (char c : s) {
    if (!(IsAlnum(c) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

bool IsQualifiedKey(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos) return IsLabelName(s);
  if (s.find('/', slash + 1) != std::string::npos) return false;
  return IsDns1123Subdomain(s.substr(0, slash)) && IsLabelName(s.substr(slash + 1));
}

bool IsLabelValue(const std::string& s) { return s.empty() || IsLabelName(s); }

// Envoy/Istio port names: ^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$, shorter than 63.
bool IsPortName(const std::string& s) {
  if (s.empty() || s.size() >= 63) return false;
  if (!IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  for (char c : s) {
    if (!IsAlnum(c) && c != '-') return false;
  }
  return true;
}

// A token for env files and command lines: letters, digits, '.', '_', '-', starting and ending
// with a letter or digit (network, cluster ID, mesh ID, trust domain, ssh user).
bool IsSafeToken(const std::string& s, size_t max = 253) {
  if (s.empty() || s.size() > max) return false;
  if (!IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  for (char c : s) {
    if (!(IsAlnum(c) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

bool IsSshUser(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  if (!(IsAlnum(s[0]) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(IsAlnum(c) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

// docker.io/tetrate, localhost:5000/istio, gcr.io/istio-release
bool IsImageHub(const std::string& s) {
  if (s.empty() || s.size() > 255) return false;
  if (!IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  char prev = 0;
  for (char c : s) {
    bool sep = c == '.' || c == '_' || c == '-' || c == ':' || c == '/';
    if (!(IsAlnum(c) || sep)) return false;
    if (c == '/' && prev == '/') return false;
    prev = c;
  }
  return true;
}

bool IsImageTag(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  if (!(IsAlnum(s[0]) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(IsAlnum(c) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

// hub/name[:tag][@sha256:<64 hex>]
bool IsImageRef(const std::string& s) {
  std::string rest = s;
  size_t at = rest.find('@');
  if (at != std::string::npos) {
    std::string digest = rest.substr(at + 1);
    rest = rest.substr(0, at);
    if (digest.rfind("sha256:", 0) != 0 || digest.size() != 7 + 64 || !MatchAll(digest, 7, IsHex)) return false;
  }
  size_t slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    if (!IsImageTag(rest.substr(colon + 1))) return false;
    rest = rest.substr(0, colon);
  }
  return IsImageHub(rest);
}

bool IsLogLevel(const std::string& s) {
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warning", "warn",
                                                "error", "critical", "off"};
  return kLevels.count(s) > 0;
}

// "misc:error,upstream:debug"
bool IsComponentLogLevel(const std::string& s) {
  if (s.empty()) return false;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) {
    size_t colon = part.find(':');
    if (colon == std::string::npos || colon == 0) return false;
    std::string comp = part.substr(0, colon);
    for (char c : comp) {
      if (!(IsAlnum(c) || c == '_')) return false;
    }
    if (!IsLogLevel(part.substr(colon + 1))) return false;
  }
  return s.back() != ',';
}

bool IsInterceptionMode(const std::string& s) {
  return s == "NONE" || s == "REDIRECT" || s == "TPROXY";
}

// ---------------------------------------------------------------------------------------------
// Stage 3: reading values with their locations

// A view of the value at `path` in a document; `v` is null when the field is absent.
struct View {
  const Doc* doc = nullptr;
  Path path;
  const json* v = nullptr;

  View operator[](const std::string& key) const {
    const json* c = nullptr;
    if (v && v->is_object()) {
      auto it = v->find(key);
      if (it != v->end()) c = &*it;
    }
    return View{doc, Child(path, key), c};
  }
  View at(size_t i) const {
    const json* c = v && v->is_array() && i < v->size() ? &(*v)[i] : nullptr;
    return View{doc, Child(path, i), c};
  }
  bool present() const { return v && !v->is_null(); }
  bool is_string() const { return v && v->is_string(); }
  bool is_object() const { return v && v->is_object(); }
  bool is_array() const { return v && v->is_array(); }
  bool is_int() const { return v && (v->is_number_integer() || v->is_number_unsigned()); }
  std::string str() const { return is_string() ? v->get<std::string>() : std::string(); }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    if (is_object()) {
      for (auto it = v->begin(); it != v->end(); ++it) out.push_back(it.key());
    }
    return out;
  }
  Pos pos() const { return Sink::Locate(*doc, path, false); }
  SourceRef ref() const {
    Pos p = pos();
    return SourceRef{doc->file, p.line, p.column};
  }
};

// Per-workload settings with the facts the merge needs to remember.
struct Settings {
  Workload w;
  bool concurrency_set = false;
};

class Builder {
 public:
  Builder(Sink& sink, const LoadOptions& opts) : sink_(sink), opts_(opts) {}

  // ---- scalar readers: return false when absent or of the wrong type (the schema reports
  // wrong types), report format problems themselves.

  bool Str(const View& v, std::string* out) {
    if (!v.is_string()) return false;
    *out = v.str();
    return true;
  }

  bool Name(const View& v, std::string* out, bool label) {
    std::string s;
    if (!Str(v, &s)) return false;
    bool ok = label ? IsDns1123Label(s) : IsDns1123Subdomain(s);
    if (!ok) {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not a DNS-1123 " + (label ? "label" : "name") +
                   ": use lowercase letters, digits and '-'" + (label ? "" : " (and '.' between parts)") +
                   ", starting and ending with a letter or digit, at most " + (label ? "63" : "253") +
                   " characters");
      return false;
    }
    *out = s;
    return true;
  }

  bool HostOrIP(const View& v, std::string* out) {
    std::string s;
    if (!Str(v, &s)) return false;
    if (!IsHostOrIP(s)) {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not an IP address or DNS name: write an IPv4 address (10.0.0.5), "
                                "an IPv6 address (fd00::5) or a host name (vm1.example.com)");
      return false;
    }
    *out = s;
    return true;
  }

  bool IP(const View& v, std::string* out) {
    std::string s;
    if (!Str(v, &s)) return false;
    if (!IsIP(s)) {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not an IP address: write an IPv4 (10.128.0.2) or IPv6 (fd00::2) "
                                "address, not a host name");
      return false;
    }
    *out = s;
    return true;
  }

  bool CheckPort(const View& v, int64_t p) {
    if (p < 1 || p > 65535) {
      sink_.At(*v.doc, v.path, std::to_string(p) + " is not a port number: use 1-65535");
      return false;
    }
    return true;
  }

  bool Port(const View& v, int* out) {
    if (!v.is_int()) return false;
    int64_t p = v.v->is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v.v->get<uint64_t>(), INT64_MAX))
                                          : v.v->get<int64_t>();
    if (!CheckPort(v, p)) return false;
    *out = static_cast<int>(p);
    return true;
  }

  bool RemotePath(const View& v, std::string* out, bool allow_root = false) {
    std::string s;
    if (!Str(v, &s)) return false;
    std::string problem = RemotePathProblem(s);
    if (problem.empty() && !allow_root && s.find_first_not_of('/') == std::string::npos) {
      problem = "is the root directory";
    }
    if (!problem.empty()) {
      sink_.At(*v.doc, v.path,
               "path on the VM " + json(s).dump() + " " + (problem.rfind("contains", 0) == 0 || problem.rfind("is ", 0) == 0 ? problem : "is " + problem) +
                   ": " + kRemotePathRule);
      return false;
    }
    *out = s;
    return true;
  }

  // A local path: "~" and "~/..." expand to the home directory; other characters are allowed.
  bool LocalPath(const View& v, std::string* out) {
    std::string s;
    if (!Str(v, &s)) return false;
    if (s.empty()) {
      sink_.At(*v.doc, v.path, "empty path: give a file path or remove the field");
      return false;
    }
    if (s[0] == '~') {
      if (s.size() > 1 && s[1] != '/') {
        sink_.At(*v.doc, v.path,
                 json(s).dump() + ": only \"~\" and \"~/...\" (your home directory) are expanded; "
                                  "write the full path for another user's home");
        return false;
      }
      if (opts_.home.empty()) {
        sink_.At(*v.doc, v.path,
                 "cannot expand \"~\": the home directory is unknown; set HOME or write the full path");
        return false;
      }
      s = opts_.home + s.substr(1);
    }
    // A relative path is relative to the manifest that holds it (as kubeconfig paths are
    // relative to their kubeconfig), so a GitOps repository can keep known_hosts beside its Fleet.
    if (s[0] != '/') {
      auto slash = v.doc->file.find_last_of('/');
      if (slash != std::string::npos) s = v.doc->file.substr(0, slash + 1) + s;
    }
    *out = s;
    return true;
  }

  bool Token(const View& v, std::string* out, const std::string& what) {
    std::string s;
    if (!Str(v, &s)) return false;
    if (!IsSafeToken(s)) {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not a valid " + what +
                   ": use letters, digits, '.', '_' and '-', starting and ending with a letter or digit");
      return false;
    }
    *out = s;
    return true;
  }

  bool Duration(const View& v, int64_t* out) {
    std::string s;
    if (!Str(v, &s)) return false;
    int64_t secs = 0;
    if (!ParseDuration(s, &secs) || secs < 0) {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not a duration: write e.g. 24h, 90m, 1h30m, 3600s or 2d");
      return false;
    }
    *out = secs;
    return true;
  }

  // A mapping of strings (labels, annotations); keys must be Kubernetes qualified names.
  void StringMap(const View& v, std::map<std::string, std::string>* out, bool check_values) {
    if (!v.is_object()) return;
    for (const std::string& k : v.keys()) {
      View item = v[k];
      if (!IsQualifiedKey(k)) {
        sink_.At(*v.doc, item.path,
                 json(k).dump() + " is not a valid key: use [prefix/]name where name is at most 63 "
                                  "letters, digits, '-', '_' or '.', starting and ending with a letter or "
                                  "digit, and prefix is a DNS-1123 name",
                 true);
        continue;
      }
      if (!item.is_string()) continue;
      std::string value = item.str();
      if (check_values && !IsLabelValue(value)) {
        sink_.At(*v.doc, item.path,
                 json(value).dump() + " is not a valid label value: at most 63 letters, digits, '-', "
                                      "'_' or '.', starting and ending with a letter or digit");
        continue;
      }
      (*out)[k] = value;
    }
  }

  void Ports(const View& v, std::map<std::string, int>* out) {
    if (!v.is_object()) return;
    for (const std::string& k : v.keys()) {
      View item = v[k];
      if (!IsPortName(k)) {
        sink_.At(*v.doc, item.path,
                 json(k).dump() + " is not a valid port name: letters, digits and '-', starting and "
                                  "ending with a letter or digit, shorter than 63 characters",
                 true);
        continue;
      }
      int p = 0;
      if (Port(item, &p)) (*out)[k] = p;
    }
  }

  void Hosts(const View& v, std::map<std::string, std::vector<std::string>>* out) {
    if (!v.is_object()) return;
    for (const std::string& ip : v.keys()) {
      View names = v[ip];
      if (!IsIP(ip)) {
        sink_.At(*v.doc, names.path,
                 json(ip).dump() + " is not an IP address: each key of hosts is the address the names "
                                   "resolve to on the VM, e.g. \"127.0.0.2\" (the Sidecar egress bind)",
                 true);
        continue;
      }
      if (!names.is_array()) continue;
      if (names.v->empty()) {
        sink_.At(*v.doc, names.path, "empty list: give at least one DNS name or remove the entry");
        continue;
      }
      std::vector<std::string> list;
      for (size_t i = 0; i < names.v->size(); ++i) {
        View n = names.at(i);
        if (!n.is_string()) continue;
        std::string name = n.str();
        if (!IsHostName(name)) {
          sink_.At(*v.doc, n.path,
                   json(name).dump() + " is not a DNS name: use letters, digits, '-' and '.', e.g. "
                                       "reviews.bookinfo.svc");
          continue;
        }
        list.push_back(name);
      }
      std::vector<std::string>& dst = (*out)[ip];
      dst = list;
    }
  }

  // ---- groups of settings (defaults and per workload)

  void ApplySsh(const View& v, SshSettings* s) {
    if (!v.is_object()) return;
    HostOrIP(v["host"], &s->host);
    Port(v["port"], &s->port);
    std::string user;
    if (Str(v["user"], &user)) {
      if (IsSshUser(user)) {
        s->user = user;
      } else {
        sink_.At(*v.doc, v["user"].path,
                 json(user).dump() + " is not a valid user name: letters, digits, '.', '_' and '-', "
                                     "at most 32 characters");
      }
    }
    LocalPath(v["identityFile"], &s->identity_file);
    LocalPath(v["knownHosts"], &s->known_hosts);
  }

  void ApplyProxy(const View& v, Settings* st) {
    if (!v.is_object()) return;
    ProxySettings* p = &st->w.proxy;
    RemotePath(v["configDir"], &p->config_dir);
    std::string s;
    if (Str(v["imageHub"], &s)) SetImageHub(v["imageHub"], s, p);
    if (Str(v["tag"], &s)) {
      if (IsImageTag(s)) {
        p->tag = s;
      } else {
        sink_.At(*v.doc, v["tag"].path,
                 json(s).dump() + " is not an image tag: letters, digits, '_', '.' and '-', at most 128");
      }
    }
    if (Str(v["image"], &s)) SetImage(v["image"], s, p);
    Name(v["containerName"], &p->container_name, false);
    if (Str(v["logLevel"], &s) && IsLogLevel(s)) p->log_level = s;  // the schema enum reports others
    if (Str(v["componentLogLevel"], &s)) SetComponentLogLevel(v["componentLogLevel"], s, p);
    if (Str(v["interceptionMode"], &s) && IsInterceptionMode(s)) p->interception_mode = s;
    View c = v["concurrency"];
    if (c.is_int()) {
      int64_t n = c.v->is_number_unsigned() ? INT64_MAX : c.v->get<int64_t>();
      if (n >= 0 && n <= 1024) {
        p->concurrency = static_cast<int>(n);
        st->concurrency_set = true;
      } else if (n > 1024) {
        sink_.At(*v.doc, c.path, "concurrency " + std::to_string(n) + " is too large: use 0-1024 (0: one worker per core)");
      }
    }
    View pc = v["proxyConfig"];
    if (pc.is_object()) p->proxy_config.merge_patch(*pc.v);
  }

  void SetImageHub(const View& v, const std::string& s, ProxySettings* p) {
    if (IsImageHub(s)) {
      p->image_hub = s;
    } else {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not an image hub: write a registry path such as docker.io/tetrate "
                                "(letters, digits, '.', '_', '-', ':', '/')");
    }
  }
  void SetImage(const View& v, const std::string& s, ProxySettings* p) {
    if (IsImageRef(s)) {
      p->image = s;
    } else {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not an image reference: write hub/name:tag, e.g. "
                                "docker.io/tetrate/proxyv2:1.8.6");
    }
  }
  void SetComponentLogLevel(const View& v, const std::string& s, ProxySettings* p) {
    if (IsComponentLogLevel(s)) {
      p->component_log_level = s;
    } else {
      sink_.At(*v.doc, v.path,
               json(s).dump() + " is not a component log level list: write component:level pairs "
                                "separated by commas, e.g. misc:error,upstream:debug");
    }
  }

  void ApplyToken(const View& v, TokenSettings* t) {
    if (!v.is_object()) return;
    bool dur_ok = Duration(v["duration"], &t->duration_seconds);
    bool renew_ok = Duration(v["renewBefore"], &t->renew_before_seconds);
    std::string aud;
    if (Str(v["audience"], &aud)) {
      if (aud.empty()) {
        sink_.At(*v.doc, v["audience"].path, "empty audience: remove the field to use istio-ca");
      } else {
        t->audience = aud;
      }
    }
    if (dur_ok && t->duration_seconds < kMinTokenSeconds) {
      sink_.At(*v.doc, v["duration"].path,
               "token duration " + FormatDuration(t->duration_seconds) +
                   " is too short: Kubernetes issues tokens for at least 10m");
      return;
    }
    if (renew_ok && t->renew_before_seconds <= 0) {
      sink_.At(*v.doc, v["renewBefore"].path,
               "renewBefore must be more than 0s, or the token would expire before it is renewed");
      return;
    }
    if ((dur_ok || renew_ok) && t->renew_before_seconds >= t->duration_seconds) {
      View at = renew_ok ? v["renewBefore"] : v["duration"];
      sink_.At(*v.doc, at.path,
               "renewBefore (" + FormatDuration(t->renew_before_seconds) + ") must be shorter than the token "
               "duration (" + FormatDuration(t->duration_seconds) +
                   "), or every plan would renew the token; e.g. duration 24h with renewBefore 8h");
    }
  }

  void ApplyVm(const View& v, VmSettings* s) {
    if (!v.is_object()) return;
    RemotePath(v["hostsFile"], &s->hosts_file);
    std::string docker;
    if (Str(v["docker"], &docker)) {
      if (!docker.empty() && docker[0] == '/') {
        RemotePath(v["docker"], &s->docker);
      } else if (IsSafeToken(docker, 255)) {
        s->docker = docker;
      } else {
        sink_.At(*v.doc, v["docker"].path,
                 json(docker).dump() + " is not a command: write a name found on the VM's PATH (docker) or "
                 "an absolute path (" + kRemotePathRule + ")");
      }
    }
  }

  // ---- finishing a workload (both styles)

  void Finish(Settings* st, const View& where, const View& labels_view) {
    Workload& w = st->w;
    if (!st->concurrency_set) {
      auto it = w.proxy.proxy_config.find("concurrency");
      if (it != w.proxy.proxy_config.end() && it->is_number_integer() && it->get<int64_t>() >= 0 &&
          it->get<int64_t>() <= 1024) {
        w.proxy.concurrency = static_cast<int>(it->get<int64_t>());
      }
    }
    if (w.ssh.host.empty()) w.ssh.host = w.address;
    if (w.ssh.user.empty()) {
      if (opts_.local_user.empty()) {
        sink_.At(*where.doc, where.path,
                 "no SSH user: the local user name is unknown; set ssh.user (or defaults.ssh.user)");
      } else {
        w.ssh.user = opts_.local_user;
      }
    }
    if (w.ssh.known_hosts.empty() && !opts_.home.empty()) w.ssh.known_hosts = opts_.home + "/.ssh/known_hosts";
    if (w.service_account.empty()) w.service_account = "default";
    if (w.sidecar_name.empty()) w.sidecar_name = w.name;
    if (labels_view.is_object()) {
      std::vector<std::string> missing;
      for (const char* k : {"app", "version"}) {
        if (!w.labels.count(k) && !labels_view[k].present()) missing.push_back(k);
      }
      if (!missing.empty()) {
        sink_.At(*labels_view.doc, labels_view.path,
                 "missing label" + std::string(missing.size() > 1 ? "s " : " ") + Join(missing, " and ") +
                     ": TSB needs app and version on every workload for its topology and metrics; add "
                     "e.g. app: ratings and version: v1");
      }
    }
  }

  // ---- the Fleet kind

  struct Fleet {
    const Doc* doc = nullptr;
    std::string name;
    Cluster cluster;
    json cluster_json;  // for comparing several Fleet documents
    bool backend_given = false;
    Backend backend;
    Settings defaults;
  };

  Fleet ReadFleet(const Doc& doc) {
    View root{&doc, {}, &doc.value};
    Fleet f;
    f.doc = &doc;
    Name(root["metadata"]["name"], &f.name, false);
    View spec = root["spec"];
    View cl = spec["cluster"];
    Cluster& c = f.cluster;
    if (cl.is_object()) {
      std::string s;
      if (Str(cl["name"], &s)) {
        if (IsSafeToken(s)) {
          c.name = s;
        } else {
          sink_.At(doc, cl["name"].path,
                   json(s).dump() + " is not a valid cluster name: letters, digits, '.', '_' and '-'");
        }
      }
      LocalPath(cl["kubeconfig"], &c.kubeconfig);
      if (Str(cl["context"], &s)) {
        if (s.empty()) {
          sink_.At(doc, cl["context"].path, "empty context: remove the field to use the current-context");
        } else {
          c.context = s;
        }
      }
      Name(cl["istioNamespace"], &c.istio_namespace, true);
      View me = cl["meshExpansion"];
      if (me.is_object()) {
        MeshExpansion m;
        Name(me["controlPlane"], &m.control_plane, false);
        Name(me["namespace"], &m.ns, true);
        c.mesh_expansion = m;
      }
      View gw = cl["vmGateway"];
      if (gw.is_object()) {
        HostOrIP(gw["address"], &c.vm_gateway.address);
        View ports = gw["ports"];
        if (ports.is_array()) {
          std::vector<int> list;
          std::set<int> seen;
          for (size_t i = 0; i < ports.v->size(); ++i) {
            int p = 0;
            if (!Port(ports.at(i), &p)) continue;
            if (!seen.insert(p).second) {
              sink_.At(doc, ports.at(i).path, "port " + std::to_string(p) + " is listed twice; remove one");
              continue;
            }
            list.push_back(p);
          }
          c.vm_gateway.ports = list;
        }
      }
      Token(cl["clusterID"], &c.cluster_id, "cluster ID");
      Token(cl["meshID"], &c.mesh_id, "mesh ID");
      Token(cl["trustDomain"], &c.trust_domain, "trust domain");
    }
    if (c.name.empty()) c.name = c.context.empty() ? "default" : c.context;
    if (c.mesh_expansion && c.mesh_expansion->ns.empty()) c.mesh_expansion->ns = c.istio_namespace;
    f.cluster_json = ClusterJson(c);

    View be = spec["backend"];
    if (be.is_object()) {
      f.backend_given = true;
      std::string type;
      if (Str(be["type"], &type)) f.backend.type = type;
      json config = *be.v;
      config.erase("type");
      f.backend.config = config;
    }

    View defaults = spec["defaults"];
    ApplySsh(defaults["ssh"], &f.defaults.w.ssh);
    ApplyProxy(defaults["proxy"], &f.defaults);
    ApplyToken(defaults["token"], &f.defaults.w.token);
    ApplyVm(defaults["vm"], &f.defaults.w.vm);
    return f;
  }

  static json ClusterJson(const Cluster& c) {
    json j = {{"name", c.name},
              {"kubeconfig", c.kubeconfig},
              {"context", c.context},
              {"istioNamespace", c.istio_namespace},
              {"vmGateway", {{"address", c.vm_gateway.address}, {"ports", c.vm_gateway.ports}}},
              {"clusterID", c.cluster_id},
              {"meshID", c.mesh_id},
              {"trustDomain", c.trust_domain}};
    if (c.mesh_expansion) {
      j["meshExpansion"] = {{"controlPlane", c.mesh_expansion->control_plane},
                            {"namespace", c.mesh_expansion->ns}};
    }
    return j;
  }

  // Annotations onboard reads itself; they are typed fields in a Fleet.
  static const char* ConsumedAnnotationField(const std::string& key) {
    static const std::map<std::string, const char*> kConsumed = {
        {"sidecar-bootstrap.istio.io/ssh-host", "ssh.host"},
        {"sidecar-bootstrap.istio.io/ssh-port", "ssh.port"},
        {"sidecar-bootstrap.istio.io/ssh-user", "ssh.user"},
        {"sidecar-bootstrap.istio.io/proxy-config-dir", "proxy.configDir"},
        {"sidecar-bootstrap.istio.io/proxy-image-hub", "proxy.imageHub"},
        {"sidecar-bootstrap.istio.io/proxy-container-name", "proxy.containerName"},
        {"sidecar-bootstrap.istio.io/proxy-instance-ip", "instanceIP"},
        {"proxy.istio.io/config", "proxy.proxyConfig"},
        {"sidecar.istio.io/proxyImage", "proxy.image"},
        {"sidecar.istio.io/logLevel", "proxy.logLevel"},
        {"sidecar.istio.io/componentLogLevel", "proxy.componentLogLevel"},
        {"sidecar.istio.io/interceptionMode", "proxy.interceptionMode"},
        {"onboard.dev/hosts", "hosts"},
    };
    auto it = kConsumed.find(key);
    return it == kConsumed.end() ? nullptr : it->second;
  }

  // A Fleet's spec.workloads[i].
  void ReadFleetWorkload(const Fleet& f, const View& v) {
    if (!v.is_object()) return;
    Settings st = f.defaults;
    Workload& w = st.w;
    Name(v["name"], &w.name, false);
    Name(v["namespace"], &w.ns, true);
    HostOrIP(v["address"], &w.address);
    IP(v["instanceIP"], &w.instance_ip);
    Token(v["network"], &w.network, "network name");
    Name(v["serviceAccount"], &w.service_account, false);
    StringMap(v["labels"], &w.labels, true);
    StringMap(v["annotations"], &w.annotations, false);
    for (const std::string& k : v["annotations"].keys()) {
      if (const char* field = ConsumedAnnotationField(k)) {
        sink_.At(*v.doc, v["annotations"][k].path,
                 "in a Fleet this setting is the field " + std::string(field) + "; move the value there");
        w.annotations.erase(k);
      } else if (k.rfind("sidecar-bootstrap.istio.io/", 0) == 0) {
        sink_.At(*v.doc, v["annotations"][k].path,
                 "unknown tctl annotation; in a Fleet use the ssh and proxy fields instead", true);
        w.annotations.erase(k);
      }
    }
    Ports(v["ports"], &w.ports);
    View weight = v["weight"];
    if (weight.is_int()) w.weight = weight.v->dump();
    View sc = v["sidecar"];
    if (sc.is_object()) w.sidecar = *sc.v;
    Name(v["sidecarName"], &w.sidecar_name, false);
    Hosts(v["hosts"], &w.hosts);
    ApplySsh(v["ssh"], &w.ssh);
    ApplyProxy(v["proxy"], &st);
    ApplyToken(v["token"], &w.token);
    ApplyVm(v["vm"], &w.vm);
    w.source = v.ref();
    Finish(&st, v, v["labels"]);
    // A Fleet's sidecar selects its own workload unless it says otherwise.
    if (!w.sidecar.empty()) {
      View sel = sc["workloadSelector"];
      if (!sel.present()) {
        w.sidecar["workloadSelector"] = {{"labels", w.labels}};
      } else {
        CheckSelector(sel, w);
      }
    }
    Add(std::move(w), v, sc.is_object() && !sc.v->empty() ? sc.ref() : SourceRef{});
  }

  void CheckSelector(const View& sel, const Workload& w) {
    View labels = sel["labels"];
    if (!labels.is_object()) {
      sink_.At(*sel.doc, labels.path,
               "workloadSelector needs labels (a mapping); remove workloadSelector to select this workload by "
               "all its labels");
      return;
    }
    for (const std::string& k : labels.keys()) {
      View lv = labels[k];
      auto it = w.labels.find(k);
      if (!lv.is_string() || it == w.labels.end() || it->second != lv.str()) {
        sink_.At(*sel.doc, lv.path,
                 "this selector label does not match the workload's labels, so the Sidecar would not apply "
                 "to it; use one of the workload's labels or remove workloadSelector");
      }
    }
  }

  // A tctl-style WorkloadEntry document.
  void ReadWorkloadEntry(const Doc& doc, const Settings& defaults) {
    View root{&doc, {}, &doc.value};
    Settings st = defaults;
    Workload& w = st.w;
    View meta = root["metadata"];
    Name(meta["name"], &w.name, false);
    Name(meta["namespace"], &w.ns, true);
    View spec = root["spec"];
    HostOrIP(spec["address"], &w.address);
    Token(spec["network"], &w.network, "network name");
    Name(spec["serviceAccount"], &w.service_account, false);
    StringMap(spec["labels"], &w.labels, true);
    Ports(spec["ports"], &w.ports);
    if (spec["weight"].is_int()) w.weight = spec["weight"].v->dump();
    if (spec["locality"].present()) {
      sink_.At(doc, spec["locality"].path,
               "onboard does not manage WorkloadEntry locality yet; remove it (or manage this WorkloadEntry "
               "without onboard)");
    }

    // tctl's annotations. proxy-config-dir: tctl's own default is /tmp/istio-proxy, but the TSB
    // guide uses /etc/istio-proxy and a directory under /tmp does not survive a reboot; onboard
    // keeps its default (ProxySettings::config_dir, /etc/istio-proxy) for tctl-style documents too.
    View ann = meta["annotations"];
    std::map<std::string, std::string> all;
    StringMap(ann, &all, false);
    for (const auto& kv : all) {
      const std::string& k = kv.first;
      View a = ann[k];
      const std::string& val = kv.second;
      if (k == "sidecar-bootstrap.istio.io/ssh-host") {
        HostOrIP(a, &w.ssh.host);
      } else if (k == "sidecar-bootstrap.istio.io/ssh-port") {
        std::optional<json> n = ResolveInt(val);
        if (!n || !n->is_number_integer() || val.empty() || val[0] == '0' || val[0] == '+') {
          sink_.At(doc, a.path, json(val).dump() + " is not a port number: use 1-65535, e.g. \"22\"");
        } else if (CheckPort(a, n->get<int64_t>())) {
          w.ssh.port = static_cast<int>(n->get<int64_t>());
        }
      } else if (k == "sidecar-bootstrap.istio.io/ssh-user") {
        if (IsSshUser(val)) {
          w.ssh.user = val;
        } else {
          sink_.At(doc, a.path, json(val).dump() + " is not a valid user name: letters, digits, '.', '_' and '-'");
        }
      } else if (k == "sidecar-bootstrap.istio.io/proxy-config-dir") {
        RemotePath(a, &w.proxy.config_dir);
      } else if (k == "sidecar-bootstrap.istio.io/proxy-image-hub") {
        SetImageHub(a, val, &w.proxy);
      } else if (k == "sidecar-bootstrap.istio.io/proxy-container-name") {
        Name(a, &w.proxy.container_name, false);
      } else if (k == "sidecar-bootstrap.istio.io/proxy-instance-ip") {
        IP(a, &w.instance_ip);
      } else if (k.rfind("sidecar-bootstrap.istio.io/", 0) == 0) {
        sink_.At(doc, a.path,
                 "unknown sidecar-bootstrap annotation; known: ssh-host, ssh-port, ssh-user, proxy-config-dir, "
                 "proxy-image-hub, proxy-container-name, proxy-instance-ip",
                 true);
      } else if (k == "proxy.istio.io/config") {
        std::optional<json> pc = EmbeddedYaml(a, val, "ProxyConfig");
        if (pc && pc->is_object()) w.proxy.proxy_config.merge_patch(*pc);
      } else if (k == "sidecar.istio.io/proxyImage") {
        SetImage(a, val, &w.proxy);
      } else if (k == "sidecar.istio.io/logLevel") {
        if (IsLogLevel(val)) {
          w.proxy.log_level = val;
        } else {
          sink_.At(doc, a.path, json(val).dump() + " is not a log level: use one of trace, debug, info, "
                                                   "warning, error, critical, off");
        }
      } else if (k == "sidecar.istio.io/componentLogLevel") {
        SetComponentLogLevel(a, val, &w.proxy);
      } else if (k == "sidecar.istio.io/interceptionMode") {
        if (IsInterceptionMode(val)) {
          w.proxy.interception_mode = val;
        } else {
          sink_.At(doc, a.path, json(val).dump() + " is not an interception mode: use NONE, REDIRECT or TPROXY");
        }
      } else if (k == "onboard.dev/hosts") {
        // onboard's addition for tctl-style files: the hosts entries a Fleet writes as `hosts`.
        std::optional<json> h = EmbeddedYaml(a, val, "hosts mapping (IP: [names])");
        if (h) {
          Doc tmp;
          tmp.file = doc.file;
          tmp.value = *h;
          tmp.start = a.pos();
          tmp.locs[""] = Loc{{}, tmp.start};
          if (!h->is_object()) {
            sink_.At(doc, a.path, "must be a mapping of IP address to a list of DNS names, e.g. "
                                  "{\"127.0.0.2\": [reviews.bookinfo.svc]}");
          } else {
            bool typed = true;
            for (auto it = h->begin(); it != h->end(); ++it) {
              if (!it->is_array()) typed = false;
              for (const json& n : *it) typed = typed && n.is_string();
            }
            if (!typed) {
              sink_.At(doc, a.path, "each IP must map to a list of DNS names, e.g. "
                                    "{\"127.0.0.2\": [reviews.bookinfo.svc]}");
            } else {
              size_t before = sink_.size();
              std::map<std::string, std::vector<std::string>> hosts;
              Hosts(View{&tmp, {}, &tmp.value}, &hosts);
              if (sink_.size() == before) w.hosts = hosts;
            }
          }
        }
      } else if (k.rfind("onboard.dev/", 0) == 0) {
        sink_.At(doc, a.path, "unknown onboard.dev annotation; the only one is onboard.dev/hosts", true);
      } else if (k == "kubectl.kubernetes.io/last-applied-configuration") {
        // kubectl's bookkeeping: not part of the desired object.
      } else {
        w.annotations[k] = val;
      }
    }
    w.source = SourceRef{doc.file, doc.start.line, doc.start.column};
    Finish(&st, root, spec["labels"]);
    Add(std::move(w), root, SourceRef{});
  }

  // The YAML (or JSON) inside an annotation value; errors point at the annotation.
  std::optional<json> EmbeddedYaml(const View& a, const std::string& text, const std::string& what) {
    Sink inner;
    std::vector<Doc> docs = ParseYaml(a.doc->file, text, inner);
    std::vector<Diagnostic> problems = inner.Finish();
    if (!problems.empty()) {
      // A syntax error says most; the parser may have sent a few events before it.
      const std::string kSyntax = "YAML syntax error: ";
      const std::string kFix = "; fix the YAML at this position";
      Diagnostic p = problems.front();
      for (const Diagnostic& d : problems) {
        if (d.message.rfind(kSyntax, 0) == 0) {
          p = d;
          break;
        }
      }
      std::string msg = p.message;
      if (msg.rfind(kSyntax, 0) == 0) msg = msg.substr(kSyntax.size());
      if (msg.size() > kFix.size() && msg.compare(msg.size() - kFix.size(), kFix.size(), kFix) == 0) {
        msg.resize(msg.size() - kFix.size());
      }
      std::string where = p.where.line > 0 ? "line " + std::to_string(p.where.line) + " of the value: " : "";
      sink_.At(*a.doc, a.path, "the " + what + " in this annotation is not valid YAML/JSON (" + where + msg + ")");
      return std::nullopt;
    }
    if (docs.size() > 1) {
      sink_.At(*a.doc, a.path, "the " + what + " in this annotation holds several YAML documents; keep one");
      return std::nullopt;
    }
    if (docs.empty()) return json::object();
    if (!docs[0].value.is_object()) {
      sink_.At(*a.doc, a.path, "the " + what + " in this annotation must be a YAML or JSON mapping");
      return std::nullopt;
    }
    return docs[0].value;
  }

  // ---- Sidecar documents

  struct SidecarDoc {
    const Doc* doc;
    std::string name;
    std::string ns;
  };

  void ReadSidecar(const Doc& doc) {
    View root{&doc, {}, &doc.value};
    SidecarDoc s{&doc, "", ""};
    bool ok = Name(root["metadata"]["name"], &s.name, false);
    ok = Name(root["metadata"]["namespace"], &s.ns, true) && ok;
    if (ok && root["spec"].is_object()) sidecars_.push_back(s);
  }

  void AttachSidecars() {
    for (const SidecarDoc& s : sidecars_) {
      View root{s.doc, {}, &s.doc->value};
      View spec = root["spec"];
      View labels = spec["workloadSelector"]["labels"];
      std::string who = "Sidecar " + s.ns + "/" + s.name;
      if (!labels.is_object() || labels.v->empty()) {
        sink_.At(*s.doc, labels.present() ? labels.path : spec.path,
                 who + " has no spec.workloadSelector.labels: it would apply to every workload in the namespace; "
                       "add the labels of the WorkloadEntry it configures");
        continue;
      }
      std::map<std::string, std::string> sel;
      bool typed = true;
      for (const std::string& k : labels.keys()) {
        if (!labels[k].is_string()) {
          typed = false;
          sink_.At(*s.doc, labels[k].path, "selector label values must be strings; put the value in quotes");
        } else {
          sel[k] = labels[k].str();
        }
      }
      if (!typed) continue;
      int matched = 0;
      for (Pending& p : workloads_) {
        Workload& w = p.w;
        if (w.ns != s.ns) continue;
        bool match = std::all_of(sel.begin(), sel.end(), [&](const auto& kv) {
          auto it = w.labels.find(kv.first);
          return it != w.labels.end() && it->second == kv.second;
        });
        if (!match) continue;
        ++matched;
        if (!w.sidecar.empty()) {
          sink_.At(*s.doc, root.path,
                   who + " selects workload " + w.Key() + ", which already has a Sidecar (" +
                       p.sidecar_ref.ToString() + "); Istio applies only one Sidecar per workload — merge them or "
                       "narrow the workloadSelector");
          continue;
        }
        w.sidecar = *spec.v;
        w.sidecar_name = s.name;
        p.sidecar_ref = SourceRef{s.doc->file, s.doc->start.line, s.doc->start.column};
      }
      if (matched == 0) {
        std::string sel_text = json(sel).dump();
        sink_.At(*s.doc, labels.path,
                 who + " matches no WorkloadEntry: no workload in namespace " + s.ns + " has the labels " + sel_text +
                     "; fix the workloadSelector labels or add the WorkloadEntry it belongs to");
      }
    }
  }

  // ---- collecting workloads

  struct Pending {
    Workload w;
    SourceRef sidecar_ref;
  };

  void Add(Workload w, const View& where, SourceRef sidecar_ref) {
    Pending p;
    p.w = std::move(w);
    p.sidecar_ref = sidecar_ref;
    (void)where;
    workloads_.push_back(std::move(p));
  }

  // Unique names per namespace, and one Sidecar object per name.
  void CheckUnique() {
    std::map<std::string, const Pending*> by_key;
    for (const Pending& p : workloads_) {
      if (p.w.name.empty() || p.w.ns.empty()) continue;
      auto ins = by_key.emplace(p.w.Key(), &p);
      if (!ins.second) {
        const Pending* first = ins.first->second;
        sink_.Add(p.w.source.file, Pos{p.w.source.line, p.w.source.column}, "",
                  "workload " + p.w.Key() + " is declared twice: here and at " + first->w.source.ToString() +
                      "; names must be unique per namespace — rename or delete one");
      }
    }
    std::map<std::string, const Pending*> by_sidecar;
    for (const Pending& p : workloads_) {
      if (p.w.sidecar.empty() || p.w.ns.empty()) continue;
      std::string key = p.w.ns + "/" + p.w.sidecar_name;
      auto ins = by_sidecar.emplace(key, &p);
      if (!ins.second && ins.first->second->w.sidecar != p.w.sidecar) {
        const Pending* first = ins.first->second;
        sink_.Add(p.w.source.file, Pos{p.w.source.line, p.w.source.column}, "",
                  "workload " + p.w.Key() + " and workload " + first->w.Key() + " (" + first->w.source.ToString() +
                      ") both define Sidecar " + key + " with different specs; give one a different sidecarName");
      }
    }
  }

  std::vector<Workload> TakeWorkloads() {
    std::vector<Workload> out;
    for (Pending& p : workloads_) out.push_back(std::move(p.w));
    std::stable_sort(out.begin(), out.end(), [](const Workload& a, const Workload& b) { return a.Key() < b.Key(); });
    return out;
  }

 private:
  Sink& sink_;
  const LoadOptions& opts_;
  std::vector<Pending> workloads_;
  std::vector<SidecarDoc> sidecars_;
};

enum class Kind { kIgnored, kFleet, kWorkloadEntry, kSidecar, kInvalid };

Kind Classify(const Doc& doc, Sink& sink) {
  View root{&doc, {}, &doc.value};
  if (!doc.value.is_object()) {
    sink.At(doc, {}, "a document must be a mapping with apiVersion and kind (found " + Describe(doc.value) + ")");
    return Kind::kInvalid;
  }
  View kind = root["kind"];
  View api = root["apiVersion"];
  if (!kind.is_string() || kind.str().empty()) {
    sink.At(doc, kind.path,
            kind.present() ? "kind must be a string such as Fleet or WorkloadEntry"
                           : "missing kind: every document needs apiVersion and kind (e.g. apiVersion: "
                             "onboard.dev/v1alpha1, kind: Fleet)",
            false);
    return Kind::kInvalid;
  }
  if (!api.is_string() || api.str().empty()) {
    sink.At(doc, api.path,
            "missing apiVersion: write e.g. onboard.dev/v1alpha1 (Fleet) or networking.istio.io/v1beta1");
    return Kind::kInvalid;
  }
  std::string k = kind.str();
  std::string a = api.str();
  std::string group = a.find('/') == std::string::npos ? "" : a.substr(0, a.find('/'));
  if (group == "onboard.dev") {
    if (k == "Fleet") return Kind::kFleet;
    sink.At(doc, kind.path, "unknown kind " + json(k).dump() + " in onboard.dev: the only kind is Fleet");
    return Kind::kInvalid;
  }
  if (group == "networking.istio.io") {
    if (k == "WorkloadEntry") return Kind::kWorkloadEntry;
    if (k == "Sidecar") return Kind::kSidecar;
  }
  return Kind::kIgnored;
}

std::string HexSha256(const std::vector<std::pair<std::string, std::string>>& files) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1;
  for (const auto& f : files) {
    if (!ok) break;
    std::string size = std::to_string(f.second.size());
    ok = EVP_DigestUpdate(ctx, f.first.data(), f.first.size()) == 1 && EVP_DigestUpdate(ctx, "\0", 1) == 1 &&
         EVP_DigestUpdate(ctx, size.data(), size.size()) == 1 && EVP_DigestUpdate(ctx, "\0", 1) == 1 &&
         EVP_DigestUpdate(ctx, f.second.data(), f.second.size()) == 1;
  }
  ok = ok && EVP_DigestFinal_ex(ctx, md, &len) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) return "";
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

LoadResult LoadSorted(std::vector<std::pair<std::string, std::string>> files, const LoadOptions& opts,
                      Sink& sink) {
  std::stable_sort(files.begin(), files.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // Keep every Doc alive (views point into them) until the model is built.
  std::vector<std::unique_ptr<Doc>> docs;
  std::vector<std::pair<Kind, const Doc*>> typed;
  for (const auto& f : files) {
    for (Doc& d : ParseFile(f.first, f.second, sink)) {
      docs.push_back(std::make_unique<Doc>(std::move(d)));
      const Doc* doc = docs.back().get();
      Kind k = Classify(*doc, sink);
      if (k == Kind::kFleet) ValidateSchema("Fleet", *doc, sink);
      if (k == Kind::kWorkloadEntry) ValidateSchema("WorkloadEntry", *doc, sink);
      if (k == Kind::kSidecar) ValidateSchema("Sidecar", *doc, sink);
      typed.emplace_back(k, doc);
    }
  }

  Builder b(sink, opts);
  std::vector<Builder::Fleet> fleets;
  bool relevant = false;
  for (const auto& t : typed) {
    if (t.first == Kind::kFleet) fleets.push_back(b.ReadFleet(*t.second));
    if (t.first != Kind::kIgnored) relevant = true;
  }
  Model model;
  Settings tctl_defaults;
  if (!fleets.empty()) {
    const Builder::Fleet& first = fleets.front();
    model.fleet_name = first.name;
    model.cluster = first.cluster;
    if (first.backend_given) model.backend = first.backend;
    tctl_defaults = first.defaults;
    const Builder::Fleet* backend_from = first.backend_given ? &first : nullptr;
    for (size_t i = 1; i < fleets.size(); ++i) {
      const Builder::Fleet& f = fleets[i];
      View spec = View{f.doc, {}, &f.doc->value}["spec"];
      SourceRef first_ref = View{first.doc, {}, &first.doc->value}.ref();
      if (f.cluster_json != first.cluster_json) {
        sink.At(*f.doc, spec["cluster"].path,
                "a second Fleet document with a different cluster (the first is at " + first_ref.ToString() +
                    "): one load is one cluster — make the cluster sections identical or load the fleets separately");
      }
      if (f.backend_given) {
        if (backend_from && (f.backend.type != backend_from->backend.type ||
                             f.backend.config != backend_from->backend.config)) {
          sink.At(*f.doc, spec["backend"].path,
                  "a second Fleet document with a different backend (the other is at " +
                      View{backend_from->doc, {}, &backend_from->doc->value}.ref().ToString() +
                      "): there is one state per load — make the backends identical or keep one");
        } else if (!backend_from) {
          backend_from = &f;
          model.backend = f.backend;
        }
      }
    }
    for (const Builder::Fleet& f : fleets) {
      View workloads = View{f.doc, {}, &f.doc->value}["spec"]["workloads"];
      if (!workloads.is_array()) continue;
      for (size_t i = 0; i < workloads.v->size(); ++i) b.ReadFleetWorkload(f, workloads.at(i));
    }
  } else {
    model.fleet_name = "default";
    model.cluster.name = "default";
  }
  for (const auto& t : typed) {
    if (t.first == Kind::kWorkloadEntry) b.ReadWorkloadEntry(*t.second, tctl_defaults);
  }
  for (const auto& t : typed) {
    if (t.first == Kind::kSidecar) b.ReadSidecar(*t.second);
  }
  b.AttachSidecars();
  b.CheckUnique();
  if (!relevant && sink.empty()) {
    std::vector<std::string> names;
    for (const auto& f : files) names.push_back(f.first);
    sink.Add(names.empty() ? std::string("(no files)") : names.front(), {}, "",
             "no Fleet, WorkloadEntry or Sidecar document found in " + (names.empty() ? std::string("the input") : Join(names, ", ")) +
                 "; point -f at your onboard manifests");
  }

  LoadResult result;
  result.diagnostics = sink.Finish();
  if (!result.diagnostics.empty()) return result;
  model.workloads = b.TakeWorkloads();
  for (const auto& f : files) model.files.push_back(f.first);
  model.digest = HexSha256(files);
  result.model = std::move(model);
  return result;
}

}  // namespace

std::string ManifestDigest(const std::vector<std::pair<std::string, std::string>>& files) {
  return HexSha256(files);
}

LoadResult LoadManifestTexts(const std::vector<std::pair<std::string, std::string>>& files,
                             const LoadOptions& opts) {
  Sink sink;
  try {
    return LoadSorted(files, opts, sink);
  } catch (const std::exception& e) {
    LoadResult r;
    Diagnostic d;
    d.where.file = files.empty() ? "" : files.front().first;
    d.message = std::string("internal error while loading manifests: ") + e.what() + "; please report it";
    r.diagnostics.push_back(d);
    return r;
  }
}

LoadResult LoadManifestText(const std::string& text, const std::string& filename, const LoadOptions& opts) {
  return LoadManifestTexts({{filename, text}}, opts);
}

LoadResult LoadManifests(const std::vector<std::string>& paths, const LoadOptions& opts) {
  namespace fs = std::filesystem;
  std::vector<Diagnostic> problems;
  auto problem = [&](const std::string& file, const std::string& msg) {
    Diagnostic d;
    d.where.file = file;
    d.message = msg;
    problems.push_back(d);
  };
  std::vector<std::string> selected;
  for (const std::string& p : paths) {
    std::error_code ec;
    fs::file_status st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      problem(p, "no such file or directory; check the -f argument");
      continue;
    }
    if (fs::is_directory(st)) {
      std::vector<std::string> found;
      fs::directory_iterator it(p, ec), end;
      if (ec) {
        problem(p, "cannot list the directory: " + ec.message());
        continue;
      }
      for (; it != end; it.increment(ec)) {
        if (ec) break;
        std::string name = it->path().filename().string();
        std::string ext = it->path().extension().string();
        if (name.empty() || name[0] == '.') continue;
        if (ext != ".yaml" && ext != ".yml") continue;
        std::error_code fec;
        if (!fs::is_regular_file(it->path(), fec)) continue;
        found.push_back((fs::path(p) / name).string());
      }
      if (ec) {
        problem(p, "cannot list the directory: " + ec.message());
        continue;
      }
      if (found.empty()) {
        problem(p, "no *.yaml or *.yml files in this directory (subdirectories are not read); name the files "
                   "with -f or use the directory that holds them");
        continue;
      }
      std::sort(found.begin(), found.end());
      selected.insert(selected.end(), found.begin(), found.end());
    } else {
      selected.push_back(p);
    }
  }
  // Each file once, even when named directly and through its directory.
  std::vector<std::pair<std::string, std::string>> files;
  std::set<std::string> seen;
  for (const std::string& f : selected) {
    std::error_code ec;
    std::string canon = fs::weakly_canonical(f, ec).string();
    if (ec) canon = f;
    if (!seen.insert(canon).second) continue;
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      problem(f, "cannot read the file (permission denied?)");
      continue;
    }
    std::string text;
    char buf[65536];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      text.append(buf, static_cast<size_t>(in.gcount()));
      if (text.size() > kMaxFileBytes) break;
    }
    if (in.bad()) {
      problem(f, "error while reading the file");
      continue;
    }
    files.emplace_back(f, std::move(text));
  }
  LoadResult r = LoadManifestTexts(files, opts);
  if (!problems.empty()) {
    r.model.reset();
    // The no-documents complaint adds nothing when paths were already wrong.
    if (files.empty()) r.diagnostics.clear();
    r.diagnostics.insert(r.diagnostics.begin(), problems.begin(), problems.end());
  }
  return r;
}

}  // namespace onboard
