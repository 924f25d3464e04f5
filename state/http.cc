#include "state/http.h"

#include <curl/curl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>

#include "engine/hash.h"
#include "state/http_client.h"
#include "state/local.h"
#include "state/lock.h"
#include "state/overwrite.h"

namespace onboard {
namespace {

using nlohmann::json;

constexpr const char* kKeys[] = {"address",       "updateMethod", "lockAddress",  "lockMethod",
                                 "unlockAddress", "unlockMethod", "username",     "password",
                                 "caFile",        "retryMax",     "retryWaitMin", "retryWaitMax"};
constexpr auto kLockPoll = std::chrono::seconds(1);

std::string KeyList() {
  std::string out;
  for (const char* k : kKeys) out += (out.empty() ? "" : ", ") + std::string(k);
  return out;
}

void Warn(const std::string& message) { std::fprintf(stderr, "Warning: %s\n", message.c_str()); }

struct Url {
  std::string full;     // as sent: normalized, without fragment
  std::string display;  // scheme://host[:port]/path: no credentials, no query
  std::string host;
  bool https = false;
};

struct CurlUrlFree {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

std::string UrlPart(CURLU* u, CURLUPart part, unsigned flags = 0) {
  char* v = nullptr;
  if (curl_url_get(u, part, &v, flags) != CURLUE_OK || !v) return "";
  std::string out = v;
  curl_free(v);
  return out;
}

Result<Url> ParseUrl(const std::string& origin, const std::string& key, const std::string& value) {
  const std::string where = origin + ": " + key;
  std::unique_ptr<CURLU, CurlUrlFree> u(curl_url());
  if (!u) return Result<Url>::Error(where + ": out of memory");
  // The value may carry credentials: it is echoed only when it is plainly free of them.
  const std::string shown = value.find('@') == std::string::npos ? " \"" + value + "\"" : "";
  CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, value.c_str(), 0);
  if (rc != CURLUE_OK)
    return Result<Url>::Error(where + shown + " is not a URL (" + curl_url_strerror(rc) +
                              "): use http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH");
  Url url;
  std::string scheme = UrlPart(u.get(), CURLUPART_SCHEME);
  if (scheme != "http" && scheme != "https")
    return Result<Url>::Error(where + shown + " must be an http:// or https:// URL");
  url.https = scheme == "https";
  if (!UrlPart(u.get(), CURLUPART_USER).empty() || !UrlPart(u.get(), CURLUPART_PASSWORD).empty())
    return Result<Url>::Error(where +
                              " must not carry credentials (user:password@host): set username, and "
                              "pass the password in the ONBOARD_HTTP_PASSWORD environment variable");
  url.host = UrlPart(u.get(), CURLUPART_HOST);
  if (url.host.empty()) return Result<Url>::Error(where + shown + " has no host");
  curl_url_set(u.get(), CURLUPART_FRAGMENT, nullptr, 0);
  url.full = UrlPart(u.get(), CURLUPART_URL);
  std::string port = UrlPart(u.get(), CURLUPART_PORT, CURLU_NO_DEFAULT_PORT);
  url.display =
      scheme + "://" + url.host + (port.empty() ? "" : ":" + port) + UrlPart(u.get(), CURLUPART_PATH);
  return url;
}

// 2 or 0.5, not 2.0.
std::string Num(double d) {
  return d == std::floor(d) && std::fabs(d) < 1e15 ? std::to_string(static_cast<long long>(d))
                                                   : json(d).dump();
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]";
}

// A setting that is text: a string, or a number written without quotes.
Result<std::string> TextValue(const json& v, const std::string& origin, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer() || v.is_number_unsigned()) return v.dump();
  return Result<std::string>::Error(origin + ": http backend setting " + key + " must be a string");
}

