// Plan queries, text rendering (like `terraform plan`) and the JSON form (schemas/plan.schema.json).
#include <algorithm>
#include <sstream>

#include "engine/plan.h"

namespace onboard {
namespace {

using nlohmann::json;

struct Style {
  bool on;
  std::string c(const char* code, const std::string& s) const {
    return on ? std::string("\x1b[") + code + "m" + s + "\x1b[0m" : s;
  }
};

const char* Symbol(Action a) {
  switch (a) {
    case Action::kCreate: return "+";
    case Action::kUpdate: return "~";
    case Action::kReplace: return "-/+";
    case Action::kDelete: return "-";
    case Action::kRead: return "<=";
    case Action::kNoOp: return " ";
  }
  return "?";
}

const char* ColorOf(Action a) {
  switch (a) {
    case Action::kCreate: return "32";
    case Action::kUpdate: return "33";
    case Action::kReplace: return "35";
    case Action::kDelete: return "31";
    case Action::kRead: return "36";
    case Action::kNoOp: return "0";
  }
  return "0";
}

const char* Verb(Action a) {
  switch (a) {
    case Action::kCreate: return "will be created";
    case Action::kUpdate: return "will be updated in-place";
    case Action::kReplace: return "must be replaced";
    case Action::kDelete: return "will be destroyed";
    case Action::kRead: return "will be checked during apply";
    case Action::kNoOp: return "is unchanged";
  }
  return "";
}

std::string Value(const json& v) {
  if (IsUnknown(v)) return "(known after refresh)";
  if (v.is_string() && v.get_ref<const std::string&>().size() == 64 &&
      v.get_ref<const std::string&>().find_first_not_of("0123456789abcdef") == std::string::npos)
    return "sha256:" + v.get<std::string>().substr(0, 12);
  std::string s = v.dump();
  if (s.size() > 96) s = s.substr(0, 93) + "...";
  return s;
}

// Flattened leaves of an attribute tree: "object.spec.address" = "10.0.0.1".
void Leaves(const json& v, const std::string& path, std::vector<std::pair<std::string, std::string>>* out) {
  if (v.is_object() && !IsUnknown(v) && !v.empty()) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (path.empty() && it.key() == "connection") continue;
      Leaves(*it, path.empty() ? it.key() : path + "." + it.key(), out);
    }
    return;
  }
  out->emplace_back(path, Value(v));
}

std::string ConnectionNote(const json& attrs) {
  if (!attrs.is_object() || !attrs.contains("connection")) return "";
  const json& c = attrs["connection"];
  return " (on " + c.value("user", std::string()) + "@" + c.value("host", std::string()) + ":" +
         std::to_string(c.value("port", 22)) + ")";
}

}  // namespace

const char* ActionName(Action a) {
  switch (a) {
    case Action::kNoOp: return "no-op";
    case Action::kCreate: return "create";
    case Action::kUpdate: return "update";
    case Action::kReplace: return "replace";
    case Action::kDelete: return "delete";
    case Action::kRead: return "read";
  }
  return "?";
}

std::optional<Action> ActionFromName(const std::string& name) {
  for (Action a : {Action::kNoOp, Action::kCreate, Action::kUpdate, Action::kReplace, Action::kDelete,
                   Action::kRead})
    if (name == ActionName(a)) return a;
  return std::nullopt;
}

bool Plan::HasChanges() const {
  return std::any_of(changes.begin(), changes.end(), [](const Change& c) {
    return c.action != Action::kNoOp && c.action != Action::kRead;
  });
}

int Plan::CountAdd() const {
  return static_cast<int>(std::count_if(changes.begin(), changes.end(), [](const Change& c) {
    return c.action == Action::kCreate || c.action == Action::kReplace;
  }));
}
int Plan::CountChange() const {
  return static_cast<int>(std::count_if(changes.begin(), changes.end(),
                                        [](const Change& c) { return c.action == Action::kUpdate; }));
}
int Plan::CountDestroy() const {
  return static_cast<int>(std::count_if(changes.begin(), changes.end(), [](const Change& c) {
    return c.action == Action::kDelete || c.action == Action::kReplace;
  }));
}

const Change* Plan::Find(const std::string& address) const {
  for (const auto& c : changes)
    if (c.address.ToString() == address) return &c;
  return nullptr;
}

std::string RenderSummary(const Plan& plan) {
  if (!plan.HasChanges())
    return "No changes. The fleet matches the manifests" +
           std::string(plan.refreshed ? " and the world." : " (state not refreshed).");
  std::ostringstream out;
  out << "Plan: " << plan.CountAdd() << " to add, " << plan.CountChange() << " to change, "
      << plan.CountDestroy() << " to destroy.";
  return out.str();
}

