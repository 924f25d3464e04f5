#include "state/kubernetes.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "engine/hash.h"
#include "providers/kubernetes/client.h"
#include "providers/kubernetes/kubeconfig.h"
#include "state/kubernetes_util.h"
#include "state/lock.h"
#include "state/overwrite.h"

namespace onboard {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr size_t kPartBytes = 512 * 1024;
constexpr int kDefaultLeaseSeconds = 30;
constexpr int kMinLeaseSeconds = 2;
constexpr int kMaxLeaseSeconds = 3600;
constexpr auto kLockPoll = std::chrono::seconds(1);

constexpr const char* kValidKeys = "namespace, name, kubeconfig, context, leaseDurationSeconds";
constexpr const char* kManagedByLabel = "app.kubernetes.io/managed-by";
constexpr const char* kStateLabel = "onboard.tetrate.io/state";
constexpr const char* kPartLabel = "onboard.tetrate.io/part";
constexpr const char* kShaAnnotation = "onboard.tetrate.io/sha256";
constexpr const char* kSizeAnnotation = "onboard.tetrate.io/size";
constexpr const char* kPartsAnnotation = "onboard.tetrate.io/parts";
constexpr const char* kLineageAnnotation = "onboard.tetrate.io/lineage";
constexpr const char* kSerialAnnotation = "onboard.tetrate.io/serial";
constexpr const char* kLockInfoAnnotation = "onboard.tetrate.io/lock-info";
constexpr const char* kDataKey = "state.json.gz";
constexpr const char* kLeaseResource = "leases.coordination.k8s.io";

std::string Quote(const std::string& s) { return "\"" + s + "\""; }

std::string Str(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& Member(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::vector<std::string> SplitNames(const std::string& list) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= list.size() && !list.empty()) {
    size_t comma = list.find(',', b);
    out.push_back(list.substr(b, comma == std::string::npos ? std::string::npos : comma - b));
    if (comma == std::string::npos) break;
    b = comma + 1;
  }
  return out;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

bool ParseInt64(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') return false;
  *out = std::stoll(s);
  return true;
}

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", s);
  return buf;
}

struct Settings {
  std::string ns;
  std::string name;
  int lease_seconds = kDefaultLeaseSeconds;
  std::string context;
  std::string server;
  std::string index_name;  // onboard-state-<name>
  std::string lease_name;  // onboard-lock-<name>
};

// What a Lease says.
struct LeaseView {
  json obj;
  std::string rv, uid, holder;
  int duration = 0;      // seconds (0: unset)
  int64_t renew_us = 0;  // renewTime, else acquireTime (0: neither)
  int64_t transitions = 0;
  std::optional<LockInfo> info;
  std::string info_error;  // why the lock-info annotation could not be used
};

LeaseView ParseLease(json obj) {
  LeaseView v;
  const json& md = Member(obj, "metadata");
  const json& spec = Member(obj, "spec");
  v.rv = Str(md, "resourceVersion");
  v.uid = Str(md, "uid");
  v.holder = Str(spec, "holderIdentity");
  const json& d = Member(spec, "leaseDurationSeconds");
  if (d.is_number_integer()) v.duration = d.get<int>();
  int64_t t = 0;
  if (kstate::ParseMicroTime(Str(spec, "renewTime"), &t) ||
      kstate::ParseMicroTime(Str(spec, "acquireTime"), &t))
    v.renew_us = t;
  const json& tr = Member(spec, "leaseTransitions");
  if (tr.is_number_integer()) v.transitions = tr.get<int64_t>();
  std::string raw = Str(Member(md, "annotations"), kLockInfoAnnotation);
  if (raw.empty()) {
    v.info_error = "its annotation " + std::string(kLockInfoAnnotation) + " is missing";
  } else {
    json j = json::parse(raw, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      v.info_error = "its annotation " + std::string(kLockInfoAnnotation) + " is not lock info JSON";
    } else {
      v.info = LockInfo::FromJson(j);
    }
  }
  v.obj = std::move(obj);
  return v;
}

class KubernetesStateStore : public StateStore {
 public:
  KubernetesStateStore(Settings s, std::unique_ptr<k8s::Client> client,
                       std::unique_ptr<k8s::Client> renew_client)
      : s_(std::move(s)), client_(std::move(client)), renew_client_(std::move(renew_client)) {}
  ~KubernetesStateStore() override;

  std::string Describe() const override {
    return "kubernetes secret " + s_.ns + "/" + s_.index_name + " (context " + s_.context + ")";
  }
  Status Lock(const LockInfo& info, int timeout_seconds) override;
  Status Unlock(const std::string& id) override;
  Result<std::optional<LockInfo>> Holder() override;
  Status ForceUnlock(const std::string& id) override;
  Result<std::optional<State>> Read() override;
  Status Write(const State& s) override;

 private:
  // --- requests
  k8s::Request SecretRequest(const std::string& method, const std::string& name) const;
  k8s::Request LeaseRequest(const std::string& method) const;
  std::string Failure(const k8s::Request& req, const k8s::Response& resp) const;
  // GET; nullopt on 404.
  Result<std::optional<json>> Fetch(const k8s::Request& req);
  // DELETE with preconditions (when given). Already gone counts as deleted; *absent tells.
  Status Delete(k8s::Request req, const std::string& uid, const std::string& rv, bool* conflict = nullptr,
                bool* absent = nullptr);

  // --- lock
  std::string LeaseWhere() const { return "lease " + s_.ns + "/" + s_.lease_name; }
  json NewLease(const LockInfo& info, const LeaseView* previous, int64_t now_us) const;
  Status HeldError(const LeaseView& v) const;
  std::string HolderText(const LeaseView& v) const;
  // Records the Lease as held (written at `renewed`) and starts renewing it.
  void StartRenewer(json lease, Steady::time_point renewed);
  void StopRenewer();
  void RenewLoop();
  // Why the lock this store holds can no longer be trusted (nullopt: held and valid, or not held).
  std::optional<std::string> LostReason();