// A setting that is a number: a number, or a string holding one (--backend-config gives strings).
Result<double> NumberValue(const json& v, const std::string& origin, const std::string& key, double min,
                           double max, bool integer) {
  const std::string want =
      std::string(integer ? "an integer" : "a number of seconds") + " from " + Num(min) + " to " + Num(max);
  double d = 0;
  if (v.is_number()) {
    d = v.get<double>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    char* end = nullptr;
    errno = 0;
    d = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || errno != 0)
      return Result<double>::Error(origin + ": http backend setting " + key + " \"" + s + "\" is not " +
                                   want);
  } else {
    return Result<double>::Error(origin + ": http backend setting " + key + " must be " + want);
  }
  if (!std::isfinite(d) || d < min || d > max || (integer && d != std::floor(d)))
    return Result<double>::Error(origin + ": http backend setting " + key + " " +
                                 (v.is_string() ? v.dump() : Num(d)) + " is not " + want);
  return d;
}

bool IsToken(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::strchr("!#$%&'*+-.^_`|~", c) == nullptr)
      return false;
  return true;
}

const char* Reason(long status) {
  switch (status) {
    case 400:
      return " Bad Request";
    case 401:
      return " Unauthorized";
    case 403:
      return " Forbidden";
    case 404:
      return " Not Found";
    case 405:
      return " Method Not Allowed";
    case 409:
      return " Conflict";
    case 413:
      return " Payload Too Large";
    case 423:
      return " Locked";
    case 429:
      return " Too Many Requests";
    case 500:
      return " Internal Server Error";
    case 501:
      return " Not Implemented";
    case 502:
      return " Bad Gateway";
    case 503:
      return " Service Unavailable";
    case 504:
      return " Gateway Timeout";
    default:
      return "";
  }
}

struct Settings {
  Url address;
  std::string update_method = "POST";
  std::optional<Url> lock_address, unlock_address;
  std::string lock_method = "LOCK";
  std::string unlock_method = "UNLOCK";
  HttpTransportConfig transport;
};

// What this store last read from or wrote to the server.
struct Known {
  bool exists = false;
  std::string lineage;
  int64_t serial = 0;
  std::string sha256;  // of the bytes
};

class HttpStateStore : public StateStore {
 public:
  explicit HttpStateStore(Settings s) : s_(std::move(s)), transport_(s_.transport) {}
  ~HttpStateStore() override {
    if (!lock_id_.empty()) (void)Unlock(lock_id_);
  }

  std::string Describe() const override { return "http " + s_.address.display; }

  Status Lock(const LockInfo& info, int timeout_seconds) override;
  Status Unlock(const std::string& id) override;
  Result<std::optional<LockInfo>> Holder() override {
    if (lock_id_.empty()) return std::optional<LockInfo>();
    return std::optional<LockInfo>(lock_info_);
  }
  Status ForceUnlock(const std::string& id) override;
  Result<std::optional<State>> Read() override;
  Status Write(const State& s) override;

 private:
  // A piece of a server's answer for a message: at most 200 characters, one line, with the
  // password masked in case a server echoes it.
  std::string Snippet(const std::string& body) const {
    std::string out;
    for (char c : body.substr(0, 200)) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
    if (body.size() > 200) out += "...";
    const std::string& pw = s_.transport.password;
    if (!pw.empty())
      for (size_t at; (at = out.find(pw)) != std::string::npos;) out.replace(at, pw.size(), "***");
    size_t b = out.find_first_not_of(' ');
    return b == std::string::npos ? "" : out.substr(b);
  }

  bool HasCredentials() const { return !s_.transport.username.empty() || !s_.transport.password.empty(); }

  Status AuthError(const HttpReply& r, const std::string& what, const std::string& where) const {
    const std::string& user = s_.transport.username;
    const std::string code = "HTTP " + std::to_string(r.status) + Reason(r.status);
    if (r.status == 403)
      return Status::Error("cannot " + what + " at " + where + ": the server refused the credentials (" +
                           code + (user.empty() ? "" : ", user \"" + user + "\"") +
                           "): they are wrong or lack permission; set ONBOARD_HTTP_USERNAME and "
                           "ONBOARD_HTTP_PASSWORD to credentials that may use this state");
    if (!HasCredentials())
      return Status::Error("cannot " + what + " at " + where + ": the server requires credentials (" + code +
                           ") and none are set: set ONBOARD_HTTP_USERNAME and ONBOARD_HTTP_PASSWORD");
    return Status::Error("cannot " + what + " at " + where + ": the server refused the credentials (" + code +
                         (user.empty() ? "" : ", user \"" + user + "\"") +
                         "): set ONBOARD_HTTP_USERNAME and ONBOARD_HTTP_PASSWORD to valid ones");
  }

