// Time source injected into the engine (Envoy's TimeSource idea): tests use a fake.
#pragma once

#include <cstdint>
#include <string>

namespace onboard {

class Clock {
 public:
  virtual ~Clock() = default;
  // Seconds since the Unix epoch.
  virtual int64_t Now() const = 0;
};

class SystemClock : public Clock {
 public:
  int64_t Now() const override;
};

class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t now) : now_(now) {}
  int64_t Now() const override { return now_; }
  void Set(int64_t now) { now_ = now; }
  void Advance(int64_t seconds) { now_ += seconds; }

 private:
  int64_t now_;
};

// RFC 3339 ("2026-11-26T03:22:27Z"; fractional seconds and offsets accepted when parsing)
// <-> epoch seconds. Formatting is always UTC.
std::string FormatTime(int64_t epoch_seconds);
bool ParseTime(const std::string& text, int64_t* epoch_seconds);
// "24h", "90m", "1h30m", "3600s", "2d" <-> seconds. Returns false on bad input.
bool ParseDuration(const std::string& text, int64_t* seconds);
std::string FormatDuration(int64_t seconds);  // "5h12m", "45s", "2d3h"

}  // namespace onboard