  // --- state
  struct Index {
    json obj;
    std::string rv, uid, digest, lineage;
    int64_t serial = 0;
    size_t size = 0;
    std::vector<std::string> parts;  // extra part names
    std::string part0;               // decoded
  };
  std::string Where() const { return "kubernetes secret " + s_.ns + "/" + s_.index_name; }
  std::string PartName(const std::string& digest, size_t i) const {
    return s_.index_name + "-" + digest.substr(0, 12) + "-" + std::to_string(i);
  }
  std::string Unreadable(const std::string& what) const;
  Result<Index> ParseIndex(json obj) const;
  // The assembled gzip stream, or an error; *index_moved is set when the index changed meanwhile.
  Result<std::string> Assemble(const Index& idx, bool* index_moved);
  json IndexBody(const std::string& digest, size_t size, const std::vector<std::string>& parts,
                 const std::string& part0, const State& s) const;
  json PartBody(const std::string& name, size_t i, const std::string& digest, const std::string& chunk) const;
  void Remember(const Index& idx, const std::string& json_sha);
  void DeleteParts(const std::vector<std::string>& names, const std::vector<std::string>& keep);
  void SweepLeftovers(const std::vector<std::string>& keep);

  Settings s_;
  std::unique_ptr<k8s::Client> client_;
  std::unique_ptr<k8s::Client> renew_client_;

  // The index as this store last read or wrote it (known_ false: never looked).
  bool known_ = false;
  bool exists_ = false;
  std::string rv_, uid_, digest_, lineage_, json_sha_;
  int64_t serial_ = 0;
  std::vector<std::string> parts_;
  json foreign_labels_ = json::object(), foreign_annotations_ = json::object();
  std::optional<std::string> unreadable_;
  std::vector<std::string> garbage_;  // parts whose deletion failed: tried again on the next write
  bool swept_ = false;                // leftovers deleted during this lock hold

