#include "daemon/util/clock.hpp"

#include <chrono>
#include <ctime>

#include <fmt/format.h>

namespace agentgw {

int64_t SystemClock::now_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string rfc3339(int64_t unix_secs) {
    const std::time_t t = static_cast<std::time_t>(unix_secs);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::optional<int64_t> parse_rfc3339(std::string_view text) {
    const std::string s(text);
    std::tm tm{};
    const char* rest = ::strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (rest == nullptr) {
        return std::nullopt;
    }
    std::string_view tail(rest);
    if (!tail.empty() && tail.front() == '.') {  // fractional seconds: ignored
        tail.remove_prefix(1);
        while (!tail.empty() && tail.front() >= '0' && tail.front() <= '9') {
            tail.remove_prefix(1);
        }
    }
    if (tail != "Z" && tail != "+00:00") {
        return std::nullopt;
    }
    return static_cast<int64_t>(::timegm(&tm));
}

}  // namespace agentgw