std::string RenderPlanText(const Plan& plan, const RenderOptions& opts) {
  Style st{opts.color};
  std::ostringstream out;
  bool any = false;
  for (const auto& c : plan.changes) {
    if (c.action == Action::kNoOp) continue;
    if (!any) {
      out << "onboard will perform the following actions:\n";
      any = true;
    }
    const std::string addr = c.address.ToString();
    out << "\n" << st.c("1", "  # " + addr) << " " << Verb(c.action)
        << ConnectionNote(c.after.is_null() ? c.before : c.after) << "\n";
    for (const auto& r : c.reasons)
      out << "    " << (r.drift ? st.c("33", "! ") : "  ") << (r.field.empty() ? "" : r.field + ": ")
          << r.message << "\n";
    out << "  " << st.c(ColorOf(c.action), Symbol(c.action)) << " " << addr << "\n";
    if (c.action == Action::kCreate || c.action == Action::kRead) {
      std::vector<std::pair<std::string, std::string>> leaves;
      Leaves(c.after, "", &leaves);
      for (const auto& [k, v] : leaves) out << "      " << st.c("32", "+") << " " << k << " = " << v << "\n";
    } else if (c.action == Action::kDelete) {
      std::vector<std::pair<std::string, std::string>> leaves;
      Leaves(c.before, "", &leaves);
      for (const auto& [k, v] : leaves) out << "      " << st.c("31", "-") << " " << k << " = " << v << "\n";
    }
  }
  if (any) out << "\n";
  out << RenderSummary(plan) << "\n";
  return out.str();
}

json PlanToJson(const Plan& plan) {
  json changes = json::array();
  for (const auto& c : plan.changes) {
    json reasons = json::array();
    for (const auto& r : c.reasons)
      reasons.push_back({{"field", r.field}, {"message", r.message}, {"drift", r.drift}});
    changes.push_back({{"address", c.address.ToString()},
                       {"type", TypeName(c.address.type)},
                       {"name", c.address.name},
                       {"workload", c.workload},
                       {"action", ActionName(c.action)},
                       {"before", c.before},
                       {"after", c.after},
                       {"reasons", reasons}});
  }
  return json{{"format_version", kPlanFormatVersion},
              {"destroy", plan.destroy},
              {"refreshed", plan.refreshed},
              {"targets", plan.targets},
              {"state", {{"lineage", plan.lineage}, {"serial", plan.serial}}},
              {"manifest_digest", plan.manifest_digest},
              {"created_at", FormatTime(plan.created_at)},
              {"summary",
               {{"add", plan.CountAdd()}, {"change", plan.CountChange()}, {"destroy", plan.CountDestroy()},
                {"has_changes", plan.HasChanges()}}},
              {"changes", changes}};
}

Result<Plan> PlanFromJson(const json& j, const std::string& source) {
  auto bad = [&](const std::string& what) {
    return Result<Plan>::Error("plan file " + source + " is not a valid onboard plan: " + what +
                               "; make a new one with onboard plan --out");
  };
  try {
    if (!j.is_object()) return bad("not a JSON object");
    if (j.value("format_version", 0) != kPlanFormatVersion)
      return bad("format_version " + j.value("format_version", json()).dump() + " (this onboard reads " +
                 std::to_string(kPlanFormatVersion) + ")");
    Plan p;
    p.destroy = j.at("destroy").get<bool>();
    p.refreshed = j.at("refreshed").get<bool>();
    p.targets = j.at("targets").get<std::vector<std::string>>();
    p.lineage = j.at("state").at("lineage").get<std::string>();
    p.serial = j.at("state").at("serial").get<int64_t>();
    p.manifest_digest = j.at("manifest_digest").get<std::string>();
    if (!ParseTime(j.at("created_at").get<std::string>(), &p.created_at)) return bad("created_at");
    for (const auto& c : j.at("changes")) {
      Change ch;
      auto addr = Address::Parse(c.at("address").get<std::string>());
      if (!addr.ok()) return bad(addr.error());
      ch.address = *addr;
      ch.workload = c.at("workload").get<std::string>();
      auto action = ActionFromName(c.at("action").get<std::string>());
      if (!action) return bad("unknown action " + c.at("action").dump());
      ch.action = *action;
      ch.before = c.at("before");
      ch.after = c.at("after");
      for (const auto& r : c.at("reasons"))
        ch.reasons.push_back({r.at("field").get<std::string>(), r.at("message").get<std::string>(),
                              r.at("drift").get<bool>()});
      p.changes.push_back(std::move(ch));
    }
    return p;
  } catch (const json::exception& e) {
    return bad(e.what());
  }
}

}  // namespace onboard