  // The lock. mu_ guards everything below (the renewer thread shares it).
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  bool stop_ = false;
  std::string lock_id_;
  json lease_;                       // the Lease as last written
  Steady::time_point last_renewed_;  // when the last successful write of the Lease was sent
  std::optional<std::string> lost_;
  std::thread renewer_;
};

// ---------------------------------------------------------------------------------------------
// Requests

k8s::Request KubernetesStateStore::SecretRequest(const std::string& method, const std::string& name) const {
  k8s::Request r;
  r.method = method;
  r.path = k8s::CorePath(s_.ns, "secrets", method == "POST" ? "" : name);
  r.resource = "secrets";
  r.ns = s_.ns;
  r.name = name;
  return r;
}

k8s::Request KubernetesStateStore::LeaseRequest(const std::string& method) const {
  k8s::Request r;
  r.method = method;
  r.path =
      k8s::GroupPath("coordination.k8s.io", "v1", s_.ns, "leases", method == "POST" ? "" : s_.lease_name);
  r.resource = kLeaseResource;
  r.ns = s_.ns;
  r.name = s_.lease_name;
  return r;
}

std::string KubernetesStateStore::Failure(const k8s::Request& req, const k8s::Response& resp) const {
  json st = resp.Json();
  if (resp.status == 404 && st.is_object() && Member(Member(st, "details"), "kind") == "namespaces") {
    std::string verb = req.method == "POST" ? "create" : req.method == "PUT" ? "update" : "get";
    return verb + " " + req.resource + " " + req.ns + "/" + req.name + " on " + s_.server + ": namespace " +
           s_.ns + " does not exist: create it (kubectl create namespace " + s_.ns +
           ") or choose another with the backend setting namespace (--backend-config namespace=NS)";
  }
  return client_->ErrorMessage(req, resp);
}

Result<std::optional<json>> KubernetesStateStore::Fetch(const k8s::Request& req) {
  using R = Result<std::optional<json>>;
  auto resp = client_->Send(req);
  if (!resp) return resp.status();
  if (resp->status == 404) return std::optional<json>();
  if (!resp->ok()) return R::Error(Failure(req, *resp));
  json j = resp->Json();
  if (!j.is_object())
    return R::Error("get " + req.resource + " " + req.ns + "/" + req.name + " on " + s_.server +
                    ": the API server answered with something that is not a JSON object");
  return std::optional<json>(std::move(j));
}

Status KubernetesStateStore::Delete(k8s::Request req, const std::string& uid, const std::string& rv,
                                    bool* conflict, bool* absent) {
  json pre = json::object();
  if (!uid.empty()) pre["uid"] = uid;
  if (!rv.empty()) pre["resourceVersion"] = rv;
  if (!pre.empty())
    req.body = json{{"kind", "DeleteOptions"}, {"apiVersion", "v1"}, {"preconditions", pre}}.dump();
  if (conflict) *conflict = false;
  if (absent) *absent = false;
  auto resp = client_->Send(req);
  if (!resp) return resp.status();
  if (resp->status == 404 && absent) *absent = true;
  if (resp->ok() || resp->status == 404) return Status::Ok();
  if (resp->status == 409 && conflict) *conflict = true;
  return Status::Error(Failure(req, *resp));
}

// ---------------------------------------------------------------------------------------------
// Lock

KubernetesStateStore::~KubernetesStateStore() {
  bool held;
  std::string id;
  {
    std::lock_guard<std::mutex> l(mu_);
    held = held_;
    id = lock_id_;
  }
  if (held) (void)Unlock(id);
  StopRenewer();
}

json KubernetesStateStore::NewLease(const LockInfo& info, const LeaseView* previous, int64_t now_us) const {
  json md = {{"name", s_.lease_name},
             {"namespace", s_.ns},
             {"labels", {{kManagedByLabel, "onboard"}, {kStateLabel, s_.name}}},
             {"annotations", {{kLockInfoAnnotation, info.ToJson().dump()}}}};
  int64_t transitions = 0;
  if (previous) {
    const json& old_md = Member(previous->obj, "metadata");
    // Keep what others put on the Lease; ours replace theirs.
    for (const char* k : {"labels", "annotations"}) {
      const json& old = Member(old_md, k);
      if (!old.is_object()) continue;
      for (auto it = old.begin(); it != old.end(); ++it)
        if (!md[k].contains(it.key()) && it.key() != kLockInfoAnnotation) md[k][it.key()] = *it;
    }
    md["resourceVersion"] = previous->rv;
    if (!previous->uid.empty()) md["uid"] = previous->uid;
    transitions = previous->transitions + (previous->holder != info.id ? 1 : 0);
  }
  std::string now = kstate::FormatMicroTime(now_us);
  return json{{"apiVersion", "coordination.k8s.io/v1"},
              {"kind", "Lease"},
              {"metadata", md},
              {"spec",
               {{"holderIdentity", info.id},
                {"leaseDurationSeconds", s_.lease_seconds},
                {"acquireTime", now},
                {"renewTime", now},
                {"leaseTransitions", transitions}}}};
}

std::string KubernetesStateStore::HolderText(const LeaseView& v) const {
  if (v.info && (v.info->id == v.holder || v.info->id.empty())) {
    LockInfo i = *v.info;
    i.id = v.holder;
    return i.Describe();
  }
  return "state is locked by lock ID " + v.holder + " (" + LeaseWhere() + ": " +
         (v.info ? "its lock info names another lock ID, " + v.info->id : v.info_error) + ")";
}

Status KubernetesStateStore::HeldError(const LeaseView& v) const {
  std::string out = HolderText(v);
  int duration = v.duration > 0 ? v.duration : s_.lease_seconds;
  if (v.renew_us > 0) {
    int64_t expires = v.renew_us / 1000000 + duration;
    out += "; its " + LeaseWhere() + " was last renewed at " + FormatTime(v.renew_us / 1000000) +
           " and expires at " + FormatTime(expires) + " unless its holder renews it (every " +
           Seconds(duration / 3.0) + "s while it runs)";
  }
  return Status::Error(
      out + "; wait with --lock-timeout SECONDS, or if that run is gone, run onboard force-unlock " +
      v.holder);
}

Status KubernetesStateStore::Lock(const LockInfo& info, int timeout_seconds) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (held_)
      return Status::Error("this process already holds the lock on " + Describe() + " (lock ID " + lock_id_ +
                           "); unlock it before locking again");
  }
  StopRenewer();  // a renewer that ended on its own (lost lock)
  Result<LockInfo> recorded = LockInfoOfThisProcess(info, Describe());
  if (!recorded) return recorded.status();
  const LockInfo& mine = *recorded;
  const std::string cannot = "cannot lock " + Describe() + ": ";
  const auto deadline = Steady::now() + std::chrono::seconds(std::max(0, timeout_seconds));

  // The resourceVersion last seen and since when (this process's clock): a Lease that does not change
  // for a whole duration has a dead holder, whatever the clocks say.
  std::string seen_rv;
  Steady::time_point seen_since;
  for (int churn = 0;;) {
    auto got = Fetch(LeaseRequest("GET"));
    if (!got) return Status::Error(cannot + got.error());
    const Steady::time_point now = Steady::now();
    std::optional<LeaseView> cur;
    k8s::Request req;
    if (!got->has_value()) {
      req = LeaseRequest("POST");
      req.body = NewLease(mine, nullptr, kstate::NowMicros()).dump();
    } else {
      cur = ParseLease(std::move(**got));
      if (cur->rv != seen_rv) {
        seen_rv = cur->rv;
        seen_since = now;
      }
      const int duration = cur->duration > 0 ? cur->duration : s_.lease_seconds;
      const bool expired =
          cur->renew_us > 0 && cur->renew_us + int64_t{duration} * 1000000 < kstate::NowMicros();
      const bool unchanged = now - seen_since >= std::chrono::seconds(duration);
      if (cur->holder == mine.id) {  // ours already (an earlier attempt whose answer was lost)
        StartRenewer(std::move(cur->obj), now);
        return Status::Ok();
      }
      if (!cur->holder.empty() && !expired && !unchanged) {
        if (now >= deadline) return HeldError(*cur);
        std::this_thread::sleep_for(std::min<Steady::duration>(kLockPoll, deadline - now));
        continue;
      }
      req = LeaseRequest("PUT");
      req.body = NewLease(mine, &*cur, kstate::NowMicros()).dump();
    }
    const Steady::time_point sent = Steady::now();
    auto resp = client_->Send(req);
    if (resp && resp->ok()) {
      json lease = resp->Json();
      if (!lease.is_object())
        return Status::Error(cannot + "the API server's answer to " + req.method + " " + LeaseWhere() +
                             " is not a JSON object");
      StartRenewer(std::move(lease), sent);
      return Status::Ok();
    }
    if (resp && resp->status == 409) {
      // Someone else created or changed the Lease between our GET and our write: look again.
      if (++churn > 100) return Status::Error(cannot + "the " + LeaseWhere() + " keeps changing; try again");
      continue;
    }
    if (resp) return Status::Error(cannot + Failure(req, *resp));
    // The request may or may not have happened: the next GET tells (our ID means it did).
    if (++churn > 3) return Status::Error(cannot + resp.error());
  }
}

void KubernetesStateStore::StartRenewer(json lease, Steady::time_point renewed) {
  StopRenewer();
  std::lock_guard<std::mutex> l(mu_);
  held_ = true;
  stop_ = false;
  lost_.reset();
  swept_ = false;
  lease_ = std::move(lease);
  last_renewed_ = renewed;
  lock_id_ = Str(Member(lease_, "spec"), "holderIdentity");
  renewer_ = std::thread([this] { RenewLoop(); });
}

void KubernetesStateStore::StopRenewer() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
}

