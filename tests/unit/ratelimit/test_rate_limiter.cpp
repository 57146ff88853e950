#include <cstdint>
#include <map>
#include <random>
#include <string>

#include <catch2/catch.hpp>

#include "daemon/ratelimit/rate_limiter.hpp"
#include "tests/support/fake_clock.hpp"

using namespace agentgw;
using agentgw::test::FakeClock;

namespace {

// FakeClock starts at a multiple of 60 s (and 20 s, 300 s), so t = 0 is a window start.
constexpr int64_t k_limit = 10;
constexpr int64_t k_window = 60;

// How many requests `key` gets right now, trying up to `tries`.
int64_t burst(RateLimiter& rl, const std::string& key, int64_t limit, int64_t window,
              int64_t tries) {
    int64_t allowed = 0;
    for (int64_t i = 0; i < tries; ++i) {
        allowed += rl.acquire(key, limit, window).allowed ? 1 : 0;
    }
    return allowed;
}

}  // namespace

TEST_CASE("requests up to the limit are allowed, then refused with Retry-After") {
    FakeClock clock;
    RateLimiter rl(clock);
    for (int64_t i = 0; i < k_limit; ++i) {
        const auto s = rl.acquire("agent:a", k_limit, k_window);
        REQUIRE(s.allowed);
        CHECK(s.limit == k_limit);
        CHECK(s.remaining == k_limit - 1 - i);
        CHECK(s.retry_after_secs == 0);
        CHECK(s.reset_secs == 2 * k_window);
    }
    const auto refused = rl.acquire("agent:a", k_limit, k_window);
    CHECK_FALSE(refused.allowed);
    CHECK(refused.remaining == 0);
    // Next window, x s in: 10 * (60 - x) / 60 <= 9 first holds at x = 6.
    CHECK(refused.retry_after_secs == k_window + 6);
    CHECK(refused.reset_secs == 2 * k_window);
}

TEST_CASE("refused requests and peeks are not counted") {
    FakeClock clock;
    RateLimiter rl(clock);
    CHECK(rl.peek("agent:a", k_limit, k_window).remaining == k_limit - 1);
    CHECK(rl.size() == 0);
    CHECK(burst(rl, "agent:a", k_limit, k_window, k_limit) == k_limit);
    const auto first = rl.peek("agent:a", k_limit, k_window);
    CHECK(burst(rl, "agent:a", k_limit, k_window, 1000) == 0);
    const auto later = rl.peek("agent:a", k_limit, k_window);
    CHECK(later.retry_after_secs == first.retry_after_secs);
    clock.advance_secs(first.retry_after_secs);
    CHECK(rl.acquire("agent:a", k_limit, k_window).allowed);
}

TEST_CASE("across a window boundary the sliding window allows no 2x burst") {
    FakeClock clock;
    RateLimiter rl(clock);
    clock.advance_secs(59);
    CHECK(burst(rl, "agent:a", k_limit, k_window, 20) == k_limit);
    // t = 61 s: a fixed window would have started afresh and allowed 10 more; here the previous
    // window still weighs 10 * 59/60 = 9.8.
    clock.advance_secs(2);
    CHECK(burst(rl, "agent:a", k_limit, k_window, 20) == 0);
    // t = 114 s: 10 * 6/60 = 1, so 9 more.
    clock.advance_secs(53);
    CHECK(burst(rl, "agent:a", k_limit, k_window, 20) == 9);
}

TEST_CASE("capacity comes back gradually as the previous window slides out") {
    FakeClock clock;
    RateLimiter rl(clock);
    CHECK(burst(rl, "agent:a", k_limit, k_window, k_limit) == k_limit);
    clock.advance_secs(k_window + k_window / 2);  // half the previous window is left: 5
    const auto half = rl.peek("agent:a", k_limit, k_window);
    CHECK(half.allowed);
    CHECK(half.remaining == 4);
    CHECK(burst(rl, "agent:a", k_limit, k_window, 20) == 5);
    // t = 150 s: 5 * 30/60 left from the previous window, 2.5, so 7 more.
    clock.advance_secs(k_window);
    CHECK(burst(rl, "agent:a", k_limit, k_window, 20) == 7);
    // Two idle windows later everything has slid out.
    clock.advance_secs(2 * k_window);
    CHECK(rl.peek("agent:a", k_limit, k_window).remaining == k_limit - 1);
}

