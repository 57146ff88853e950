#include "daemon/ratelimit/rate_limiter.hpp"

#include <algorithm>
#include <tuple>

namespace agentgw {

namespace {

// These bounds keep every product below within int64: counts and limits <= 2^30, windows
// < 2^30 ms.
constexpr int64_t k_max_window_secs = 7 * 86400;
constexpr int64_t k_max_count = int64_t{1} << 30;

int64_t window_ms_of(int64_t window_secs) {
    return std::clamp<int64_t>(window_secs, 1, k_max_window_secs) * 1000;
}

int64_t ceil_secs(int64_t ms) {
    return (std::max<int64_t>(ms, 0) + 999) / 1000;
}

// Start of the window of length `w` that holds `now` (floor division, so a clock before the
// epoch still works).
int64_t window_start(int64_t now, int64_t w) {
    return now - ((now % w) + w) % w;
}

// Milliseconds from `elapsed` into the current window until a request would be allowed, for an
// entry that refuses one now. Each window's estimate is linear in time, so the moment is solved
// for exactly rather than guessed.
int64_t ms_until_allowed(int64_t w, int64_t elapsed, int64_t prev, int64_t cur, int64_t limit) {
    if (limit < 1) {
        return w - elapsed;  // never allowed; the caller reports a window's wait
    }
    // In this window, at x ms in: prev * (w - x) + cur * w <= (limit - 1) * w.
    if (cur <= limit - 1 && prev > 0) {
        const int64_t x = w - (limit - 1 - cur) * w / prev;
        if (x < w) {
            return std::max(x, elapsed) - elapsed;
        }
    }
    // In the next one, at x ms in, where cur has become the previous count:
    // cur * (w - x) <= (limit - 1) * w. Two windows on, nothing is counted any more (x == w).
    const int64_t x = cur > 0 ? std::max<int64_t>(w - (limit - 1) * w / cur, 0) : 0;
    return w - elapsed + x;
}

}  // namespace

RateLimitState most_restrictive(const RateLimitState& a, const RateLimitState& b) {
    // Ordered by restrictiveness: refused, then fewer remaining, then the longer waits.
    const auto rank = [](const RateLimitState& s) {
        return std::tuple(!s.allowed, -s.remaining, s.retry_after_secs, s.reset_secs);
    };
    return rank(b) > rank(a) ? b : a;
}

RateLimiter::RateLimiter(const Clock& clock) : clock_(clock) {}

RateLimiter::Entry RateLimiter::rolled(Map::const_iterator it, int64_t now,
                                       int64_t window_ms) const {
    const int64_t start = window_start(now, window_ms);
    if (it == entries_.end() || it->second.window_ms != window_ms) {
        // Counts from windows of another length cannot be reinterpreted: start afresh.
        return Entry{window_ms, start, 0, 0};
    }
    const Entry& e = it->second;
    if (start == e.start_ms + window_ms) {
        return Entry{window_ms, start, e.cur, 0};
    }
    if (start > e.start_ms + window_ms) {
        return Entry{window_ms, start, 0, 0};
    }
    return e;  // the same window
}

void RateLimiter::reanchor(Entry& e, int64_t now) {
    const int64_t start = window_start(now, e.window_ms);
    if (start < e.start_ms) {
        // The wall clock stepped back behind the entry's window. Left in the future, the entry
        // would refuse for as long as the step while Retry-After promised a window or two. It
        // moves to the window that holds now, with everything counted in that window: moving
        // the previous window's requests along with it would let them slide out too soon.
        e.cur = std::min(e.cur + e.prev, k_max_count);
        e.prev = 0;
        e.start_ms = start;
    }
}

RateLimiter::Map::iterator RateLimiter::find(std::string_view key, int64_t now) {
    const auto it = entries_.find(key);
    if (it != entries_.end()) {
        reanchor(it->second, now);
    }
    return it;
}

RateLimitState RateLimiter::state_of(const Entry& e, int64_t now, int64_t limit, bool counting) {
    const int64_t w = e.window_ms;
    const int64_t elapsed = std::clamp<int64_t>(now - e.start_ms, 0, w - 1);
    // The estimate times w, in integers so that remaining and retry-after come out exact.
    const int64_t used = e.prev * (w - elapsed) + e.cur * w;

    RateLimitState s;
    s.limit = limit;
    if (!counting) {
        s.remaining = std::clamp<int64_t>((limit * w - used) / w, 0, std::max<int64_t>(limit, 0));
        const int64_t reset_ms = e.cur > 0 ? 2 * w - elapsed : e.prev > 0 ? w - elapsed : 0;
        s.reset_secs = ceil_secs(reset_ms);
        return s;
    }
    s.allowed = limit >= 1 && used + w <= limit * w;
    if (s.allowed) {
        s.remaining = (limit * w - used - w) / w;
    } else {
        s.retry_after_secs =
            std::max<int64_t>(ceil_secs(ms_until_allowed(w, elapsed, e.prev, e.cur, limit)), 1);
    }
    // Fully reset once the last counted request has slid out: the current window's requests
    // (with this one, if it is counted) leave at the end of the next window, the previous
    // window's at the end of this one.
    const bool current_counts = e.cur > 0 || s.allowed;
    const int64_t reset_ms = current_counts ? 2 * w - elapsed : e.prev > 0 ? w - elapsed : 0;
    s.reset_secs = ceil_secs(reset_ms);
    return s;
}

void RateLimiter::count(Map::iterator it, std::string_view key, Entry e) {
    e.cur = std::min(e.cur + 1, k_max_count);
    if (it != entries_.end()) {
        it->second = e;
    } else {
        entries_.emplace(std::string(key), e);
    }
}

RateLimitState RateLimiter::peek(std::string_view key, int64_t limit, int64_t window_secs) {
    const int64_t now = clock_.now_ms();
    const Entry e = rolled(find(key, now), now, window_ms_of(window_secs));
    return state_of(e, now, std::min(limit, k_max_count));
}

RateLimitState RateLimiter::standing(std::string_view key, int64_t limit, int64_t window_secs) {
    const int64_t now = clock_.now_ms();
    const Entry e = rolled(find(key, now), now, window_ms_of(window_secs));
    return state_of(e, now, std::min(limit, k_max_count), false);
}

void RateLimiter::hit(std::string_view key, int64_t window_secs) {
    const int64_t now = clock_.now_ms();
    const auto it = find(key, now);
    count(it, key, rolled(it, now, window_ms_of(window_secs)));
}

RateLimitState RateLimiter::acquire(std::string_view key, int64_t limit, int64_t window_secs) {
    const int64_t now = clock_.now_ms();
    const auto it = find(key, now);
    const Entry e = rolled(it, now, window_ms_of(window_secs));
    const RateLimitState s = state_of(e, now, std::min(limit, k_max_count));
    if (s.allowed) {
        count(it, key, e);
    }
    return s;
}

std::vector<int64_t>* RateLimiter::events_at(std::string_view key, int64_t now, int64_t window_ms) {
    const auto it = events_.find(key);
    if (it == events_.end()) {
        return nullptr;
    }
    Events& e = it->second;
    if (e.window_ms != window_ms) {
        // Events counted against windows of another length: start afresh.
        e = Events{window_ms, {}};
    }
    for (int64_t& t : e.times) {
        // The wall clock stepped back behind it: left in the future, the event would keep
        // counting for as long as the step, not for a window.
        t = std::min(t, now);
    }
    std::erase_if(e.times, [&](int64_t t) { return t <= now - window_ms; });
    return &e.times;
}

RateLimitState RateLimiter::peek_exact(std::string_view key, int64_t limit, int64_t window_secs) {
    const int64_t now = clock_.now_ms();
    const int64_t w = window_ms_of(window_secs);
    const int64_t lim = std::min(limit, k_max_exact_limit);
    static const std::vector<int64_t> none;
    const std::vector<int64_t>* found = events_at(key, now, w);
    const std::vector<int64_t>& in = found != nullptr ? *found : none;
    const auto count = static_cast<int64_t>(in.size());

    RateLimitState s;
    s.limit = lim;
    s.allowed = lim >= 1 && count < lim;
    if (s.allowed) {
        s.remaining = lim - count - 1;
        s.reset_secs = ceil_secs(w);  // this event, counted, is the newest
        return s;
    }
    // One more is allowed once all but lim - 1 of those in the window have left it: the
    // (count - lim + 1)-th oldest leaves last of them.
    s.retry_after_secs =
        lim < 1 ? ceil_secs(w)
                : std::max<int64_t>(ceil_secs(in[static_cast<size_t>(count - lim)] + w - now), 1);
    s.reset_secs = in.empty() ? 0 : ceil_secs(in.back() + w - now);
    return s;
}

void RateLimiter::hit_exact(std::string_view key, int64_t limit, int64_t window_secs) {
    const int64_t now = clock_.now_ms();
    const int64_t w = window_ms_of(window_secs);
    const auto keep = static_cast<size_t>(std::clamp<int64_t>(limit, 1, k_max_exact_limit));
    std::vector<int64_t>* times = events_at(key, now, w);
    if (times == nullptr) {
        times = &events_.emplace(std::string(key), Events{w, {}}).first->second.times;
    }
    times->push_back(now);
    if (times->size() > keep) {
        // Only the newest `keep` can matter to a limit of `keep`.
        times->erase(times->begin(), times->end() - static_cast<std::ptrdiff_t>(keep));
    }
}

size_t RateLimiter::sweep(size_t max) {
    const int64_t now = clock_.now_ms();
    size_t dropped = 0;
    for (auto it = events_.begin(); it != events_.end() && dropped < max;) {
        const Events& e = it->second;
        // Every event has left the window (the newest is the last).
        const bool idle = e.times.empty() || std::min(e.times.back(), now) <= now - e.window_ms;
        if (idle) {
            it = events_.erase(it);
            ++dropped;
        } else {
            ++it;
        }
    }
    for (auto it = entries_.begin(); it != entries_.end() && dropped < max;) {
        Entry& e = it->second;
        reanchor(e, now);
        // Two windows on, both counts have slid out: the key is as good as new.
        if (window_start(now, e.window_ms) >= e.start_ms + 2 * e.window_ms) {
            it = entries_.erase(it);
            ++dropped;
        } else {
            ++it;
        }
    }
    return dropped;
}

}  // namespace agentgw