void KubernetesStateStore::RenewLoop() {
  const auto duration = std::chrono::seconds(s_.lease_seconds);
  const auto period = std::chrono::milliseconds(s_.lease_seconds * 1000 / 3);
  const auto retry = std::max<Steady::duration>(std::chrono::milliseconds(100), period / 4);
  std::unique_lock<std::mutex> l(mu_);
  Steady::time_point next = last_renewed_ + period;
  std::string last_error;
  while (!stop_) {
    if (cv_.wait_until(l, next, [this] { return stop_; })) break;
    if (Steady::now() >= last_renewed_ + duration) {
      lost_ = "no renewal of its " + LeaseWhere() + " succeeded within its " +
              std::to_string(s_.lease_seconds) + "s duration" +
              (last_error.empty() ? "" : " (last error: " + last_error + ")") +
              ", so another run may have taken it";
      break;
    }
    json body = lease_;
    body["spec"]["renewTime"] = kstate::FormatMicroTime(kstate::NowMicros());
    body["spec"]["leaseDurationSeconds"] = s_.lease_seconds;
    k8s::Request req = LeaseRequest("PUT");
    req.body = body.dump();
    const std::string id = lock_id_;
    l.unlock();
    const Steady::time_point sent = Steady::now();
    auto resp = renew_client_->Send(req);
    std::optional<json> current;  // the Lease as it is now, after a conflict
    bool gone = false;
    if (resp && resp->status == 409) {
      k8s::Request get = LeaseRequest("GET");
      auto now = renew_client_->Send(get);
      if (now && now->status == 404) gone = true;
      if (now && now->ok()) current = now->Json();
    }
    l.lock();
    if (resp && resp->ok()) {
      json j = resp->Json();
      if (j.is_object()) {
        lease_ = std::move(j);
        last_renewed_ = sent;
        next = sent + period;
        last_error.clear();
        continue;
      }
      last_error = "the API server's answer was not a Lease";
    } else if (resp && resp->status == 404) {
      lost_ = "its " + LeaseWhere() + " was deleted (force-unlocked?) while this run held it";
      break;
    } else if (resp && resp->status == 409) {
      if (gone) {
        lost_ = "its " + LeaseWhere() + " was deleted (force-unlocked?) while this run held it";
        break;
      }
      if (current && current->is_object()) {
        LeaseView v = ParseLease(*current);
        if (v.holder != id) {
          lost_ = "its " + LeaseWhere() + " was taken over: " +
                  (v.holder.empty() ? std::string("it has no holder now") : HolderText(v));
          break;
        }
        lease_ = std::move(v.obj);  // still ours, changed by someone (or by a renewal whose answer was lost)
        next = Steady::now();
        continue;
      }
      last_error = "conflict, and the Lease could not be read back";
    } else {
      last_error = resp ? renew_client_->ErrorMessage(req, *resp) : resp.error();
    }
    next = Steady::now() + retry;
  }
}

std::optional<std::string> KubernetesStateStore::LostReason() {
  std::lock_guard<std::mutex> l(mu_);
  if (lost_) return lost_;
  if (held_ && Steady::now() >= last_renewed_ + std::chrono::seconds(s_.lease_seconds))
    return "its " + LeaseWhere() + " was not renewed for " + std::to_string(s_.lease_seconds) +
           "s, so another run may have taken it";
  return std::nullopt;
}

Status KubernetesStateStore::Unlock(const std::string& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!held_)
      return Status::Error("cannot unlock " + Describe() + " with lock ID " + id +
                           ": this process holds no lock on it");
    if (id != lock_id_)
      return Status::Error("cannot unlock " + Describe() + " with lock ID " + id + ": the lock held is " +
                           lock_id_);
  }
  StopRenewer();
  std::optional<std::string> lost = LostReason();
  json lease;
  {
    std::lock_guard<std::mutex> l(mu_);
    held_ = false;
    lease = lease_;
  }
  std::string rv = Str(Member(lease, "metadata"), "resourceVersion");
  std::string uid = Str(Member(lease, "metadata"), "uid");
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (lost) {
      // Release it only if it is still ours on the server; never someone else's.
      auto got = Fetch(LeaseRequest("GET"));
      if (got && got->has_value()) {
        LeaseView v = ParseLease(std::move(**got));
        if (v.holder == id) (void)Delete(LeaseRequest("DELETE"), v.uid, v.rv);
      }
      return Status::Error("the state lock on " + Describe() + " (lock ID " + id +
                           ") was lost while this run held it: " + *lost +
                           "; another run may have changed the state since: check it with onboard plan");
    }
    bool conflict = false, absent = false;
    Status st = Delete(LeaseRequest("DELETE"), uid, rv, &conflict, &absent);
    if (st.ok() && absent)
      return Status::Error(
          "the state lock on " + Describe() + " (lock ID " + id + ") was lost while this run held it: its " +
          LeaseWhere() +
          " was deleted by someone else (force-unlocked?); another run may have changed the state "
          "since: check it with onboard plan");
    if (st.ok()) return st;
    if (!conflict)
      return Status::Error("cannot release the state lock on " + Describe() + " (lock ID " + id + "): " +
                           st.message() + "; the lock expires by itself " + std::to_string(s_.lease_seconds) +
                           "s after its last renewal, or run onboard force-unlock " + id);
    // Changed since our last renewal: still ours (delete that version) or lost.
    auto got = Fetch(LeaseRequest("GET"));
    if (!got) return Status::Error("cannot release the state lock on " + Describe() + ": " + got.error());
    if (!got->has_value()) {
      lost = "its " + LeaseWhere() + " was deleted by someone else (force-unlocked?)";
      continue;
    }
    LeaseView v = ParseLease(std::move(**got));
    if (v.holder != id) {
      lost = "its " + LeaseWhere() + " is held by " +
             (v.holder.empty() ? std::string("nobody") : "lock ID " + v.holder) + " now";
      continue;
    }
    rv = v.rv;
    uid = v.uid;
  }
  return Status::Error("cannot release the state lock on " + Describe() + ": its " + LeaseWhere() +
                       " keeps changing; it expires by itself, or run onboard force-unlock " + id);
}

Result<std::optional<LockInfo>> KubernetesStateStore::Holder() {
  using R = Result<std::optional<LockInfo>>;
  auto got = Fetch(LeaseRequest("GET"));
  if (!got) return got.status();
  if (!got->has_value()) return std::optional<LockInfo>();
  LeaseView v = ParseLease(std::move(**got));
  if (v.holder.empty()) return std::optional<LockInfo>();
  LockInfo info = v.info ? *v.info : LockInfo{};
  info.id = v.holder;
  if (!v.info) info.operation = "an unknown operation (" + v.info_error + ")";
  int duration = v.duration > 0 ? v.duration : s_.lease_seconds;
  if (v.renew_us > 0 && v.renew_us + int64_t{duration} * 1000000 < kstate::NowMicros())
    info.operation += ", lease expired at " + FormatTime(v.renew_us / 1000000 + duration);
  return R(std::optional<LockInfo>(std::move(info)));
}