  Status Unexpected(const HttpReply& r, const std::string& what, const std::string& where,
                    const std::string& hint = "") const {
    std::string m = "cannot " + what + " at " + where + ": the server answered HTTP " +
                    std::to_string(r.status) + Reason(r.status);
    if (r.attempts > 1) m += " (" + std::to_string(r.attempts) + " attempts)";
    if (r.status >= 300 && r.status < 400) {
      std::string to = r.location.substr(0, r.location.find('?'));
      return Status::Error(m + (to.empty() ? "" : ", a redirect to " + to) +
                           "; onboard does not follow redirects: set the address to the final URL");
    }
    std::string body = Snippet(r.body);
    if (!body.empty()) m += ": " + body;
    if (!hint.empty()) m += "; " + hint;
    return Status::Error(m);
  }

  static std::optional<LockInfo> ParseHolder(const std::string& body) {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    LockInfo info = LockInfo::FromJson(j);
    if (info.id.empty()) return std::nullopt;
    return info;
  }

  std::string WriteUrl() const {
    if (lock_id_.empty()) return s_.address.full;
    char* esc = curl_easy_escape(nullptr, lock_id_.c_str(), static_cast<int>(lock_id_.size()));
    std::string id = esc ? esc : lock_id_;
    curl_free(esc);
    return s_.address.full + (s_.address.full.find('?') == std::string::npos ? "?ID=" : "&ID=") + id;
  }

  void ForgetLock() {
    lock_id_.clear();
    lock_body_.clear();
    lock_info_ = LockInfo();
  }

  Settings s_;
  HttpTransport transport_;
  bool warned_unlocked_ = false;
  std::string lock_id_;    // the lock this store holds, "" if none
  std::string lock_body_;  // its lock info as sent
  LockInfo lock_info_;
  std::optional<Known> known_;
  // Why the last Read() failed; Write() refuses while it is set.
  std::optional<std::string> unreadable_;
};

// ---------------------------------------------------------------------------------------------
// Lock

Status HttpStateStore::Lock(const LockInfo& info, int timeout_seconds) {
  if (!s_.lock_address) {
    if (!warned_unlocked_)
      Warn("the http state backend at " + s_.address.display +
           " has no lockAddress, so this run does not lock the state: runs at the same time can overwrite "
           "each other's changes (set lockAddress to a URL that speaks the LOCK/UNLOCK protocol)");
    warned_unlocked_ = true;
    return Status::Ok();
  }
  const std::string& where = s_.lock_address->display;
  if (!lock_id_.empty())
    return Status::Error("this process already holds the lock on " + Describe() + " (lock ID " + lock_id_ +
                         "); unlock it before locking again");
  Result<LockInfo> recorded = LockInfoOfThisProcess(info, Describe());
  if (!recorded) return recorded.status();
  const LockInfo& mine = *recorded;
  const std::string body = mine.ToJson().dump();
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(std::max(0, timeout_seconds));
  for (;;) {
    Result<HttpReply> r =
        transport_.Send(s_.lock_method, s_.lock_address->full, &body, "lock the state", where);
    if (!r) return r.status();
    std::optional<LockInfo> holder;
    if (r->status == 200) {
      holder = mine;
    } else if (r->status == 401 || r->status == 403) {
      return AuthError(*r, "lock the state", where);
    } else if (r->status == 409 || r->status == 423) {
      holder = ParseHolder(r->body);
      if (!holder)
        return Status::Error("the state at " + s_.address.display +
                             " is locked (the lock server answered HTTP " + std::to_string(r->status) +
                             Reason(r->status) + ") but its answer does not say by whom" +
                             (r->body.empty() ? std::string() : " (" + Snippet(r->body) + ")") +
                             "; wait with --lock-timeout SECONDS, or clear the lock on the server");
    } else {
      return Unexpected(*r, "lock the state", where,
                        r->status == 404 || r->status == 405 || r->status == 501
                            ? "check lockAddress and lockMethod (" + s_.lock_method + ")"
                            : "");
    }
    // Ours: locked now, or by an earlier attempt of this request whose answer was lost.
    if (holder->id == mine.id) {
      lock_id_ = mine.id;
      lock_body_ = body;
      lock_info_ = mine;
      return Status::Ok();
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      std::string waited;
      if (timeout_seconds > 0)
        waited = "still locked after waiting " +
                 std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - start).count()) +
                 "s: ";
      return Status::Error(waited + holder->Describe() + " at " + s_.address.display +
                           "; wait for it with --lock-timeout SECONDS, or, if that run is gone, run "
                           "onboard force-unlock " + holder->id);
    }
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(kLockPoll, deadline - now));
  }
}