TEST_CASE("RateLimit-Reset is the time until the limit has fully reset") {
    FakeClock clock;
    RateLimiter rl(clock);
    CHECK(rl.peek("agent:a", 1, k_window).reset_secs == 2 * k_window);  // if this one is counted
    clock.advance_ms(1500);
    REQUIRE(rl.acquire("agent:a", 1, k_window).allowed);  // counted at t = 1.5 s
    const auto same_window = rl.peek("agent:a", 1, k_window);
    CHECK_FALSE(same_window.allowed);
    CHECK(same_window.reset_secs == 2 * k_window - 1);  // 118.5 s, rounded up
    clock.advance_secs(k_window);                       // t = 61.5 s: only the previous window
    const auto next_window = rl.peek("agent:a", 1, k_window);
    CHECK_FALSE(next_window.allowed);
    CHECK(next_window.reset_secs == k_window - 1);
    CHECK(next_window.retry_after_secs == k_window - 1);
    clock.advance_secs(next_window.reset_secs);
    CHECK(rl.peek("agent:a", 1, k_window).remaining == 0);  // the whole limit, less this one
    CHECK(rl.peek("agent:a", 5, k_window).remaining == 4);
}

TEST_CASE("standing describes a key without counting a request") {
    FakeClock clock;
    RateLimiter rl(clock);
    const auto fresh = rl.standing("agent:a", 5, k_window);
    CHECK(fresh.allowed);
    CHECK(fresh.remaining == 5);
    CHECK(fresh.reset_secs == 0);  // nothing is counted
    CHECK(rl.size() == 0);

    clock.advance_ms(1500);
    REQUIRE(rl.acquire("agent:a", 5, k_window).allowed);
    const auto one = rl.standing("agent:a", 5, k_window);
    CHECK(one.remaining == 4);
    CHECK(one.reset_secs == 2 * k_window - 1);
    CHECK(rl.peek("agent:a", 5, k_window).remaining == 3);  // standing counted nothing

    clock.advance_secs(k_window);  // only the previous window holds the request
    const auto slid = rl.standing("agent:a", 5, k_window);
    CHECK(slid.remaining == 4);
    CHECK(slid.reset_secs == k_window - 1);

    for (int i = 0; i < 4; ++i) {
        REQUIRE(rl.acquire("agent:a", 5, k_window).allowed);
    }
    const auto spent = rl.standing("agent:a", 5, k_window);
    CHECK(spent.allowed);
    CHECK(spent.remaining == 0);
    CHECK(spent.retry_after_secs == 0);
    CHECK(rl.standing("agent:a", 0, k_window).remaining == 0);
}

TEST_CASE("a wall clock stepped back keeps the counts and the promised wait") {
    FakeClock clock;
    RateLimiter rl(clock);
    CHECK(burst(rl, "agent:a", k_limit, k_window, k_limit + 1) == k_limit);
    clock.advance_secs(-3600);  // the clock is set back an hour
    const auto refused = rl.peek("agent:a", k_limit, k_window);
    REQUIRE_FALSE(refused.allowed);  // what was counted still counts
    REQUIRE(refused.retry_after_secs <= 2 * k_window);
    clock.advance_secs(refused.retry_after_secs);
    CHECK(rl.peek("agent:a", k_limit, k_window).allowed);  // as Retry-After said
}

TEST_CASE("a clock stepped back across a window boundary does not free the previous window") {
    FakeClock clock;
    RateLimiter rl(clock);
    clock.advance_secs(k_window - 1);  // 59 s, the end of window 0
    CHECK(burst(rl, "agent:a", k_limit, k_window, 5) == 5);
    clock.advance_ms(1050);  // 60.05 s: the previous window still weighs almost fully
    CHECK(burst(rl, "agent:a", k_limit, k_window, k_limit) == 5);
    clock.advance_ms(-100);  // 59.95 s, back in window 0: ten were counted within a second
    CHECK(burst(rl, "agent:a", k_limit, k_window, k_limit) == 0);
    clock.advance_ms(100);
    CHECK(burst(rl, "agent:a", k_limit, k_window, k_limit) == 0);
}