Status KubernetesStateStore::ForceUnlock(const std::string& id) {
  {
    std::unique_lock<std::mutex> l(mu_);
    if (held_ && id == lock_id_) {
      l.unlock();
      return Unlock(id);
    }
  }
  for (int attempt = 0; attempt < 10; ++attempt) {
    auto got = Fetch(LeaseRequest("GET"));
    if (!got) return Status::Error("cannot force-unlock " + Describe() + ": " + got.error());
    if (!got->has_value())
      return Status::Error("state " + Describe() + " is not locked (no " + LeaseWhere() +
                           "): nothing to force-unlock");
    LeaseView v = ParseLease(std::move(**got));
    if (v.holder.empty())
      return Status::Error("state " + Describe() + " is not locked (" + LeaseWhere() +
                           " has no holder): nothing to force-unlock");
    if (v.holder != id)
      return Status::Error("lock ID " + id + " does not match the lock on " + Describe() + ": " +
                           HolderText(v) + "; to remove that lock, run onboard force-unlock " + v.holder);
    bool conflict = false;
    Status st = Delete(LeaseRequest("DELETE"), v.uid, v.rv, &conflict);
    if (st.ok()) return st;
    if (!conflict) return Status::Error("cannot force-unlock " + Describe() + ": " + st.message());
    // Renewed between our GET and DELETE: look again.
  }
  return Status::Error("the " + LeaseWhere() +
                       " keeps changing (its holder is renewing it); try onboard force-unlock again");
}

// ---------------------------------------------------------------------------------------------
// Read

std::string KubernetesStateStore::Unreadable(const std::string& what) const {
  return "state in " + Where() + " cannot be read: " + what +
         "; onboard never overwrites a state it cannot read: restore the Secret" +
         " (and the part Secrets listed in its annotation " + kPartsAnnotation +
         ") from a backup, or repair it (the state is the gzipped JSON in data." + kDataKey +
         " of the index and its parts, concatenated in order)";
}

Result<KubernetesStateStore::Index> KubernetesStateStore::ParseIndex(json obj) const {
  using R = Result<Index>;
  Index idx;
  const json& md = Member(obj, "metadata");
  const json& ann = Member(md, "annotations");
  idx.rv = Str(md, "resourceVersion");
  idx.uid = Str(md, "uid");
  if (!ann.is_object() || !ann.contains(kShaAnnotation))
    return R::Error(Unreadable(std::string("it has no annotation ") + kShaAnnotation +
                               ", so it is not an onboard state Secret (or it was edited)"));
  idx.digest = Str(ann, kShaAnnotation);
  bool hex = idx.digest.size() == 64;
  for (char c : idx.digest) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!hex)
    return R::Error(Unreadable(std::string("its annotation ") + kShaAnnotation + " is not a sha256 in hex"));
  int64_t size = 0;
  if (!ParseInt64(Str(ann, kSizeAnnotation), &size) || size < 0)
    return R::Error(Unreadable(std::string("its annotation ") + kSizeAnnotation + " is not a byte count"));
  idx.size = static_cast<size_t>(size);
  idx.lineage = Str(ann, kLineageAnnotation);
  if (!ParseInt64(Str(ann, kSerialAnnotation), &idx.serial))
    return R::Error(Unreadable(std::string("its annotation ") + kSerialAnnotation + " is not a number"));
  if (!ann.contains(kPartsAnnotation) || !ann[kPartsAnnotation].is_string())
    return R::Error(Unreadable(std::string("it has no annotation ") + kPartsAnnotation));
  idx.parts = SplitNames(Str(ann, kPartsAnnotation));
  for (size_t i = 0; i < idx.parts.size(); ++i)
    if (idx.parts[i] != PartName(idx.digest, i + 1))
      return R::Error(Unreadable(std::string("its annotation ") + kPartsAnnotation + " names " +
                                 Quote(idx.parts[i]) + " as part " + std::to_string(i + 1) + " where " +
                                 Quote(PartName(idx.digest, i + 1)) + " belongs"));
  const json& data = Member(obj, "data");
  std::string b64 = Str(data, kDataKey);
  if (b64.empty()) return R::Error(Unreadable(std::string("it has no data.") + kDataKey));
  auto part0 = Base64Decode(b64);
  if (!part0)
    return R::Error(Unreadable(std::string("its data.") + kDataKey + " is not base64: " + part0.error()));
  idx.part0 = std::move(*part0);
  idx.obj = std::move(obj);
  return idx;
}