Status HttpStateStore::Unlock(const std::string& id) {
  if (!s_.lock_address) return Status::Ok();  // Lock() took nothing
  if (lock_id_.empty())
    return Status::Error("cannot unlock " + Describe() + " with lock ID " + id +
                         ": this process holds no lock on it");
  if (id != lock_id_)
    return Status::Error("cannot unlock " + Describe() + " with lock ID " + id + ": the lock held is " +
                         lock_id_);
  const Url& url = s_.unlock_address ? *s_.unlock_address : *s_.lock_address;
  const std::string body = lock_body_;
  ForgetLock();  // whatever the answer, this store no longer acts as the holder
  const std::string still = "; the lock (lock ID " + id + ") may still be held: once the server accepts "
                            "requests, run onboard force-unlock " + id;
  Result<HttpReply> r = transport_.Send(s_.unlock_method, url.full, &body, "unlock the state", url.display);
  if (!r) return Status::Error(r.error() + still);
  if (r->status == 200 || r->status == 204) return Status::Ok();
  if (r->status == 401 || r->status == 403)
    return Status::Error(AuthError(*r, "unlock the state", url.display).message() + still);
  if (r->status == 409 || r->status == 423) {
    std::optional<LockInfo> holder = ParseHolder(r->body);
    if (holder && holder->id != id)
      return Status::Error("the lock on " + Describe() + " (lock ID " + id +
                           ") was force-unlocked while this run held it, and now " + holder->Describe() +
                           "; another run may have changed the state since: check it with onboard plan");
  }
  return Status::Error(Unexpected(*r, "unlock the state", url.display).message() + still);
}

Status HttpStateStore::ForceUnlock(const std::string& id) {
  if (!s_.lock_address)
    return Status::Error("the http state backend at " + s_.address.display +
                         " has no lockAddress, so its runs take no lock: there is nothing to force-unlock");
  if (!lock_id_.empty() && id == lock_id_) return Unlock(id);
  const Url& url = s_.unlock_address ? *s_.unlock_address : *s_.lock_address;
  LockInfo info = NewLockInfo("force-unlock", Describe(), static_cast<int64_t>(std::time(nullptr)));
  info.id = id;
  const std::string body = info.ToJson().dump();
  Result<HttpReply> r =
      transport_.Send(s_.unlock_method, url.full, &body, "force-unlock the state", url.display);
  if (!r) return r.status();
  if (r->status == 200 || r->status == 204) return Status::Ok();
  if (r->status == 401 || r->status == 403) return AuthError(*r, "force-unlock the state", url.display);
  if (r->status == 409 || r->status == 423) {
    std::optional<LockInfo> holder = ParseHolder(r->body);
    if (holder && holder->id != id)
      return Status::Error("lock ID " + id + " does not match the lock on " + Describe() + ": " +
                           holder->Describe() + "; to remove that lock, run onboard force-unlock " +
                           holder->id);
  }
  return Unexpected(*r, "force-unlock the state", url.display);
}

// ---------------------------------------------------------------------------------------------
// Read / Write

