#include "state/kubernetes_util.h"

#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "providers/kubernetes/kubeconfig.h"

namespace onboard::kstate {

Result<std::string> Gzip(const std::string& bytes) {
  z_stream zs{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return Result<std::string>::Error("cannot compress the state: zlib could not start (out of memory?)");
  std::string out;
  out.resize(deflateBound(&zs, static_cast<uLong>(bytes.size())) + 64);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(&out[0]);
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  size_t produced = zs.total_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END)
    return Result<std::string>::Error("cannot compress the state: zlib error " + std::to_string(rc));
  out.resize(produced);
  return out;
}

Result<std::string> Gunzip(const std::string& gz) {
  if (gz.size() < 18 || static_cast<unsigned char>(gz[0]) != 0x1f ||
      static_cast<unsigned char>(gz[1]) != 0x8b)
    return Result<std::string>::Error("it is not gzip data (no gzip header)");
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK)
    return Result<std::string>::Error("zlib could not start (out of memory?)");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  zs.avail_in = static_cast<uInt>(gz.size());
  std::string out;
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) break;  // input ended before the stream did
  }
  size_t left = zs.avail_in;
  std::string zmsg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  if (rc == Z_STREAM_END) {
    if (left != 0)
      return Result<std::string>::Error(std::to_string(left) + " bytes follow the end of the gzip stream");
    return out;
  }
  if (rc == Z_BUF_ERROR || rc == Z_OK) return Result<std::string>::Error("the gzip stream is truncated");
  return Result<std::string>::Error("the gzip stream is corrupt (" +
                                    (zmsg.empty() ? "zlib error " + std::to_string(rc) : zmsg) + ")");
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatMicroTime(int64_t epoch_micros) {
  int64_t secs = epoch_micros / 1000000;
  int64_t micros = epoch_micros % 1000000;
  if (micros < 0) {
    micros += 1000000;
    --secs;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char base[32];
  std::strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%06lldZ", base, static_cast<long long>(micros));
  return out;
}

bool ParseMicroTime(const std::string& text, int64_t* epoch_micros) {
  std::string whole = text;
  int64_t frac = 0;
  auto dot = text.find('.');
  if (dot != std::string::npos) {
    size_t end = dot + 1;
    while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
    if (end == dot + 1) return false;
    std::string digits = text.substr(dot + 1, end - dot - 1);
    digits.resize(6, '0');  // truncate or pad to microseconds
    frac = std::stoll(digits);
    whole = text.substr(0, dot) + text.substr(end);
  }
  int64_t secs = 0;
  if (!ParseTime(whole, &secs)) return false;
  *epoch_micros = secs * 1000000 + frac;
  return true;
}

namespace {

bool LabelPart(const std::string& s, size_t b, size_t e) {
  if (e <= b) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(s[b]) || !alnum(s[e - 1])) return false;
  for (size_t i = b; i < e; ++i)
    if (!alnum(s[i]) && s[i] != '-') return false;
  return true;
}

}  // namespace

bool IsStateName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  size_t b = 0;
  for (;;) {
    size_t dot = name.find('.', b);
    size_t e = dot == std::string::npos ? name.size() : dot;
    if (!LabelPart(name, b, e)) return false;
    if (dot == std::string::npos) return true;
    b = dot + 1;
  }
}

bool IsDns1123Label(const std::string& name) { return name.size() <= 63 && LabelPart(name, 0, name.size()); }

}  // namespace onboard::kstate