Result<std::string> KubernetesStateStore::Assemble(const Index& idx, bool* index_moved) {
  using R = Result<std::string>;
  *index_moved = false;
  std::string gz = idx.part0;
  gz.reserve(idx.size);
  // A part that is missing or does not belong may mean that a writer committed a new index meanwhile
  // (and deleted the old parts): the caller then reads again.
  auto moved = [&]() {
    auto now = Fetch(SecretRequest("GET", s_.index_name));
    *index_moved = now && (!now->has_value() || Str(Member(**now, "metadata"), "resourceVersion") != idx.rv);
    return *index_moved;
  };
  for (size_t i = 0; i < idx.parts.size(); ++i) {
    const std::string& name = idx.parts[i];
    auto got = Fetch(SecretRequest("GET", name));
    if (!got) return R::Error("cannot read state part Secret " + s_.ns + "/" + name + ": " + got.error());
    std::string what;
    if (!got->has_value()) {
      what = "its part " + std::to_string(i + 1) + ", Secret " + s_.ns + "/" + name + ", is missing";
    } else {
      const json& p = **got;
      const json& md = Member(p, "metadata");
      std::string b64 = Str(Member(p, "data"), kDataKey);
      if (Str(Member(md, "annotations"), kShaAnnotation) != idx.digest ||
          Str(Member(md, "labels"), kPartLabel) != std::to_string(i + 1)) {
        what = "part Secret " + s_.ns + "/" + name +
               " does not carry this state's digest and position (annotation " + kShaAnnotation + ", label " +
               kPartLabel + "=" + std::to_string(i + 1) + ")";
      } else if (b64.empty()) {
        what = "part Secret " + s_.ns + "/" + name + " has no data." + kDataKey;
      } else {
        auto bytes = Base64Decode(b64);
        if (!bytes) {
          what = "the data." + std::string(kDataKey) + " of part Secret " + s_.ns + "/" + name +
                 " is not base64: " + bytes.error();
        } else {
          gz += *bytes;
        }
      }
    }
    if (!what.empty()) {
      if (moved()) return R::Error("the state changed while it was read");
      return R::Error(Unreadable(what));
    }
  }
  if (gz.size() != idx.size || Sha256Hex(gz) != idx.digest) {
    if (moved()) return R::Error("the state changed while it was read");
    if (gz.size() != idx.size)
      return R::Error(Unreadable("its parts hold " + std::to_string(gz.size()) + " bytes where annotation " +
                                 kSizeAnnotation + " says " + std::to_string(idx.size)));
    return R::Error(Unreadable("the sha256 of its parts is " + Sha256Hex(gz) + ", not " + idx.digest +
                               " as annotation " + kShaAnnotation + " says"));
  }
  return gz;
}

void KubernetesStateStore::Remember(const Index& idx, const std::string& json_sha) {
  known_ = true;
  exists_ = true;
  rv_ = idx.rv;
  uid_ = idx.uid;
  digest_ = idx.digest;
  lineage_ = idx.lineage;
  serial_ = idx.serial;
  parts_ = idx.parts;
  json_sha_ = json_sha;
  foreign_labels_ = json::object();
  foreign_annotations_ = json::object();
  const json& md = Member(idx.obj, "metadata");
  const json& labels = Member(md, "labels");
  if (labels.is_object())
    for (auto it = labels.begin(); it != labels.end(); ++it)
      if (it.key() != kManagedByLabel && it.key() != kStateLabel) foreign_labels_[it.key()] = *it;
  const json& ann = Member(md, "annotations");
  if (ann.is_object())
    for (auto it = ann.begin(); it != ann.end(); ++it)
      if (it.key().rfind("onboard.tetrate.io/", 0) != 0) foreign_annotations_[it.key()] = *it;
}

Result<std::optional<State>> KubernetesStateStore::Read() {
  using R = Result<std::optional<State>>;
  for (int attempt = 0;; ++attempt) {
    auto got = Fetch(SecretRequest("GET", s_.index_name));
    if (!got) {
      unreadable_ = "cannot read the state: " + got.error();
      return R::Error(*unreadable_);
    }
    if (!got->has_value()) {
      known_ = true;
      exists_ = false;
      rv_.clear();
      uid_.clear();
      parts_.clear();
      json_sha_.clear();
      unreadable_.reset();
      return std::optional<State>();
    }
    auto idx = ParseIndex(std::move(**got));
    if (!idx) {
      unreadable_ = idx.error();
      return idx.status();
    }
    bool moved = false;
    auto gz = Assemble(*idx, &moved);
    if (!gz) {
      if (moved && attempt < 5) continue;
      unreadable_ =
          moved ? "cannot read the state in " + Where() + ": it keeps changing while it is read; try again"
                : gz.error();
      return R::Error(*unreadable_);
    }
    auto text = kstate::Gunzip(*gz);
    if (!text) {
      unreadable_ = Unreadable("its data is not a valid gzip stream: " + text.error());
      return R::Error(*unreadable_);
    }
    json j;
    try {
      j = json::parse(*text);
    } catch (const std::exception& e) {
      unreadable_ = Unreadable(std::string("its data is not valid JSON (") + e.what() + ")");
      return R::Error(*unreadable_);
    }
    Result<State> st = DecodeState(std::move(j), "in " + Where());
    if (!st) {
      // The codec's advice is about files; the Secret's is in Unreadable().
      std::string msg = st.error();
      const std::string file_hint = "; fix the file or restore it from its .backup copy";
      if (msg.size() > file_hint.size() &&
          msg.compare(msg.size() - file_hint.size(), file_hint.size(), file_hint) == 0) {
        msg.resize(msg.size() - file_hint.size());
        msg = Unreadable("the state is invalid: " + msg);
      }
      unreadable_ = msg;
      return R::Error(msg);
    }
    if (st->lineage != idx->lineage || st->serial != idx->serial) {
      unreadable_ = Unreadable("its annotations say lineage " + idx->lineage + " serial " +
                               std::to_string(idx->serial) + " but the state inside has lineage " +
                               st->lineage + " serial " + std::to_string(st->serial));
      return R::Error(*unreadable_);
    }
    unreadable_.reset();
    Remember(*idx, Sha256Hex(*text));
    return std::optional<State>(std::move(*st));
  }
}

// ---------------------------------------------------------------------------------------------
// Write

json KubernetesStateStore::IndexBody(const std::string& digest, size_t size,
                                     const std::vector<std::string>& parts, const std::string& part0,
                                     const State& s) const {
  json labels = foreign_labels_;
  labels[kManagedByLabel] = "onboard";
  labels[kStateLabel] = s_.name;
  json ann = foreign_annotations_;
  ann[kShaAnnotation] = digest;
  ann[kSizeAnnotation] = std::to_string(size);
  ann[kPartsAnnotation] = JoinNames(parts);
  ann[kLineageAnnotation] = s.lineage;
  ann[kSerialAnnotation] = std::to_string(s.serial);
  json md = {{"name", s_.index_name}, {"namespace", s_.ns}, {"labels", labels}, {"annotations", ann}};
  if (exists_) {
    md["resourceVersion"] = rv_;
    if (!uid_.empty()) md["uid"] = uid_;
  }
  return json{{"apiVersion", "v1"},
              {"kind", "Secret"},
              {"metadata", md},
              {"type", "Opaque"},
              {"data", {{kDataKey, Base64Encode(part0)}}}};
}