Result<std::optional<State>> HttpStateStore::Read() {
  using R = Result<std::optional<State>>;
  const std::string& where = s_.address.display;
  auto fail = [this](const std::string& message) {
    unreadable_ = message;
    return R::Error(message);
  };
  Result<HttpReply> r = transport_.Send("GET", s_.address.full, nullptr, "read the state", where);
  if (!r) return fail(r.error());
  if (r->status == 401 || r->status == 403) return fail(AuthError(*r, "read the state", where).message());
  bool absent = r->status == 204 || r->status == 404;
  if (r->status == 200 && r->body.find_first_not_of(" \t\r\n") == std::string::npos) absent = true;
  if (absent) {
    unreadable_.reset();
    known_ = Known();
    return std::optional<State>();
  }
  if (r->status != 200) return fail(Unexpected(*r, "read the state", where).message());
  if (!r->content_md5.empty() && r->content_md5 != ContentMd5(r->body))
    return fail("the state read from " + where + " arrived damaged: its Content-MD5 " + r->content_md5 +
                " does not match its " + std::to_string(r->body.size()) + " bytes; try again");
  const std::string never =
      "; onboard never overwrites a state it cannot read: fix or restore it on the server";
  json j;
  try {
    j = json::parse(r->body);
  } catch (const std::exception& e) {
    return fail("the state at " + where + " is not valid JSON (" + e.what() + ")" + never);
  }
  Result<State> st = DecodeState(std::move(j), where);
  if (!st) {
    if (st.error().find("upgrade onboard") != std::string::npos) return fail(st.error());
    return fail(st.error() + never);
  }
  unreadable_.reset();
  known_ = Known{true, st->lineage, st->serial, Sha256Hex(r->body)};
  return std::optional<State>(std::move(*st));
}

Status HttpStateStore::Write(const State& s) {
  const std::string& where = s_.address.display;
  const std::string refuse = "refusing to write the state to " + where + ": ";
  if (unreadable_)
    return Status::Error(refuse + "it could not be read (" + *unreadable_ +
                         "), and onboard never overwrites a state it could not read; nothing was written");
  // Never send a state that this onboard could not read back.
  json encoded = EncodeState(s);
  if (Result<State> back = DecodeState(encoded, where); !back)
    return Status::Error(refuse + "the new state is invalid: " + back.error());
  Result<std::string> bytes = LocalStateStore::Serialize(s);
  if (!bytes) return Status::Error(refuse + bytes.error());
  // First write of this store: look at what is there.
  if (!known_) {
    Result<std::optional<State>> there = Read();
    if (!there) return Status::Error(refuse + there.error() + "; nothing was written");
  }
  const std::string sha = Sha256Hex(*bytes);
  if (known_->exists) {
    if (Status st =
            CheckOverwrite(known_->lineage, known_->serial, s, replacing_lineage(), "use another address");
        !st)
      return Status::Error(refuse + st.message());
    if (known_->sha256 == sha) return Status::Ok();  // the server has these bytes: no write
  }
  Result<HttpReply> r = transport_.Send(s_.update_method, WriteUrl(), &*bytes, "write the state", where);
  if (!r) return Status::Error(r.error() + "; the state was not written");
  if (r->status == 200 || r->status == 201 || r->status == 204) {
    known_ = Known{true, s.lineage, s.serial, sha};
    return Status::Ok();
  }
  if (r->status == 401 || r->status == 403) return AuthError(*r, "write the state", where);
  if (r->status == 409 || r->status == 423) {
    std::optional<LockInfo> holder = ParseHolder(r->body);
    std::string why = holder ? holder->Describe()
                             : "HTTP " + std::to_string(r->status) + Reason(r->status) +
                                   (r->body.empty() ? "" : ": " + Snippet(r->body));
    if (lock_id_.empty())
      return Status::Error(refuse + "the server refused it because the state is locked (" + why +
                           ") and this run holds no lock; nothing was written");
    return Status::Error(refuse + "the server refused this run's lock ID " + lock_id_ + " (" + why +
                         "): the lock was force-unlocked or taken over, so another run may be changing the "
                         "state; nothing was written: run the command again");
  }
  return Unexpected(*r, "write the state", where,
                    r->status == 404 || r->status == 405 || r->status == 501
                        ? "check address and updateMethod (" + s_.update_method + ")"
                        : "the state was not written");
}

}  // namespace