TEST_CASE("sweep drops keys a clock stepped far back had left in the future") {
    FakeClock clock;
    RateLimiter rl(clock);
    REQUIRE(rl.acquire("agent:a", k_limit, k_window).allowed);
    clock.advance_secs(-86400);
    CHECK(rl.sweep() == 0);  // now counted in the window that holds the clock
    clock.advance_secs(2 * k_window);
    CHECK(rl.sweep() == 1);
}

TEST_CASE("keys are independent") {
    FakeClock clock;
    RateLimiter rl(clock);
    CHECK(burst(rl, "agent:a", k_limit, k_window, 20) == k_limit);
    CHECK(burst(rl, "agent:b", k_limit, k_window, 20) == k_limit);
    CHECK(burst(rl, "service:a", 3, k_window, 20) == 3);
    CHECK_FALSE(rl.peek("agent:a", k_limit, k_window).allowed);
    CHECK(rl.peek("agent:c", k_limit, k_window).allowed);
    CHECK(rl.size() == 3);
}

TEST_CASE("a changed limit applies to what is counted, a changed window starts afresh") {
    FakeClock clock;
    RateLimiter rl(clock);
    CHECK(burst(rl, "agent:a", k_limit, k_window, k_limit) == k_limit);
    CHECK_FALSE(rl.peek("agent:a", k_limit, k_window).allowed);

    SECTION("raised") {
        CHECK(burst(rl, "agent:a", 15, k_window, 20) == 5);
    }
    SECTION("lowered") {
        const auto s = rl.peek("agent:a", 5, k_window);
        CHECK_FALSE(s.allowed);
        // Next window, x s in: 10 * (60 - x) / 60 <= 4 first holds at x = 36.
        CHECK(s.retry_after_secs == k_window + 36);
    }
    SECTION("another window") {
        CHECK(burst(rl, "agent:a", k_limit, 30, 20) == k_limit);
        CHECK(rl.size() == 1);
    }
    SECTION("zero refuses everything") {
        const auto s = rl.peek("agent:b", 0, k_window);
        CHECK_FALSE(s.allowed);
        CHECK(s.retry_after_secs == k_window);
    }
}

TEST_CASE("sweep drops keys idle for two windows, at most max per call") {
    FakeClock clock;
    RateLimiter rl(clock);
    for (int i = 0; i < 1000; ++i) {
        rl.hit("login-addr:" + std::to_string(i), k_window);
    }
    rl.hit("login-user:long", 10 * k_window);
    CHECK(rl.size() == 1001);
    CHECK(rl.sweep() == 0);

    clock.advance_secs(k_window);  // the previous window still counts
    rl.hit("login-addr:0", k_window);
    CHECK(rl.sweep() == 0);

    clock.advance_secs(k_window);  // two windows on: all but login-addr:0 and the long one
    CHECK(rl.sweep(100) == 100);
    CHECK(rl.size() == 901);
    CHECK(rl.sweep() == 899);
    CHECK(rl.size() == 2);
    CHECK(rl.peek("login-addr:1", 1, k_window).allowed);
    CHECK_FALSE(rl.peek("login-addr:0", 1, k_window).allowed);

    clock.advance_secs(20 * k_window);
    CHECK(rl.sweep() == 2);
    CHECK(rl.size() == 0);
}

TEST_CASE("a sweep drops every idle key however many there are") {
    // Keys made faster than a fixed number per sweep would otherwise pile up between sweeps.
    FakeClock clock;
    RateLimiter rl(clock);
    constexpr int k_keys = 25000;
    for (int i = 0; i < k_keys; ++i) {
        rl.hit("login-addr:" + std::to_string(i), k_window);
        rl.hit_exact("login-user:" + std::to_string(i), 10, k_window);
    }
    CHECK(rl.size() == 2 * k_keys);
    clock.advance_secs(2 * k_window);
    CHECK(rl.sweep() == 2 * k_keys);
    CHECK(rl.size() == 0);
}

