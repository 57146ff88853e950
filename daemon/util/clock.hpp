// Clock: the one seam through which the daemon reads the time, so rate limits, TTLs and token
// expiry are tested by moving a fake clock rather than by sleeping. Implementations must be
// thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace agentgw {

class Clock {
  public:
    virtual ~Clock() = default;
    // Milliseconds since the Unix epoch (UTC).
    virtual int64_t now_ms() const = 0;
    int64_t now_secs() const { return now_ms() / 1000; }
};

class SystemClock final : public Clock {
  public:
    int64_t now_ms() const override;
};

// "2026-11-22T21:00:00Z" for Unix seconds.
std::string rfc3339(int64_t unix_secs);
// The inverse for "YYYY-MM-DDTHH:MM:SSZ" (fractional seconds and "+00:00" accepted).
std::optional<int64_t> parse_rfc3339(std::string_view text);

}  // namespace agentgw