Result<std::unique_ptr<StateStore>> OpenHttpStateStore(const nlohmann::json& config,
                                                       const std::string& origin) {
  using R = Result<std::unique_ptr<StateStore>>;
  if (!config.is_object()) return R::Error(origin + ": the http backend's settings must be a mapping");
  for (auto it = config.begin(); it != config.end(); ++it) {
    bool known = false;
    for (const char* k : kKeys) known = known || it.key() == k;
    if (!known)
      return R::Error(origin + ": the http backend has no setting \"" + it.key() +
                      "\" (valid settings: " + KeyList() + ")");
  }
  auto text = [&](const char* key, std::string* out) -> Status {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return Status::Ok();
    Result<std::string> v = TextValue(*it, origin, key);
    if (!v) return v.status();
    *out = *v;
    return Status::Ok();
  };
  auto number = [&](const char* key, double min, double max, bool integer, double* out) -> Status {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return Status::Ok();
    Result<double> v = NumberValue(*it, origin, key, min, max, integer);
    if (!v) return v.status();
    *out = *v;
    return Status::Ok();
  };

  Settings s;
  std::string address, lock_address, unlock_address;
  double retry_max = s.transport.retry_max;
  for (Status st : {text("address", &address), text("updateMethod", &s.update_method),
                    text("lockAddress", &lock_address), text("lockMethod", &s.lock_method),
                    text("unlockAddress", &unlock_address), text("unlockMethod", &s.unlock_method),
                    text("username", &s.transport.username), text("password", &s.transport.password),
                    text("caFile", &s.transport.ca_file), number("retryMax", 0, 100, true, &retry_max),
                    number("retryWaitMin", 0, 3600, false, &s.transport.retry_wait_min),
                    number("retryWaitMax", 0, 3600, false, &s.transport.retry_wait_max)})
    if (!st) return R(st);
  s.transport.retry_max = static_cast<int>(retry_max);
  if (s.transport.retry_wait_min > s.transport.retry_wait_max)
    return R::Error(origin + ": http backend setting retryWaitMin (" + Num(s.transport.retry_wait_min) +
                    ") is larger than retryWaitMax (" + Num(s.transport.retry_wait_max) + ")");

  if (address.empty())
    return R::Error(origin +
                    ": the http backend needs address, the URL of the state (for example "
                    "address: https://state.example.com/fleets/prod)");
  Result<Url> a = ParseUrl(origin, "address", address);
  if (!a) return R(a.status());
  s.address = *a;
  if (!lock_address.empty()) {
    Result<Url> l = ParseUrl(origin, "lockAddress", lock_address);
    if (!l) return R(l.status());
    s.lock_address = *l;
  }
  if (!unlock_address.empty()) {
    if (!s.lock_address)
      return R::Error(origin +
                      ": http backend setting unlockAddress needs lockAddress too (without lockAddress "
                      "runs are not locked)");
    Result<Url> u = ParseUrl(origin, "unlockAddress", unlock_address);
    if (!u) return R(u.status());
    s.unlock_address = *u;
  }
  for (const auto& [key, method] :
       {std::pair<const char*, const std::string*>{"updateMethod", &s.update_method},
        {"lockMethod", &s.lock_method},
        {"unlockMethod", &s.unlock_method}})
    if (!IsToken(*method))
      return R::Error(origin + ": http backend setting " + key + " \"" + *method +
                      "\" is not an HTTP method");

  const bool password_in_config = !s.transport.password.empty();
  if (const char* u = std::getenv("ONBOARD_HTTP_USERNAME"); u && *u) s.transport.username = u;
  if (const char* p = std::getenv("ONBOARD_HTTP_PASSWORD"); p && *p) s.transport.password = p;
  if (password_in_config)
    Warn(origin +
         ": the http backend's password is written in the configuration; pass it in the "
         "ONBOARD_HTTP_PASSWORD environment variable instead, so that it stays out of manifests and shell "
         "history");

  if (!s.transport.ca_file.empty()) {
    FILE* f = std::fopen(s.transport.ca_file.c_str(), "r");
    if (!f)
      return R::Error(origin + ": http backend setting caFile " + s.transport.ca_file +
                      " cannot be read: " + std::strerror(errno));
    std::fclose(f);
  }
  if (!s.transport.username.empty() || !s.transport.password.empty()) {
    for (const Url* url : {&s.address, s.lock_address ? &*s.lock_address : nullptr,
                           s.unlock_address ? &*s.unlock_address : nullptr})
      if (url && !url->https && !IsLoopback(url->host)) {
        Warn("the http state backend sends its credentials unencrypted to " + url->display +
             ": use an https:// address");
        break;
      }
  }
  return R(std::make_unique<HttpStateStore>(std::move(s)));
}

}  // namespace onboard