TEST_CASE("Retry-After is exact: one second less is still refused") {
    struct Case {
        int64_t limit;
        int64_t window;
        int64_t offset_ms;  // when the burst starts
        int64_t wait_ms;    // then how long until the refused request
    };
    const auto c =
        GENERATE(Case{10, 60, 0, 0}, Case{10, 60, 59'000, 2'000}, Case{10, 60, 59'999, 1},
                 Case{3, 1, 250, 900}, Case{1, 300, 0, 0}, Case{1, 300, 1'234, 300'000},
                 Case{7, 13, 4'321, 12'345}, Case{100, 60, 30'000, 45'000},
                 Case{50, 300, 299'000, 1'000}, Case{2, 86'400, 3'600'000, 86'000'000});
    CAPTURE(c.limit, c.window, c.offset_ms, c.wait_ms);

    FakeClock clock;
    RateLimiter rl(clock);
    clock.advance_ms(c.offset_ms);
    REQUIRE(burst(rl, "k", c.limit, c.window, c.limit) == c.limit);
    clock.advance_ms(c.wait_ms);
    while (rl.acquire("k", c.limit, c.window).allowed) {
    }
    const auto refused = rl.peek("k", c.limit, c.window);
    REQUIRE_FALSE(refused.allowed);
    REQUIRE(refused.retry_after_secs >= 1);
    clock.advance_secs(refused.retry_after_secs - 1);
    CHECK_FALSE(rl.peek("k", c.limit, c.window).allowed);
    clock.advance_secs(1);
    CHECK(rl.peek("k", c.limit, c.window).allowed);
}

TEST_CASE("random traffic agrees with a per-window model, and Retry-After stays exact") {
    FakeClock clock;
    RateLimiter rl(clock);
    std::mt19937_64 rng(42);
    const int64_t limit = 6;
    const int64_t w = 20'000;
    const int64_t start = clock.now_ms();
    std::map<int64_t, int64_t> counted;  // window index -> allowed requests

    for (int i = 0; i < 20'000; ++i) {
        clock.advance_ms(static_cast<int64_t>(rng() % 3'000));
        const int64_t t = clock.now_ms() - start;
        const int64_t k = t / w;
        const int64_t used = counted[k - 1] * (w - t % w) + counted[k] * w;  // estimate * w
        const bool expect = used + w <= limit * w;

        const auto s = rl.acquire("k", limit, w / 1000);
        REQUIRE(s.allowed == expect);
        if (s.allowed) {
            ++counted[k];
        } else if (i % 7 == 0) {
            clock.advance_secs(s.retry_after_secs - 1);
            REQUIRE_FALSE(rl.peek("k", limit, w / 1000).allowed);
            clock.advance_secs(1);
            REQUIRE(rl.peek("k", limit, w / 1000).allowed);
        }
    }
}

TEST_CASE("most_restrictive picks refused, then fewest remaining, then the longer wait") {
    const RateLimitState roomy{100, 50, 60, 0, true};
    const RateLimitState tight{10, 2, 30, 0, true};
    const RateLimitState tight_longer{10, 2, 90, 0, true};
    const RateLimitState refused{600, 0, 10, 5, false};
    const RateLimitState refused_longer{600, 0, 10, 8, false};
    const RateLimitState last{10, 0, 120, 0, true};

    CHECK(most_restrictive(roomy, tight).limit == 10);
    CHECK(most_restrictive(tight, roomy).limit == 10);
    CHECK(most_restrictive(tight, tight_longer).reset_secs == 90);
    CHECK(most_restrictive(tight_longer, tight).reset_secs == 90);
    CHECK_FALSE(most_restrictive(last, refused).allowed);
    CHECK_FALSE(most_restrictive(refused, last).allowed);
    CHECK(most_restrictive(refused, refused_longer).retry_after_secs == 8);
    CHECK(most_restrictive(refused_longer, refused).retry_after_secs == 8);
}

TEST_CASE("the estimate's worst case: up to 2 * limit - 1 in about one window") {
    // What the exact counts are for: limit requests at the very end of one window, then
    // requests spread over the next, all allowed.
    FakeClock clock;
    RateLimiter rl(clock);
    clock.advance_ms(k_window * 1000 - 10);
    CHECK(burst(rl, "k", k_limit, k_window, k_limit) == k_limit);
    int64_t later = 0;
    for (int i = 0; i < 60; ++i) {
        clock.advance_secs(1);
        later += burst(rl, "k", k_limit, k_window, 1);
    }
    CHECK(later == k_limit - 1);
}

TEST_CASE("exact counts allow limit events in any window, and say when the next one may come") {
    FakeClock clock;
    RateLimiter rl(clock);
    const int64_t limit = 10;
    const int64_t window = 300;
    // The estimate's worst case: the limit at the end of one window, then more spread over
    // the next. Exactly counted, nothing more passes until the first has left.
    clock.advance_ms(window * 1000 - 10);
    for (int64_t i = 0; i < limit; ++i) {
        const auto s = rl.peek_exact("user", limit, window);
        REQUIRE(s.allowed);
        CHECK(s.remaining == limit - 1 - i);
        CHECK(s.reset_secs == window);
        rl.hit_exact("user", limit, window);
    }
    const auto refused = rl.peek_exact("user", limit, window);
    CHECK_FALSE(refused.allowed);
    CHECK(refused.remaining == 0);
    CHECK(refused.retry_after_secs == window);
    CHECK(refused.reset_secs == window);
    for (int64_t t = 30; t < window; t += 30) {
        clock.advance_secs(30);
        INFO("t = " << t);
        const auto s = rl.peek_exact("user", limit, window);
        CHECK_FALSE(s.allowed);
        CHECK(s.retry_after_secs == window - t);
    }
    clock.advance_secs(30);  // the ten have left together
    CHECK(rl.peek_exact("user", limit, window).allowed);

    // Events spread out leave one by one: Retry-After names the oldest's departure.
    for (int64_t i = 0; i < limit; ++i) {
        rl.hit_exact("spread", limit, window);
        clock.advance_secs(10);
    }
    // Now 100 s after the first: it leaves in 200 s.
    CHECK(rl.peek_exact("spread", limit, window).retry_after_secs == 200);
    clock.advance_secs(199);
    CHECK_FALSE(rl.peek_exact("spread", limit, window).allowed);
    clock.advance_secs(1);
    CHECK(rl.peek_exact("spread", limit, window).allowed);
    rl.hit_exact("spread", limit, window);
    CHECK_FALSE(rl.peek_exact("spread", limit, window).allowed);
    CHECK(rl.peek_exact("spread", limit, window).retry_after_secs == 10);
}

TEST_CASE("exact counts keep at most limit times, survive a clock set back, and are swept") {
    FakeClock clock;
    RateLimiter rl(clock);
    for (int i = 0; i < 5000; ++i) {
        rl.hit_exact("k", 3, 60);
    }
    const auto s = rl.peek_exact("k", 3, 60);
    CHECK_FALSE(s.allowed);
    CHECK(s.retry_after_secs == 60);

    // A clock set back a day: the events count from now, for one window, not for a day.
    clock.advance_secs(-86400);
    CHECK(rl.peek_exact("k", 3, 60).retry_after_secs == 60);
    clock.advance_secs(60);
    CHECK(rl.peek_exact("k", 3, 60).allowed);

    // A new window length starts afresh; a limit of 0 refuses for a window.
    rl.hit_exact("w", 1, 60);
    CHECK_FALSE(rl.peek_exact("w", 1, 60).allowed);
    CHECK(rl.peek_exact("w", 1, 120).allowed);
    CHECK(rl.peek_exact("zero", 0, 60).retry_after_secs == 60);

    // Swept once every event has left its window: "k"'s have, "w"'s new one has not.
    rl.hit_exact("w", 1, 60);
    CHECK(rl.size() == 2);
    CHECK(rl.sweep() == 1);
    CHECK(rl.size() == 1);
    clock.advance_secs(59);
    CHECK(rl.sweep() == 0);
    clock.advance_secs(1);
    CHECK(rl.sweep() == 1);
    CHECK(rl.size() == 0);
}
