// RateLimiter: sliding-window rate limits per key (SPEC §10), with O(1) memory per key.
// Not thread-safe: one instance per io thread, used only from that thread.
//
// The algorithm is the sliding-window counter: each key keeps the start of the current fixed
// window (aligned to multiples of the window length since the epoch), the requests counted in
// it and those counted in the previous window. The estimate at `elapsed` ms into the current
// window is
//     prev * (1 - elapsed / window) + current
// so the previous window's requests slide out linearly instead of all at once, and a client
// cannot make 2x the limit by bunching requests around a window boundary. A request is allowed
// when counting it keeps the estimate at or below the limit. The estimate takes the previous
// window's requests as spread evenly over it: a client that puts `limit` requests at the very
// end of one window and spreads the next ones over the following window gets up to
// 2 * limit - 1 through in about one window's length.
//
// peek_exact()/hit_exact() count exactly instead, for small limits where that worst case
// matters (failed logins: "after 10 failures within 5 minutes"): a key keeps the times of its
// last `limit` events, so memory per key is bounded by the limit, not by the traffic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/util/clock.hpp"

namespace agentgw {

// What one request against one limit gets. Every field describes the state as if the request
// were counted when it is allowed, so the values are what the response's headers should say.
struct RateLimitState {
    int64_t limit = 0;  // RateLimit-Limit
    // RateLimit-Remaining: requests still allowed right now after this one; 0 when refused.
    int64_t remaining = 0;
    // RateLimit-Reset: seconds (rounded up) until the limit has fully reset, i.e. until every
    // counted request has slid out of the window and `remaining` is back to `limit`. At most
    // two windows; 0 when nothing is counted.
    int64_t reset_secs = 0;
    // Retry-After, for a refused request only (else 0): seconds (rounded up, >= 1) until the
    // estimate has fallen far enough that one more request is allowed.
    int64_t retry_after_secs = 0;
    bool allowed = true;
};

// Of two states, the more restrictive: a refused one, else the one with fewer remaining; ties go
// to the larger retry_after_secs, then the larger reset_secs. For the headers of a request that
// several limits apply to.
RateLimitState most_restrictive(const RateLimitState& a, const RateLimitState& b);

class RateLimiter {
  public:
    // `clock` must outlive the limiter.
    explicit RateLimiter(const Clock& clock);

    RateLimiter(const RateLimiter&) = delete;
    RateLimiter& operator=(const RateLimiter&) = delete;

    // `limit` requests per `window_secs` may differ from call to call for the same key: a new
    // limit applies to the requests already counted; a new window length starts the key afresh.
    // A limit <= 0 refuses everything (retry_after_secs is then the window length). Windows are
    // clamped to [1 s, 7 days] and limits to 2^30.

    // What a request against `key` would get now, without counting it.
    RateLimitState peek(std::string_view key, int64_t limit, int64_t window_secs);
    // Where `key` stands now, for a response to a request that is not counted: `remaining` is
    // what is left, `reset_secs` is 0 when nothing is counted, and `allowed` is always true.
    RateLimitState standing(std::string_view key, int64_t limit, int64_t window_secs);
    // Counts one request against `key`. For a request several limits apply to: peek each, and
    // if every one allows it, hit each.
    void hit(std::string_view key, int64_t window_secs);
    // peek, then hit if allowed: a refused request is not counted.
    RateLimitState acquire(std::string_view key, int64_t limit, int64_t window_secs);

    // Exact counts: at most `limit` events in any `window_secs`, for limits up to
    // k_max_exact_limit (larger ones are clamped). Events before the last window are
    // forgotten; a new window length starts the key afresh. Keys are apart from peek()'s.
    static constexpr int64_t k_max_exact_limit = 1024;
    // What one more event against `key` would get now, without counting it. reset_secs is
    // when the newest event (this one, when allowed) leaves the window; retry_after_secs, when
    // enough have left for one more.
    RateLimitState peek_exact(std::string_view key, int64_t limit, int64_t window_secs);
    // Counts one event against `key`.
    void hit_exact(std::string_view key, int64_t limit, int64_t window_secs);

    // Drops up to `max` keys that have been idle for two windows (whose estimate is 0, so
    // dropping them changes nothing), and exact keys whose events have all left their window,
    // and returns how many it dropped. Call it on a timer to bound memory; it looks at every
    // key, O(size()), so dropping every idle key it finds (the default) costs no more than
    // looking: a bound below that would let keys made faster than it outgrow the sweeps.
    size_t sweep(size_t max = std::numeric_limits<size_t>::max());
    // Keys currently held.
    size_t size() const { return entries_.size() + events_.size(); }

  private:
    struct Entry {
        int64_t window_ms = 0;
        int64_t start_ms = 0;  // start of the current window
        int64_t prev = 0;      // requests counted in the window before it
        int64_t cur = 0;       // requests counted in the current window
    };
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };
    using Map = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;
    struct Events {
        int64_t window_ms = 0;
        std::vector<int64_t> times;  // oldest first, all within the window at the last hit
    };
    using EventMap = std::unordered_map<std::string, Events, Hash, std::equal_to<>>;
    // `key`'s events still in the window ending at `now`, oldest first (nullptr for a key not
    // held), its entry brought up to date: events that left the window dropped, and any after
    // `now` (the wall clock stepped back) moved to `now`.
    std::vector<int64_t>* events_at(std::string_view key, int64_t now, int64_t window_ms);

    // Moves `e` back into the window that holds `now` if the wall clock stepped back behind it.
    static void reanchor(Entry& e, int64_t now);
    // The entry of `key` (or end()), reanchored.
    Map::iterator find(std::string_view key, int64_t now);
    // The entry at `it` (a fresh one for end()) moved forward to `now`, for windows of `window_ms`.
    Entry rolled(Map::const_iterator it, int64_t now, int64_t window_ms) const;
    // What a request gets against the rolled entry `e`; with `counting` false, where the key
    // stands without one.
    static RateLimitState state_of(const Entry& e, int64_t now, int64_t limit,
                                   bool counting = true);
    // Counts one request in `e`, the rolled entry of `key`, and stores it at `it` (or anew).
    void count(Map::iterator it, std::string_view key, Entry e);

    const Clock& clock_;
    Map entries_;
    EventMap events_;
};

}  // namespace agentgw