json KubernetesStateStore::PartBody(const std::string& name, size_t i, const std::string& digest,
                                    const std::string& chunk) const {
  return json{
      {"apiVersion", "v1"},
      {"kind", "Secret"},
      {"metadata",
       {{"name", name},
        {"namespace", s_.ns},
        {"labels", {{kManagedByLabel, "onboard"}, {kStateLabel, s_.name}, {kPartLabel, std::to_string(i)}}},
        {"annotations", {{kShaAnnotation, digest}}}}},
      {"type", "Opaque"},
      {"data", {{kDataKey, Base64Encode(chunk)}}}};
}

void KubernetesStateStore::DeleteParts(const std::vector<std::string>& names,
                                       const std::vector<std::string>& keep) {
  for (const auto& name : names) {
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    k8s::Request req = SecretRequest("DELETE", name);
    if (!Delete(req, "", "").ok() && std::find(garbage_.begin(), garbage_.end(), name) == garbage_.end())
      garbage_.push_back(name);
  }
}

void KubernetesStateStore::SweepLeftovers(const std::vector<std::string>& keep) {
  k8s::Request req = SecretRequest("GET", "");
  req.query = "labelSelector=" + k8s::UrlEscape(std::string(kStateLabel) + "=" + s_.name + "," + kPartLabel);
  auto resp = client_->Send(req);
  if (!resp || !resp->ok()) return;  // tried again during the next lock hold
  json list = resp->Json();
  const json& items = Member(list, "items");
  if (!items.is_array()) return;
  for (const auto& item : items) {
    const json& md = Member(item, "metadata");
    std::string name = Str(md, "name");
    if (name.empty() || name == s_.index_name || std::find(keep.begin(), keep.end(), name) != keep.end())
      continue;
    if (Str(Member(md, "labels"), kManagedByLabel) != "onboard") continue;
    (void)Delete(SecretRequest("DELETE", name), Str(md, "uid"), Str(md, "resourceVersion"));
  }
  swept_ = true;
}

Status KubernetesStateStore::Write(const State& s) {
  const std::string refuse = "refusing to write state to " + Where() + ": ";
  if (unreadable_)
    return Status::Error(refuse + "it could not be read (" + *unreadable_ +
                         "), and onboard never overwrites a state it could not read; nothing was written");
  if (auto lost = LostReason())
    return Status::Error(refuse + "the state lock was lost (" + *lost +
                         "); nothing was written: run the command again");
  json encoded = EncodeState(s);
  if (Result<State> back = DecodeState(encoded, Describe()); !back)
    return Status::Error(refuse + "the new state is invalid: " + back.error());
  std::string text;
  try {
    text = encoded.dump();
  } catch (const std::exception& e) {  // invalid UTF-8 in a string
    return Status::Error(refuse + "cannot encode the state: " + e.what());
  }
  const std::string json_sha = Sha256Hex(text);
  if (known_ && exists_) {
    if (Status st = CheckOverwrite(lineage_, serial_, s, replacing_lineage(),
                                   "choose another state name (backend setting name)");
        !st)
      return Status::Error(refuse + st.message());
    if (json_sha == json_sha_) return Status::Ok();  // no change: no write
  }
  auto gz = kstate::Gzip(text);
  if (!gz) return Status::Error(refuse + gz.error());
  const std::string digest = Sha256Hex(*gz);
  std::vector<std::string> parts;
  for (size_t off = kPartBytes, i = 1; off < gz->size(); off += kPartBytes, ++i)
    parts.push_back(PartName(digest, i));

  // 1. The new parts (named after their content: they never replace the committed state's).
  std::vector<std::string> created;
  auto undo = [&](const std::vector<std::string>& keep) { DeleteParts(created, keep); };
  for (size_t i = 0; i < parts.size(); ++i) {
    k8s::Request req = SecretRequest("POST", parts[i]);
    req.body = PartBody(parts[i], i + 1, digest, gz->substr((i + 1) * kPartBytes, kPartBytes)).dump();
    auto resp = client_->Send(req);
    if (resp && resp->ok()) {
      created.push_back(parts[i]);
      continue;
    }
    if (resp && resp->status == 409) {
      // Left by an earlier attempt at this very content: use it if it really is that part.
      auto got = Fetch(SecretRequest("GET", parts[i]));
      if (got && got->has_value() &&
          Str(Member(Member(**got, "metadata"), "annotations"), kShaAnnotation) == digest &&
          Str(Member(**got, "data"), kDataKey) ==
              Base64Encode(gz->substr((i + 1) * kPartBytes, kPartBytes)))
        continue;
      undo({});
      return Status::Error(refuse + "Secret " + s_.ns + "/" + parts[i] +
                           " already exists and is not this state's part " + std::to_string(i + 1) +
                           "; delete it (kubectl delete secret -n " + s_.ns + " " + parts[i] +
                           ") and run the command again; nothing was written");
    }
    undo({});
    return Status::Error(refuse + (resp ? Failure(req, *resp) : resp.error()) +
                         "; nothing was written, the previous state is unchanged");
  }

  // 2. The commit point: the index, conditional on the resourceVersion this store last saw.
  if (auto lost = LostReason()) {
    undo({});
    return Status::Error(refuse + "the state lock was lost (" + *lost +
                         "); nothing was written: run the command again");
  }
  const bool create = !exists_;
  k8s::Request req = SecretRequest(create ? "POST" : "PUT", s_.index_name);
  req.body = IndexBody(digest, gz->size(), parts, gz->substr(0, kPartBytes), s).dump();
  auto resp = client_->Send(req);
  json committed;
  if (resp && resp->ok()) {
    committed = resp->Json();
  } else {
    // Conflict, or no answer: was it our write that landed (a retry, a lost response)?
    auto now = Fetch(SecretRequest("GET", s_.index_name));
    const json* cur = now && now->has_value() ? &**now : nullptr;
    const json ann = cur ? Member(Member(*cur, "metadata"), "annotations") : json();
    if (cur && Str(ann, kShaAnnotation) == digest &&
        Str(ann, kSerialAnnotation) == std::to_string(s.serial) &&
        Str(ann, kLineageAnnotation) == s.lineage) {
      committed = *cur;
    } else {
      std::vector<std::string> keep;
      if (cur) keep = SplitNames(Str(ann, kPartsAnnotation));
      undo(keep);
      if (resp && resp->status == 409) {
        std::string now_at = cur ? " (it is at serial " + Str(ann, kSerialAnnotation) + " now)" : "";
        std::string who = !create  ? "another writer changed it since this run read it"
                          : known_ ? "another writer created it since this run read it"
                                   : "it exists and this store has not read it (Read before Write)";
        return Status::Error(refuse + who + now_at + "; nothing was written: run the command again");
      }
      if (resp && resp->status == 404 && !create)
        return Status::Error(refuse +
                             "it was deleted since this run read it; nothing was written: run the command "
                             "again");
      return Status::Error(refuse + (resp ? Failure(req, *resp) : resp.error()) +
                           "; nothing was written, the previous state is unchanged");
    }
  }
  const std::vector<std::string> previous = parts_;
  auto idx = ParseIndex(committed);
  if (!idx)
    return Status::Error("the state was written to " + Where() +
                         ", but the answer cannot be read back: " + idx.error());
  Remember(*idx, json_sha);

  // 3. The previous parts (and leftovers of crashed writers) are garbage now.
  std::vector<std::string> old = previous;
  old.insert(old.end(), garbage_.begin(), garbage_.end());
  garbage_.clear();
  DeleteParts(old, parts);
  bool held;
  {
    std::lock_guard<std::mutex> l(mu_);
    held = held_ && !lost_;
  }
  if (held && !swept_) SweepLeftovers(parts);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Settings

Result<std::string> StringSetting(const json& v, const std::string& key, const std::string& origin) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.dump();
  return Result<std::string>::Error(origin + ": kubernetes backend setting " + key +
                                    " must be a string, got " + v.dump());
}

}  // namespace

Result<std::unique_ptr<StateStore>> OpenKubernetesStateStore(const nlohmann::json& config,
                                                             const KubernetesBackendDefaults& defaults,
                                                             const std::string& origin) {
  using R = Result<std::unique_ptr<StateStore>>;
  Settings s;
  s.ns = "default";
  s.name = defaults.name;
  std::string kubeconfig = defaults.kubeconfig, context = defaults.context;
  if (!config.is_null() && !config.is_object())
    return R::Error(origin + ": the kubernetes backend settings must be a mapping (" + kValidKeys + ")");
  if (config.is_object()) {
    for (auto it = config.begin(); it != config.end(); ++it) {
      const std::string& key = it.key();
      if (key == "leaseDurationSeconds") {
        int64_t n = 0;
        bool ok = it->is_number_integer() ? (n = it->get<int64_t>(), true)
                                          : it->is_string() && ParseInt64(it->get<std::string>(), &n);
        if (!ok || n < kMinLeaseSeconds || n > kMaxLeaseSeconds)
          return R::Error(origin +
                          ": kubernetes backend setting leaseDurationSeconds must be a whole number of "
                          "seconds from " +
                          std::to_string(kMinLeaseSeconds) + " to " + std::to_string(kMaxLeaseSeconds) +
                          ", got " + it->dump() + " (for example --backend-config leaseDurationSeconds=30)");
        s.lease_seconds = static_cast<int>(n);
        continue;
      }
      if (key != "namespace" && key != "name" && key != "kubeconfig" && key != "context")
        return R::Error(origin + ": the kubernetes backend has no setting " + Quote(key) +
                        " (valid settings: " + kValidKeys + ")");
      auto v = StringSetting(*it, key, origin);
      if (!v) return v.status();
      if (v->empty())
        return R::Error(origin + ": kubernetes backend setting " + key +
                        " is empty; set a value or leave it out");
      if (key == "namespace") s.ns = *v;
      if (key == "name") s.name = *v;
      if (key == "kubeconfig") kubeconfig = *v;
      if (key == "context") context = *v;
    }
  }
  if (!kstate::IsDns1123Label(s.ns))
    return R::Error(origin + ": kubernetes backend setting namespace " + Quote(s.ns) +
                    " is not a namespace name (lower-case letters, digits and '-', at most 63 characters)");
  if (s.name.empty())
    return R::Error(origin +
                    ": kubernetes backend setting name is not set and there is no Fleet name to default "
                    "to; set it (for example --backend-config name=prod)");
  if (!kstate::IsStateName(s.name))
    return R::Error(
        origin + ": kubernetes backend setting name " + Quote(s.name) +
        (config.is_object() && config.contains("name") ? "" : " (the Fleet's name)") +
        " must be a DNS-1123 name: lower-case letters, digits, '-' and '.', starting and ending with a "
        "letter or digit, at most 63 characters (it names Secrets and a Lease and is a label value); "
        "set another with the backend setting name");
  s.index_name = "onboard-state-" + s.name;
  s.lease_name = "onboard-lock-" + s.name;

  k8s::KubeConfigOptions ko;
  ko.path = kubeconfig;
  ko.context = context;
  auto cfg = k8s::LoadKubeConfig(ko);
  if (!cfg) return R::Error(origin + ": kubernetes state backend: " + cfg.error());
  s.context = cfg->context;
  s.server = cfg->server;
  auto client = k8s::Client::Create(*cfg);
  if (!client) return R::Error(origin + ": kubernetes state backend: " + client.error());
  // The renewer's requests must fail fast: a renewal that hangs longer than the lease is useless.
  k8s::ClientOptions ro;
  ro.max_tries = 1;
  ro.request_timeout_ms = std::clamp<long>(s.lease_seconds * 1000L / 3, 1000, 10000);
  ro.connect_timeout_ms = ro.request_timeout_ms;
  auto renew_client = k8s::Client::Create(*cfg, ro);
  if (!renew_client) return R::Error(origin + ": kubernetes state backend: " + renew_client.error());
  return R(
      std::make_unique<KubernetesStateStore>(std::move(s), std::move(*client), std::move(*renew_client)));
}

}  // namespace onboard
